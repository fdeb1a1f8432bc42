"""`ActiveLearningConfig`: the options of the balanced multimodal active-learning loop (METHODS.md §4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STRATEGIES = ("random", "entropy", "badge", "bmmal")
RETRAIN_MODES = ("reset", "continue")


@dataclass
class ActiveLearningConfig:
    """Options of `run_active_learning` (BMMAL, and the Random / Entropy / BADGE baselines in the same loop)."""

    strategy: str = field(default="bmmal", metadata={"help": "random | entropy | badge | bmmal"})
    budget_per_round: int = field(default=100, metadata={"help": "labels acquired per round (round 1: at random)"})
    total_budget: int | None = field(default=None, metadata={"help": "stop once this many labels are used (None: the pool)"})
    max_rounds: int | None = field(default=None, metadata={"help": "stop after this many trained rounds"})
    target_metric: str | None = field(default=None, metadata={"help": "stop once this eval metric (e.g. eval_accuracy) ..."})
    target_value: float | None = field(default=None, metadata={"help": "... reaches this value"})
    retrain: str = field(default="reset", metadata={"help": "reset: every round trains from the same initial weights; continue: from the last round's"})
    seed: int = field(default=0, metadata={"help": "seed of the random draws (round 1, random strategy, k-means++)"})
    scoring_batch_size: int = field(default=512, metadata={"help": "batch size of the pool-scoring pass"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"ActiveLearningConfig.strategy={self.strategy!r} is unknown; expected one of {list(STRATEGIES)}")
        if self.retrain not in RETRAIN_MODES:
            raise ValueError(f"ActiveLearningConfig.retrain={self.retrain!r} is unknown; expected one of {list(RETRAIN_MODES)}")
        for name in ("budget_per_round", "scoring_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ActiveLearningConfig.{name} must be an int >= 1, got {value!r}")
        if self.total_budget is not None and self.total_budget < self.budget_per_round:
            raise ValueError(
                f"ActiveLearningConfig.total_budget={self.total_budget} is smaller than one round's budget_per_round={self.budget_per_round}"
            )
        if (self.target_metric is None) != (self.target_value is None):
            raise ValueError("ActiveLearningConfig.target_metric and target_value go together: set both or neither")

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["ActiveLearningConfig", "STRATEGIES", "RETRAIN_MODES"]
