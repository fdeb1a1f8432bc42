"""Configuration of the hf_mmbalance multimodal models.

This module imports only `transformers` and the standard library: it is copied next to the weights by
`register_for_auto_class()` so that a checkpoint loads with `trust_remote_code=True` in a process that
never imported `hf_mmbalance`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import os
from typing import Any

from transformers import PreTrainedConfig

TASKS = ("classification", "regression")
FUSIONS = ("concat", "sum", "gated", "amw", "afw", "mrm")
# Loss terms a fusion adds besides `fused` and the unimodal heads' terms: Ada2I's L_modal (Eq. 13) on Z^{m-adapt}
# and L_feature (Eq. 12). Without `loss_weights` each is added with weight 1 (Ada2I Eq. 14).
AUXILIARY_LOSS_TERMS: dict[str, tuple[str, ...]] = {"amw": ("modal",), "afw": ("modal", "feature")}
ENCODERS = ("mlp", "transformer", "auto")
REGRESSION_LOSSES = ("l1", "mse")

# Defaults of each encoder kind. A modality's settings are these, updated with what the user gives.
ENCODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_sizes": [64], "feature_size": 32, "dropout": 0.0, "activation": "relu"},
    "transformer": {
        "feature_size": 32,  # d_model of the encoder and size of the pooled feature
        "num_layers": 1,
        "num_heads": 2,
        "ffn_size": 64,
        "dropout": 0.0,
        "max_length": 512,
        "pooling": "mean",
    },
    # `backbone`: a model name or a local path; `backbone_config`: that model's config as a dict (or a config object),
    # filled in when the config is created so that a saved checkpoint rebuilds the backbone without reaching it again.
    # `tower`: one tower of a multi-tower config (CLIP `vision` / `text`); `frames`: the input is (batch, frames, ...)
    # of images for an image backbone, pooled over time with `temporal_pooling`.
    "auto": {
        "backbone": None,
        "backbone_config": None,
        "pooling": "auto",
        "feature_size": None,
        "tower": None,
        "frames": False,
        "temporal_pooling": "mean",
        "gradient_checkpointing": False,
    },
}
# Training controls every encoder kind takes: `freeze` (True = the whole encoder; an int N = an auto backbone's
# embeddings and first N layers) and `learning_rate` (this modality's optimizer parameter groups; None = the
# Trainer's learning rate).
TRAINING_DEFAULTS: dict[str, Any] = {"freeze": False, "learning_rate": None}
POOLINGS = ("auto", "pooler", "first", "cls", "mean")
TEMPORAL_POOLINGS = ("mean", "max")


class MMBalanceConfigError(ValueError):
    """A configuration field holds a value the models cannot use."""


# Whether a backbone's own code (its config's `auto_map`, a Hub repo's configuration / modelling files) may run. Only
# the caller's `trust_remote_code=True` sets it (`MMBalanceConfig(...)`, `from_pretrained(...)`); nothing read from a
# file can: `from_dict` drops every `trust_remote_code` a saved config holds.
_BACKBONE_REMOTE_CODE = contextvars.ContextVar("mmbalance_backbone_remote_code", default=False)


@contextlib.contextmanager
def backbone_remote_code(allowed: bool):
    """Within the block, configs and models built (and loaded) may run their backbones' remote code iff `allowed`."""
    token = _BACKBONE_REMOTE_CODE.set(bool(allowed))
    try:
        yield
    finally:
        _BACKBONE_REMOTE_CODE.reset(token)


def _shareable_location(location):
    """A Hub id stays as it is; a local folder becomes its name (no local path in a saved or pushed config)."""
    if isinstance(location, str) and location and (os.path.isabs(location) or os.path.exists(location)):
        return os.path.basename(os.path.normpath(location))
    return location


def _without_file_trust(config_dict: dict) -> dict:
    """A saved config with every `trust_remote_code` removed: a file never decides whether code runs."""
    cleaned = {key: value for key, value in config_dict.items() if key not in ("trust_remote_code", "_trust_remote_code")}
    modalities = cleaned.get("modalities")
    if isinstance(modalities, dict):
        cleaned["modalities"] = {
            name: {k: v for k, v in settings.items() if k != "trust_remote_code"} if isinstance(settings, dict) else settings
            for name, settings in modalities.items()
        }
    return cleaned


