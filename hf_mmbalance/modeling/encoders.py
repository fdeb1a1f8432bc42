"""Per-modality encoders: each maps one modality's input to a feature vector z_m of size `feature_size`.

Every encoder is called as `encoder(main_input, **extras)` and names the extra keyword inputs it takes in
`extra_inputs` (the model routes the batch's `<modality>_<name>` keys to them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backbone import AutoBackboneEncoder, masked_mean

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

    extra_inputs: tuple[str, ...] = ()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs)


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

    extra_inputs = ("attention_mask",)

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


def build_encoder(settings: dict[str, Any], trust_remote_code: bool = False) -> nn.Module:
    """The encoder named by `settings["encoder"]`, from one normalized modality entry of the config; an `auto`
    backbone may run its own code only with the caller's `trust_remote_code` (`MMBalanceConfig.trust_remote_code`)."""
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
            pooling=settings["pooling"],
            feature_size=settings.get("feature_size"),
            trust_remote_code=trust_remote_code,
            tower=settings.get("tower"),
            frames=bool(settings.get("frames", False)),
            temporal_pooling=settings.get("temporal_pooling", "mean"),
        )
    raise ValueError(f"encoder={kind!r} is unknown; expected 'mlp', 'transformer' or 'auto'")
