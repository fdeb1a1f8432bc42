"""`ULGMCallback`: self-supervised unimodal labels for multimodal regression, as a `MultimodalTrainer` callback.

Per training micro-batch (Self-MM's released training step, which SUGRM keeps):
  1. the loss replaces the model's: L1(fused, y_m) + sum_s mean_i tanh(|y_s - y_m|) |pred_s - y_s| with the
     current label bank (METHODS.md §2); the model runs without labels, and the logged loss_<term> values
     are these terms (loss_fused, loss_<modality>, loss_alignment);
  2. from the second epoch on, the batch's unimodal labels are regenerated from the feature banks' centres —
     SUGRM: y_m + direction * magnitude (D_max from the +-H samples); Self-MM: 0.5 alpha y_f + 0.5 (y_f + d_s - d_f)
     — clamped to [-H, H] and merged by momentum with the 1-based epoch;
  3. the batch's common-space features F*_m, F*_s are written into the feature banks.
With `alignment_weight > 0` (the sugrm default, not in the paper) the loss also pulls F*_s towards the detached
F*_m, so that the common space the SUGRM rule measures in is common (see `common_space_alignment_loss`).
Banks are indexed by `sample_idx`; under DDP and FSDP the batch rows and features of every rank are gathered (a
tensor all-gather, each rank's batch padded to `per_device_train_batch_size` with repeats of its last row, which
write the same values twice), so every rank applies the same updates and holds identical banks. The banks live on
the model's device and a step moves nothing to the host: the averaging weights of the fused centres are rebuilt only
while the bank still fills (checked once per epoch), the id lookup is checked with an asynchronous assert.

Checkpoints (written atomically into the checkpoint folder, read back on every rank):
  * `ulgm_banks.safetensors`: `sample_idx` (N,) int64, the bank's row order, and per row `labels.fused` (y_m),
    `labels.<modality>` (y_s), `features.fused` (N, d_f), `features.<modality>` (N, d_s, each at its own width),
    `filled` (N,) bool;
  * `ulgm_state.json`: `version`, `config` (ULGMConfig), `initialized`, `names`, `num_samples`, `trajectories`.
On resume the banks are keyed by `sample_idx`, not by row position: a training set with the same ids in another
order gets every sample's own labels and features back; other ids, other multimodal labels, another config, a
missing or unreadable file are refused with a `CheckpointStateError` naming the file
(`MultimodalTrainer(method_state_on_resume="restart")` starts ULGM fresh instead).
"""

from __future__ import annotations

import csv
import os
from typing import Any

import torch

from ...trainer.callbacks import BalancingCallback
from ...trainer.checkpoint_state import (
    RESTART_HINT,
    CheckpointStateError,
    check_same_config,
    read_json_state,
    read_tensor_state,
    require_keys,
    save_tensors_atomic,
    write_json_atomic,
)
from ...trainer.distributed import all_gather_rows, is_distributed
from .config import ULGMConfig
from .updates import (
    common_space_alignment_loss,
    extreme_masks,
    max_distance,
    momentum_update,
    selfmm_unimodal_labels,
    sugrm_unimodal_labels,
    ulgm_loss_terms,
)

STATE_FILE = "ulgm_banks.safetensors"
META_FILE = "ulgm_state.json"
STATE_VERSION = 2  # 1 (unversioned): banks by row position, no `sample_idx`
LOG_PREFIX = "ulgm/"
METHOD = "ULGMCallback"
UNKNOWN_ID = "the batch has a `sample_idx` that is not in the training set ULGMCallback was set up with"
# Config fields a resume may change: they only decide what is written for inspection, not the run.
RESUMABLE_CONFIG_FIELDS = ("export_labels",)

SUGRM_CITATION = """@inproceedings{sugrm2023,
  title     = {Learning Unimodal Labels with Recalibrated Modality Representations for Multimodal Sentiment Analysis},
  booktitle = {Findings of the Association for Computational Linguistics},
  year      = {2023}
}"""


