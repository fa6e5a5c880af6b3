"""Forgetting regularizers behind one registry (:data:`REGULARIZERS`): EWC, online EWC, L2-SP, replay, LwF,
DER/DER++."""

from tl_hf.regularizers.base import (REGULARIZERS, Regularizer, RegularizerConfig, StepContext, build_regularizer,
                                     register_regularizer)
from tl_hf.regularizers.der import DER, DERConfig
from tl_hf.regularizers.ewc import EWC, EWCConfig, OnlineEWC, OnlineEWCConfig
from tl_hf.regularizers.fisher import ESTIMATORS, estimate_fisher
from tl_hf.regularizers.l2sp import L2SP, L2SPConfig
from tl_hf.regularizers.lwf import LwF, LwFConfig
from tl_hf.regularizers.replay import MixedDataset, Replay, ReplayConfig, ReplayMemory

__all__ = [
    "ESTIMATORS", "EWC", "EWCConfig", "L2SP", "L2SPConfig", "MixedDataset", "OnlineEWC", "OnlineEWCConfig",
    "REGULARIZERS", "Regularizer", "RegularizerConfig", "Replay", "ReplayConfig", "ReplayMemory", "StepContext",
    "build_regularizer", "estimate_fisher", "register_regularizer", "LwF", "LwFConfig", "DER", "DERConfig",
]
