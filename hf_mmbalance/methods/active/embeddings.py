"""Rank-1 gradient embeddings of BADGE and BMMAL (Eq. 3, 12, 14; METHODS.md §4).

The gradient of the fused cross-entropy with respect to the fused classifier's weight W `(K, D)`, at the
pseudo-label ŷ = argmax p, is g = a ⊗ u with

    a = p − onehot(ŷ)                       `(K,)`   (Eq. 3 / 12: row i of g is (p_i − 1[ŷ = i]) z_mm)
    u = [w_1 z_1 ; … ; w_M z_M]             `(D,)`   (Eq. 14; all w_m = 1 is BADGE's z_mm = z_1 ⊕ … ⊕ z_M)

Only the factors are kept: N × K·D floats would not fit for real pools (see `selection.py`), and every quantity
k-means++ needs (norms, inner products, distances) factorizes. `materialize_embeddings` builds the explicit
matrix for tests and small N only. The sign of a is irrelevant to k-means++ (BADGE's released code stores −a).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gradient_embedding_factors(
    probabilities: torch.Tensor, features: Sequence[torch.Tensor], weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors (a `(N, K)`, u `(N, D)`) of the rank-1 gradient embeddings g_i = a_i ⊗ u_i.

    Args:
        probabilities: fused softmax p_mm `(N, K)`; ŷ = argmax (ties: lowest class index, `torch.argmax`).
        features: the modality features z_m `(N, d_m)`, in the order of `weights`' columns; D = Σ d_m.
        weights: BMMAL's w `(N, M)` (Eq. 13-14, see `shapley.modality_weights`), or None for BADGE (all 1).

    Returns a = p − onehot(ŷ) (Eq. 12) and u = [w_1 z_1 ; … ; w_M z_M] (Eq. 14).
    """
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, K), got shape {tuple(probabilities.shape)}")
    if not features:
        raise ValueError("features is empty: need at least one modality")
    num_rows = probabilities.shape[0]
    for m, z in enumerate(features):
        if z.ndim != 2 or z.shape[0] != num_rows:
            raise ValueError(f"features[{m}] must be (N={num_rows}, d), got shape {tuple(z.shape)}")
    if weights is not None and tuple(weights.shape) != (num_rows, len(features)):
        raise ValueError(f"weights must be (N={num_rows}, M={len(features)}), got shape {tuple(weights.shape)}")
    pseudo = probabilities.argmax(dim=-1)
    a = probabilities - torch.nn.functional.one_hot(pseudo, probabilities.shape[-1]).to(probabilities.dtype)
    if weights is None:
        u = torch.cat(list(features), dim=-1)
    else:
        u = torch.cat([weights[:, m : m + 1].to(z.dtype) * z for m, z in enumerate(features)], dim=-1)
    return a, u


def materialize_embeddings(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The explicit embeddings G `(N, K·D)`, row-major outer product: G[i, k·D + d] = a[i, k] · u[i, d].

    Block k (columns k·D … k·D + D − 1) is row k of the gradient matrix, a_k u (BADGE's class-major layout).
    Memory N·K·D: for tests and small N only.
    """
    return (a.unsqueeze(-1) * u.unsqueeze(-2)).reshape(a.shape[0], -1)


def embedding_sq_norms(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """‖a_i ⊗ u_i‖² = ‖a_i‖² ‖u_i‖² `(N,)`, without building the outer product."""
    return a.pow(2).sum(dim=-1) * u.pow(2).sum(dim=-1)


__all__ = ["gradient_embedding_factors", "materialize_embeddings", "embedding_sq_norms"]
