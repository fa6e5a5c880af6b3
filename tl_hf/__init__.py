"""tl_hf: transfer learning on top of transformers.Trainer."""

from .feature_cache import FeatureCacheError
from .freezing import POLICIES, FreezingConfig, FreezingController, GradualSchedule, Phase
from .layers import ARCHITECTURES, ArchitectureSpec, LayerMap, UnknownArchitectureError, get_layer_map, register_architecture
from .optim import LLRDConfig, group_lrs, no_weight_decay_names, param_groups_layer_decay
from .trainer import GradualUnfreezingCallback, TransferTrainer

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "ArchitectureSpec", "FeatureCacheError", "FreezingConfig", "FreezingController", "GradualSchedule",
    "GradualUnfreezingCallback", "LLRDConfig", "LayerMap", "POLICIES", "Phase", "TransferTrainer",
    "UnknownArchitectureError", "get_layer_map", "group_lrs", "no_weight_decay_names", "param_groups_layer_decay",
    "register_architecture",
]
