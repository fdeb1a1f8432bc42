"""`ActiveLearningConfig`: the options of the balanced multimodal active-learning loop (METHODS.md §4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STRATEGIES = ("random", "entropy", "badge", "bmmal")
RETRAIN_MODES = ("reset", "continue")
# The options a resumed run must share with the saved one (else the rounds of two runs would be mixed); the others
# (total_budget, max_rounds, target_metric / target_value, scoring_batch_size) only say when to stop or how fast to
# score, and may change on every resume.
RESUME_CHECKED = ("strategy", "budget_per_round", "seed", "retrain")


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
    allow_config_change: tuple[str, ...] = field(
        default=(),
        metadata={"help": "on resume, continue the saved run although these options changed (any of strategy, "
                          "budget_per_round, seed, retrain; e.g. [strategy]): the new values apply from the next round "
                          "on and the change is recorded in the state. Without it a changed option is refused"},
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"ActiveLearningConfig.strategy={self.strategy!r} is unknown; expected one of {list(STRATEGIES)}")
        if self.retrain not in RETRAIN_MODES:
            raise ValueError(f"ActiveLearningConfig.retrain={self.retrain!r} is unknown; expected one of {list(RETRAIN_MODES)}")
        for name in ("budget_per_round", "scoring_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ActiveLearningConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("total_budget", "max_rounds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"ActiveLearningConfig.{name} must be None or an int >= 0, got {value!r}")
        if self.total_budget is not None and self.total_budget < self.budget_per_round:
            raise ValueError(
                f"ActiveLearningConfig.total_budget={self.total_budget} is smaller than one round's budget_per_round={self.budget_per_round}"
            )
        if (self.target_metric is None) != (self.target_value is None):
            raise ValueError("ActiveLearningConfig.target_metric and target_value go together: set both or neither")
        allowed = self.allow_config_change
        if isinstance(allowed, str):
            allowed = allowed.replace(",", " ").split()
        if allowed is None:
            allowed = ()
        if not isinstance(allowed, (list, tuple)) or not all(isinstance(name, str) for name in allowed):
            raise ValueError(f"ActiveLearningConfig.allow_config_change must be a list of option names, got {allowed!r}")
        unknown = [name for name in allowed if name not in RESUME_CHECKED]
        if unknown:
            raise ValueError(
                f"ActiveLearningConfig.allow_config_change={list(allowed)}: {unknown} cannot be allowed; the options "
                f"checked on resume are {list(RESUME_CHECKED)} (the others may change on any resume)"
            )
        self.allow_config_change = tuple(allowed)

    def to_dict(self) -> dict:
        return asdict(self)

    def run_settings(self) -> dict:
        """The options recorded in the state file (all but `allow_config_change`, a permission for one resume)."""
        settings = self.to_dict()
        settings.pop("allow_config_change")
        return settings


__all__ = ["ActiveLearningConfig", "STRATEGIES", "RETRAIN_MODES", "RESUME_CHECKED"]
