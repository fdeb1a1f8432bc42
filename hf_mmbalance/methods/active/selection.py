"""Acquisition functions of the active-learning loop (BMMAL §3.5, METHODS.md §4; baselines of the paper's §4).

Pure functions on CPU/GPU tensors: no Trainer, no model, no dataset.

BADGE / BMMAL k-means++ runs on gradient embeddings that are rank-1 by construction (Eq. 12-14):
g_i = a_i ⊗ u_i with a_i = p_mm,i − onehot(ŷ_i) of shape (K,) and u_i = [w_1 z_1 ; … ; w_M z_M] of shape (D,).
Their distances factorize,

    ‖a_i⊗u_i − a_c⊗u_c‖² = ‖a_i‖²‖u_i‖² + ‖a_c‖²‖u_c‖² − 2 (a_i·a_c)(u_i·u_c),

so a new centre costs one (N,K)@(K,) and one (N,D)@(D,) matrix-vector product, O(N(K+D)), and the N × K·D
embedding matrix is never built (VGGSound: 180k × 309·1024 floats = 228 GB). `materialized_kmeans_plus_plus` builds
it anyway; it shares the sampling loop, so for one seed both return the same indices (tests, speed benchmark).

Sampling (`kmeans_plus_plus`): first centre = the largest ‖g_i‖ (ties: lowest index), as in BADGE's released code;
each next one is drawn by `torch.multinomial` on D² (squared distance to the nearest chosen centre) with the caller's
`torch.Generator`, so a seed fixes the selection. A chosen point has D² = 0 (set exactly, not left to round-off), so
no index repeats. Unchosen duplicates of a centre also have D² = 0; if every remaining D² is 0 the next pick is drawn
uniformly over the unchosen candidates (BADGE's released code would fail there on a 0/0 distribution).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

_DEFAULT_CHUNK = 1 << 15  # rows per chunk when computing norms / distances chunk by chunk


def _check_factors(a: torch.Tensor, u: torch.Tensor) -> None:
    if a.ndim != 2 or u.ndim != 2 or a.shape[0] != u.shape[0]:
        raise ValueError(
            f"a and u must be (N, K) and (N, D) with the same N, got {tuple(a.shape)} and {tuple(u.shape)}"
        )
    if not (a.is_floating_point() and u.is_floating_point()):
        raise ValueError(f"a and u must be floating point, got {a.dtype} and {u.dtype}")


def _compute_dtype(a: torch.Tensor, float64: bool) -> torch.dtype:
    return torch.float64 if float64 or a.dtype == torch.float64 else torch.float32


def _chunks(n: int, chunk_size: int | None) -> Iterable[slice]:
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    step = max(n, 1) if chunk_size is None else int(chunk_size)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _squared_norms(a: torch.Tensor, u: torch.Tensor, dtype: torch.dtype, chunk_size: int | None) -> torch.Tensor:
    """‖a_i‖²‖u_i‖² = ‖g_i‖², computed chunk by chunk in `dtype`."""
    out = torch.empty(a.shape[0], dtype=dtype, device=a.device)
    for rows in _chunks(a.shape[0], chunk_size):
        # vector_norm reduces row by row: no (N, K) / (N, D) temporary of squares
        a_sq = torch.linalg.vector_norm(a[rows].to(dtype), dim=1).square_()
        out[rows] = a_sq.mul_(torch.linalg.vector_norm(u[rows].to(dtype), dim=1).square_())
    return out


def factorized_sq_distances(
    a: torch.Tensor,
    u: torch.Tensor,
    a_c: torch.Tensor,
    u_c: torch.Tensor,
    *,
    float64: bool = False,
    chunk_size: int | None = None,
    sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """‖a_i⊗u_i − a_c⊗u_c‖² for every row i, shape (N,), clamped at 0 against round-off.

    `a` (N,K), `u` (N,D), the centre `a_c` (K,), `u_c` (D,). Float32 unless `float64=True` (or the inputs are
    float64); `chunk_size` bounds the temporary copies when casting. `sq_norms` (the rows' ‖g_i‖², e.g. precomputed
    once by the k-means++ loop) skips recomputing them.
    """
    _check_factors(a, u)
    if a_c.shape != a.shape[1:] or u_c.shape != u.shape[1:]:
        raise ValueError(f"centre factors must be {tuple(a.shape[1:])} and {tuple(u.shape[1:])}, "
                         f"got {tuple(a_c.shape)} and {tuple(u_c.shape)}")
    dtype = _compute_dtype(a, float64)
    a_c, u_c = a_c.to(dtype), u_c.to(dtype)
    centre_sq = (a_c @ a_c) * (u_c @ u_c)
    if sq_norms is None:
        sq_norms = _squared_norms(a, u, dtype, chunk_size)
    out = torch.empty(a.shape[0], dtype=dtype, device=a.device)
    for rows in _chunks(a.shape[0], chunk_size):
        block = out[rows]
        torch.mv(a[rows].to(dtype), a_c, out=block)  # a_i·a_c, written in place
        block.mul_(u[rows].to(dtype) @ u_c).mul_(-2.0).add_(sq_norms[rows]).add_(centre_sq)
    return out.clamp_(min=0.0)


def _candidate_mask(n: int, exclude: Iterable[int] | torch.Tensor | None, device: torch.device) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool, device=device)
    if exclude is not None:
        index = torch.as_tensor(list(exclude) if not isinstance(exclude, torch.Tensor) else exclude, dtype=torch.long)
        if index.numel():
            if int(index.min()) < 0 or int(index.max()) >= n:
                raise ValueError(f"exclude holds indices outside the pool [0, {n}): "
                                 f"min {int(index.min())}, max {int(index.max())}")
            mask[index.to(device)] = False
    return mask


def _kmeans_plus_plus_loop(
    sq_norms: torch.Tensor,
    distance_to: Callable[[int], torch.Tensor],
    budget: int,
    generator: torch.Generator | None,
    exclude: Iterable[int] | torch.Tensor | None,
) -> list[int]:
    """The sampling loop shared by the factorized and the materialized implementation.

    `sq_norms` = ‖g_i‖² (N,); `distance_to(c)` returns the squared distances of all rows to row c (N,), clamped ≥ 0.
    """
    n = sq_norms.shape[0]
    if n == 0:
        raise ValueError(f"cannot select {budget} points from an empty pool (N = 0)")
    candidates = _candidate_mask(n, exclude, sq_norms.device)
    available = int(candidates.sum())
    if isinstance(budget, bool) or int(budget) != budget or budget < 1 or budget > available:
        raise ValueError(f"budget must be between 1 and the {available} available candidates "
                         f"(pool of {n}, {n - available} excluded), got {budget}")
    budget = int(budget)

    # First centre: the largest norm (argmax returns the first maximum: ties -> lowest index).
    first = int(torch.where(candidates, sq_norms, torch.full_like(sq_norms, -1.0)).argmax())
    chosen = [first]
    candidates[first] = False
    if budget == 1:
        return chosen
    min_d2 = distance_to(first)
    min_d2.masked_fill_(~candidates, 0.0)  # excluded and chosen rows: never drawn
    for _ in range(budget - 1):
        if bool(min_d2.any()):
            index = int(torch.multinomial(min_d2, 1, generator=generator))
        else:  # every remaining candidate coincides with a centre: uniform over the unchosen ones
            index = int(torch.multinomial(candidates.to(min_d2.dtype), 1, generator=generator))
        chosen.append(index)
        candidates[index] = False
        if len(chosen) == budget:
            break
        torch.minimum(min_d2, distance_to(index), out=min_d2)
        min_d2[index] = 0.0
    return chosen


def kmeans_plus_plus(
    a: torch.Tensor,
    u: torch.Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    *,
    exclude: Iterable[int] | torch.Tensor | None = None,
    chunk_size: int | None = None,
    float64: bool = False,
) -> list[int]:
    """BADGE k-means++ seeding on the rank-1 embeddings g_i = a_i ⊗ u_i, without materializing them.

    Returns `budget` distinct row indices in pick order. `exclude`: rows that are not candidates (never picked, not
    counted as available). `chunk_size`: rows per chunk for the norm/distance computations (bounds the temporaries
    of a dtype cast; None = whole pool at once, no copies when the inputs already have the compute dtype).
    `float64`: compute distances and draw in float64 (default float32). Cost O(N(K+D)) per pick, memory O(N) on
    top of the inputs. Raises ValueError if the pool is empty or `budget` is not in [1, available].
    """
    _check_factors(a, u)
    dtype = _compute_dtype(a, float64)
    sq_norms = _squared_norms(a, u, dtype, chunk_size)

    def distance_to(c: int) -> torch.Tensor:
        return factorized_sq_distances(a, u, a[c], u[c], float64=float64, chunk_size=chunk_size, sq_norms=sq_norms)

    return _kmeans_plus_plus_loop(sq_norms, distance_to, budget, generator, exclude)


def materialized_kmeans_plus_plus(
    a: torch.Tensor,
    u: torch.Tensor,
    budget: int,
    generator: torch.Generator | None = None,
    *,
    exclude: Iterable[int] | torch.Tensor | None = None,
    float64: bool = False,
) -> list[int]:
    """Reference implementation: builds G = (N, K·D) explicitly; same sampling loop and draws as `kmeans_plus_plus`.

    For tests and the speed benchmark only: memory N·K·D floats, O(N·K·D) per pick.
    """
    _check_factors(a, u)
    dtype = _compute_dtype(a, float64)
    g = (a.to(dtype)[:, :, None] * u.to(dtype)[:, None, :]).reshape(a.shape[0], -1)
    sq_norms = torch.linalg.vector_norm(g, dim=1).square_()

    def distance_to(c: int) -> torch.Tensor:
        centre = g[c]
        return (sq_norms + sq_norms[c] - 2.0 * (g @ centre)).clamp_(min=0.0)

    return _kmeans_plus_plus_loop(sq_norms, distance_to, budget, generator, exclude)


def _check_budget(budget: int, pool_size: int) -> int:
    if pool_size < 1:
        raise ValueError(f"cannot select {budget} points from an empty pool (N = 0)")
    if isinstance(budget, bool) or int(budget) != budget or not 1 <= budget <= pool_size:
        raise ValueError(f"budget must be between 1 and the pool size {pool_size}, got {budget}")
    return int(budget)


def entropy_scores(probabilities: torch.Tensor) -> torch.Tensor:
    """Predictive entropy −Σ_k p_k log p_k per row of (N, K) probabilities (0 log 0 = 0), float32 (N,)."""
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, K), got shape {tuple(probabilities.shape)}")
    p = probabilities.float()
    return -torch.special.xlogy(p, p).sum(1)


def top_k_indices(scores: torch.Tensor, budget: int) -> list[int]:
    """The `budget` highest scores, highest first; ties in increasing index order. NaN scores are refused."""
    if scores.ndim != 1:
        raise ValueError(f"scores must be (N,), got shape {tuple(scores.shape)}")
    budget = _check_budget(budget, scores.shape[0])
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    order = torch.argsort(-scores.double(), stable=True)  # stable ascending on −score: ties keep index order
    return order[:budget].tolist()


def random_indices(pool_size: int, budget: int, generator: torch.Generator | None = None) -> list[int]:
    """`budget` distinct indices of range(pool_size), uniformly at random (a prefix of `torch.randperm`)."""
    budget = _check_budget(budget, pool_size)
    return torch.randperm(pool_size, generator=generator)[:budget].tolist()


def coreset_greedy(
    features: torch.Tensor,
    labeled_mask: torch.Tensor,
    budget: int,
    *,
    chunk_size: int | None = _DEFAULT_CHUNK,
) -> list[int]:
    """Core-set k-center greedy (Sener & Savarese): repeatedly pick the unlabeled point farthest from the labeled
    and already-picked points (Euclidean on `features` (N,F), float32; ties: lowest index).

    `labeled_mask` (N,) bool marks the points already labeled (the initial centres; never picked). With no labeled
    point, the first pick is the largest-norm point (deterministic; documented choice). Distances to the labeled
    set are computed by chunks of `chunk_size` labeled rows, so memory stays O(N · chunk_size).
    """
    if features.ndim != 2 or labeled_mask.shape != features.shape[:1]:
        raise ValueError(f"features must be (N, F) and labeled_mask (N,), got {tuple(features.shape)} "
                         f"and {tuple(labeled_mask.shape)}")
    n = features.shape[0]
    labeled_mask = labeled_mask.to(torch.bool)
    available = n - int(labeled_mask.sum())
    if n == 0:
        raise ValueError(f"cannot select {budget} points from an empty pool (N = 0)")
    if isinstance(budget, bool) or int(budget) != budget or not 1 <= budget <= available:
        raise ValueError(f"budget must be between 1 and the {available} unlabeled points (pool of {n}), got {budget}")
    x = features.float()
    sq = (x * x).sum(1)

    def sq_dist_to(c: int) -> torch.Tensor:
        return (sq + sq[c] - 2.0 * (x @ x[c])).clamp_(min=0.0)

    labeled = torch.nonzero(labeled_mask).flatten()
    if labeled.numel():
        min_d2 = torch.full((n,), float("inf"))
        for rows in _chunks(labeled.numel(), chunk_size):
            centres = labeled[rows]
            d2 = (sq[:, None] + sq[centres][None, :] - 2.0 * (x @ x[centres].T)).clamp_(min=0.0)
            torch.minimum(min_d2, d2.min(1).values, out=min_d2)
        min_d2[labeled_mask] = -1.0
        chosen: list[int] = []
    else:  # no labeled point: first pick = the largest norm (argmax: ties -> lowest index)
        chosen = [int(sq.argmax())]
        min_d2 = sq_dist_to(chosen[0])
        min_d2[chosen[0]] = -1.0
    for _ in range(int(budget) - len(chosen)):
        index = int(min_d2.argmax())
        chosen.append(index)
        torch.minimum(min_d2, sq_dist_to(index), out=min_d2)  # labeled/picked rows keep -1
        min_d2[index] = -1.0
    return chosen


__all__ = [
    "factorized_sq_distances",
    "kmeans_plus_plus",
    "materialized_kmeans_plus_plus",
    "entropy_scores",
    "top_k_indices",
    "random_indices",
    "coreset_greedy",
]
