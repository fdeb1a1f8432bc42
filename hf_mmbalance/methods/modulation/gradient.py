"""Applying the coefficients to the encoders' gradients, with the GE Gaussian noise (Ada2I Eq. 18-19;
OGM-GE released code)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

NOISE_STD_FROM = ("before", "after")
# Added to the noise std as in the released OGM-GE code, so an all-zero gradient still gets a valid normal.
NOISE_STD_EPS = 1e-8


def ge_noise_std(gradient: torch.Tensor) -> float:
    """sigma = std(g) + 1e-8 over the tensor's entries (released OGM-GE code: `grad.std().item() + 1e-8`)."""
    if gradient.numel() < 2:
        return NOISE_STD_EPS
    return float(gradient.detach().float().std()) + NOISE_STD_EPS


def modulate_gradients(
    parameters: Mapping[str, Sequence[torch.nn.Parameter]],
    coefficients: Mapping[str, float],
    *,
    noise: bool,
    noise_std_from: str,
    seed: int,
) -> None:
    """In place, for every modality m and every parameter of m with a gradient: g <- k_m * g (Eq. 18), then,
    with `noise`, g <- g + N(0, sigma^2) per tensor (Eq. 19's h(theta), "GE" of OGM-GE).

    `noise_std_from="before"` takes sigma from the gradient before scaling (released OGM-GE code),
    `"after"` from the scaled one (Ada2I). The noise is drawn from a generator seeded with `seed`, in the
    order of `parameters`: the caller passes the same seed on every rank (replicas stay identical) and a new
    one per step (a resumed run draws the same noise as an uninterrupted one).

    Runs once per optimizer step on every encoder tensor: foreach ops and one noise draw per device keep
    the per-tensor Python work small.
    """
    if noise_std_from not in NOISE_STD_FROM:
        raise ValueError(f"noise_std_from={noise_std_from!r} is unknown; expected one of {list(NOISE_STD_FROM)}")
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[float]]] = {}
    for name, params in parameters.items():
        k = float(coefficients[name])
        for param in params:
            if param.grad is not None:
                gradients, factors = groups.setdefault((param.grad.device, param.grad.dtype), ([], []))
                gradients.append(param.grad)
                factors.append(k)
    for (device, _), (gradients, factors) in groups.items():
        sigmas = _per_tensor_std(gradients) if noise and noise_std_from == "before" else None
        if any(k != 1.0 for k in factors):
            torch._foreach_mul_(gradients, factors)
        if not noise:
            continue
        if sigmas is None:
            sigmas = _per_tensor_std(gradients)
        sizes = [g.numel() for g in gradients]
        generator = torch.Generator(device=device).manual_seed(seed)
        draw = torch.randn(sum(sizes), generator=generator, device=device, dtype=torch.float32)
        chunks = [chunk.view_as(g) for chunk, g in zip(draw.split(sizes), gradients)]
        torch._foreach_mul_(chunks, sigmas)
        torch._foreach_add_(gradients, [chunk.to(g.dtype) for chunk, g in zip(chunks, gradients)])


def _per_tensor_std(gradients: Sequence[torch.Tensor]) -> list[float]:
    """`ge_noise_std` of every tensor, with a single device-to-host transfer."""
    stds = torch.stack([g.detach().float().std() if g.numel() > 1 else g.new_zeros((), dtype=torch.float32) for g in gradients])
    return [value + NOISE_STD_EPS for value in stds.tolist()]


__all__ = ["NOISE_STD_FROM", "ge_noise_std", "modulate_gradients"]
