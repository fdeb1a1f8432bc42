"""SUGRM's Modality Recalibration Module (MRM, §3.2.1): squeeze-and-excitation across modalities on the inputs.

Only relative imports: shipped next to the weights with the other modeling files.
"""

from __future__ import annotations

import torch
from torch import nn


class ModalityRecalibration(nn.Module):
    """F~_s = 2 * sigmoid(E_s) (*) F_s, with E_s = W_s Z + b_s and Z = ReLU(W_z [S_1; ...; S_M] + b_z) (SUGRM §3.2.1).

    S_s squeezes modality s over its sequence by global average pooling (masked by `<name>_attention_mask` when
    given); a vector input `(batch, d_s)` is its own squeeze. Z is the joint bottleneck of size
    max(1, sum_s d_s // reduction); each E_s restores d_s and gates every position of F_s. The factor 2 makes
    the gate 1 at E_s = 0, so the module starts close to the identity.
    """

    def __init__(self, input_sizes: dict[str, int], reduction: int = 4):
        super().__init__()
        self.names = list(input_sizes)
        bottleneck = max(1, sum(input_sizes.values()) // reduction)
        self.squeeze_to_joint = nn.Linear(sum(input_sizes.values()), bottleneck)
        self.excitations = nn.ModuleDict({name: nn.Linear(bottleneck, size) for name, size in input_sizes.items()})

    def forward(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        squeezed = [self._squeeze(inputs[name], masks.get(name)) for name in self.names]
        joint = torch.relu(self.squeeze_to_joint(torch.cat(squeezed, dim=-1)))
        recalibrated = {}
        for name in self.names:
            gate = 2.0 * torch.sigmoid(self.excitations[name](joint))
            value = inputs[name]
            recalibrated[name] = value * (gate.unsqueeze(1) if value.ndim == 3 else gate)
        return recalibrated

    @staticmethod
    def _squeeze(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if value.ndim == 2:
            return value
        if mask is None:
            return value.mean(dim=1)
        weights = mask.to(value.dtype).unsqueeze(-1)
        return (value * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


__all__ = ["ModalityRecalibration"]
