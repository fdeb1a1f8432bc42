"""The balancing methods, one sub-package per paper, and a registry from a recipe's section name to the
method's config dataclass and callback (as peft maps a tuner's name to its classes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bss import BSSCallback, BSSConfig
from .modulation import GradientModulationCallback, ModulationConfig
from .ulgm import ULGMCallback, ULGMConfig


@dataclass(frozen=True)
class MethodEntry:
    config_class: type
    callback_class: type


METHOD_REGISTRY: dict[str, MethodEntry] = {
    "modulation": MethodEntry(ModulationConfig, GradientModulationCallback),
    "bss": MethodEntry(BSSConfig, BSSCallback),
    "ulgm": MethodEntry(ULGMConfig, ULGMCallback),
}


def build_method_callbacks(sections: dict[str, dict[str, Any]]) -> list:
    """One callback per recipe section `{method_name: {field: value}}`; unknown methods and fields are named."""
    callbacks = []
    for name, options in sections.items():
        entry = METHOD_REGISTRY.get(name)
        if entry is None:
            raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHOD_REGISTRY)}")
        if not isinstance(options, dict):
            raise ValueError(f"method {name!r}: its section must be a mapping of option: value, got {options!r}")
        try:
            config = entry.config_class(**options)
        except TypeError as error:
            raise ValueError(f"method {name!r}: {error}") from None
        callbacks.append(entry.callback_class(config))
    return callbacks


__all__ = [
    "METHOD_REGISTRY",
    "MethodEntry",
    "build_method_callbacks",
    "BSSCallback",
    "BSSConfig",
    "GradientModulationCallback",
    "ModulationConfig",
    "ULGMCallback",
    "ULGMConfig",
]