def _normalize_modality(name: str, settings: Any) -> dict[str, Any]:
    """Turn the user's modality entry (an int input size, or a dict) into a complete settings dict."""
    if isinstance(settings, bool) or not isinstance(settings, (int, dict)):
        raise MMBalanceConfigError(
            f"modalities[{name!r}] must be an input size (int) or a dict of encoder settings, got {settings!r}"
        )
    if isinstance(settings, int):
        settings = {"input_size": settings}
    settings = copy.deepcopy(dict(settings))
    if "trust_remote_code" in settings:
        raise MMBalanceConfigError(
            f"modalities[{name!r}].trust_remote_code: a modality's settings cannot allow remote code (a saved config "
            "could then run code by itself); pass trust_remote_code=True to MMBalanceConfig(...) or from_pretrained(...)"
        )
    encoder = settings.setdefault("encoder", "mlp")
    if encoder not in ENCODERS:
        raise MMBalanceConfigError(
            f"modalities[{name!r}].encoder={encoder!r} is unknown; expected one of {list(ENCODERS)}"
        )
    if hasattr(settings.get("backbone_config"), "to_dict"):
        settings["backbone_config"] = settings["backbone_config"].to_dict()
    merged = {**copy.deepcopy(TRAINING_DEFAULTS), **copy.deepcopy(ENCODER_DEFAULTS[encoder]), **settings}
    _check_training_controls(name, merged)
    if encoder == "auto":
        if not merged.get("backbone") and not merged.get("backbone_config"):
            raise MMBalanceConfigError(
                f"modalities[{name!r}] uses encoder='auto' and needs `backbone` (a model name or local path) "
                "or `backbone_config` (a transformers config or its dict)"
            )
        _check_backbone_fields(name, merged)
        merged.setdefault("input_size", None)
    else:
        _check_encoder_sizes(name, merged)
        size = merged.get("input_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise MMBalanceConfigError(
                f"modalities[{name!r}].input_size must be a positive int (the feature length), got {size!r}"
            )
        feature_size = merged["feature_size"]
        if isinstance(feature_size, bool) or not isinstance(feature_size, int) or feature_size < 1:
            raise MMBalanceConfigError(
                f"modalities[{name!r}].feature_size must be a positive int, got {feature_size!r}"
            )
    return merged


def _check_encoder_sizes(name: str, settings: dict[str, Any]) -> None:
    """Hidden sizes and dropout of the built-in encoders, refused here rather than by torch's own error."""
    hidden = settings.get("hidden_sizes", [])
    if not isinstance(hidden, (list, tuple)) or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise MMBalanceConfigError(f"modalities[{name!r}].hidden_sizes must be a list of positive ints, got {hidden!r}")
    dropout = settings.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise MMBalanceConfigError(f"modalities[{name!r}].dropout must be a number in [0, 1), got {dropout!r}")


# Batch keys the model and trainer read besides the modalities: a modality cannot be named like one of them.
RESERVED_NAMES = ("labels", "label", "label_ids", "sample_idx", "return_dict")


def _check_training_controls(name: str, settings: dict[str, Any]) -> None:
    freeze = settings["freeze"]
    if not isinstance(freeze, bool) and not (isinstance(freeze, int) and freeze >= 0):
        raise MMBalanceConfigError(
            f"modalities[{name!r}].freeze must be true/false or the number of first backbone layers to freeze, got {freeze!r}"
        )
    if not isinstance(freeze, bool) and freeze and settings["encoder"] != "auto":
        raise MMBalanceConfigError(
            f"modalities[{name!r}].freeze={freeze}: freezing the first N layers needs encoder='auto'; use freeze: true"
        )
    rate = settings["learning_rate"]
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf")):
        raise MMBalanceConfigError(f"modalities[{name!r}].learning_rate must be None or a positive number, got {rate!r}")


