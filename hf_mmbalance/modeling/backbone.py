"""`encoder="auto"`: any `transformers` backbone as one modality's encoder.

Only `torch`, `transformers` and relative imports: shipped next to the weights with the other modeling files.

Input routing (the naming scheme every layer of hf_mmbalance uses): for modality `m`, the batch key `m` holds the
backbone's MAIN input (`backbone.main_input_name`: `pixel_values` for ViT / ResNet / ConvNeXt / CLIP vision,
`input_values` for wav2vec2 / HuBERT / AST, `input_features` for the Whisper encoder, `input_ids` for BERT-likes and
CLIP text), and `m_<name>` holds the backbone's other keyword input `<name>` (`m_attention_mask`,
`m_token_type_ids`, `m_pixel_mask`, ...). The keys are namespaced because several backbones share input names.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .configuration_mmbalance import POOLINGS, TEMPORAL_POOLINGS

# Forward arguments that are switches of the backbone's output, not inputs a batch provides.
_NOT_INPUTS = {
    "self",
    "kwargs",
    "args",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "use_cache",
    "labels",
    "inputs_embeds",
    "past_key_values",
    "cache_position",
    "interpolate_pos_encoding",
    "bool_masked_pos",
    "mask_time_indices",
    "return_loss",
    "encoder_hidden_states",
    "encoder_attention_mask",
    "cache",
    "head_mask",
    "decoder_input_ids",
    "decoder_attention_mask",
}
# Where configs keep the width of the features they output, in the order they are looked up: CNNs list one size per
# stage (the last is the output), transformers name one width, encoder-decoders call it d_model.
_FEATURE_SIZE_FIELDS = ("hidden_sizes", "hidden_size", "d_model", "embed_dim", "dim")


class BackboneInputError(ValueError):
    """A backbone cannot take what the batch provides (wrong input key, shape or dtype); the message names it."""


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence of the positions whose mask is 1 (all positions when no mask)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def backbone_feature_size(config) -> int:
    """Width of the backbone's output features, whatever its config calls it (`hidden_sizes[-1]` for ResNet /
    ConvNeXt, `hidden_size` for ViT / BERT / wav2vec2 / AST / CLIP towers, `d_model` for Whisper). `config`: a
    config object or its dict."""
    for field in _FEATURE_SIZE_FIELDS:
        value = config.get(field) if isinstance(config, dict) else getattr(config, field, None)
        if isinstance(value, (list, tuple)) and value:
            value = value[-1]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise BackboneInputError(
        f"cannot tell the feature size of a {config.get('model_type') if isinstance(config, dict) else config.model_type!r} backbone: its config has none of "
        f"{list(_FEATURE_SIZE_FIELDS)}; set the modality's `feature_size` and a backbone whose config names its width"
    )


def build_backbone_config(backbone_config: dict[str, Any], tower: str | None):
    """The backbone's config object from its saved dict; `tower` picks one tower of a multi-tower config
    (`vision` / `text` of CLIP: each tower is its own modality)."""
    from transformers import AutoConfig

    config_dict = dict(backbone_config)
    model_type = config_dict.pop("model_type", None)
    if not model_type:
        raise BackboneInputError("backbone_config has no 'model_type'; pass a transformers config or its to_dict()")
    config = AutoConfig.for_model(model_type, **config_dict)
    if tower is None:
        return config
    sub_config = getattr(config, f"{tower}_config", None)
    if sub_config is None:
        towers = [key[: -len("_config")] for key, value in config.to_dict().items() if key.endswith("_config") and isinstance(value, dict)]
        raise BackboneInputError(f"tower={tower!r}: a {model_type!r} backbone has no '{tower}_config' (towers: {towers})")
    return sub_config


def build_backbone_module(config, trust_remote_code: bool) -> nn.Module:
    """`AutoModel.from_config` (random weights); the encoder alone of an encoder-decoder (the Whisper encoder)."""
    from transformers import AutoModel

    model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


def backbone_extra_inputs(backbone: nn.Module) -> tuple[str, ...]:
    """The keyword inputs of the backbone's `forward` besides its main input (e.g. `attention_mask`)."""
    parameters = inspect.signature(backbone.forward).parameters
    main = backbone.main_input_name
    return tuple(
        name
        for name, parameter in parameters.items()
        if name != main and name not in _NOT_INPUTS and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    )


