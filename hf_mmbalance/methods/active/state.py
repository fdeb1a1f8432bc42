"""The active-learning run's state on disk: one JSON file a person can read, written atomically.

Every round's acquired rows and their labels are written (`write_json_atomic`: tmp file + `os.replace`) BEFORE the
round's model is trained, so a run killed at any point restarts with every acquired label: a round without metrics
is retrained, a round with metrics is followed by the next acquisition.

Layout (`format_version` 2)::

    {"format_version": 2,
     "config": {...ActiveLearningConfig...},       # the options of the run (as of the last resume)
     "task": "classification", "num_labels": 3,    # of the model the labels were bought for
     "pool": {"size": 105, "id_kind": "sample_idx" | "row_hash", "ids_sha256": ..., "columns": [...], "features": {...}},
     "pool_size": 105, "labels_used": 30,
     "config_changes": [{"after_round": 2, "changes": {"strategy": ["badge", "bmmal"]}}],   # allowed on resume
     "rounds": [{"round": 1, "strategy": "random", "ids": [...], "acquired": [...], "labels": [...],
                 "metrics": {...} | null, "mean_contributions": {...} | null}, ...]}

`ids` (the rows' `sample_idx`, or content hashes when the pool has no such column) are what the labels belong to:
a resumed run maps them onto the pool it is given, so a reordered pool gets every label on the right row.
`acquired` holds the rows' positions in the pool of the run that wrote the file (informational). Files written before
ids were stored (no `format_version`) still load for reading (plots, reports), but a run cannot resume from them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ...trainer.checkpoint_state import RESTART_HINT, CheckpointStateError, read_json_state, write_json_atomic
from .config import RESUME_CHECKED

STATE_FILE = "active_learning_state.json"
FORMAT_VERSION = 2
METHOD = "active learning"
NEW_RUN_HINT = "start a new run in another (empty) output_dir"
_ROUND_FOLDER = re.compile(r"round-\d+")


@dataclass
class RoundRecord:
    round: int
    acquired: list[int]  # pool positions of the rows acquired in this round (in the pool of the last run)
    labels: list  # the oracle's labels for them, in the same order (int class ids, or floats for regression)
    metrics: dict[str, float] | None = None  # set once the round's model is trained and evaluated
    mean_contributions: dict[str, float] | None = None  # mean Phi per modality over the pool scored (bmmal)
    ids: list | None = None  # the rows' ids (sample_idx or content hash): what the labels are attached to
    strategy: str | None = None  # how the rows were chosen (round 1: random)


@dataclass
class ActiveLearningState:
    config: dict[str, Any]
    pool_size: int
    rounds: list[RoundRecord] = field(default_factory=list)
    pool: dict[str, Any] | None = None  # the pool's fingerprint (`PoolIdentity.describe`)
    task: str | None = None
    num_labels: int | None = None
    config_changes: list[dict[str, Any]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def labeled(self) -> dict[int, Any]:
        """Pool position -> label, for every label acquired so far (positions in the pool this run was given)."""
        return {i: y for record in self.rounds for i, y in zip(record.acquired, record.labels)}

    @property
    def labeled_ids(self) -> dict[Any, Any]:
        """Row id -> label, for every label acquired so far."""
        return {i: y for record in self.rounds for i, y in zip(record.ids or [], record.labels)}

    def save(self, output_dir: str) -> str:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, STATE_FILE)
        payload = {
            "format_version": self.format_version,
            "config": self.config,
            "task": self.task,
            "num_labels": self.num_labels,
            "pool": self.pool,
            "pool_size": self.pool_size,
            "labels_used": len(self.labeled),
            "config_changes": self.config_changes,
            "rounds": [vars(record) for record in self.rounds],
        }
        write_json_atomic(path, payload, indent=1)  # a reader sees the old state or the new one, never half of one
        return path

    @classmethod
    def load(cls, output_dir: str) -> ActiveLearningState | None:
        """The saved state; None for a fresh output_dir. `CheckpointStateError` naming the file when it is missing
        although round folders exist, unreadable, or damaged: never a silent fresh start that re-buys labels."""
        path = os.path.join(output_dir, STATE_FILE)
        if not os.path.exists(path):
            folders = round_folders(output_dir)
            if folders:
                raise CheckpointStateError(
                    f"{METHOD}: {output_dir} holds round folders ({', '.join(folders)}) but no {STATE_FILE}: the labels "
                    f"bought for them are recorded only in that file, so the run cannot resume, and starting over "
                    f"would buy them again. Restore {path}, or {NEW_RUN_HINT}"
                )
            return None
        try:
            payload = read_json_state(path, METHOD)
        except CheckpointStateError as error:
            detail = str(error).replace(RESTART_HINT, "").strip().rstrip(".")
            raise CheckpointStateError(
                f"{detail}. It records every label bought so far, so the run will not start over on its own (that "
                f"would buy them again): restore the file, or {NEW_RUN_HINT}"
            ) from None
        return cls._from_payload(payload, path)

    @classmethod
    def _from_payload(cls, payload: dict, path: str) -> ActiveLearningState:
        version = payload.get("format_version", 1)
        required = ["config", "pool_size", "rounds"] + (["pool", "task", "num_labels"] if version >= 2 else [])
        missing = [key for key in required if key not in payload]
        if missing or not isinstance(payload.get("rounds"), list) or not isinstance(payload.get("config"), dict):
            raise CheckpointStateError(
                f"{METHOD}: the state file {path} is damaged (missing or malformed {missing or ['rounds', 'config']}); "
                f"restore it, or {NEW_RUN_HINT}"
            )
        known = {f.name for f in fields(RoundRecord)}
        rounds = []
        for number, record in enumerate(payload["rounds"], start=1):
            problem = None
            if not isinstance(record, dict) or not {"round", "acquired", "labels"} <= set(record) or set(record) - known:
                problem = "unexpected fields"
            elif len(record["acquired"]) != len(record["labels"]) or (
                record.get("ids") is not None and len(record["ids"]) != len(record["labels"])
            ):
                problem = "acquired / ids / labels of different lengths"
            elif version >= 2 and record.get("ids") is None:
                problem = "no row ids"
            if problem:
                raise CheckpointStateError(
                    f"{METHOD}: the state file {path} is damaged: round entry {number} has {problem}; restore it, or "
                    f"{NEW_RUN_HINT}"
                )
            rounds.append(RoundRecord(**record))
        return cls(
            config=payload["config"],
            pool_size=payload["pool_size"],
            rounds=rounds,
            pool=payload.get("pool"),
            task=payload.get("task"),
            num_labels=payload.get("num_labels"),
            config_changes=list(payload.get("config_changes") or []),
            format_version=version,
        )

    def check_resume(self, path: str, config: dict[str, Any], identity, task: str, num_labels: int,
                     allowed: Sequence[str] = ()) -> dict[str, tuple]:
        """Refuse to resume with another pool, model task or checked option (naming the file and every field that
        changed); map the stored row ids onto `identity`'s positions. Options in `allowed` may change: the state then
        takes the new values, records the change and returns it ({field: (saved, now)})."""
        if self.format_version < 2:
            raise CheckpointStateError(
                f"{METHOD}: {path} was written by an older version of hf_mmbalance that stored rows by position only "
                f"(no row ids, no pool fingerprint), so it cannot be checked against this pool and resuming could attach "
                f"labels to the wrong rows. Finish that run with the version that wrote it, or {NEW_RUN_HINT}"
            )
        changes = identity.differences(self.pool or {}, [i for record in self.rounds for i in record.ids])
        for name, saved, now in (("task", self.task, task), ("num_labels", self.num_labels, num_labels)):
            if saved != now:
                changes.append(f"model {name}: saved {saved!r}, now {now!r}")
        if changes:
            raise CheckpointStateError(
                f"{METHOD}: cannot resume from {path}: the pool or the model is not the one the run was started on "
                f"({'; '.join(changes)}). Resume with the same pool (any row order) and model, or {NEW_RUN_HINT}"
            )
        changed = {key: (self.config.get(key), config.get(key)) for key in RESUME_CHECKED
                   if self.config.get(key) != config.get(key)}
        refused = {key: values for key, values in changed.items() if key not in allowed}
        if refused:
            details = "; ".join(f"{key}: saved {old!r}, now {new!r}" for key, (old, new) in refused.items())
            raise CheckpointStateError(
                f"{METHOD}: cannot resume from {path}: the run was started with other options ({details}); resuming "
                f"would mix the rounds of two runs. Resume with the saved values, {NEW_RUN_HINT}, or pass "
                f"ActiveLearningConfig(allow_config_change={sorted(refused)}) to continue this run with the new values "
                f"from the next round on"
            )
        if changed:
            self.config_changes.append({
                "after_round": self.rounds[-1].round if self.rounds else 0,
                "changes": {key: list(values) for key, values in changed.items()},
            })
        self.config = dict(config)
        for record in self.rounds:  # positions in the pool this run was given
            record.acquired = [identity.position_of[row_id] for row_id in record.ids]
        return changed


def round_folders(output_dir: str) -> list[str]:
    """The `round-<r>` folders of `output_dir`, in round order."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if _ROUND_FOLDER.fullmatch(n) and os.path.isdir(os.path.join(output_dir, n))]
    return sorted(names, key=lambda n: int(n.split("-")[1]))


__all__ = ["ActiveLearningState", "RoundRecord", "STATE_FILE", "FORMAT_VERSION", "round_folders"]