def _check_backbone_fields(name: str, settings: dict[str, Any]) -> None:
    if settings["pooling"] not in POOLINGS:
        raise MMBalanceConfigError(
            f"modalities[{name!r}].pooling={settings['pooling']!r} is unknown for encoder='auto'; expected one of {list(POOLINGS)}"
        )
    if settings["temporal_pooling"] not in TEMPORAL_POOLINGS:
        raise MMBalanceConfigError(
            f"modalities[{name!r}].temporal_pooling={settings['temporal_pooling']!r} is unknown; "
            f"expected one of {list(TEMPORAL_POOLINGS)}"
        )
    for field in ("frames", "gradient_checkpointing"):
        if not isinstance(settings[field], bool):
            raise MMBalanceConfigError(f"modalities[{name!r}].{field} must be true or false, got {settings[field]!r}")
    tower = settings["tower"]
    if tower is not None and not (isinstance(tower, str) and tower):
        raise MMBalanceConfigError(f"modalities[{name!r}].tower must be None or a tower name such as 'vision', got {tower!r}")
    backbone_config = settings.get("backbone_config")
    if backbone_config is not None and not (isinstance(backbone_config, dict) and backbone_config.get("model_type")):
        raise MMBalanceConfigError(
            f"modalities[{name!r}].backbone_config must be a transformers config or its to_dict() with a 'model_type'"
        )
    if tower is not None and backbone_config is not None and not isinstance(backbone_config.get(f"{tower}_config"), dict):
        raise MMBalanceConfigError(
            f"modalities[{name!r}].tower={tower!r}: the {backbone_config['model_type']!r} backbone_config has no "
            f"'{tower}_config'"
        )


