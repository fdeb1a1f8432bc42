"""Applying the coefficients to the encoders' gradients, with the GE Gaussian noise (Ada2I Eq. 18-19;
OGM-GE released code).

Engine-safe by construction (DESIGN.md, "Distributed engines"):
* a gradient may be a plain tensor (one process, DDP: every rank holds the whole, identical gradient) or a DTensor
  (FSDP2: each rank holds a shard). Scaling is element-wise, so it acts on the local shard; the noise std is the
  FULL tensor's std (the shards' sums and squared deviations reduced over the mesh), and the noise is the slice of
  one full-size draw that every rank makes from the same seed, so a sharded run adds exactly the noise an unsharded
  one adds;
* nothing goes to the host: the coefficients and the stds are device tensors, so a step costs no device sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ...trainer.distributed import is_sharded, local_part

try:  # torch builds without distributed support: every gradient is a plain tensor, these are never reached
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
except ImportError:  # pragma: no cover
    pass

NOISE_STD_FROM = ("before", "after")
# Added to the noise std as in the released OGM-GE code, so an all-zero gradient still gets a valid normal.
NOISE_STD_EPS = 1e-8


def ge_noise_std(gradient: torch.Tensor) -> float:
    """sigma = std(g) + 1e-8 over the tensor's entries (released OGM-GE code: `grad.std().item() + 1e-8`).
    A DTensor's sigma is its full tensor's (`per_tensor_std`). Returns a float (a host sync: for inspection)."""
    return float(per_tensor_std([gradient])[0])


def per_tensor_std(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """`std(g) + 1e-8` of every tensor (Bessel-corrected, as `Tensor.std`), a float64 `(n,)` tensor on the gradients'
    device: no host transfer. A one-element tensor gets 1e-8.

    A DTensor sharded on a 1-D mesh gets the std of its FULL tensor: the shards' sums are all-reduced over the mesh
    (one collective for all tensors), then the squared deviations from the global mean (a second one), so the value
    equals the unsharded std up to rounding; a replicated DTensor's std is its local one. Plain tensors keep
    `g.float().std()` (bit-identical to the single-process code before sharding support).
    """
    if not gradients:
        return torch.zeros(0, dtype=torch.float64)
    sharded = [i for i, g in enumerate(gradients) if is_sharded(g) and _shard_group(g) is not None]
    stds = []
    for i, g in enumerate(gradients):
        local = local_part(g).detach().float()
        stds.append(local.std().double() if g.numel() > 1 and i not in sharded else local.new_zeros((), dtype=torch.float64))
    stds = torch.stack(stds)
    if sharded:
        stds[sharded] = _sharded_std([gradients[i] for i in sharded]).to(stds.device)
    return stds + NOISE_STD_EPS


def _shard_group(gradient):
    """The process group a DTensor is sharded over, or None when it is replicated (its local part is the whole)."""
    placements = gradient.placements
    if len(placements) != 1:
        raise ValueError(
            f"GE noise supports DTensor gradients on a 1-D device mesh (FSDP2 full shard); got placements {placements} "
            "(e.g. HSDP): set ModulationConfig.noise=False"
        )
    if isinstance(placements[0], Replicate):
        return None
    if not isinstance(placements[0], Shard):
        raise ValueError(f"GE noise cannot take the std of a gradient with placement {placements[0]}")
    return gradient.device_mesh.get_group()


def _sharded_std(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Full-tensor std of DTensor shards: two all-reduces over the mesh (sums, then squared deviations), float64."""
    group = _shard_group(gradients[0])
    locals_ = [local_part(g).detach().double() for g in gradients]
    counts = torch.tensor([g.numel() for g in gradients], dtype=torch.float64, device=locals_[0].device)
    sums = torch.stack([local.sum() for local in locals_])
    torch.distributed.all_reduce(sums, group=group)
    means = sums / counts
    squares = torch.stack([(local - mean).pow(2).sum() for local, mean in zip(locals_, means)])
    torch.distributed.all_reduce(squares, group=group)
    std = (squares / (counts - 1).clamp_min(1)).sqrt()
    return torch.where(counts > 1, std, torch.zeros_like(std))


