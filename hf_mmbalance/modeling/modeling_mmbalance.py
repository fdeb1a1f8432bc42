"""Multimodal `PreTrainedModel`s: one encoder per modality, a fusion, a fused head and unimodal heads.

Only relative imports inside `modeling/`: `register_for_auto_class()` copies these files next to the
weights, and a process without `hf_mmbalance` loads the checkpoint with `trust_remote_code=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbone import BackboneInputError, freeze_backbone, pretrained_backbone_state
from .configuration_mmbalance import MMBalanceConfig, backbone_remote_code
from .encoders import build_encoder
from .fusion import build_fusion
from .recalibration import ModalityRecalibration

ATTENTION_MASK_SUFFIX = "_attention_mask"


@dataclass
class MMBalanceOutput(ModelOutput):
    """Output of the hf_mmbalance models.

    Args:
        loss: total loss (the `loss_terms` combined, see `MMBalanceConfig.loss_weights`), when labels are given.
        logits: fused prediction, `(batch, num_labels)` (`(batch, 1)` for regression).
        modality_logits: each modality's additive share of `logits`, W_m a_m + b_m (they sum to `logits`), by
            modality name; for `fusion="amw"`/`"afw"` they are s * cos(W^m_k, z_m) + b / M and sum to Z^{m-adapt}
            (`fused_features`, Ada2I Eq. 8), the input of the final MLP, not to `logits`.
        modality_cosine_logits: the shares with cosines, cos(W_{m,k}, a_m) + b_{m,k} (Ada2I Eq. 16), by modality name.
        unimodal_logits: the unimodal heads' predictions, by modality name (empty without unimodal heads).
        features: each modality's encoder feature z_m, `(batch, feature_size_m)`, by modality name.
        fused_features: the input of the fused head (Z^{m-adapt} for `fusion="amw"`/`"afw"`).
        projected_fused_features: F*_m, the fused features in the common space (with `common_space_size`, SUGRM).
        projected_features: F*_s, each modality's feature in the common space (with `common_space_size`).
        loss_terms: each unweighted loss term (`fused`, one per unimodal head, and the fusion's Ada2I terms
            `modal` = task loss on Z^{m-adapt}, Eq. 13, and `feature` = L_feature, Eq. 12), detached from
            nothing: methods that reweight terms (ULGM) read them here.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    modality_logits: dict[str, torch.Tensor] | None = None
    modality_cosine_logits: dict[str, torch.Tensor] | None = None
    unimodal_logits: dict[str, torch.Tensor] | None = None
    features: dict[str, torch.Tensor] | None = None
    fused_features: torch.Tensor | None = None
    projected_fused_features: torch.Tensor | None = None
    projected_features: dict[str, torch.Tensor] | None = None
    loss_terms: dict[str, torch.Tensor] | None = None


