"""`BSSCallback`: the BSS curriculum (measurer + pacing + scheduler) as the train sampler of `MultimodalTrainer`.

`get_train_sampler` plans the curriculum for `TrainingArguments.num_train_epochs` = E epochs and returns a
`CurriculumSampler` (one `Trainer` pass over all E epochs, see `sampler.py` for why):
  * heuristic scheduler: epoch e (1-based) trains on the first ceil(N * lambda(e)) samples of the
    balance-sorted order (CL: most balanced first; anti-CL: reversed), shuffled; the training set is scored
    once before epoch 1 (released code) or every `rescore_every` epochs;
  * learned scheduler (released train-SPL.py): every epoch rescores all N samples and draws a weighted
    permutation, w_i = 1 - (Norm(loss_i) - Norm(sim_i)) + 0.01, the normalized components accumulated over
    epochs (`none | sum | ema`, paper figure: sum) and min-max normalized again before the weights.
Scoring is one inference pass (eval mode, no parameter update) with the model as trained so far. Under DDP and FSDP
every rank scores a contiguous shard of the training set and the components are gathered (`sharded.py`; a forward
under FSDP needs every rank), so every rank holds the same scores and draws the same order from the same seed. The built orders and the
accumulated components are saved with every checkpoint: a resumed run replays the same orders.

Checkpoint state: one JSON file, `bss_state.json`, written atomically (temporary file + `os.replace`):
  * `format_version` (2), `config` (the `BSSConfig` fields), `num_samples` and `seed` (the resolved seed of the
    orders) of the plan, `orders` (epoch -> dataset positions), `sorted_order` (heuristic), `score_history`;
  * `accumulated` (learned scheduler: the accumulated normalized loss / similarity, one value per sample) with
    `accumulated_dtype` ("float64"): the values are float64 and JSON writes a float64 as its shortest round-trip
    repr, so reading them back AS FLOAT64 gives the saved bits exactly (reading them as float32, as before, moved
    every resumed weight by up to 6e-8 and could change a later epoch's draw).
Resuming refuses (`CheckpointStateError`, naming the file) a missing, unreadable or incomplete state file, one saved
with another `BSSConfig`, another training-set size or another seed; `MultimodalTrainer(method_state_on_resume=
"restart")` starts the curriculum fresh instead.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from ...progress import progress_disabled
from ...trainer.callbacks import BalancingCallback
from ...trainer.checkpoint_state import (
    RESTART_HINT,
    CheckpointStateError,
    check_same_config,
    read_json_state,
    require_keys,
    write_json_atomic,
)
from .config import BSSConfig
from .diagnostics import plot_bss_diagnostics
from .measurer import min_max_normalize
from .ordering import (
    accumulate_scores,
    curriculum_order,
    epoch_generator,
    heuristic_epoch_indices,
    learned_weights,
    weighted_permutation,
)
from .pacing import pacing_fraction, subset_size
from .sampler import CurriculumSampler
from .sharded import measure_sharded

STATE_FILE = "bss_state.json"
STATE_FORMAT_VERSION = 2
STATE_KEYS = ("format_version", "config", "num_samples", "seed", "orders", "sorted_order", "accumulated",
              "accumulated_dtype", "score_history")
ACCUMULATED_DTYPE = torch.float64  # what `accumulate_scores` returns, saved and restored as such
LOG_PREFIX = "bss/"

BSS_CITATION = """@inproceedings{guan2025bss,
  title     = {Balance-aware Sequence Sampling Makes Multi-modal Learning Better},
  booktitle = {Proceedings of the Thirty-Fourth International Joint Conference on Artificial Intelligence (IJCAI)},
  year      = {2025}
}"""


def warn_if_the_curriculum_is_cut_short(config: BSSConfig, sizes: list[int], num_samples: int, num_epochs: int) -> None:
    """A heuristic curriculum with `t_grow` beyond the run never reaches the whole training set (the heuristic recipe at
    3 epochs with t_grow = 40 trained on 16% of the data): say so, with what the run will see and how to fix it."""
    if config.scheduler != "heuristic" or config.t_grow <= num_epochs:
        return
    seen = sizes[-1] / num_samples
    warnings.warn(
        f"BSS: t_grow={config.t_grow:g} is beyond num_train_epochs={num_epochs}: the last epoch uses {seen:.0%} of the "
        f"training set and the run never sees the rest; set bss.t_grow to at most {num_epochs}, or train longer",
        UserWarning,
        stacklevel=2,
    )


class BSSCallback(BalancingCallback):
    """BSS curriculum sampler for `MultimodalTrainer`. Logs `bss/epoch`, `bss/lambda`, `bss/fraction_seen` and the
    latest scores' `bss/score_mean`, `bss/score_std`; `score_history` keeps a histogram per scoring epoch."""

    method_name = "bss"
    citation = BSS_CITATION

    def __init__(self, config: BSSConfig | None = None, **options: Any):
        self.config = self.resolve_config(BSSConfig, config, options)
        self.sampler: CurriculumSampler | None = None
        self.score_history: dict[int, dict[str, Any]] = {}
        self._model = None
        self._dataset = None
        self._seed = 0
        self._sorted_order: list[int] | None = None
        self._accumulated: dict[str, torch.Tensor] | None = None
        self._saved_orders: dict[int, list[int]] = {}
        self._total_batch_size = 1
        self._state: TrainerState | None = None  # the Trainer's state, for the step -> curriculum epoch mapping
        self._seen: set[int] = set()  # samples of the curriculum epochs 1.._seen_through, for `fraction_seen`
        self._seen_through = 0
        self._num_samples: int | None = None
        self._restored_plan: tuple[str, dict[str, Any]] | None = None  # (path, saved plan) to check against the new one

    # ----- plan -----
    def get_train_sampler(self, train_dataset, args: TrainingArguments) -> CurriculumSampler:
        num_epochs = math.ceil(args.num_train_epochs)
        if args.max_steps > 0:
            raise ValueError("BSSCallback plans the curriculum by epochs: set num_train_epochs, not max_steps")
        num_samples = len(train_dataset)
        self._dataset = train_dataset
        self._seed = args.seed if self.config.seed is None else self.config.seed
        self._total_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self._num_samples = num_samples
        if self._restored_plan is not None:  # the checkpoint was read before the loader was built (the usual order)
            self._check_plan(*self._restored_plan)
            self._restored_plan = None  # checked once, for the run that resumed from it
        sizes = self.epoch_sizes(num_samples, num_epochs)
        warn_if_the_curriculum_is_cut_short(self.config, sizes, num_samples, num_epochs)
        self.sampler = CurriculumSampler(num_samples, sizes, self._build_order)
        self.sampler.orders.update(self._saved_orders)
        return self.sampler

    def epoch_sizes(self, num_samples: int, num_epochs: int) -> list[int]:
        """Samples per curriculum epoch: ceil(N * lambda(e)) for e = 1..E (heuristic), N (learned)."""
        if self.config.scheduler == "learned":
            return [num_samples] * num_epochs
        return [subset_size(num_samples, self.fraction(epoch)) for epoch in range(1, num_epochs + 1)]

    def fraction(self, epoch: int) -> float:
        c = self.config
        options = {"n_bins": c.n_bins} if c.pacing == "baby_step" else {}
        return pacing_fraction(c.pacing, epoch, lambda0=c.lambda0, t_grow=c.t_grow, **options)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._model = model
        self._show_progress = not progress_disabled(args)  # display only: a bar over each rescoring pass

    # ----- orders, built when the loader reaches an epoch -----
    def _build_order(self, epoch: int) -> list[int]:
        # Every rank runs this (the scoring is split across ranks and gathered): same scores, same seed, same order.
        return self._learned_order(epoch) if self.config.scheduler == "learned" else self._heuristic_order(epoch)

    def _heuristic_order(self, epoch: int) -> list[int]:
        every = self.config.rescore_every
        if self._sorted_order is None or (every is not None and (epoch - 1) % every == 0):
            scores = self._measure(epoch, self.config.criterion)["score"]
            self._sorted_order = curriculum_order(scores, anti=self.config.order == "anti_cl").tolist()
        indices = heuristic_epoch_indices(
            torch.tensor(self._sorted_order), self.fraction(epoch), epoch_generator(self._seed, epoch)
        )
        return [int(i) for i in indices]

    def _learned_order(self, epoch: int) -> list[int]:
        measured = self._measure(epoch, f"{self.config.similarity}-training_loss")
        current = {"loss": min_max_normalize(measured["loss"]), "similarity": min_max_normalize(measured["similarity"])}
        previous = self._accumulated or {}
        self._accumulated = {
            key: accumulate_scores(previous.get(key), value, self.config.accumulate, decay=self.config.ema_decay)
            for key, value in current.items()
        }
        weights = learned_weights(
            min_max_normalize(self._accumulated["loss"]), min_max_normalize(self._accumulated["similarity"])
        )
        return [int(i) for i in weighted_permutation(weights, epoch_generator(self._seed, epoch))]

    def _measure(self, epoch: int, criterion: str) -> dict[str, torch.Tensor]:
        if self._model is None:
            raise RuntimeError("BSSCallback scores with the model: train with MultimodalTrainer (on_train_begin gives it)")
        measured = measure_sharded(
            self._model,
            self._dataset,
            criterion,
            batch_size=self.config.scoring_batch_size,
            gradient=self.config.gradient,
            collate_fn=self.data_collator,
            show_progress=getattr(self, "_show_progress", False),
            desc=f"BSS: scoring {len(self._dataset)} samples for epoch {epoch} ({criterion})",
        )
        scores = measured["score"].float()
        counts, edges = torch.histogram(scores.cpu(), bins=20)
        self.score_history[epoch] = {
            "mean": float(scores.mean()), "std": float(scores.std()) if scores.numel() > 1 else 0.0,
            "counts": counts.tolist(), "edges": edges.tolist(),
        }
        return measured

    # ----- diagnostics -----
    def metrics_to_log(self) -> dict[str, float]:
        if self.sampler is None or self._state is None:
            return {}
        position = min(self._state.global_step * self._total_batch_size, len(self.sampler)) - 1
        epoch = self.sampler.epoch_at(max(position, 0))
        while self._seen_through < epoch and self._seen_through + 1 in self.sampler.orders:
            self._seen_through += 1  # the set grows epoch by epoch instead of being rebuilt at every log
            self._seen.update(self.sampler.orders[self._seen_through])
        logs = {
            LOG_PREFIX + "epoch": epoch,
            LOG_PREFIX + "lambda": round(self.sampler.epoch_sizes[epoch - 1] / self.sampler.num_samples, 6),
            LOG_PREFIX + "fraction_seen": round(len(self._seen) / self.sampler.num_samples, 6),
        }
        if self.score_history:
            latest = self.score_history[max(self.score_history)]
            logs.update({LOG_PREFIX + "score_mean": round(latest["mean"], 6), LOG_PREFIX + "score_std": round(latest["std"], 6)})
        return logs

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._state = state
        if self.sampler is None:
            return
        # The Trainer sees one pass, so its "epoch" strategies would act once, at the end: act at the end of every
        # curriculum epoch instead. The last one is left to the Trainer's own end-of-pass handling.
        completed = self.sampler.epochs_completed(state.global_step * self._total_batch_size)
        previous = self.sampler.epochs_completed((state.global_step - 1) * self._total_batch_size)
        if previous < completed < len(self.sampler.epoch_sizes):
            control.should_log = control.should_log or args.logging_strategy == "epoch"
            control.should_evaluate = control.should_evaluate or args.eval_strategy == "epoch"
            control.should_save = control.should_save or args.save_strategy == "epoch"

    def plot_diagnostics(self, log_history: list[dict], output_dir: str) -> list[str]:
        return plot_bss_diagnostics(self, output_dir)

    # ----- checkpoints -----
    def save_checkpoint_state(self, checkpoint_dir: str) -> None:
        accumulated = {k: v.to(ACCUMULATED_DTYPE).tolist() for k, v in (self._accumulated or {}).items()}
        state = {
            "format_version": STATE_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "num_samples": self._num_samples,
            "seed": self._seed if self.sampler is not None else None,
            "orders": {str(epoch): order for epoch, order in (self.sampler.orders if self.sampler else {}).items()},
            "sorted_order": self._sorted_order,
            "accumulated": accumulated,
            "accumulated_dtype": str(ACCUMULATED_DTYPE).removeprefix("torch."),
            "score_history": {str(k): v for k, v in self.score_history.items()},
        }
        write_json_atomic(os.path.join(checkpoint_dir, STATE_FILE), state)

    def load_checkpoint_state(self, checkpoint_dir: str) -> None:
        """Restore the orders, the sorted order and the accumulated scores; refuse (`CheckpointStateError`, naming
        the file) a missing, unreadable or incomplete `bss_state.json` and one saved with another config."""
        path = os.path.join(checkpoint_dir, STATE_FILE)
        method = type(self).__name__
        state = read_json_state(path, method)
        require_keys(state, STATE_KEYS, path, method)
        if state["format_version"] != STATE_FORMAT_VERSION:
            raise CheckpointStateError(
                f"{method}: {path} has format_version {state['format_version']!r}, this version reads "
                f"{STATE_FORMAT_VERSION}. {RESTART_HINT}"
            )
        check_same_config(state["config"], self.config.to_dict(), path, method)
        accumulated_dtype = state["accumulated_dtype"]
        if accumulated_dtype != str(ACCUMULATED_DTYPE).removeprefix("torch."):
            raise CheckpointStateError(f"{method}: {path} holds accumulated scores of dtype {accumulated_dtype!r}, "
                                       f"expected 'float64'. {RESTART_HINT}")
        try:
            orders = {int(epoch): [int(i) for i in order] for epoch, order in state["orders"].items()}
            accumulated = {key: torch.tensor(values, dtype=ACCUMULATED_DTYPE) for key, values in state["accumulated"].items()}
            score_history = {int(k): v for k, v in state["score_history"].items()}
            sorted_order = None if state["sorted_order"] is None else [int(i) for i in state["sorted_order"]]
            if accumulated and set(accumulated) != {"loss", "similarity"}:
                raise ValueError(f"accumulated holds {sorted(accumulated)}, expected ['loss', 'similarity']")
        except (AttributeError, TypeError, ValueError) as error:
            raise CheckpointStateError(f"{method}: {path} is damaged ({type(error).__name__}: {error}). {RESTART_HINT}") from None
        plan = {"num_samples": state["num_samples"], "seed": state["seed"], "orders": orders,
                "sorted_order": sorted_order, "accumulated": accumulated}
        if self.sampler is not None:  # the loader was built before the checkpoint was read: check now
            self._check_plan(path, plan)
        else:
            self._restored_plan = (path, plan)
        self._saved_orders = orders
        if self.sampler is not None:
            self.sampler.orders.update(self._saved_orders)
        self._sorted_order = sorted_order
        self._accumulated = accumulated or None
        self.score_history = score_history

    def _check_plan(self, path: str, plan: dict[str, Any]) -> None:
        """The saved orders index a training set of `num_samples` rows drawn with `seed`: refuse another set or seed."""
        method = type(self).__name__
        saved_n, saved_seed = plan["num_samples"], plan["seed"]
        if saved_n is not None and saved_n != self._num_samples:
            raise CheckpointStateError(
                f"{method}: the checkpoint's state ({path}) was saved for a training set of {saved_n} samples, this one "
                f"has {self._num_samples}; its orders and scores do not apply. {RESTART_HINT}"
            )
        if saved_seed is not None and saved_seed != self._seed:
            raise CheckpointStateError(
                f"{method}: the checkpoint's state ({path}) was drawn with seed {saved_seed} (BSSConfig.seed, else "
                f"TrainingArguments.seed), this run has seed {self._seed}; resume with the same seed. {RESTART_HINT}"
            )
        n = self._num_samples
        bad = [name for name, indices in (("sorted_order", plan["sorted_order"] or []),
                                          *((f"orders[{e}]", o) for e, o in plan["orders"].items()))
               if any(i < 0 or i >= n for i in indices)]
        bad += [f"accumulated[{k!r}]" for k, v in plan["accumulated"].items() if v.ndim != 1 or v.numel() != n]
        if bad:
            raise CheckpointStateError(f"{method}: {path} is damaged: {bad} do not fit a training set of {n} samples. {RESTART_HINT}")


__all__ = ["BSSCallback", "STATE_FILE", "STATE_FORMAT_VERSION"]