def _as_factor(value, device: torch.device) -> torch.Tensor:
    """A coefficient (float or 0-d tensor) as a float32 0-d tensor on `device` (float32, as the scores' k)."""
    return torch.as_tensor(value, dtype=torch.float32).to(device)


def modulate_gradients(
    parameters: Mapping[str, Sequence[torch.nn.Parameter]],
    coefficients: Mapping[str, float | torch.Tensor],
    *,
    noise: bool,
    noise_std_from: str,
    seed: int,
    already_scaled: bool = False,
) -> None:
    """In place, for every modality m and every parameter of m with a gradient: g <- k_m * g (Eq. 18), then,
    with `noise`, g <- g + N(0, sigma^2) per tensor (Eq. 19's h(theta), "GE" of OGM-GE).

    `noise_std_from="before"` takes sigma from the gradient before scaling (released OGM-GE code),
    `"after"` from the scaled one (Ada2I). The noise is drawn from a generator seeded with `seed`, in the
    order of `parameters`: the caller passes the same seed on every rank (replicas stay identical) and a new
    one per step (a resumed run draws the same noise as an uninterrupted one). Sharded (DTensor) gradients get the
    full tensor's sigma and their slice of the full-size draw (see the module docstring).

    `already_scaled=True`: the gradients already carry k_m (`apply="backward_hook"` scaled them inside backward, or
    the trainer's clipping did, see `trainer/clipping.py`); only the noise is added, and `"before"` takes
    sigma = std(g) / k_m.

    `coefficients` are floats or 0-d tensors (kept on the device: no host sync). Runs once per optimizer step on
    every encoder tensor: foreach ops and one noise draw per device keep the per-tensor Python work small.
    """
    if noise_std_from not in NOISE_STD_FROM:
        raise ValueError(f"noise_std_from={noise_std_from!r} is unknown; expected one of {list(NOISE_STD_FROM)}")
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for name, params in parameters.items():
        for param in params:
            if param.grad is not None:
                local = local_part(param.grad)
                gradients, factors = groups.setdefault((local.device, local.dtype), ([], []))
                gradients.append(param.grad)
                factors.append(_as_factor(coefficients[name], local.device))
    for (device, _), (gradients, factors) in groups.items():
        locals_ = [local_part(g) for g in gradients]
        sigmas = None
        if noise and noise_std_from == "before":
            sigmas = per_tensor_std(gradients)
            if already_scaled:  # std(k g) / k = std(g); the eps is added once
                sigmas = (sigmas - NOISE_STD_EPS) / torch.stack(factors).double() + NOISE_STD_EPS
        if not already_scaled:
            torch._foreach_mul_(locals_, factors)
        if not noise:
            continue
        if sigmas is None:
            sigmas = per_tensor_std(gradients)
        add_noise(gradients, sigmas, seed, device)


def add_noise(gradients: Sequence[torch.Tensor], sigmas: torch.Tensor, seed: int, device: torch.device) -> None:
    """g <- g + sigma * N(0, 1) per tensor, in place, from ONE draw of the tensors' full sizes seeded with `seed`
    (split in order). A DTensor gets the slice of its full-size chunk that its shard covers, so every placement of
    the same tensors receives the same noise."""
    sizes = [g.numel() for g in gradients]  # a DTensor's numel / shape are the full tensor's
    generator = torch.Generator(device=device).manual_seed(seed)
    draw = torch.randn(sum(sizes), generator=generator, device=device, dtype=torch.float32)
    chunks = [chunk.view(g.shape) for chunk, g in zip(draw.split(sizes), gradients)]
    chunks = [
        distribute_tensor(chunk, g.device_mesh, g.placements, src_data_rank=None).to_local() if is_sharded(g) else chunk
        for chunk, g in zip(chunks, gradients)
    ]
    # g += N(0, 1) * sigma in one fused pass (computed in float32, rounded once to the gradient's dtype).
    torch._foreach_addcmul_([local_part(g) for g in gradients], chunks, list(sigmas.to(device).unbind()))


__all__ = ["NOISE_STD_FROM", "NOISE_STD_EPS", "add_noise", "ge_noise_std", "is_sharded", "local_part",
           "modulate_gradients", "per_tensor_std"]
