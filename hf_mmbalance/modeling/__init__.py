"""Multimodal models. Registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_mmbalance import (
    AUXILIARY_LOSS_TERMS,
    ENCODERS,
    FUSIONS,
    TASKS,
    MMBalanceConfig,
    MMBalanceConfigError,
)
from .modeling_mmbalance import (
    ATTENTION_MASK_SUFFIX,
    MMBalanceForClassification,
    MMBalanceForRegression,
    MMBalanceModel,
    MMBalanceOutput,
    MMBalancePreTrainedModel,
)

AutoConfig.register(MMBalanceConfig.model_type, MMBalanceConfig, exist_ok=True)
AutoModel.register(MMBalanceConfig, MMBalanceModel, exist_ok=True)
AutoModelForSequenceClassification.register(MMBalanceConfig, MMBalanceForClassification, exist_ok=True)

__all__ = [
    "ATTENTION_MASK_SUFFIX",
    "AUXILIARY_LOSS_TERMS",
    "ENCODERS",
    "FUSIONS",
    "TASKS",
    "MMBalanceConfig",
    "MMBalanceConfigError",
    "MMBalanceForClassification",
    "MMBalanceForRegression",
    "MMBalanceModel",
    "MMBalanceOutput",
    "MMBalancePreTrainedModel",
]

# Saved checkpoints carry these files and an `auto_map`, so they load with `trust_remote_code=True`
# where hf_mmbalance is not installed. A regression checkpoint maps the same Auto class to its own class.
MMBalanceConfig.register_for_auto_class()
MMBalanceModel.register_for_auto_class("AutoModel")
MMBalanceForClassification.register_for_auto_class("AutoModelForSequenceClassification")
MMBalanceForRegression.register_for_auto_class("AutoModelForSequenceClassification")