class MMBalanceConfig(PreTrainedConfig):
    r"""Configuration of a multimodal model: one encoder per modality, a fusion, a fused head and
    optional unimodal heads.

    Args:
        modalities (`dict[str, int | dict]`):
            Ordered mapping modality name -> input size, or -> encoder settings
            (`{"input_size": 76, "encoder": "mlp", "hidden_sizes": [64], "feature_size": 32}`;
            `encoder="transformer"` for sequences `(batch, length, input_size)` with an optional
            `<name>_attention_mask`; `encoder="auto"` with `backbone=<name or local path>` for any
            `AutoModel`). The order is the order of the fused features.
            An `auto` modality `m` reads the backbone's main input (`pixel_values`, `input_values`, `input_features`,
            `input_ids`, ...) from the batch key `m` and its other inputs from `m_<name>` (`m_attention_mask`,
            `m_token_type_ids`, ...); its settings: `backbone` / `backbone_config`, `pooling` (auto | pooler |
            first | mean), `feature_size` (a projection; None = the backbone's width), `tower` (one tower of CLIP),
            `frames` + `temporal_pooling` (video frames through an image backbone), `gradient_checkpointing`.
            Every modality: `freeze` (true, or N first backbone layers) and `learning_rate` (its own optimizer groups).
        fusion (`str`): `concat`, `sum`, `gated`, `amw` (Ada2I Adaptive Modality Weighting, Eq. 8-9) or `afw`
            (Ada2I Adaptive Feature Weighting, Eq. 3-7, feeding AMW, as the paper). `amw` and `afw` are for
            classification only and add the loss terms `modal` (L_modal, Eq. 13) and, for `afw`, `feature`
            (L_feature, Eq. 12).
        task (`str`): `classification` or `regression`.
        num_labels (`int`): number of classes (1 output for regression).
        unimodal_heads (`bool`): add one prediction head per modality (needed by BSS prediction
            similarity, BMMAL Eq. 1, ULGM).
        loss_weights (`dict[str, float]`, *optional*): weight of the fused loss (key `fused`), of each
            unimodal head's loss (key = modality name) and of the Ada2I terms `modal` / `feature` when the fusion
            produces them (missing keys weigh 1). `None` = the mean of the fused and unimodal terms (BMMAL Eq. 1)
            plus the Ada2I terms with weight 1 (Ada2I Eq. 14).
        fusion_hidden_size (`int`, *optional*): size of the gated fusion's common space, or of the hidden layer
            of the AMW MLP (Ada2I Eq. 9) (default: the largest modality feature size).
        afw_rank (`int`): tensor-ring rank r of the AFW query/key cores (Ada2I Eq. 5); Theta^m is r x r.
        afw_beta (`float`): beta in [0, 1], the weight of the original feature in z^{f-adapt} (Ada2I Eq. 7).
        amw_scale (`float`): factor s > 0 on the AMW cosines (Ada2I Eq. 8; 1 = the equation as printed,
            larger values sharpen the softmax of L_modal as in MMCosine).
        regression_loss (`str`): `l1` (SUGRM) or `mse`.
        mrm_reduction (`int`): `fusion="mrm"` (SUGRM §3.2.1) recalibrates every modality's INPUT with a
            squeeze-and-excitation across modalities, then concatenates the encoder features; the joint
            bottleneck has sum_s d_s // mrm_reduction units.
        common_space_size (`int`, *optional*): d_c of the SUGRM layout (§3.2.1-3.2.2): the fused features and each
            modality's feature are projected into a common space, F*_m = ReLU(W [fused] + b) and
            F*_s = ReLU(W_s z_s + b_s), and the fused / unimodal heads act there (ULGM measures distances in it).
            `None`: the heads act on the fusion's output and the features directly.
    """

    model_type = "mmbalance"
    # Everything but the fused logits stays out of `Trainer.prediction_step` outputs; `MultimodalTrainer`
    # collects the unimodal logits itself.
    keys_to_ignore_at_inference = [
        "modality_logits",
        "modality_cosine_logits",
        "unimodal_logits",
        "features",
        "fused_features",
        "projected_fused_features",
        "projected_features",
        "loss_terms",
    ]

    modalities: dict | None = None
    fusion: str = "concat"
    task: str = "classification"
    unimodal_heads: bool = True
    loss_weights: dict | None = None
    fusion_hidden_size: int | None = None
    afw_rank: int = 4
    afw_beta: float = 0.5
    amw_scale: float = 1.0
    regression_loss: str = "l1"
    mrm_reduction: int = 4
    common_space_size: int | None = None
    # JSON configs are written with sorted keys, which would lose the order of `modalities`; the order
    # is saved here too and restored on load.
    modality_order: list | None = None

    def __post_init__(self, **kwargs):
        # The caller's own switch (never serialized, see `_remove_keys_not_serialized`); `from_dict` removes any from a file.
        self._trust_remote_code = bool(kwargs.pop("trust_remote_code", False)) or _BACKBONE_REMOTE_CODE.get()
        if self.task == "regression" and "num_labels" not in kwargs and self.id2label is None:
            kwargs["num_labels"] = 1
        super().__post_init__(**kwargs)
        self.modalities = self._checked_modalities(self.modalities)
        self._restore_modality_order()
        if self.fusion not in FUSIONS:
            raise MMBalanceConfigError(f"fusion={self.fusion!r} is unknown; expected one of {list(FUSIONS)}")
        if self.task not in TASKS:
            raise MMBalanceConfigError(f"task={self.task!r} is unknown; expected one of {list(TASKS)}")
        if self.task == "regression" and self.fusion in AUXILIARY_LOSS_TERMS:
            raise MMBalanceConfigError(
                f"fusion={self.fusion!r} (Ada2I) is for classification only: its L_modal (Eq. 13) is a cross-entropy "
                "over classes; use fusion='concat', 'sum' or 'gated' for regression"
            )
        self._check_ada2i_fields()
        self._check_sugrm_fields()
        terms = ["fused", *self.auxiliary_loss_terms]
        reserved = [name for name in self.modalities if name in terms]
        if reserved:
            raise MMBalanceConfigError(
                f"modalities {reserved} are named like this model's loss terms {terms} (loss_terms keys); rename them"
            )
        if self.regression_loss not in REGRESSION_LOSSES:
            raise MMBalanceConfigError(
                f"regression_loss={self.regression_loss!r} is unknown; expected one of {list(REGRESSION_LOSSES)}"
            )
        if self.task == "classification" and self.num_labels < 2:
            raise MMBalanceConfigError(f"num_labels must be >= 2 for classification, got {self.num_labels}")
        if self.loss_weights is not None:
            self._check_loss_weights()
        self._fill_backbone_configs()

    @staticmethod
    def _checked_modalities(modalities: Any) -> dict[str, dict[str, Any]]:
        if modalities is None:
            # An empty config is what `from_pretrained` builds before applying the saved values.
            return {}
        if not isinstance(modalities, dict):
            raise MMBalanceConfigError(f"modalities must be a mapping name -> settings, got {type(modalities).__name__}")
        reserved = [name for name in modalities if name in RESERVED_NAMES]
        if reserved:
            raise MMBalanceConfigError(
                f"modalities {reserved} are named like batch keys the model reads ({list(RESERVED_NAMES)}); rename them"
            )
        clashes = [a for a in modalities for b in modalities if a == f"{b}_attention_mask"]
        if clashes:
            raise MMBalanceConfigError(
                f"modalities {clashes} are named like another modality's attention mask key (<modality>_attention_mask)"
            )
        return {str(name): _normalize_modality(str(name), settings) for name, settings in modalities.items()}

    def _restore_modality_order(self) -> None:
        if self.modality_order is not None:
            if sorted(self.modality_order) != sorted(self.modalities):
                raise MMBalanceConfigError(
                    f"modality_order {self.modality_order} does not list the modalities {list(self.modalities)}"
                )
            self.modalities = {name: self.modalities[name] for name in self.modality_order}
        self.modality_order = list(self.modalities)

    def _check_ada2i_fields(self) -> None:
        rank = self.afw_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise MMBalanceConfigError(f"afw_rank must be a positive int (the tensor-ring rank), got {rank!r}")
        beta = self.afw_beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise MMBalanceConfigError(f"afw_beta must be a number in [0, 1] (Ada2I Eq. 7), got {beta!r}")
        scale = self.amw_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise MMBalanceConfigError(f"amw_scale must be a positive finite number, got {scale!r}")

    def _check_sugrm_fields(self) -> None:
        reduction = self.mrm_reduction
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise MMBalanceConfigError(f"mrm_reduction must be a positive int, got {reduction!r}")
        size = self.common_space_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise MMBalanceConfigError(f"common_space_size must be None or a positive int (d_c), got {size!r}")
        if self.fusion == "mrm":
            backbones = [name for name, settings in self.modalities.items() if settings["encoder"] == "auto"]
            if backbones:
                raise MMBalanceConfigError(
                    f"fusion='mrm' recalibrates feature inputs of a known size; modalities {backbones} use encoder='auto'"
                )

    def _check_loss_weights(self) -> None:
        # A modality may itself be named `modal` or `feature` (then the key weights its unimodal head).
        produced = {*self.auxiliary_loss_terms, *self.modalities}
        absent = sorted(key for key in ("feature", "modal") if key in self.loss_weights and key not in produced)
        if absent:
            raise MMBalanceConfigError(
                f"loss_weights has keys {absent}, but fusion={self.fusion!r} has no such loss term: 'modal' (L_modal) "
                "comes with fusion='amw' or 'afw', 'feature' (L_feature) with fusion='afw'"
            )
        allowed = ["fused", *self.modalities, *self.auxiliary_loss_terms]
        unknown = sorted(set(self.loss_weights) - set(allowed))
        if unknown:
            raise MMBalanceConfigError(
                f"loss_weights has unknown keys {unknown}; expected keys among {allowed} "
                "('fused', the modality names and the fusion's own loss terms)"
            )
        for key, value in self.loss_weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
                raise MMBalanceConfigError(f"loss_weights[{key!r}] must be a finite non-negative number, got {value!r}")

    def _fill_backbone_configs(self) -> None:
        for name, settings in self.modalities.items():
            if settings["encoder"] == "auto" and settings.get("backbone_config") is None:
                from transformers import AutoConfig

                try:
                    backbone = AutoConfig.from_pretrained(settings["backbone"], trust_remote_code=self._trust_remote_code)
                except ValueError as error:  # e.g. a backbone whose config needs its own code, not allowed here
                    raise MMBalanceConfigError(f"modalities[{name!r}].backbone={settings['backbone']!r}: {error}") from None
                settings["backbone_config"] = backbone.to_dict()

    @property
    def trust_remote_code(self) -> bool:
        """Whether this config's backbones may run their own code: the caller's `trust_remote_code=True` only."""
        return self._trust_remote_code

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        return super().from_dict(_without_file_trust(config_dict), **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, trust_remote_code: bool = False, **kwargs):
        with backbone_remote_code(trust_remote_code):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _remove_keys_not_serialized(self, d: dict) -> None:
        super()._remove_keys_not_serialized(d)
        d.pop("_trust_remote_code", None)

    def to_dict(self) -> dict[str, Any]:
        """The saved form: a backbone given as a local folder is stored by its folder name, never the local path (the
        checkpoint holds the backbone's weights and config; `load_backbone_weights` needs the original location)."""
        output = super().to_dict()
        for settings in output.get("modalities", {}).values():
            if "backbone" in settings:
                settings["backbone"] = _shareable_location(settings["backbone"])
            if isinstance(settings.get("backbone_config"), dict):
                backbone_config = settings["backbone_config"]
                backbone_config["_name_or_path"] = _shareable_location(backbone_config.get("_name_or_path"))
        return output

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def auxiliary_loss_terms(self) -> tuple[str, ...]:
        """Names of the loss terms the fusion adds (`modal`, `feature`): weight 1 each without `loss_weights`."""
        return AUXILIARY_LOSS_TERMS.get(self.fusion, ())


__all__ = ["MMBalanceConfig", "MMBalanceConfigError", "TASKS", "FUSIONS", "ENCODERS", "AUXILIARY_LOSS_TERMS"]
