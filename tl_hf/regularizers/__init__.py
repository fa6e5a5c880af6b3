"""Forgetting regularizers behind one registry (:data:`REGULARIZERS`): EWC, online EWC, L2-SP, replay."""

from .base import REGULARIZERS, Regularizer, RegularizerConfig, build_regularizer, register_regularizer
from .ewc import EWC, EWCConfig, OnlineEWC, OnlineEWCConfig
from .fisher import ESTIMATORS, estimate_fisher
from .l2sp import L2SP, L2SPConfig
from .replay import MixedDataset, Replay, ReplayConfig, ReplayMemory

__all__ = [
    "ESTIMATORS", "EWC", "EWCConfig", "L2SP", "L2SPConfig", "MixedDataset", "OnlineEWC", "OnlineEWCConfig",
    "REGULARIZERS", "Regularizer", "RegularizerConfig", "Replay", "ReplayConfig", "ReplayMemory",
    "build_regularizer", "estimate_fisher", "register_regularizer",
]