class MMBalancePreTrainedModel(PreTrainedModel):
    config_class = MMBalanceConfig
    base_model_prefix = "mmbalance"
    main_input_name = "labels"
    # forward takes the modalities as **kwargs; without this flag Trainer would assume the model already
    # normalizes the loss for gradient accumulation (HF_NOTES.md, "Loss trap").
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own default initialization, not transformers' N(0, 0.02): the small MLP encoders the
        # papers use are trained from torch defaults.
        if isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
        elif hasattr(module, "reset_parameters") and not isinstance(module, PreTrainedModel):
            module.reset_parameters()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; the `auto_map` also names `AutoModel` (the base `MMBalanceModel`, which
        holds the same weights), so `AutoModel.from_pretrained(path, trust_remote_code=True)` loads the checkpoint
        where hf_mmbalance is not installed, as it does where it is."""
        if getattr(self, "_auto_class", None) is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", "modeling_mmbalance.MMBalanceModel")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, trust_remote_code: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`; `trust_remote_code=True` (the caller's, never a file's) also lets the
        checkpoint's backbones build from their own code."""
        with backbone_remote_code(trust_remote_code):
            return super().from_pretrained(pretrained_model_name_or_path, *args, trust_remote_code=trust_remote_code, **kwargs)

    def load_backbone_weights(self, modalities: list[str] | None = None, trust_remote_code: bool = False) -> None:
        """Load the pretrained weights of every `encoder="auto"` modality (or of `modalities`) from its `backbone`
        name or path: the whole model, the encoder of an encoder-decoder (Whisper), or the `tower` of a multi-tower
        model (CLIP's vision or text tower). `trust_remote_code`: let a backbone that needs its own code load it.

        Kept out of `__init__` because `from_pretrained` builds the model on the meta device and then
        loads the hf_mmbalance checkpoint, which already holds the (fine-tuned) backbone weights.
        """
        from transformers import AutoModel

        names = [name for name, s in self.config.modalities.items() if s["encoder"] == "auto"] if modalities is None else modalities
        for name in names:
            settings = self.config.modalities[name]
            if settings["encoder"] != "auto" or not settings.get("backbone"):
                raise ValueError(f"modality {name!r} has no `backbone` to load pretrained weights from")
            pretrained = AutoModel.from_pretrained(settings["backbone"], trust_remote_code=trust_remote_code)
            backbone = self.encoders[name].backbone
            backbone.load_state_dict(pretrained_backbone_state(pretrained, backbone, settings.get("tower")))

    def get_input_embeddings(self):
        """None: one encoder per modality, no single token embedding (accelerate's FSDP2 preparation asks for it)."""
        return None

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return any(backbone.supports_gradient_checkpointing for backbone in self._backbones())

    def _backbones(self) -> list[nn.Module]:
        return [encoder.backbone for encoder in self.encoders.values() if hasattr(encoder, "backbone")]

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Activation checkpointing inside every backbone that supports it (what `TrainingArguments(
        activation_checkpointing=True)` calls); the small heads and fusions are cheap to keep."""
        supported = [backbone for backbone in self._backbones() if backbone.supports_gradient_checkpointing]
        if not supported:
            raise ValueError("activation checkpointing needs at least one encoder='auto' backbone that supports it")
        for backbone in supported:
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers, offload)

    def activation_checkpointing_disable(self) -> None:
        for backbone in self._backbones():
            if backbone.supports_gradient_checkpointing:
                backbone.activation_checkpointing_disable()

    def apply_training_controls(self) -> None:
        """Each modality's `freeze` and `gradient_checkpointing` settings (called by `__init__`; call it again after
        `load_backbone_weights` only if you changed the settings)."""
        for name, settings in self.config.modalities.items():
            encoder = self.encoders[name]
            if settings["freeze"] is True:
                for parameter in encoder.parameters():
                    parameter.requires_grad_(False)
            elif settings["freeze"]:
                freeze_backbone(encoder.backbone, settings["freeze"])
            if settings.get("gradient_checkpointing"):
                if not encoder.backbone.supports_gradient_checkpointing:
                    raise BackboneInputError(
                        f"modalities[{name!r}].gradient_checkpointing: a {type(encoder.backbone).__name__} does not "
                        "support gradient checkpointing"
                    )
                encoder.backbone.activation_checkpointing_enable()


class MMBalanceModel(MMBalancePreTrainedModel):
    """Encoders + fusion + heads, with the task-specific loss left to the subclasses."""

    def __init__(self, config: MMBalanceConfig):
        super().__init__(config)
        if not config.modalities:
            raise ValueError("MMBalanceConfig.modalities is empty: declare at least one modality")
        self.modality_names = list(config.modalities)
        self.encoders = nn.ModuleDict(
            {name: build_encoder(s, config.trust_remote_code) for name, s in config.modalities.items()}
        )
        feature_sizes = {name: encoder.feature_size for name, encoder in self.encoders.items()}
        self.fusion = build_fusion(
            config.fusion,
            feature_sizes,
            config.num_labels,
            config.fusion_hidden_size,
            afw_rank=config.afw_rank,
            afw_beta=config.afw_beta,
            amw_scale=config.amw_scale,
        )
        self.recalibration = (
            ModalityRecalibration({n: s["input_size"] for n, s in config.modalities.items()}, config.mrm_reduction)
            if config.fusion == "mrm"
            else None
        )
        head_sizes = dict(feature_sizes)
        self.common_projections = self.fused_head = None
        if config.common_space_size:
            # SUGRM §3.2.1-3.2.2: F*_m = ReLU(W_1^m [fused] + b), F*_s = ReLU(W_1^s F_s + b); heads act on them.
            size = config.common_space_size
            self.common_projections = nn.ModuleDict(
                {"fused": nn.Linear(self.fusion.fused_size, size), **{name: nn.Linear(d, size) for name, d in feature_sizes.items()}}
            )
            self.fused_head = nn.Linear(size, config.num_labels)
            head_sizes = {name: size for name in feature_sizes}
        self.unimodal_heads = nn.ModuleDict(
            {name: nn.Linear(size, config.num_labels) for name, size in head_sizes.items()}
            if config.unimodal_heads
            else {}
        )
        self._routes = self._input_routes()
        self.post_init()
        self.apply_training_controls()

    @property
    def input_names(self) -> list[str]:
        """Every batch key the model reads: each modality's main input `m` and its extra inputs `m_<name>`."""
        return [*self.modality_names, *self._routes]

    def _input_routes(self) -> dict[str, tuple[str, str]]:
        """Batch key -> (modality, encoder keyword): `m_<name>` for every extra input encoder m takes."""
        routes: dict[str, tuple[str, str]] = {}
        for name, encoder in self.encoders.items():
            for extra in encoder.extra_inputs:
                key = f"{name}_{extra}"
                if key in self.modality_names or key in routes:
                    raise ValueError(f"batch key {key!r} would feed two inputs; rename modality {name!r}")
                routes[key] = (name, extra)
        return routes

    def _split_inputs(self, inputs: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """(main input by modality, extra keyword inputs by modality) from the namespaced batch keys."""
        unknown = sorted(key for key in inputs if key not in self._routes and key not in self.encoders)
        if unknown:
            accepted = sorted([*self.modality_names, *self._routes])
            raise ValueError(
                f"unexpected model inputs {unknown}; this model takes the modalities' main inputs and their extra "
                f"inputs {accepted}, plus 'labels' and 'sample_idx'"
            )
        missing = [name for name in self.modality_names if inputs.get(name) is None]
        if missing:
            raise ValueError(f"missing modality inputs {missing}; this model takes {self.modality_names}")
        values = {name: inputs[name] for name in self.modality_names}
        extras: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.modality_names}
        for key, (name, argument) in self._routes.items():
            if inputs.get(key) is not None:
                extras[name][argument] = inputs[key]
        for name, value in values.items():
            self._check_input_shape(name, value)
            self._check_mask_length(name, value, extras[name].get("attention_mask"))
        return values, extras

    def _check_mask_length(self, name: str, value: torch.Tensor, mask: torch.Tensor | None) -> None:
        """A mask over a sequence must cover it position for position (the built-in transformer's sequences, token ids
        and waveforms); other backbones' masks follow their own layout and are left to them."""
        if mask is None:
            return
        encoder = self.config.modalities[name]["encoder"]
        sequence = encoder == "transformer" or (encoder == "auto" and value.ndim == 2)
        if sequence and tuple(mask.shape) != tuple(value.shape[:2]):
            raise ValueError(
                f"modality {name!r}: {name}_attention_mask has shape {tuple(mask.shape)}, expected {tuple(value.shape[:2])} "
                f"(batch, length) to match the input {tuple(value.shape)}"
            )

    def _check_input_shape(self, name: str, value: torch.Tensor) -> None:
        settings = self.config.modalities[name]
        if settings["encoder"] == "auto":
            self.encoders[name].check_input(name, value)
            return
        expected_ndim = 2 if settings["encoder"] == "mlp" else 3
        layout = "(batch, features)" if expected_ndim == 2 else "(batch, length, features)"
        size = settings["input_size"]
        if value.ndim != expected_ndim or value.shape[-1] != size:
            raise ValueError(
                f"modality {name!r}: expected a tensor of shape {layout} with features={size}, got {tuple(value.shape)}"
            )

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality features z_m."""
        values, extras = self._split_inputs(inputs)
        dtype = self.dtype
        if self.recalibration is not None:
            masks = {name: extras[name].get("attention_mask") for name in values}
            values = self.recalibration({n: v.to(dtype) for n, v in values.items()}, masks)
        return {
            name: self.encoders[name](value.to(dtype) if value.is_floating_point() else value, **extras[name])
            for name, value in values.items()
        }

    def forward(
        self,
        labels: torch.Tensor | None = None,
        sample_idx: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **modality_inputs: torch.Tensor,
    ) -> MMBalanceOutput:
        """Args: one tensor per modality (by name), optional `<name>_attention_mask`, `labels`;
        `sample_idx` is accepted and ignored (the balancing methods read it from the batch)."""
        features = self.encode(modality_inputs)
        fusion = self.fusion(features)
        projected_fused = projected = None
        head_inputs = features
        if self.common_projections is not None:
            projected_fused = torch.relu(self.common_projections["fused"](fusion.fused_features))
            projected = {name: torch.relu(self.common_projections[name](features[name])) for name in features}
            # The fusion's own head is bypassed, so its shares no longer split the logits: none are reported.
            fusion.logits = self.fused_head(projected_fused)
            fusion.modality_logits = fusion.modality_cosine_logits = None
            head_inputs = projected
        unimodal = {name: head(head_inputs[name]) for name, head in self.unimodal_heads.items()}
        loss = loss_terms = None
        if labels is not None:
            loss_terms = {"fused": self.task_loss(fusion.logits, labels)}
            loss_terms.update({name: self.task_loss(logits, labels) for name, logits in unimodal.items()})
            if fusion.auxiliary_logits is not None:
                loss_terms["modal"] = self.task_loss(fusion.auxiliary_logits, labels)
            loss_terms.update(fusion.auxiliary_losses)
            loss = self.combine_losses(loss_terms)
        return MMBalanceOutput(
            loss=loss,
            logits=fusion.logits,
            modality_logits=fusion.modality_logits,
            modality_cosine_logits=fusion.modality_cosine_logits,
            unimodal_logits=unimodal,
            features=features,
            fused_features=fusion.fused_features,
            projected_fused_features=projected_fused,
            projected_features=projected,
            loss_terms=loss_terms,
        )

    def combine_losses(self, loss_terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the loss terms (missing weights are 1); without `loss_weights`, the mean of the
        prediction terms (fused and unimodal, BMMAL Eq. 1) plus the fusion's auxiliary terms `modal` and
        `feature` with weight 1 (Ada2I Eq. 14: L_cls + L_modal + L_feature)."""
        weights = self.config.loss_weights
        if weights is not None:
            return sum(float(weights.get(name, 1.0)) * term for name, term in loss_terms.items())
        auxiliary = self.config.auxiliary_loss_terms
        prediction = [term for name, term in loss_terms.items() if name not in auxiliary]
        return torch.stack(prediction).mean() + sum(term for name, term in loss_terms.items() if name in auxiliary)

    def task_loss(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} has no task loss; use MMBalanceForClassification or MMBalanceForRegression")


