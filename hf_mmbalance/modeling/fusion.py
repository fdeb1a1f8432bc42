"""Fusion modules: per-modality features z_m -> fused prediction, and each modality's share of it.

Every fusion here is linear in its last step, so the fused logits split exactly into one additive share per
modality (`modality_logits`, summing to `logits`). Gradient-modulation methods (OGM-GE, Ada2I) score each
modality from its share, as the released OGM-GE code does for concat fusion: out_m = W_m z_m + b / M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FusionOutput:
    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor]
    fused_features: torch.Tensor


class ConcatFusion(nn.Module):
    """logits = W [z_1; ...; z_M] + b; share of modality m = W_m z_m + b / M (released OGM-GE code)."""

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int):
        super().__init__()
        self.names = list(feature_sizes)
        self.sizes = [feature_sizes[name] for name in self.names]
        self.classifier = nn.Linear(sum(self.sizes), num_outputs)

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        fused = torch.cat([features[name] for name in self.names], dim=-1)
        weight_slices = torch.split(self.classifier.weight, self.sizes, dim=1)
        bias_share = self.classifier.bias / len(self.names)
        shares = {
            name: features[name] @ weight.T + bias_share for name, weight in zip(self.names, weight_slices)
        }
        return FusionOutput(logits=self.classifier(fused), modality_logits=shares, fused_features=fused)


class SumFusion(nn.Module):
    """logits = sum_m (W_m z_m + b_m): one linear head per modality; the share is that head's output."""

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(size, num_outputs) for name, size in feature_sizes.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        shares = {name: head(features[name]) for name, head in self.heads.items()}
        logits = torch.stack(list(shares.values())).sum(dim=0)
        fused = torch.cat([features[name] for name in self.heads], dim=-1)
        return FusionOutput(logits=logits, modality_logits=shares, fused_features=fused)


class GatedFusion(nn.Module):
    """Gated sum in a common space: p_m = P_m z_m, g = sigmoid(G [z_1; ...; z_M]) split per modality,
    h = sum_m g_m * p_m, logits = W h + b; share of modality m = W (g_m * p_m) + b / M.
    """

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int, hidden_size: int | None):
        super().__init__()
        self.names = list(feature_sizes)
        hidden_size = hidden_size or max(feature_sizes.values())
        self.projections = nn.ModuleDict({name: nn.Linear(size, hidden_size) for name, size in feature_sizes.items()})
        self.gate = nn.Linear(sum(feature_sizes.values()), hidden_size * len(self.names))
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        gates = torch.sigmoid(self.gate(torch.cat([features[name] for name in self.names], dim=-1)))
        gates = gates.chunk(len(self.names), dim=-1)
        gated = {name: gate * self.projections[name](features[name]) for name, gate in zip(self.names, gates)}
        fused = torch.stack(list(gated.values())).sum(dim=0)
        bias_share = self.classifier.bias / len(self.names)
        shares = {name: value @ self.classifier.weight.T + bias_share for name, value in gated.items()}
        return FusionOutput(logits=self.classifier(fused), modality_logits=shares, fused_features=fused)


def build_fusion(kind: str, feature_sizes: dict[str, int], num_outputs: int, hidden_size: int | None) -> nn.Module:
    if kind == "concat":
        return ConcatFusion(feature_sizes, num_outputs)
    if kind == "sum":
        return SumFusion(feature_sizes, num_outputs)
    if kind == "gated":
        return GatedFusion(feature_sizes, num_outputs, hidden_size)
    raise ValueError(f"fusion={kind!r} is unknown; expected 'concat', 'sum' or 'gated'")
