"""tl_hf: transfer learning on top of transformers.Trainer."""

from tl_hf.core.architectures import ARCHITECTURES, ArchitectureSpec, register_architecture
from tl_hf.core.callbacks import GradualUnfreezingCallback
from tl_hf.core.feature_store import FeatureCacheError
from tl_hf.core.freezing import POLICIES, FreezingConfig, FreezingController, GradualSchedule, Phase
from tl_hf.core.layers import LayerMap, UnknownArchitectureError, get_layer_map
from tl_hf.core.optim import LLRDConfig, group_lrs, no_weight_decay_names, param_groups_layer_decay
from tl_hf.core.trainer import TransferTrainer

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "ArchitectureSpec", "FeatureCacheError", "FreezingConfig", "FreezingController", "GradualSchedule",
    "GradualUnfreezingCallback", "LLRDConfig", "LayerMap", "POLICIES", "Phase", "TransferTrainer",
    "UnknownArchitectureError", "get_layer_map", "group_lrs", "no_weight_decay_names", "param_groups_layer_decay",
    "register_architecture",
]
