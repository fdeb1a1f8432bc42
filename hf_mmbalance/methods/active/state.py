"""The active-learning run's state on disk: one JSON file a person can read, written atomically.

Every round's acquired pool indices and their labels are written (tmp file + `os.replace`) BEFORE the round's
model is trained, so a run killed at any point restarts with every acquired label: a round without metrics is
retrained, a round with metrics is followed by the next acquisition.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

STATE_FILE = "active_learning_state.json"


@dataclass
class RoundRecord:
    round: int
    acquired: list[int]  # pool indices acquired in this round
    labels: list[int]  # the oracle's labels for them, in the same order
    metrics: dict[str, float] | None = None  # set once the round's model is trained and evaluated
    mean_contributions: dict[str, float] | None = None  # mean Phi per modality over the pool scored (bmmal)


@dataclass
class ActiveLearningState:
    config: dict[str, Any]
    pool_size: int
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def labeled(self) -> dict[int, int]:
        """Pool index -> label, for every label acquired so far."""
        return {i: y for record in self.rounds for i, y in zip(record.acquired, record.labels)}

    def save(self, output_dir: str) -> str:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, STATE_FILE)
        payload = {
            "config": self.config,
            "pool_size": self.pool_size,
            "labels_used": len(self.labeled),
            "rounds": [vars(record) for record in self.rounds],
        }
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # atomic: a reader sees the old state or the new one, never half of one
        return path

    @classmethod
    def load(cls, output_dir: str) -> ActiveLearningState | None:
        path = os.path.join(output_dir, STATE_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        rounds = [RoundRecord(**record) for record in payload["rounds"]]
        return cls(config=payload["config"], pool_size=payload["pool_size"], rounds=rounds)


__all__ = ["ActiveLearningState", "RoundRecord", "STATE_FILE"]
