"""`ULGMConfig`: the options of unimodal label generation (METHODS.md §2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

VARIANTS = ("sugrm", "selfmm")


@dataclass
class ULGMConfig:
    """Options of `ULGMCallback` (SUGRM §3.3-3.4; Self-MM, thuiar/MMSA SELF_MM.py)."""

    variant: str = field(default="sugrm", metadata={"help": "sugrm (magnitude + direction, §3.3) or selfmm (Self-MM)"})
    label_range: float = field(default=3.0, metadata={"help": "H: labels lie in [-H, H] (3 for MOSI/MOSEI)"})
    extreme_quantile: float = field(
        default=0.05, metadata={"help": "sugrm: D_max from the top/bottom quantile of labels when none is exactly +-H"}
    )
    track_samples: int = field(default=5, metadata={"help": "how many samples' label trajectories to keep for the plot"})
    export_labels: bool = field(default=False, metadata={"help": "write the generated labels of every epoch as CSV"})

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"ULGMConfig.variant={self.variant!r} is unknown; expected one of {list(VARIANTS)}")
        if not self.label_range > 0:
            raise ValueError(f"ULGMConfig.label_range must be > 0 (H), got {self.label_range!r}")
        if not 0 < self.extreme_quantile <= 0.5:
            raise ValueError(f"ULGMConfig.extreme_quantile must lie in (0, 0.5], got {self.extreme_quantile!r}")

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["ULGMConfig", "VARIANTS"]
