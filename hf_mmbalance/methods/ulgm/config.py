"""`ULGMConfig`: the options of unimodal label generation (METHODS.md §2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

VARIANTS = ("sugrm", "selfmm")
# Default weight of the common-space alignment per variant (tuned on benchmarks/ulgm_benchmark.py's data: 0.01, 0.03
# and 0.05 all turn SUGRM's anti-correlated labels positive; 0.3 and above hurt the fused MAE). Self-MM compares
# each modality within its own space, so it needs none.
DEFAULT_ALIGNMENT_WEIGHT = {"sugrm": 0.03, "selfmm": 0.0}


@dataclass
class ULGMConfig:
    """Options of `ULGMCallback` (SUGRM §3.3-3.4; Self-MM, thuiar/MMSA SELF_MM.py)."""

    variant: str = field(default="sugrm", metadata={"help": "sugrm (magnitude + direction, §3.3) or selfmm (Self-MM)"})
    label_range: float = field(default=3.0, metadata={"help": "H: labels lie in [-H, H] (3 for MOSI/MOSEI)"})
    extreme_quantile: float = field(
        default=0.05, metadata={"help": "sugrm: D_max from the top/bottom quantile of labels when none is exactly +-H"}
    )
    alignment_weight: float | None = field(
        default=None,
        metadata={"help": "weight of the loss term pulling F*_s towards the detached F*_m (not in the paper, see "
                          "`common_space_alignment_loss`); default 0.03 for sugrm, 0 for selfmm; 0 = the paper's loss"},
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

        if self.alignment_weight is None:
            self.alignment_weight = DEFAULT_ALIGNMENT_WEIGHT[self.variant]
        if isinstance(self.alignment_weight, bool) or not (
            isinstance(self.alignment_weight, (int, float)) and math.isfinite(self.alignment_weight) and self.alignment_weight >= 0
        ):
            raise ValueError(f"ULGMConfig.alignment_weight must be a finite number >= 0, got {self.alignment_weight!r}")
        self.alignment_weight = float(self.alignment_weight)

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["DEFAULT_ALIGNMENT_WEIGHT", "ULGMConfig", "VARIANTS"]
