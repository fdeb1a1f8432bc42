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
    """
    if noise_std_from not in NOISE_STD_FROM:
        raise ValueError(f"noise_std_from={noise_std_from!r} is unknown; expected one of {list(NOISE_STD_FROM)}")
    generators: dict[torch.device, torch.Generator] = {}
    for name, params in parameters.items():
        k = float(coefficients[name])
        for param in params:
            gradient = param.grad
            if gradient is None:
                continue
            sigma = ge_noise_std(gradient) if noise and noise_std_from == "before" else None
            if k != 1.0:
                gradient.mul_(k)
            if not noise:
                continue
            if sigma is None:
                sigma = ge_noise_std(gradient)
            generator = generators.get(gradient.device)
            if generator is None:
                generator = generators[gradient.device] = torch.Generator(device=gradient.device).manual_seed(seed)
            draw = torch.randn(gradient.shape, generator=generator, device=gradient.device, dtype=torch.float32)
            gradient.add_(draw.mul_(sigma).to(gradient.dtype))


__all__ = ["NOISE_STD_FROM", "ge_noise_std", "modulate_gradients"]
