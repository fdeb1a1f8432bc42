"""`DiagnoseConfig`: the options of `hf-mmbalance diagnose` / `diagnose_balance` (issue 17), usable from YAML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

BUDGETS = ("quick", "full")
# Methods `--budget full` can run, in this order; which of them apply is decided by the task (cli.train's check).
DIAGNOSE_METHODS = ("modulation", "bss", "ulgm")


class DiagnoseError(ValueError):
    """A diagnosis that cannot run as asked: a bad option, or a stored part computed with another configuration."""


@dataclass
class DiagnoseConfig:
    """How much `diagnose` trains and what it measures. Field names do not clash with `TrainingArguments`."""

    budget: str = field(
        default="quick",
        metadata={"help": "quick: each modality alone and the joint (vanilla) model, one seed; full: also every "
                  "applicable balancing method (modulation, bss; ulgm for regression), with num_seeds seeds each"},
    )
    num_seeds: int | None = field(
        default=None,
        metadata={"help": "seeds per training (TrainingArguments.seed, +1, ...); default 1 (quick) or 3 (full)"},
    )
    diagnose_epochs: float | None = field(
        default=None, metadata={"help": "epochs of every training (default: the recipe's num_train_epochs)"}
    )
    diagnose_methods: list[str] | None = field(
        default=None,
        metadata={"help": "full budget: the methods to compare (default: every applicable one of modulation, bss, "
                  "ulgm); each takes the recipe's section of that name as its options"},
    )
    bss_criterion: str | None = field(
        default=None,
        metadata={"help": "BSS measurer criterion for the unbalanced fraction (default: the recipe's bss criterion, "
                  "else BSSConfig's); a sample is unbalanced when its balance score is below bss_threshold"},
    )
    bss_threshold: float = field(
        default=0.0,
        metadata={"help": "balance score below which a sample counts as unbalanced (the score is Norm(sim) - "
                  "Norm(cost) in [-1, 1]: below 0 its cost stands out more than its modalities agree)"},
    )
    probe_max_iter: int = field(default=2000, metadata={"help": "iterations of each linear probe's solver"})

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise DiagnoseError(f"budget={self.budget!r} is unknown; expected one of {list(BUDGETS)}")
        if self.num_seeds is not None and (isinstance(self.num_seeds, bool) or not isinstance(self.num_seeds, int)
                                           or self.num_seeds < 1):
            raise DiagnoseError(f"num_seeds must be a positive int, got {self.num_seeds!r}")
        if self.diagnose_epochs is not None and not self.diagnose_epochs > 0:
            raise DiagnoseError(f"diagnose_epochs must be > 0, got {self.diagnose_epochs!r}")
        unknown = [m for m in self.diagnose_methods or [] if m not in DIAGNOSE_METHODS]
        if unknown:
            raise DiagnoseError(f"diagnose_methods {unknown} are unknown; expected some of {list(DIAGNOSE_METHODS)}")
        if self.diagnose_methods is not None and self.budget != "full":
            raise DiagnoseError("diagnose_methods compares balancing methods, which only --budget full runs")
        if self.probe_max_iter < 1:
            raise DiagnoseError(f"probe_max_iter must be >= 1, got {self.probe_max_iter!r}")

    @property
    def seeds_count(self) -> int:
        return self.num_seeds or (3 if self.budget == "full" else 1)

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["BUDGETS", "DIAGNOSE_METHODS", "DiagnoseConfig", "DiagnoseError"]