def check_label_range(labels: torch.Tensor, H: float, wide: bool = True) -> None:
    """Refuse multimodal labels outside [-H, H], and an H (`ULGMConfig.label_range`) far wider than the labels.

    Rule: the largest |y_m| of the training set must be at least H / 2. Why: SUGRM scales every offset by the label
    span 2H (D^L = 2H * min(||F*_m - F*_s||, D_max) / D_max, §3.3, with D^L_{-H->+H} = 2H), but D_max is measured
    between the most extreme samples actually present (the +-H samples, or the top / bottom `extreme_quantile`
    when no label is exactly +-H). With labels in [-A, A], A < H, a unimodal feature as far from F*_m as the two
    extremes are from each other is offset by 2H instead of 2A: offsets are inflated by H / A, and the clamp at +-H
    no longer keeps generated labels on the labels' scale (Self-MM's clamp likewise). Measured: H = 1000 on labels
    in [-3, 3] drove SUGRM labels to the clamp in epoch 2 and, by momentum, to 1/6 y_m + 5/6 H = +-834 in epoch 3.
    A factor up to 2 is tolerated because real training sets need not reach +-H (a MOSI subset may top out at
    2.8 with H = 3); beyond it half the offset scale describes labels that do not exist. `wide=False` checks only
    the bounds (`get_train_sampler`; the width rule runs in `on_train_begin`, after the model's task is checked).
    """
    if labels.numel() == 0:
        raise ValueError("ULGMCallback got an empty training set")
    low, high = float(labels.min()), float(labels.max())
    if not bool((labels.abs() <= H).all()):
        raise ValueError(f"ULGM needs multimodal labels in [-H, H] = [{-H}, {H}] (ULGMConfig.label_range), got "
                         f"labels from {low} to {high}")
    largest = float(labels.abs().max())
    if wide and largest < H / 2:
        raise ValueError(
            f"ULGMConfig.label_range={H:g} is far wider than the training labels, which lie in [{low:g}, {high:g}] "
            f"(largest |y| {largest:g} < label_range / 2 = {H / 2:g}): ULGM scales its offsets by 2 * label_range, so "
            f"the generated labels would leave the labels' scale. Set label_range to H with labels in [-H, H] "
            f"(3 for MOSI/MOSEI), e.g. label_range={largest:g}"
        )