def layer_list(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's stack of layers (transformer blocks or CNN stages): its `nn.ModuleList` with the most
    parameters (for wav2vec2 the transformer layers, not the convolutional feature extractor's)."""
    lists = [module for module in backbone.modules() if isinstance(module, nn.ModuleList) and len(module) > 0]
    if not lists:
        raise BackboneInputError(f"a {type(backbone).__name__} has no layer list to freeze the first layers of")
    return max(lists, key=lambda module: sum(p.numel() for p in module.parameters()))


def freeze_backbone(backbone: nn.Module, freeze: bool | int) -> None:
    """`True`: no backbone parameter trains. `N` (int): the parameters registered before the N-th layer of
    `layer_list` (embeddings, feature extractor, layers 0..N-1) do not train; later layers, the final norm and the
    pooler do."""
    if freeze is True:
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        return
    if freeze is False or freeze == 0:
        return
    layers = layer_list(backbone)
    if freeze > len(layers):
        raise BackboneInputError(f"freeze={freeze}: the backbone has only {len(layers)} layers")
    to_freeze = {id(p) for layer in layers[:freeze] for p in layer.parameters()}
    for parameter in backbone.parameters():  # registration order = input to output in transformers models
        if not to_freeze:
            return  # past the last frozen layer
        to_freeze.discard(id(parameter))
        parameter.requires_grad_(False)


def _main_input_rank(main_input: str, config) -> tuple[int, bool] | None:
    """(ndim per sample, floating) of a known main input; None when the backbone's own checks must decide."""
    model_type = config.model_type
    if main_input == "pixel_values":
        return (4, True) if is_video_backbone(config) else (3, True)  # (T, C, H, W) or (C, H, W)
    if main_input == "input_ids":
        return 1, False
    if main_input == "input_features":
        return 2, True  # (mel bins, frames) for Whisper
    if main_input == "input_values":
        return (2, True) if model_type == "audio-spectrogram-transformer" else (1, True)  # AST: (frames, mel bins)
    return None


def is_video_backbone(config) -> bool:
    """Video backbones (VideoMAE, ViViT, TimeSformer) take `(batch, frames, C, H, W)` as their own `pixel_values` and
    say how many frames they expect."""
    return isinstance(getattr(config, "num_frames", None), int)


class AutoBackboneEncoder(nn.Module):
    """Any `transformers` backbone, rebuilt from its saved config, pooled to one vector per sample.

    The backbone is built with `AutoModel.from_config` (random weights) so that `from_pretrained` of an hf_mmbalance
    checkpoint never reaches the backbone's original location; pretrained backbone weights are loaded explicitly by
    `MMBalancePreTrainedModel.load_backbone_weights()`.

    Pooling (`pooling`): `auto` = the backbone's `pooler_output` where it has one (BERT, ViT, ResNet, ConvNeXt, AST,
    CLIP towers), else the masked mean over the sequence (wav2vec2, Whisper; the mask brought to the feature frames
    with the backbone's own `_get_feature_vector_attention_mask`) or the global average of a CNN map; `pooler`,
    `first` (alias `cls`: the first position) and `mean` force one of them.
    Video (`frames=True`): the input is `(batch, frames, ...)`; every frame goes through the backbone as one image and
    the pooled frame features are pooled over time (`temporal_pooling`: mean, as the released OGM-GE visual stream's
    average pooling over time, or max). A video backbone (VideoMAE) takes `(batch, frames, C, H, W)` as its own main
    input instead, with `frames=False`.
    An optional linear projection maps the backbone's width to `feature_size`.
    """

    def __init__(
        self,
        backbone_config: dict[str, Any],
        pooling: str = "auto",
        feature_size: int | None = None,
        trust_remote_code: bool = False,
        tower: str | None = None,
        frames: bool = False,
        temporal_pooling: str = "mean",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise BackboneInputError(f"pooling={pooling!r} is unknown for an auto backbone; expected one of {list(POOLINGS)}")
        if temporal_pooling not in TEMPORAL_POOLINGS:
            raise BackboneInputError(f"temporal_pooling={temporal_pooling!r} is unknown; expected one of {list(TEMPORAL_POOLINGS)}")
        config = build_backbone_config(backbone_config, tower)
        self.backbone = build_backbone_module(config, trust_remote_code)
        hidden_size = backbone_feature_size(config)
        self.projection = nn.Linear(hidden_size, feature_size) if feature_size else nn.Identity()
        self.feature_size = feature_size or hidden_size
        self.pooling = "first" if pooling == "cls" else pooling
        self.frames = bool(frames)
        self.temporal_pooling = temporal_pooling
        self.main_input_name = self.backbone.main_input_name
        self.extra_inputs = backbone_extra_inputs(self.backbone)
        self._input_rank = _main_input_rank(self.main_input_name, config)
        self._channel_axis = 1 + int(self.frames or is_video_backbone(config))
        # A 1-channel image backbone also takes 2-D maps (H, W): a log-mel spectrogram `(frames, mel bins)` from a
        # feature extractor goes through a ResNet as the papers' audio stream does, gaining the channel axis here.
        self.num_channels = getattr(config, "num_channels", None) if self.main_input_name == "pixel_values" else None
        self.adds_channel = self.num_channels == 1 and not is_video_backbone(config)

    @property
    def per_sample_input(self) -> tuple[tuple[int, ...], bool] | None:
        """(accepted dims per sample, floating) of the main input (frames included); None = unknown."""
        if self._input_rank is None:
            return None
        rank, floating = self._input_rank
        rank += int(self.frames)
        return ((rank - 1, rank) if self.adds_channel else (rank,)), floating

    def check_input(self, modality: str, value: torch.Tensor) -> None:
        """Raise `BackboneInputError` naming the modality when `value` cannot be the backbone's main input."""
        if self.per_sample_input is None:
            return
        ranks, floating = self.per_sample_input
        ranks = tuple(rank + 1 for rank in ranks)  # batch first
        layout = f"(batch, {'frames, ' if self.frames else ''}...) with {' or '.join(map(str, ranks))} dims"
        if value.ndim not in ranks:
            raise BackboneInputError(
                f"modality {modality!r}: the backbone's {self.main_input_name} must be a tensor {layout}, "
                f"got shape {tuple(value.shape)}; process the raw column with the modality's processor"
            )
        channel_axis = self._channel_axis
        if self.num_channels and value.ndim == max(ranks) and value.shape[channel_axis] != self.num_channels:
            raise BackboneInputError(
                f"modality {modality!r}: the backbone takes {self.num_channels}-channel images, got "
                f"{value.shape[channel_axis]} channels (shape {tuple(value.shape)}); give the image processor "
                f"{self.num_channels} values of image_mean / image_std"
            )
        if value.is_floating_point() != floating:
            kind = "floating-point" if floating else "integer token ids"
            raise BackboneInputError(
                f"modality {modality!r}: the backbone's {self.main_input_name} must be {kind}, got dtype {value.dtype}"
            )

    def forward(self, inputs: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        if not self.frames:
            return self.projection(self._pooled(inputs, extras))
        batch, num_frames = inputs.shape[:2]
        flat_extras = {
            name: value.flatten(0, 1) if value.ndim >= 2 and value.shape[:2] == (batch, num_frames) else value
            for name, value in extras.items()
        }
        per_frame = self._pooled(inputs.flatten(0, 1), flat_extras).view(batch, num_frames, -1)
        pooled = per_frame.mean(dim=1) if self.temporal_pooling == "mean" else per_frame.amax(dim=1)
        return self.projection(pooled)

    def _pooled(self, inputs: torch.Tensor, extras: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.adds_channel and inputs.ndim == 3:
            inputs = inputs.unsqueeze(1)  # (batch, H, W) -> (batch, 1, H, W)
        outputs = self.backbone(**{self.main_input_name: inputs}, **extras)
        pooler = getattr(outputs, "pooler_output", None)
        if self.pooling in ("auto", "pooler") and pooler is not None:
            return pooler.flatten(1)  # ResNet's pooler is (batch, C, 1, 1)
        if self.pooling == "pooler":
            raise BackboneInputError(f"pooling='pooler': a {type(self.backbone).__name__} has no pooler output")
        hidden = outputs.last_hidden_state
        if hidden.ndim == 4:  # a CNN map (batch, C, H, W): global average
            return hidden.mean(dim=(2, 3))
        if self.pooling == "first":
            return hidden[:, 0]
        return masked_mean(hidden, self._feature_mask(hidden, extras.get("attention_mask")))

    def _feature_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The mask over the backbone's output positions: audio backbones downsample samples to frames."""
        if attention_mask is None or attention_mask.shape[-1] == hidden.shape[1]:
            return attention_mask
        convert = getattr(self.backbone, "_get_feature_vector_attention_mask", None)
        if convert is None:
            return None  # the backbone does not say how its positions map to the input's: plain mean
        return convert(hidden.shape[1], attention_mask)


def pretrained_backbone_state(pretrained: nn.Module, target: nn.Module, tower: str | None) -> dict[str, torch.Tensor]:
    """The part of a loaded pretrained model that `target` (our rebuilt backbone) is: the whole model, its encoder
    (an encoder-decoder such as Whisper), or one tower of a multi-tower model (CLIP's `vision_model.*`)."""
    wanted = set(target.state_dict())
    state = pretrained.state_dict()
    if set(state) == wanted:
        return state
    if hasattr(pretrained, "get_encoder") and getattr(pretrained.config, "is_encoder_decoder", False):
        state = pretrained.get_encoder().state_dict()
        if set(state) == wanted:
            return state
    if tower is not None:
        prefix = f"{tower}_model."  # CLIPModel keeps a tower under `vision_model.` / `text_model.`
        stripped = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        return stripped if set(stripped) <= wanted and stripped else {k: v for k, v in state.items() if k in wanted}
    return state  # load_state_dict(strict=True) then names what does not match


__all__ = [
    "AutoBackboneEncoder",
    "BackboneInputError",
    "backbone_feature_size",
    "freeze_backbone",
    "layer_list",
    "masked_mean",
    "pretrained_backbone_state",
]
