"""Optimizer parameter groups with a learning rate per modality (pretrained backbones often train slower than the
new heads)."""

from __future__ import annotations

from torch import nn


def modality_parameter_groups(
    model: nn.Module, rates: dict[str, float], weight_decay: float, decay_parameter_names: list[str]
) -> list[dict]:
    """Parameter groups: for each modality in `rates`, its encoder's trainable parameters at that learning rate
    (split into decayed / not decayed as `Trainer` splits them); then every other trainable parameter at the
    optimizer's default rate. Groups without parameters are left out (torch refuses empty groups in some
    optimizers)."""
    decayed = set(decay_parameter_names)
    owner = {}
    for name in rates:
        if name not in model.encoders:
            raise ValueError(f"learning_rate for modality {name!r}, which the model does not have ({list(model.encoders)})")
        for parameter_name, _ in model.encoders[name].named_parameters():
            owner[f"encoders.{name}.{parameter_name}"] = name
    buckets: dict[tuple[str | None, bool], list] = {}
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (owner.get(parameter_name), parameter_name in decayed)
            buckets.setdefault(key, []).append(parameter)
    groups = []
    for (modality, decays), parameters in buckets.items():
        group = {"params": parameters, "weight_decay": weight_decay if decays else 0.0}
        if modality is not None:
            group["lr"] = float(rates[modality])
        groups.append(group)
    return groups


__all__ = ["modality_parameter_groups"]
