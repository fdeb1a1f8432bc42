"""`ModulationConfig`: the options of disparity-ratio gradient modulation, with the defaults of METHODS.md §3."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from .application import APPLY_MODES
from .disparity import MODES
from .gradient import NOISE_STD_FROM

SCORES = ("dot", "cosine")
# Where each mode takes the GE noise std from (METHODS.md §3): OGM-GE before scaling, Ada2I after.
DEFAULT_NOISE_STD_FROM = {"ogm_ge": "before", "ada2i": "after"}


def parse_bool(owner: str, name: str, value) -> bool:
    """A boolean option: a real bool, or the strings "true" / "false" (any case; e.g. a CLI flag or a quoted YAML
    value). Anything else is refused by name: `bool("false")` is True, so a string is never taken for its truth."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{owner}.{name} must be true or false (a bool, or the string 'true' / 'false'), got {value!r}")


@dataclass
class ModulationConfig:
    """Options of `GradientModulationCallback` (Ada2I Eq. 15-19; OGM-GE as the 2-modality case)."""

    mode: str = field(
        default="ada2i",
        metadata={"help": "ada2i (any M >= 2, rho_m = s_m / min_j s_j, Eq. 17) or ogm_ge (M = 2, the original)"},
    )
    alpha: float = field(default=0.1, metadata={"help": "modulation strength: k_m = 1 - tanh(alpha * rho_m) (Eq. 18)"})
    score: str = field(
        default="dot",
        metadata={"help": "dot: softmax of the dot-product shares W_m z_m + b/M (released code); cosine: Eq. 16 as printed"},
    )
    noise: bool = field(default=True, metadata={"help": "add the GE Gaussian noise N(0, std(g)^2) (Eq. 19)"})
    noise_std_from: str | None = field(
        default=None,
        metadata={"help": "take the noise std from the gradient 'before' or 'after' scaling (default: ogm_ge before, ada2i after)"},
    )
    start_epoch: int = field(default=0, metadata={"help": "first epoch (0-based) of the modulation window"})
    end_epoch: int | None = field(default=None, metadata={"help": "last epoch (inclusive) of the window; None = to the end"})
    parameter_filter: str | None = field(
        default=None,
        metadata={
            "help": "regex searched in each encoder parameter's name (inside its encoder) to select what is modulated; "
            "None = every encoder parameter (Ada2I). Fusion layers and heads are never modulated."
        },
    )
    apply: str = field(
        default="auto",
        metadata={
            "help": "where k_m is applied: pre_optimizer_step (scale .grad after clipping, Ada2I order; not under "
            "DeepSpeed / FSDP1), backward_hook (a hook on each encoder's output feature scales its gradient inside "
            "backward: every engine; with gradient accumulation each micro-batch uses its own k; no parameter_filter), "
            "auto (pre_optimizer_step on one process, DDP and FSDP2, backward_hook under DeepSpeed and FSDP1)"
        },
    )
    monitor_only: bool = field(
        default=False, metadata={"help": "compute and log rho_m and k_m without changing the gradients (a vanilla run's diagnostics)"}
    )
    seed: int | None = field(default=None, metadata={"help": "seed of the GE noise (default: TrainingArguments.seed)"})

    def __post_init__(self) -> None:
        self.noise = parse_bool("ModulationConfig", "noise", self.noise)
        self.monitor_only = parse_bool("ModulationConfig", "monitor_only", self.monitor_only)
        if self.mode not in MODES:
            raise ValueError(f"ModulationConfig.mode={self.mode!r} is unknown; expected one of {list(MODES)}")
        if self.score not in SCORES:
            raise ValueError(f"ModulationConfig.score={self.score!r} is unknown; expected one of {list(SCORES)}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"ModulationConfig.alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.noise_std_from is None:
            self.noise_std_from = DEFAULT_NOISE_STD_FROM[self.mode]
        if self.noise_std_from not in NOISE_STD_FROM:
            raise ValueError(
                f"ModulationConfig.noise_std_from={self.noise_std_from!r} is unknown; expected one of {list(NOISE_STD_FROM)}"
            )
        if isinstance(self.start_epoch, bool) or not isinstance(self.start_epoch, int) or self.start_epoch < 0:
            raise ValueError(f"ModulationConfig.start_epoch must be an int >= 0, got {self.start_epoch!r}")
        if self.end_epoch is not None and (
            isinstance(self.end_epoch, bool) or not isinstance(self.end_epoch, int) or self.end_epoch < self.start_epoch
        ):
            raise ValueError(
                f"ModulationConfig.end_epoch must be None or an int >= start_epoch={self.start_epoch}, got {self.end_epoch!r}"
            )
        if self.apply not in APPLY_MODES:
            raise ValueError(f"ModulationConfig.apply={self.apply!r} is unknown; expected one of {list(APPLY_MODES)}")
        if self.apply == "backward_hook" and self.parameter_filter is not None:
            raise ValueError(
                f"ModulationConfig.parameter_filter={self.parameter_filter!r} needs apply='pre_optimizer_step' (or "
                "'auto'): the backward hook scales the gradient at the encoder's output, so it reaches every encoder parameter"
            )
        if self.parameter_filter is not None:
            try:
                re.compile(self.parameter_filter)
            except (re.error, TypeError) as error:
                raise ValueError(f"ModulationConfig.parameter_filter={self.parameter_filter!r} is not a valid regex: {error}") from None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"ModulationConfig.seed must be None or an int, got {self.seed!r}")

    def in_window(self, epoch: int) -> bool:
        """Whether `epoch` (0-based) lies in [start_epoch, end_epoch] (released OGM-GE code: both inclusive)."""
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["ModulationConfig", "SCORES", "DEFAULT_NOISE_STD_FROM", "parse_bool"]
