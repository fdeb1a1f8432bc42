"""`BSSConfig`: the options of the BSS curriculum sampler, with the defaults of METHODS.md §1."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .measurer import CRITERIA
from .pacing import PACING_FUNCTIONS

SCHEDULERS = ("heuristic", "learned")
ORDERS = ("cl", "anti_cl")
ACCUMULATIONS = ("none", "sum", "ema")
GRADIENT_MODES = ("closed_form", "exact")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class BSSConfig:
    """Options of `BSSCallback` (BSS, IJCAI 2025; appendix Table 1 criteria, C.2-C.4 pacing)."""

    scheduler: str = field(
        default="heuristic",
        metadata={"help": "heuristic: pacing over a score-sorted order; learned: weighted draw rescored every epoch (train-SPL.py)"},
    )
    criterion: str = field(
        default="feature_similarity-training_loss",
        metadata={"help": "measurer criterion (appendix Table 1); the learned scheduler always uses similarity and loss"},
    )
    pacing: str = field(default="root", metadata={"help": "baby_step | linear | root | root-3 | root-5 | geometric"})
    lambda0: float = field(default=0.1, metadata={"help": "fraction of the sorted set used at epoch 0"})
    t_grow: int = field(default=40, metadata={"help": "epoch at which the whole training set is used"})
    n_bins: int = field(default=5, metadata={"help": "baby_step: number of bins"})
    order: str = field(default="cl", metadata={"help": "cl: most balanced first; anti_cl: reversed (appendix Table 2)"})
    rescore_every: int | None = field(
        default=None, metadata={"help": "heuristic: rescore every k epochs (None: once at the start, as released)"}
    )
    similarity: str = field(
        default="feature_similarity", metadata={"help": "learned scheduler: feature_similarity or prediction_similarity"}
    )
    accumulate: str = field(default="sum", metadata={"help": "learned: none | sum | ema of the epoch scores (paper figure: sum)"})
    ema_decay: float = field(default=0.9, metadata={"help": "learned, accumulate=ema: weight of the previous scores"})
    gradient: str = field(
        default="closed_form",
        metadata={"help": "gradient_magnitude: closed_form (exact for the heads' last linear layers) or exact (torch.func)"},
    )
    scoring_batch_size: int = field(default=256, metadata={"help": "batch size of the scoring pass"})
    seed: int | None = field(default=None, metadata={"help": "seed of the orders (default: TrainingArguments.seed)"})

    def __post_init__(self) -> None:
        for name, allowed in (("scheduler", SCHEDULERS), ("order", ORDERS), ("accumulate", ACCUMULATIONS),
                              ("gradient", GRADIENT_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"BSSConfig.{name}={getattr(self, name)!r} is unknown; expected one of {list(allowed)}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"BSSConfig.criterion={self.criterion!r} is unknown; expected one of {list(CRITERIA)}")
        if self.pacing not in PACING_FUNCTIONS:
            raise ValueError(f"BSSConfig.pacing={self.pacing!r} is unknown; expected one of {sorted(PACING_FUNCTIONS)}")
        if self.similarity not in ("feature_similarity", "prediction_similarity"):
            raise ValueError(
                f"BSSConfig.similarity={self.similarity!r} is unknown; expected 'feature_similarity' or 'prediction_similarity'"
            )
        if self.rescore_every is not None and (
            isinstance(self.rescore_every, bool) or not isinstance(self.rescore_every, int) or self.rescore_every < 1
        ):
            raise ValueError(f"BSSConfig.rescore_every must be None or an int >= 1, got {self.rescore_every!r}")
        if isinstance(self.scoring_batch_size, bool) or not isinstance(self.scoring_batch_size, int) or self.scoring_batch_size < 1:
            raise ValueError(f"BSSConfig.scoring_batch_size must be an int >= 1, got {self.scoring_batch_size!r}")
        if not _is_number(self.ema_decay) or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"BSSConfig.ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        # The pacing options, checked here (when the config is built) and not first at train():
        if not _is_number(self.lambda0) or not 0.0 < self.lambda0 <= 1.0:
            raise ValueError(
                f"BSSConfig.lambda0 must be a number in (0, 1] (the fraction of the sorted set used at epoch 0), "
                f"got {self.lambda0!r}"
            )
        if not _is_number(self.t_grow) or self.t_grow < 1:
            raise ValueError(
                f"BSSConfig.t_grow must be a number >= 1 (the epoch at which the whole training set is used), got {self.t_grow!r}"
            )
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ValueError(f"BSSConfig.n_bins must be an int >= 1 (baby_step: the number of bins), got {self.n_bins!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"BSSConfig.seed must be None or an int >= 0, got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["BSSConfig", "SCHEDULERS", "ORDERS", "ACCUMULATIONS", "GRADIENT_MODES"]
