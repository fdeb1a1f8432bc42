"""Per-modality encoders: each maps one modality's input to a feature vector z_m of size `feature_size`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPEncoder(nn.Module):
    """Feature vector `(batch, input_size)` -> `(batch, feature_size)` through ReLU hidden layers.

    The last layer is followed by the activation too, so z_m is a post-activation feature (as the
    released OGM-GE / BMMAL encoders produce).
    """

    def __init__(self, input_size: int, hidden_sizes: list[int], feature_size: int, dropout: float, activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; expected one of {list(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        sizes = [input_size, *hidden_sizes, feature_size]
        for in_size, out_size in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(in_size, out_size), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)
        self.feature_size = feature_size

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(inputs)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence of the positions whose mask is 1 (all positions when no mask)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class TransformerSequenceEncoder(nn.Module):
    """Sequence `(batch, length, input_size)` (+ mask `(batch, length)`, 1 = keep) -> `(batch, feature_size)`.

    Linear input projection, learned positions, `nn.TransformerEncoder` layers (pre-norm), then masked mean
    pooling (or the first position with `pooling="first"`).
    """

    def __init__(
        self,
        input_size: int,
        feature_size: int,
        num_layers: int,
        num_heads: int,
        ffn_size: int,
        dropout: float,
        max_length: int,
        pooling: str,
    ):
        super().__init__()
        if pooling not in ("mean", "first"):
            raise ValueError(f"pooling={pooling!r} is unknown for the transformer encoder; expected 'mean' or 'first'")
        if feature_size % num_heads:
            raise ValueError(f"feature_size={feature_size} must be divisible by num_heads={num_heads}")
        self.input_projection = nn.Linear(input_size, feature_size)
        self.position_embedding = nn.Embedding(max_length, feature_size)
        layer = nn.TransformerEncoderLayer(
            feature_size, num_heads, ffn_size, dropout=dropout, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(feature_size)
        self.max_length = max_length
        self.pooling = pooling
        self.feature_size = feature_size

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        length = inputs.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds the encoder's max_length={self.max_length}")
        positions = torch.arange(length, device=inputs.device)
        hidden = self.input_projection(inputs) + self.position_embedding(positions)
        padding_mask = None if attention_mask is None else attention_mask == 0
        hidden = self.norm(self.layers(hidden, src_key_padding_mask=padding_mask))
        if self.pooling == "first":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask)


class AutoBackboneEncoder(nn.Module):
    """Any `transformers` backbone, rebuilt from its saved config; pooled to one vector per sample.

    The backbone is built with `AutoModel.from_config` (random weights) so that `from_pretrained` of an
    hf_mmbalance checkpoint never reaches the backbone's original location; pretrained backbone weights are
    loaded explicitly by `MMBalancePreTrainedModel.load_backbone_weights()`. An optional linear projection
    maps the backbone's hidden size to `feature_size`.
    """

    def __init__(self, backbone_config: dict[str, Any], pooling: str, feature_size: int | None, trust_remote_code: bool):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r} is unknown for an auto backbone; expected 'cls' or 'mean'")
        config_dict = dict(backbone_config)
        model_type = config_dict.pop("model_type")
        config = AutoConfig.for_model(model_type, **config_dict)
        self.backbone = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        hidden_size = config.hidden_size
        self.projection = nn.Linear(hidden_size, feature_size) if feature_size else nn.Identity()
        self.feature_size = feature_size or hidden_size
        self.pooling = pooling

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Integer inputs are token ids; float inputs are embeddings / pixel-free dense inputs.
        if inputs.is_floating_point():
            outputs = self.backbone(inputs_embeds=inputs, attention_mask=attention_mask)
        else:
            outputs = self.backbone(input_ids=inputs, attention_mask=attention_mask)
        hidden = outputs.last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, attention_mask)
        return self.projection(pooled)


def build_encoder(settings: dict[str, Any]) -> nn.Module:
    """The encoder named by `settings["encoder"]`, from one normalized modality entry of the config."""
    kind = settings["encoder"]
    if kind == "mlp":
        return MLPEncoder(
            settings["input_size"],
            list(settings["hidden_sizes"]),
            settings["feature_size"],
            float(settings["dropout"]),
            settings["activation"],
        )
    if kind == "transformer":
        return TransformerSequenceEncoder(
            settings["input_size"],
            settings["feature_size"],
            settings["num_layers"],
            settings["num_heads"],
            settings["ffn_size"],
            float(settings["dropout"]),
            settings["max_length"],
            settings["pooling"],
        )
    if kind == "auto":
        return AutoBackboneEncoder(
            settings["backbone_config"],
            settings["pooling"],
            settings.get("feature_size"),
            bool(settings.get("trust_remote_code", False)),
        )
    raise ValueError(f"encoder={kind!r} is unknown; expected 'mlp', 'transformer' or 'auto'")
