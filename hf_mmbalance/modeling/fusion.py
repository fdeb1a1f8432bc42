"""Fusion modules: per-modality features z_m -> fused prediction, and each modality's share of it.

The concat, sum and gated fusions are linear in their last step, so the fused logits split exactly into one
additive share per modality (`modality_logits`, summing to `logits`). Gradient-modulation methods (OGM-GE,
Ada2I) score each modality from its share, as the released OGM-GE code does for concat fusion:
out_m = W_m z_m + b / M.
Ada2I Eq. 16 scores the cosine instead, cos<W_{m,k}, z_m> + b_k / M: `modality_cosine_logits`.

The Ada2I fusions (`AMWFusion`, `AFWFusion`) end in an MLP (Eq. 9); their shares split the MLP's input
Z^{m-adapt} (Eq. 8), which they also return as `auxiliary_logits` for the modality-level loss L_modal (Eq. 13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

# Lower bound of the norms in the cosines: a zero feature (e.g. a dead ReLU encoder) gives cosine 0, not NaN.
# Representable in float16, unlike 1e-8.
COSINE_EPS = 1e-6


@dataclass
class FusionOutput:
    """What a fusion returns.

    Args:
        logits: fused prediction, `(batch, num_outputs)`.
        modality_logits: each modality's additive share a_m W_m^T + b_m (dot product), by modality name. They sum
            to `logits`, except for AMW/AFW, where they sum to `auxiliary_logits` (the input of the final MLP).
        modality_cosine_logits: the same shares with the dot product replaced by the per-class cosine,
            cos(W_{m,k}, a_m) + b_{m,k} (Ada2I Eq. 16's score input); they do not sum to anything.
        fused_features: the input of the fused classifier (for AMW/AFW: Z^{m-adapt}).
        auxiliary_logits: logits trained with the task loss as the extra term `modal` (Ada2I's Z^{m-adapt},
            Eq. 13), or None.
        auxiliary_losses: label-free loss terms by name (Ada2I's L_feature, Eq. 12, as `feature`).
    """

    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor]
    modality_cosine_logits: dict[str, torch.Tensor]
    fused_features: torch.Tensor
    auxiliary_logits: torch.Tensor | None = None
    auxiliary_losses: dict[str, torch.Tensor] = field(default_factory=dict)


def class_cosines(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos(W_k, a) for every row W_k of `weight` `(num_outputs, d)` and every row a of `inputs` `(batch, d)`:
    `(batch, num_outputs)`. Norms below `COSINE_EPS` are raised to it, so zero vectors give 0."""
    inputs = nn.functional.normalize(inputs, dim=-1, eps=COSINE_EPS)
    weight = nn.functional.normalize(weight, dim=-1, eps=COSINE_EPS)
    return inputs @ weight.T


def modality_shares(
    inputs: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each modality's dot share a_m W_m^T + b_m and cosine share cos(W_{m,k}, a_m) + b_{m,k}, where a_m is the
    vector the classifier slice W_m acts on and b_m the modality's part of the bias."""
    dot = {name: value @ weights[name].T + biases[name] for name, value in inputs.items()}
    cosine = {name: class_cosines(value, weights[name]) + biases[name] for name, value in inputs.items()}
    return dot, cosine


class ConcatFusion(nn.Module):
    """logits = W [z_1; ...; z_M] + b; share of modality m = W_m z_m + b / M (released OGM-GE code)."""

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int):
        super().__init__()
        self.names = list(feature_sizes)
        self.sizes = [feature_sizes[name] for name in self.names]
        self.fused_size = sum(self.sizes)  # size of `fused_features`
        self.classifier = nn.Linear(sum(self.sizes), num_outputs)

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        fused = torch.cat([features[name] for name in self.names], dim=-1)
        weight_slices = dict(zip(self.names, torch.split(self.classifier.weight, self.sizes, dim=1)))
        bias_share = self.classifier.bias / len(self.names)
        dot, cosine = modality_shares(
            {name: features[name] for name in self.names}, weight_slices, dict.fromkeys(self.names, bias_share)
        )
        return FusionOutput(
            logits=self.classifier(fused), modality_logits=dot, modality_cosine_logits=cosine, fused_features=fused
        )


class SumFusion(nn.Module):
    """logits = sum_m (W_m z_m + b_m): one linear head per modality; the share is that head's output."""

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int):
        super().__init__()
        self.fused_size = sum(feature_sizes.values())  # `fused_features` is the concatenation
        self.heads = nn.ModuleDict({name: nn.Linear(size, num_outputs) for name, size in feature_sizes.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        dot, cosine = modality_shares(
            {name: features[name] for name in self.heads},
            {name: head.weight for name, head in self.heads.items()},
            {name: head.bias for name, head in self.heads.items()},
        )
        logits = torch.stack(list(dot.values())).sum(dim=0)
        fused = torch.cat([features[name] for name in self.heads], dim=-1)
        return FusionOutput(logits=logits, modality_logits=dot, modality_cosine_logits=cosine, fused_features=fused)


class GatedFusion(nn.Module):
    """Gated sum in a common space: p_m = P_m z_m, g = sigmoid(G [z_1; ...; z_M]) split per modality,
    h = sum_m g_m * p_m, logits = W h + b; share of modality m = W (g_m * p_m) + b / M.
    """

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int, hidden_size: int | None):
        super().__init__()
        self.names = list(feature_sizes)
        hidden_size = hidden_size or max(feature_sizes.values())
        self.fused_size = hidden_size
        self.projections = nn.ModuleDict({name: nn.Linear(size, hidden_size) for name, size in feature_sizes.items()})
        self.gate = nn.Linear(sum(feature_sizes.values()), hidden_size * len(self.names))
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        gates = torch.sigmoid(self.gate(torch.cat([features[name] for name in self.names], dim=-1)))
        gates = gates.chunk(len(self.names), dim=-1)
        gated = {name: gate * self.projections[name](features[name]) for name, gate in zip(self.names, gates)}
        fused = torch.stack(list(gated.values())).sum(dim=0)
        dot, cosine = modality_shares(
            gated,
            dict.fromkeys(self.names, self.classifier.weight),
            dict.fromkeys(self.names, self.classifier.bias / len(self.names)),
        )
        return FusionOutput(
            logits=self.classifier(fused), modality_logits=dot, modality_cosine_logits=cosine, fused_features=fused
        )


class AMWFusion(nn.Module):
    """Ada2I Adaptive Modality Weighting (Eq. 8-9).

    Z^{m-adapt} = sum_m s * cos(W^m_k, z_m) + b (Eq. 8, with the per-class cosine of Eq. 16 and MMCosine:
    row k of W^m and z_m are L2-normalized; s = `amw_scale`, 1 = Eq. 8 as printed), logits = MLP(Z^{m-adapt})
    with one hidden ReLU layer (Eq. 9). The W^m are the column blocks of one linear layer whose bias is b.

    Shares: `modality_logits[m]` = s * cos(W^m_k, z_m) + b / M sums to Z^{m-adapt} (= `auxiliary_logits` =
    `fused_features`), not to the MLP's `logits`; `modality_cosine_logits[m]` = cos(W^m_k, z_m) + b / M.
    """

    def __init__(self, feature_sizes: dict[str, int], num_outputs: int, hidden_size: int | None, scale: float):
        super().__init__()
        self.fused_size = num_outputs  # `fused_features` is Z^{m-adapt}
        self.names = list(feature_sizes)
        self.sizes = [feature_sizes[name] for name in self.names]
        self.modality_weights = nn.Linear(sum(self.sizes), num_outputs)
        hidden_size = hidden_size or max(self.sizes)
        self.mlp = nn.Sequential(nn.Linear(num_outputs, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_outputs))
        self.scale = scale

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        weight_slices = torch.split(self.modality_weights.weight, self.sizes, dim=1)
        cosines = {name: class_cosines(features[name], weight) for name, weight in zip(self.names, weight_slices)}
        bias = self.modality_weights.bias
        adapted = self.scale * torch.stack(list(cosines.values())).sum(dim=0) + bias
        bias_share = bias / len(self.names)
        return FusionOutput(
            logits=self.mlp(adapted),
            modality_logits={name: self.scale * cosine + bias_share for name, cosine in cosines.items()},
            modality_cosine_logits={name: cosine + bias_share for name, cosine in cosines.items()},
            fused_features=adapted,
            auxiliary_logits=adapted,
        )


@dataclass
class FeatureWeightingOutput:
    """What `AdaptiveFeatureWeighting` computes, by modality name.

    Args:
        adapted_features: z_m^{f-adapt} (Eq. 7), `(batch, d_m)`.
        attention: Att_m (Eq. 6), `(batch, d_m)`.
        predicted_attention: the attention mapping network's Att_hat_m (Eq. 11), `(batch, d_m)`.
        coefficients: Theta^m (Eq. 4), `(batch, rank, rank)`, rows summing to 1.
        feature_loss: L_feature (Eq. 12), a scalar.
    """

    adapted_features: dict[str, torch.Tensor]
    attention: dict[str, torch.Tensor]
    predicted_attention: dict[str, torch.Tensor]
    coefficients: dict[str, torch.Tensor]
    feature_loss: torch.Tensor


class AdaptiveFeatureWeighting(nn.Module):
    """Ada2I Adaptive Feature Weighting (Eq. 3-7) with its attention mapping networks (Eq. 11-12).

    Adaptation: the paper's Z^m is `(N, d_m)`, N utterances of one conversation; here each sample is one
    vector z_m, so every step runs per sample and the N axis is absent. With rank r:
    - Eq. 5: P1 = z_m W_{Q,m}^(1), P2 = z_m W_{Q,m}^(2) in R^r; G_Q^m = outer(P1, P2), `(r, r)` (the mode-1
      Khatri-Rao product of one row); G_K^m the same with the key matrices.
    - Eq. 4: Theta^m = softmax over the last axis of (G_Q^m * G_K^m) / sqrt(r).
    - Eq. 6: A^(m), Theta^m averaged over the absent axis, is Theta^m of the same sample; the chain of
      mode-(3,1) contractions is the matrix product C_m = Theta^m A^(1) ... A^(M) (config's modality order,
      any number of modalities); Att_m = Linear_m(flatten(C_m)) in R^{d_m}.
    - Eq. 7: z_m^{f-adapt} = Att_m * z_m + beta * z_m, elementwise.
    - Eq. 11-12: Phi_m (d_m -> d_m -> d_m, ReLU) predicts Att_hat_m from z_m; L_feature = mean over the batch
      of sum_m ||Att_m - Att_hat_m||_1. Neither side is detached: the paper trains everything end to end.
    """

    def __init__(self, feature_sizes: dict[str, int], rank: int, beta: float):
        super().__init__()
        self.names = list(feature_sizes)
        self.rank = rank
        self.beta = beta
        # Rows [W_Q^(1); W_Q^(2); W_K^(1); W_K^(2)] of Eq. 5, each (rank, d_m): one matmul for all four.
        self.query_key = nn.ModuleDict(
            {name: nn.Linear(size, 4 * rank, bias=False) for name, size in feature_sizes.items()}
        )
        self.attention_output = nn.ModuleDict(
            {name: nn.Linear(rank * rank, size) for name, size in feature_sizes.items()}
        )
        self.attention_mapping = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Linear(size, size), nn.ReLU(), nn.Linear(size, size))
                for name, size in feature_sizes.items()
            }
        )

    def coefficients(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Theta^m of each sample (Eq. 4-5), `(batch, rank, rank)`."""
        thetas = {}
        for name in self.names:
            query_1, query_2, key_1, key_2 = self.query_key[name](features[name]).chunk(4, dim=-1)
            query_core = query_1.unsqueeze(-1) * query_2.unsqueeze(-2)
            key_core = key_1.unsqueeze(-1) * key_2.unsqueeze(-2)
            thetas[name] = torch.softmax(query_core * key_core / math.sqrt(self.rank), dim=-1)
        return thetas

    def forward(self, features: dict[str, torch.Tensor]) -> FeatureWeightingOutput:
        thetas = self.coefficients(features)
        pooled = thetas[self.names[0]]
        for name in self.names[1:]:
            pooled = pooled @ thetas[name]  # A^(1) ... A^(M), shared by every modality's chain
        attention, predicted, adapted = {}, {}, {}
        for name in self.names:
            z = features[name]
            attention[name] = self.attention_output[name]((thetas[name] @ pooled).flatten(1))
            predicted[name] = self.attention_mapping[name](z)
            adapted[name] = attention[name] * z + self.beta * z
        feature_loss = torch.stack(
            [(attention[name] - predicted[name]).abs().sum(dim=-1) for name in self.names]
        ).sum(dim=0).mean()
        return FeatureWeightingOutput(adapted, attention, predicted, thetas, feature_loss)


class AFWFusion(nn.Module):
    """Ada2I's fusion: Adaptive Feature Weighting (Eq. 3-7) feeding Adaptive Modality Weighting (Eq. 8-9).

    Returns the AMW output computed on z^{f-adapt} (shares split Z^{m-adapt}, see `AMWFusion`) plus the
    auxiliary loss `feature` = L_feature (Eq. 12).
    """

    def __init__(
        self,
        feature_sizes: dict[str, int],
        num_outputs: int,
        hidden_size: int | None,
        rank: int,
        beta: float,
        scale: float,
    ):
        super().__init__()
        self.feature_weighting = AdaptiveFeatureWeighting(feature_sizes, rank, beta)
        self.modality_weighting = AMWFusion(feature_sizes, num_outputs, hidden_size, scale)
        self.fused_size = num_outputs

    def forward(self, features: dict[str, torch.Tensor]) -> FusionOutput:
        weighting = self.feature_weighting(features)
        output = self.modality_weighting(weighting.adapted_features)
        output.auxiliary_losses = {"feature": weighting.feature_loss}
        return output


def build_fusion(
    kind: str,
    feature_sizes: dict[str, int],
    num_outputs: int,
    hidden_size: int | None,
    afw_rank: int = 4,
    afw_beta: float = 0.5,
    amw_scale: float = 1.0,
) -> nn.Module:
    """The fusion named `kind`; `afw_*` / `amw_*` are used by the Ada2I fusions only."""
    if kind in ("concat", "mrm"):  # mrm recalibrates the inputs (model side), then concatenates (SUGRM §3.2.1)
        return ConcatFusion(feature_sizes, num_outputs)
    if kind == "sum":
        return SumFusion(feature_sizes, num_outputs)
    if kind == "gated":
        return GatedFusion(feature_sizes, num_outputs, hidden_size)
    if kind == "amw":
        return AMWFusion(feature_sizes, num_outputs, hidden_size, amw_scale)
    if kind == "afw":
        return AFWFusion(feature_sizes, num_outputs, hidden_size, afw_rank, afw_beta, amw_scale)
    raise ValueError(f"fusion={kind!r} is unknown; expected 'concat', 'sum', 'gated', 'amw', 'afw' or 'mrm'")