class ULGMCallback(BalancingCallback):
    """Unimodal label generation (SUGRM or Self-MM). Needs `MultimodalTrainer`, a regression model with unimodal
    heads (and, for the paper's layout, `common_space_size`), and a `sample_idx` column in the training set.

    Banks (one row per training sample, in the training set's order, `sample_ids[row]` its id): `labels["fused"]`
    is y_m, `labels[name]` the generated y_s; `features["fused"]` is F*_m, `features[name]` F*_s. When every
    modality's feature has one size (always for SUGRM, whose F*_s share the common space), the unimodal feature
    banks are views of one stacked (M, N, d) tensor, so a step updates every modality with a handful of kernels
    (the per-step cost is the benchmark's step-time ratio); Self-MM with modalities of different sizes keeps one
    (N, d_s) bank per modality at its own width (as the released SELF_MM.py) and runs the same rule per modality.
    """

    method_name = "ulgm"
    citation = SUGRM_CITATION
    replaces_training_loss = True

    def __init__(self, config: ULGMConfig | None = None, **options: Any):
        self.config = self.resolve_config(ULGMConfig, config, options)
        self.names: list[str] = []
        self.sample_ids: torch.Tensor | None = None  # the training set's ids in its row order: the banks' rows
        self.labels: dict[str, torch.Tensor] = {}  # "fused" = y_m, then y_s per modality (views of _label_bank)
        self.features: dict[str, torch.Tensor] = {}  # "fused" = F*_m, then F*_s per modality
        self.filled: torch.Tensor | None = None
        self.true_labels: dict[str, torch.Tensor] = {}
        self.trajectories: dict[str, list[list[float]]] = {}
        self._multimodal: torch.Tensor | None = None  # the training set's y_m, in its row order
        self._label_bank: torch.Tensor | None = None  # (M + 1, N): y_m, then y_s
        self._fused_bank: torch.Tensor | None = None  # (N, d_f)
        self._unimodal_features: torch.Tensor | None = None  # (M, N, d) when the sizes agree, else None
        self._unimodal_banks: list[torch.Tensor] = []  # (N, d_s) per modality (views of the stack when there is one)
        self._sorted_ids: torch.Tensor | None = None
        self._row_order: torch.Tensor | None = None
        self._fused_weights: torch.Tensor | None = None  # (4, N) averaging weights, see _fused_centres
        self._bank_full = False  # every row stored once (host flag, refreshed once per epoch: no sync per step)
        self._pending: dict[str, Any] | None = None  # banks by id (a checkpoint's), waiting for the training set
        self._check_model_against: str | None = None  # the bank file to compare the model's outputs with
        self._epoch_logs: dict[str, float] = {}

    # ----- banks -----
    def get_train_sampler(self, train_dataset, args):
        columns = train_dataset.column_names
        if "sample_idx" not in columns:
            raise ValueError("ULGMCallback indexes its label and feature banks by `sample_idx`: add that column")
        truths = [c for c in columns if c.startswith("true_")]
        table = train_dataset.select_columns(["sample_idx", "labels", *truths]).with_format("numpy")[:]
        ids = torch.as_tensor(table["sample_idx"]).long().reshape(-1)
        sorted_ids, row_order = torch.sort(ids)
        if bool((sorted_ids[1:] == sorted_ids[:-1]).any()):
            raise ValueError("ULGMCallback needs a unique `sample_idx` per training row; the column has duplicates")
        multimodal = torch.as_tensor(table["labels"]).float().reshape(-1)
        check_label_range(multimodal, self.config.label_range, wide=False)  # the rest once the model is known
        if self._pending is None and self._label_bank is not None:
            # This instance trained before (another `train()` call): carry its banks over by id.
            self._pending = self._snapshot("this ULGMCallback's banks from its previous training run")
        self.sample_ids, self._sorted_ids, self._row_order = ids, sorted_ids, row_order
        self._multimodal = multimodal
        if self._label_bank is None:
            self.labels = {"fused": multimodal}
        self.true_labels = {c[len("true_"):]: torch.as_tensor(table[c]).float() for c in truths}
        if self._pending is not None:
            self._apply_pending()
        return None  # the Trainer's own order

    def rows_of(self, sample_idx: torch.Tensor) -> torch.Tensor:
        """Bank rows of a batch's `sample_idx` values (a binary search in the sorted training ids)."""
        ids = sample_idx.reshape(-1).long().to(self._sorted_ids.device)
        positions = torch.searchsorted(self._sorted_ids, ids).clamp_max(len(self._sorted_ids) - 1)
        # Asynchronous on an accelerator (no host sync per step: a device-side assert at the next sync); at once on CPU.
        try:
            torch._assert_async((self._sorted_ids[positions] == ids).all(), UNKNOWN_ID)
        except RuntimeError as error:
            raise ValueError(UNKNOWN_ID) from error
        return self._row_order[positions]

    def _place(self, device: torch.device) -> None:
        """Move the banks and the id index to `device` (the model's), once: the step then stays on it."""
        if self._label_bank is None or self._label_bank.device == device:
            return
        unimodal = list(self._unimodal_banks) if self._unimodal_features is None else list(self._unimodal_features.unbind(0))
        self._sorted_ids, self._row_order = self._sorted_ids.to(device), self._row_order.to(device)
        self._set_banks(self._label_bank.to(device), self._fused_bank.to(device), [b.to(device) for b in unimodal],
                        self.filled.to(device))

    @property
    def stacked(self) -> bool:
        """True when the unimodal feature banks are one (M, N, d) tensor (every modality of one size)."""
        return self._unimodal_features is not None

    def _initialize(self, outputs) -> None:
        if outputs.unimodal_logits is None or not outputs.unimodal_logits:
            raise ValueError("ULGMCallback trains the unimodal heads on generated labels: build the model with unimodal_heads=True")
        names = list(outputs.unimodal_logits)
        fused, unimodal = self._common_features(outputs)
        sizes = {name: int(unimodal[name].shape[-1]) for name in names}
        if self.config.variant == "sugrm" and any(size != fused.shape[-1] for size in sizes.values()):
            raise ValueError(
                f"SUGRM measures F*_s against F*_m in one common space, got unimodal feature sizes {sizes} and a fused "
                f"size of {fused.shape[-1]}: set MMBalanceConfig.common_space_size (the SUGRM layout)"
            )
        size = len(self.sample_ids)
        device = fused.device
        label_bank = self.labels["fused"].to(device).unsqueeze(0).repeat(len(names) + 1, 1)  # y_s^(1) = y_m
        self.names = names
        self._sorted_ids, self._row_order = self._sorted_ids.to(device), self._row_order.to(device)
        self._set_banks(label_bank, torch.zeros(size, fused.shape[-1], device=device),
                        [torch.zeros(size, sizes[name], device=device) for name in names],
                        torch.zeros(size, dtype=torch.bool, device=device))
        tracked = torch.linspace(0, size - 1, steps=min(self.config.track_samples, size)).long().tolist()
        self.trajectories = {str(int(self.sample_ids[row])): [] for row in tracked}

    def _set_banks(self, label_bank: torch.Tensor, fused: torch.Tensor, unimodal: list[torch.Tensor],
                   filled: torch.Tensor) -> None:
        """Install banks whose rows follow `self.sample_ids`: stacked when the unimodal sizes agree."""
        self._label_bank = label_bank.float().contiguous()
        self._fused_bank = fused.float().contiguous()
        if len({bank.shape[-1] for bank in unimodal}) == 1:
            self._unimodal_features = torch.stack([bank.float() for bank in unimodal])
            self._unimodal_banks = list(self._unimodal_features.unbind(0))  # views
        else:
            self._unimodal_features = None
            self._unimodal_banks = [bank.float().contiguous() for bank in unimodal]
        self.filled = filled.bool().clone()
        self._bank_full = bool(self.filled.all())  # set up / restored: once, not per step
        self._fused_weights = None
        self.labels = {"fused": self._label_bank[0], **{n: self._label_bank[1 + i] for i, n in enumerate(self.names)}}
        self.features = {"fused": self._fused_bank, **dict(zip(self.names, self._unimodal_banks))}

    @staticmethod
    def _common_features(outputs):
        if outputs.projected_fused_features is not None:
            return outputs.projected_fused_features, outputs.projected_features
        return outputs.fused_features, outputs.features

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Train start: refuse a classifier, then an H far wider than the labels (`check_label_range`)."""
        if model is not None and getattr(model.config, "task", "regression") != "regression":
            raise ValueError("ULGM generates labels for multimodal REGRESSION (task='regression')")
        if self._multimodal is not None:
            check_label_range(self._multimodal, self.config.label_range)

    # ----- the step -----
    def training_loss(self, args, state, *, model, inputs, outputs):
        if model.config.task != "regression":
            raise ValueError("ULGM generates labels for multimodal REGRESSION (task='regression')")
        if self._sorted_ids is None or self._pending is not None:
            raise RuntimeError("ULGMCallback has no label bank: train with MultimodalTrainer and a `sample_idx` column")
        if not self.names:
            self._initialize(outputs)
        elif self._check_model_against is not None:
            self._check_restored_sizes(outputs)
        self._place(outputs.logits.device)
        rows = self.rows_of(inputs["sample_idx"])
        targets = self._label_bank[:, rows].to(outputs.logits.device)  # y_m, then y_s per modality
        unimodal_preds = {name: outputs.unimodal_logits[name] for name in self.names}
        terms = ulgm_loss_terms(outputs.logits, targets[0], unimodal_preds, dict(zip(self.names, targets[1:])))
        fused, unimodal = self._common_features(outputs)
        if self.config.alignment_weight > 0:
            terms["alignment"] = self.config.alignment_weight * common_space_alignment_loss(
                fused, {name: unimodal[name] for name in self.names}
            )
        outputs.loss_terms = terms  # logged as loss_<term> by the trainer
        loss = sum(terms.values())
        features = [unimodal[name].detach().float() for name in self.names]
        batch = {"rows": rows, "fused": fused.detach().float(),
                 "unimodal": torch.stack(features) if self.stacked else features}
        if is_distributed():  # every rank applies every rank's update: identical banks
            batch = self._gathered(batch, getattr(args, "per_device_train_batch_size", len(rows)))
        epoch = int(state.epoch or 0) + 1  # 1-based
        if epoch > 1:
            self._update_labels(batch["rows"], batch["fused"], batch["unimodal"], epoch)
        self._fused_bank[batch["rows"]] = batch["fused"]
        if self.stacked:
            self._unimodal_features[:, batch["rows"]] = batch["unimodal"]
        else:
            for bank, values in zip(self._unimodal_banks, batch["unimodal"]):
                bank[batch["rows"]] = values
        if not self._bank_full:
            self.filled[batch["rows"]] = True
            self._fused_weights = None  # the set of stored samples may have changed
        return loss

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.filled is not None and not self._bank_full:
            self._bank_full = bool(self.filled.all())  # one host sync per epoch, not per step

    def _gathered(self, batch: dict[str, Any], batch_size: int) -> dict[str, Any]:
        """Every rank's rows and features, concatenated in rank order (tensor all-gathers). Each rank pads its batch
        to `batch_size` rows with repeats of its last row: same shapes on every rank, and a repeated row writes the
        same values into the same bank row."""
        pad = max(batch_size - len(batch["rows"]), 0)

        def padded(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
            if not pad:
                return tensor
            last = tensor.narrow(dim, tensor.shape[dim] - 1, 1)
            return torch.cat([tensor, last.expand(*[pad if d == dim else -1 for d in range(tensor.ndim)])], dim=dim)

        gathered = {"rows": all_gather_rows(padded(batch["rows"])), "fused": all_gather_rows(padded(batch["fused"]))}
        if self.stacked:  # (M, B, d): gather along the batch dimension
            parts = all_gather_rows(padded(batch["unimodal"], 1).transpose(0, 1).contiguous())
            gathered["unimodal"] = parts.transpose(0, 1)
        else:
            gathered["unimodal"] = [all_gather_rows(padded(values)) for values in batch["unimodal"]]
        return gathered

    def _update_labels(self, rows: torch.Tensor, fused: torch.Tensor, unimodal, epoch: int) -> None:
        """Generate ŷ_s for the batch's rows, every modality at once (one call per modality when their sizes differ),
        and fold it into the bank by momentum. `unimodal` is (M, B, d), or a list of (B, d_s) when not stacked."""
        H = self.config.label_range
        fused_pos, fused_neg, extreme_pos, extreme_neg = self._fused_centres()
        y_m = self.labels["fused"][rows]
        if self.config.variant == "sugrm":
            d_max = max_distance(extreme_pos, extreme_neg)
            generated = sugrm_unimodal_labels(y_m, fused, unimodal, fused_pos, fused_neg, d_max, H)
        elif self.stacked:
            uni_pos, uni_neg = self._unimodal_centres()
            generated = selfmm_unimodal_labels(y_m, fused, unimodal, fused_pos, fused_neg, uni_pos, uni_neg, H)
        else:
            uni_pos, uni_neg = self._unimodal_centres()
            generated = torch.stack([
                selfmm_unimodal_labels(y_m, fused, unimodal[m], fused_pos, fused_neg, uni_pos[m], uni_neg[m], H)
                for m in range(len(self.names))
            ])
        bank = self._label_bank[1:]
        bank[:, rows] = momentum_update(bank[:, rows], generated, epoch)

    def _fused_centres(self) -> torch.Tensor:
        """(4, d): mean stored F*_m of the positive, negative, +H and -H samples (SUGRM §3.3; the ±H sets are
        `extreme_masks`, over the stored samples). y_m never changes, so the averaging weights only change while
        the bank fills (the first epoch): they are cached, and a step costs one matrix product."""
        if self._fused_weights is None:
            stored = self.filled
            y_m = self.labels["fused"]
            extreme = torch.zeros(2, len(y_m), dtype=torch.bool, device=y_m.device)
            if bool(stored.any()):
                extreme[:, stored] = torch.stack(
                    extreme_masks(y_m[stored], self.config.label_range, self.config.extreme_quantile)
                )
            masks = torch.stack([(y_m > 0) & stored, (y_m < 0) & stored, extreme[0], extreme[1]]).float()
            self._fused_weights = masks / masks.sum(dim=1, keepdim=True).clamp_min(1)  # an empty set: a zero centre
        return self._fused_weights @ self._fused_bank

    def _unimodal_centres(self):
        """Mean stored F*_s of the samples whose current y_s is positive / negative (Self-MM): two (M, d) tensors when
        stacked, else two lists of (d_s,) per modality."""
        y_s = self._label_bank[1:]
        masks = torch.stack([(y_s > 0) & self.filled, (y_s < 0) & self.filled], dim=1).float()  # (M, 2, N)
        weights = masks / masks.sum(dim=-1, keepdim=True).clamp_min(1)
        if self.stacked:
            centres = torch.bmm(weights, self._unimodal_features)  # (M, 2, d)
            return centres[:, 0], centres[:, 1]
        centres = [weights[m] @ bank for m, bank in enumerate(self._unimodal_banks)]  # (2, d_s) each
        return [c[0] for c in centres], [c[1] for c in centres]

    # ----- diagnostics -----
    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.names:
            return
        epoch = int(round(state.epoch or 0))
        labels = {key: value.cpu() for key, value in self.labels.items()}  # once per epoch, for the diagnostics
        y_m = labels["fused"]
        logs = {}
        for name in self.names:
            logs[f"{LOG_PREFIX}mean_abs_offset_{name}"] = float((labels[name] - y_m).abs().mean())
            if name in self.true_labels:
                truth = self.true_labels[name]
                logs[f"{LOG_PREFIX}corr_generated_{name}"] = _pearson(labels[name], truth)
                logs[f"{LOG_PREFIX}corr_multimodal_{name}"] = _pearson(y_m, truth)
        self._epoch_logs = logs
        if self.trajectories:
            rows = self.rows_of(torch.tensor([int(sample_id) for sample_id in self.trajectories]))
            for sample_id, row in zip(self.trajectories, rows.tolist()):
                self.trajectories[sample_id].append([float(labels[name][row]) for name in self.names])
        if self.config.export_labels and args.should_save:
            self.export_labels(os.path.join(args.output_dir, f"ulgm_labels_epoch{epoch}.csv"))

    def metrics_to_log(self) -> dict[str, float]:
        logs, self._epoch_logs = self._epoch_logs, {}
        return {k: round(v, 6) for k, v in logs.items()}

    def export_labels(self, path: str) -> str:
        """CSV with `sample_idx`, the multimodal label and every modality's generated label."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sample_idx", "labels", *self.names])
            columns = [self.labels["fused"].cpu(), *(self.labels[name].cpu() for name in self.names)]
            for row, sample_id in enumerate(self.sample_ids.tolist()):
                writer.writerow([sample_id, *(round(float(c[row]), 6) for c in columns)])
        return path

    def plot_diagnostics(self, log_history: list[dict], output_dir: str) -> list[str]:
        from .diagnostics import plot_label_trajectories

        return plot_label_trajectories(self, output_dir)

    # ----- checkpoints -----
    def _compared_config(self, config: dict) -> dict:
        return {key: value for key, value in config.items() if key not in RESUMABLE_CONFIG_FIELDS}

    def save_checkpoint_state(self, checkpoint_dir: str) -> None:
        """Write the banks (with their `sample_idx` order) and the meta JSON, each atomically (banks first)."""
        if self.names:
            tensors = {"sample_idx": self.sample_ids.long().contiguous(), "filled": self.filled.cpu().contiguous()}
            tensors.update({f"labels.{k}": v.cpu().contiguous() for k, v in self.labels.items()})
            tensors.update({f"features.{k}": v.cpu().contiguous() for k, v in self.features.items()})
            save_tensors_atomic(tensors, os.path.join(checkpoint_dir, STATE_FILE))
        meta = {"version": STATE_VERSION, "config": self.config.to_dict(), "initialized": bool(self.names),
                "names": self.names, "num_samples": len(self.sample_ids) if self.names else None,
                "trajectories": self.trajectories}
        write_json_atomic(os.path.join(checkpoint_dir, META_FILE), meta)

    def load_checkpoint_state(self, checkpoint_dir: str) -> None:
        """Read the checkpoint's banks; they are keyed to the training set's rows by `sample_idx` as soon as it is
        known (now, or in `get_train_sampler`). Missing, unreadable, inconsistent or differently configured state
        raises `CheckpointStateError` naming the file."""
        meta_path = os.path.join(checkpoint_dir, META_FILE)
        bank_path = os.path.join(checkpoint_dir, STATE_FILE)
        meta = read_json_state(meta_path, METHOD)
        require_keys(meta, ["version", "config", "initialized", "names", "num_samples", "trajectories"], meta_path, METHOD)
        if meta["version"] != STATE_VERSION:
            raise CheckpointStateError(f"{METHOD}: {meta_path} has state version {meta['version']!r}, this version "
                                       f"reads {STATE_VERSION}. {RESTART_HINT}")
        if not isinstance(meta["config"], dict):
            raise CheckpointStateError(f"{METHOD}: {meta_path} has no config object. {RESTART_HINT}")
        check_same_config(self._compared_config(meta["config"]), self._compared_config(self.config.to_dict()),
                          meta_path, METHOD)
        if not meta["initialized"]:  # saved before the first step: nothing to restore, the banks start at the next step
            self.names, self.trajectories, self._label_bank, self._pending = [], {}, None, None
            self.labels = {"fused": self._multimodal} if self._multimodal is not None else {}
            return
        names = meta["names"]
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)):
            raise CheckpointStateError(f"{METHOD}: {meta_path} has names={names!r}, expected a list of distinct "
                                       f"modality names. {RESTART_HINT}")
        tensors = read_tensor_state(bank_path, METHOD)
        keys = ["sample_idx", "filled", "labels.fused", "features.fused",
                *(f"labels.{n}" for n in names), *(f"features.{n}" for n in names)]
        require_keys(tensors, keys, bank_path, METHOD)

        def damaged(what: str) -> CheckpointStateError:
            return CheckpointStateError(f"{METHOD}: {bank_path} is inconsistent: {what}. {RESTART_HINT}")

        ids = tensors["sample_idx"]
        if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise damaged(f"sample_idx has shape {tuple(ids.shape)} and dtype {ids.dtype}, expected (N,) integers")
        ids = ids.long()
        size = len(ids)
        if meta["num_samples"] != size:
            raise damaged(f"it holds {size} samples, {meta_path} says {meta['num_samples']!r}")
        if bool((torch.sort(ids).values.diff() == 0).any()):
            raise damaged("sample_idx has duplicates")
        for key in ("labels.fused", *(f"labels.{n}" for n in names)):
            if tensors[key].shape != (size,) or not bool(torch.isfinite(tensors[key]).all()):
                raise damaged(f"{key} has shape {tuple(tensors[key].shape)} (expected ({size},)) or non-finite values")
        for key in ("features.fused", *(f"features.{n}" for n in names)):
            if tensors[key].ndim != 2 or tensors[key].shape[0] != size:
                raise damaged(f"{key} has shape {tuple(tensors[key].shape)}, expected ({size}, d)")
        if tensors["filled"].shape != (size,):
            raise damaged(f"filled has shape {tuple(tensors['filled'].shape)}, expected ({size},)")
        trajectories = meta["trajectories"]
        known = set(ids.tolist())
        if not isinstance(trajectories, dict) or not all(
            key.lstrip("-").isdigit() and int(key) in known and isinstance(points, list) for key, points in trajectories.items()
        ):
            raise CheckpointStateError(f"{METHOD}: {meta_path} has trajectories for ids not in {bank_path}. {RESTART_HINT}")
        self._pending = {
            "ids": ids, "names": list(names), "trajectories": trajectories, "source": bank_path, "error": CheckpointStateError,
            "hint": RESTART_HINT, "label_bank": torch.stack([tensors["labels.fused"], *(tensors[f"labels.{n}"] for n in names)]),
            "fused": tensors["features.fused"], "unimodal": [tensors[f"features.{n}"] for n in names],
            "filled": tensors["filled"],
        }
        if self.sample_ids is not None:  # the training set is already known (e.g. FSDP / DeepSpeed load order)
            self._apply_pending()

    def _snapshot(self, source: str) -> dict[str, Any]:
        return {"ids": self.sample_ids, "names": list(self.names), "trajectories": self.trajectories, "source": source,
                "error": ValueError, "hint": "use a new ULGMCallback for another training set",
                "label_bank": self._label_bank, "fused": self._fused_bank, "unimodal": list(self._unimodal_banks),
                "filled": self.filled}

    def _apply_pending(self) -> None:
        """Key the pending banks (rows in `pending["ids"]` order) to the training set's rows by `sample_idx`."""
        pending, self._pending = self._pending, None
        source, error, hint = pending["source"], pending["error"], pending["hint"]
        saved_ids = pending["ids"]
        saved_sorted, saved_order = torch.sort(saved_ids)
        positions = torch.searchsorted(saved_sorted, self.sample_ids).clamp_max(len(saved_sorted) - 1)
        found = saved_sorted[positions] == self.sample_ids
        missing = int((~found).sum())
        extra = len(saved_ids) - int(found.sum())  # ids are unique on both sides
        if missing or extra:
            raise error(
                f"{METHOD}: {source} holds banks for {len(saved_ids)} samples and the training set has "
                f"{len(self.sample_ids)}: {missing} of the training set's `sample_idx` values are not in it and {extra} "
                f"of its ids are not in the training set. The banks are keyed by `sample_idx`: train on the same "
                f"samples (any order), or {hint}"
            )
        index = saved_order[positions]  # training row r <- saved row index[r]
        label_bank = pending["label_bank"][:, index].float()
        changed = ~torch.isclose(label_bank[0], self._multimodal, rtol=0.0, atol=1e-6)
        if bool(changed.any()):
            row = int(changed.nonzero()[0])
            raise error(
                f"{METHOD}: the multimodal labels (`labels`) of {int(changed.sum())} training samples differ from the "
                f"ones in {source} (e.g. sample_idx {int(self.sample_ids[row])}: saved {float(label_bank[0, row]):g}, "
                f"now {float(self._multimodal[row]):g}): the generated labels belong to the old ones; {hint}"
            )
        self.names = pending["names"]
        self._set_banks(label_bank, pending["fused"][index], [bank[index] for bank in pending["unimodal"]],
                        pending["filled"][index])
        self.trajectories = pending["trajectories"]
        self._check_model_against = source if pending["error"] is CheckpointStateError else None

    def _check_restored_sizes(self, outputs) -> None:
        """First step after a resume: the model must output the modalities and feature sizes the banks hold."""
        source, self._check_model_against = self._check_model_against, None
        fused, unimodal = self._common_features(outputs)
        names = list(outputs.unimodal_logits or {})
        saved = {"fused": self._fused_bank.shape[-1], **{n: b.shape[-1] for n, b in zip(self.names, self._unimodal_banks)}}
        now = {"fused": fused.shape[-1], **{n: unimodal[n].shape[-1] for n in names if n in unimodal}}
        if names != self.names or saved != now:
            raise CheckpointStateError(
                f"{METHOD}: {source} holds banks for modalities {self.names} with feature sizes {saved}, but the model "
                f"outputs {names} with sizes {now}; {RESTART_HINT}"
            )


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


__all__ = ["META_FILE", "STATE_FILE", "ULGMCallback", "check_label_range"]