class MMBalanceForClassification(MMBalanceModel):
    """Multimodal classifier; loss = mean (or `loss_weights`-weighted sum) of fused and unimodal CE terms, plus
    Ada2I's L_modal and L_feature with `fusion="amw"`/`"afw"`."""

    def __init__(self, config: MMBalanceConfig):
        if config.task != "classification":
            raise ValueError(f"MMBalanceForClassification needs task='classification', got task={config.task!r}")
        super().__init__(config)

    # Set by `MultimodalTrainer` from `TrainingArguments.label_smoothing_factor` (Trainer's own label smoother never
    # runs, the model computes its loss): every cross-entropy term, fused, unimodal and Ada2I's L_modal, is smoothed.
    label_smoothing: float = 0.0

    def task_loss(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            raise ValueError(f"labels must be integer class ids for classification, got dtype {labels.dtype}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.config.num_labels:
            raise ValueError(f"labels must lie in [0, {self.config.num_labels}), got values in [{low}, {high}]")
        return F.cross_entropy(predictions, labels, label_smoothing=self.label_smoothing)


class MMBalanceForRegression(MMBalanceModel):
    """Multimodal regressor (one output); loss = L1 (SUGRM) or MSE of fused and unimodal predictions."""

    def __init__(self, config: MMBalanceConfig):
        if config.task != "regression":
            raise ValueError(f"MMBalanceForRegression needs task='regression', got task={config.task!r}")
        super().__init__(config)

    def task_loss(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = labels.to(predictions.dtype).reshape(predictions.shape)
        if self.config.regression_loss == "l1":
            return F.l1_loss(predictions, target)
        return F.mse_loss(predictions, target)


__all__ = [
    "MMBalanceOutput",
    "MMBalancePreTrainedModel",
    "MMBalanceModel",
    "MMBalanceForClassification",
    "MMBalanceForRegression",
]
