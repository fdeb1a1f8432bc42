"""Gradient clipping that applies per-parameter factors in the same multiply (`MultimodalTrainer._clip_grad_norm`).

Why: gradient modulation in `apply="pre_optimizer_step"` mode multiplies every encoder gradient by k_m right after
the Trainer clipped it (Ada2I released order: clip, modulate, step). Clipping already multiplies every gradient by
its coefficient c = min(1, max_norm / (||g|| + 1e-6)) (`torch.nn.utils.clip_grads_with_norm_` always does, also when
c = 1), so multiplying by c * k_m there gives the same update as the two multiplies in a row without a second pass
over the gradients' memory (measured: benchmarks/results/modulation_apply_overhead.md).

The norm ||g|| is the caller's: `MultimodalTrainer` takes accelerate's (`Accelerator.clip_grad_norm_` with an infinite
bound: unscaled fp16 gradients, one norm per device mesh, a DTensor's norm its full tensor's), so the clip coefficient
is the one accelerate's own clipping would use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .distributed import local_part

# Engines whose gradients the trainer may clip itself: every parameter's (whole or sharded) `.grad` is there before
# the optimizer step. DeepSpeed clips inside its engine step; FSDP1 clips flat parameters with its own method.
CLIP_ENGINES = ("single", "ddp", "fsdp")
CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grads_with_norm_


def clip_and_scale_gradients(
    parameters: Iterable[torch.nn.Parameter],
    max_norm: float,
    total_norm: torch.Tensor,
    scaled_groups: Sequence[tuple[Sequence[torch.nn.Parameter], torch.Tensor]] = (),
) -> torch.Tensor:
    """In place, g_p <- c * f_p * g_p for every parameter p with a gradient, where c = min(1, max_norm /
    (total_norm + 1e-6)), `total_norm` the norm of all the gradients BEFORE the factors (a 0-d tensor), and f_p the
    0-d factor tensor of the group in `scaled_groups` that holds p (1 for parameters in none). Returns `total_norm`,
    what `clip_grad_norm_` returns. No host sync.

    A parameter in two groups is refused (its factors would be ambiguous)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    parameters = [p for p in parameters if p.grad is not None]
    clip = torch.clamp(max_norm / (total_norm + CLIP_EPS), max=1.0)
    group_of: dict[int, int] = {}
    for index, (params, _) in enumerate(scaled_groups):
        for param in params:
            if group_of.setdefault(id(param), index) != index:
                raise ValueError("a parameter is in two scaled gradient groups; each parameter takes one factor")
    # One small tensor per group (c * f_g, from one stacked multiply) and c for the rest, moved per device once.
    factors = [clip]
    if scaled_groups:
        factors += (torch.stack([factor for _, factor in scaled_groups]).to(clip.device, clip.dtype) * clip).unbind()
    on_device: dict[tuple[int, torch.device], torch.Tensor] = {}
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for param in parameters:
        local = local_part(param.grad)
        key = (group_of.get(id(param), -1) + 1, local.device)
        factor = on_device.get(key)
        if factor is None:
            factor = on_device[key] = factors[key[0]].to(local.device)
        gradients, bucket_factors = buckets.setdefault((local.device, local.dtype), ([], []))
        gradients.append(local)
        bucket_factors.append(factor)
    for gradients, bucket_factors in buckets.values():
        torch._foreach_mul_(gradients, bucket_factors)
    return total_norm


__all__ = ["CLIP_ENGINES", "clip_and_scale_gradients"]
