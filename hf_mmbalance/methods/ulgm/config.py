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
    """Options of `ULGMCallback` (SUGRM §3.3-3.4; Self-MM, thuiar/MMSA SELF_MM.py).

    `label_range` is H of METHODS.md §2 (y_m in [-H, H]; 3 for MOSI/MOSEI). It must fit the labels, not just bound
    them: at train start `ULGMCallback` refuses a training set whose largest |y_m| is below H / 2 (see
    `check_label_range` in callback.py for the reason; H = 1000 on [-3, 3] labels gave SUGRM labels of +-834).
    """

    variant: str = field(default="sugrm", metadata={"help": "sugrm (magnitude + direction, §3.3) or selfmm (Self-MM)"})
    label_range: float = field(default=3.0, metadata={"help": "H: labels lie in [-H, H] (3 for MOSI/MOSEI); refused at train start "
                                                                "when the labels' largest |y| is below H / 2"})
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
        if isinstance(self.label_range, bool) or not (
            isinstance(self.label_range, (int, float)) and math.isfinite(self.label_range) and self.label_range > 0
        ):
            raise ValueError(f"ULGMConfig.label_range must be a finite number > 0 (H), got {self.label_range!r}")
        self.label_range = float(self.label_range)
        if isinstance(self.extreme_quantile, bool) or not (
            isinstance(self.extreme_quantile, (int, float)) and 0 < self.extreme_quantile <= 0.5
        ):
            raise ValueError(f"ULGMConfig.extreme_quantile must lie in (0, 0.5], got {self.extreme_quantile!r}")
        if isinstance(self.track_samples, bool) or not isinstance(self.track_samples, int) or self.track_samples < 0:
            raise ValueError(f"ULGMConfig.track_samples must be an integer >= 0 (how many samples' labels to plot; 0 = "
                             f"none), got {self.track_samples!r}")

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
