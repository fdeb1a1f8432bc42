"""Where k_m is applied, engine by engine (DESIGN.md "Distributed engines"; HF_NOTES.md 2026-12).

Two ways, one result on one process without accumulation:

* `pre_optimizer_step` (Ada2I released order: clip, modulate, step): g <- k_m g on the encoder parameters of m after
  clipping, with k_m from the scores summed over the step's micro-batches and the ranks. When `MultimodalTrainer`
  clips (`max_grad_norm > 0`), k_m goes into the clipping's own multiply (c * k_m: `trainer/clipping.py`), so the
  scaling costs no pass over the gradients; otherwise `on_pre_optimizer_step` scales them. Needs the
  gradients before the update: one process, DDP, FSDP2 (a DTensor shard is scaled element-wise). Refused under
  DeepSpeed, whose `accelerator.backward` already ran `engine.step()` (the callback would fire after the update and
  modulate nothing), and under FSDP1 (flat parameters mix modules, names are flattened).
* `backward_hook`: a tensor hook on modality m's encoder OUTPUT z_m (captured by a forward hook on the encoder, see
  `capture_encoder_outputs`) multiplies the gradient flowing into the encoder
  by k_m. Every encoder parameter's gradient is a linear function of dL/dz_m (the chain rule through the encoder),
  and dL/dz_m already sums every path out of z_m (the fusion, the unimodal head, ULGM / SUGRM projections, extra
  loss terms), so each encoder parameter gets exactly k_m g. k_m comes from the MICRO-batch's scores summed over the
  ranks before backward (one all-reduce of M numbers); with gradient accumulation each micro-batch uses its own
  coefficients (the step's gradient is sum_b k_m^(b) g^(b), not k_m sum_b g^(b)). Clipping then sees the modulated
  gradient (modulate, clip, step), so with an active `max_grad_norm` the update differs from `pre_optimizer_step`.
  It holds in every engine, DeepSpeed included; a `parameter_filter` cannot be honoured (the whole encoder is scaled).
* `auto`: `pre_optimizer_step` where it is exact (one process, DDP, FSDP2: identical to the behaviour before the
  option existed), `backward_hook` under DeepSpeed and FSDP1.

The GE noise is added to the parameters' gradients in `on_pre_optimizer_step` in both modes (`gradient.py`: full-tensor
std under FSDP2, the same draw on every rank). Under DeepSpeed ZeRO and FSDP1 the callbacks never see per-parameter
gradients before the update: noise is refused there with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

APPLY_MODES = ("pre_optimizer_step", "backward_hook", "auto")
HOOK_ENGINES = ("deepspeed", "fsdp1")  # where `auto` must take the hook


def resolve_apply(apply: str, engine: str, *, noise: bool, parameter_filter: str | None, monitor_only: bool = False) -> str:
    """The concrete mode (`pre_optimizer_step` or `backward_hook`) for `apply` under `engine` (a `TrainingEngine`
    name), or a ValueError saying why the combination cannot modulate correctly."""
    if apply not in APPLY_MODES:
        raise ValueError(f"apply={apply!r} is unknown; expected one of {list(APPLY_MODES)}")
    mode = ("backward_hook" if engine in HOOK_ENGINES else "pre_optimizer_step") if apply == "auto" else apply
    if monitor_only:
        return mode  # nothing is changed, so every engine can monitor
    if mode == "pre_optimizer_step" and engine == "deepspeed":
        raise ValueError(
            "ModulationConfig.apply='pre_optimizer_step' cannot work under DeepSpeed: accelerate's DeepSpeed backward "
            "runs engine.step(), so on_pre_optimizer_step fires AFTER the update (and ZeRO hides .grad) and the "
            "modulation would silently do nothing. Use apply='backward_hook' (or 'auto'), which scales the gradient "
            "inside backward"
        )
    if mode == "pre_optimizer_step" and engine == "fsdp1":
        raise ValueError(
            "ModulationConfig.apply='pre_optimizer_step' cannot work under FSDP1: its flat parameters mix several "
            "modules and rename them, so an encoder's gradients cannot be picked out. Use apply='backward_hook' "
            "(or 'auto'), or FSDP2 (fsdp_config={'fsdp_version': 2})"
        )
    if mode == "backward_hook" and parameter_filter is not None:
        raise ValueError(
            f"ModulationConfig.parameter_filter={parameter_filter!r} needs apply='pre_optimizer_step': the backward "
            "hook scales the gradient at the encoder's output, so it reaches every encoder parameter"
            + (" (and DeepSpeed allows no other way: drop the filter)" if engine in HOOK_ENGINES else "")
        )
    if noise and engine in HOOK_ENGINES:
        raise ValueError(
            f"ModulationConfig.noise=True needs each parameter's gradient before the update, which {engine} never "
            "exposes to callbacks (DeepSpeed ZeRO partitions it and steps inside backward; FSDP1 flattens it). Set "
            "noise=False to modulate without the GE noise"
        )
    return mode


def capture_encoder_outputs(encoders: Mapping[str, torch.nn.Module], store: dict[str, torch.Tensor]) -> list:
    """Forward hooks that put each encoder's output z_m into `store[name]` as the forward pass makes it.

    Why not `outputs.features`: an engine may hand back copies of the model's outputs that the loss does not depend
    on (DDP passes them through its `_DDPSink`; their gradient is never computed), so a hook on them would scale
    nothing. The encoder's own output is the tensor the whole graph above it uses. Returns the hook handles."""
    def capture(name):
        def hook(module, args, output):
            store[name] = output

        return hook

    return [encoders[name].register_forward_hook(capture(name)) for name in encoders]


def scale_feature_gradients(features: Mapping[str, torch.Tensor], coefficients: Mapping[str, torch.Tensor]) -> list:
    """Register on each feature z_m a hook that multiplies its gradient by k_m (a 0-d tensor, kept on the device).
    Features that do not require grad (a frozen encoder) are skipped. Returns the hook handles."""
    handles = []
    for name, factor in coefficients.items():
        feature = features[name]
        if feature.requires_grad:
            handles.append(feature.register_hook(_scaler(factor)))
    return handles


def _scaler(factor: torch.Tensor):
    def hook(gradient: torch.Tensor | None) -> torch.Tensor | None:
        # A 0-d float32 factor does not promote the product: a bf16 / fp16 gradient stays in its dtype.
        return None if gradient is None else gradient * factor

    return hook


__all__ = ["APPLY_MODES", "capture_encoder_outputs", "resolve_apply", "scale_feature_gradients"]
