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
Banks are indexed by `sample_idx` rows; under DDP the batch ids, features and generated labels of every rank are
gathered, so every rank applies the same updates and holds identical banks. Banks are saved with every
checkpoint (safetensors) and restored on resume.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ...trainer.callbacks import BalancingCallback
from ...trainer.distributed import gather_from_ranks, is_distributed
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
LOG_PREFIX = "ulgm/"

SUGRM_CITATION = """@inproceedings{sugrm2023,
  title     = {Learning Unimodal Labels with Recalibrated Modality Representations for Multimodal Sentiment Analysis},
  booktitle = {Findings of the Association for Computational Linguistics},
  year      = {2023}
}"""


class ULGMCallback(BalancingCallback):
    """Unimodal label generation (SUGRM or Self-MM). Needs `MultimodalTrainer`, a regression model with unimodal
    heads (and, for the paper's layout, `common_space_size`), and a `sample_idx` column in the training set.

    Banks (one row per training sample, in the training set's order): `labels["fused"]` is y_m, `labels[name]`
    the generated y_s; `features["fused"]` is F*_m, `features[name]` F*_s. The unimodal ones are views of one
    stacked tensor, so a step updates every modality with a handful of kernels (the per-step cost is the
    benchmark's step-time ratio).
    """

    method_name = "ulgm"
    citation = SUGRM_CITATION
    replaces_training_loss = True

    def __init__(self, config: ULGMConfig | None = None, **options: Any):
        self.config = self.resolve_config(ULGMConfig, config, options)
        self.names: list[str] = []
        self.sample_ids: torch.Tensor | None = None
        self.labels: dict[str, torch.Tensor] = {}  # "fused" = y_m, then y_s per modality (views of _label_bank)
        self.features: dict[str, torch.Tensor] = {}  # "fused" = F*_m, then F*_s per modality
        self.filled: torch.Tensor | None = None
        self.true_labels: dict[str, torch.Tensor] = {}
        self.trajectories: dict[str, list[list[float]]] = {}
        self._label_bank: torch.Tensor | None = None  # (M + 1, N): y_m, then y_s
        self._unimodal_features: torch.Tensor | None = None  # (M, N, d)
        self._sorted_ids: torch.Tensor | None = None
        self._row_order: torch.Tensor | None = None
        self._fused_weights: torch.Tensor | None = None  # (4, N) averaging weights, see _fused_centres
        self._epoch_logs: dict[str, float] = {}

    # ----- banks -----
    def get_train_sampler(self, train_dataset, args):
        columns = train_dataset.column_names
        if "sample_idx" not in columns:
            raise ValueError("ULGMCallback indexes its label and feature banks by `sample_idx`: add that column")
        truths = [c for c in columns if c.startswith("true_")]
        table = train_dataset.select_columns(["sample_idx", "labels", *truths]).with_format("numpy")[:]
        ids = torch.as_tensor(table["sample_idx"]).long()
        self._sorted_ids, self._row_order = torch.sort(ids)
        if bool((self._sorted_ids[1:] == self._sorted_ids[:-1]).any()):
            raise ValueError("ULGMCallback needs a unique `sample_idx` per training row; the column has duplicates")
        self.sample_ids = ids
        multimodal = torch.as_tensor(table["labels"]).float().reshape(-1)
        H = self.config.label_range
        if not bool((multimodal.abs() <= H).all()):
            raise ValueError(f"ULGM needs multimodal labels in [-H, H] = [{-H}, {H}] (ULGMConfig.label_range), got "
                             f"labels from {float(multimodal.min())} to {float(multimodal.max())}")
        if self._label_bank is not None:  # resume: the checkpoint's banks are already loaded
            self._label_bank[0] = multimodal
        else:
            self.labels["fused"] = multimodal
        self.true_labels = {c[len("true_"):]: torch.as_tensor(table[c]).float() for c in truths}
        return None  # the Trainer's own order

    def rows_of(self, sample_idx: torch.Tensor) -> torch.Tensor:
        """Bank rows of a batch's `sample_idx` values (a binary search in the sorted training ids)."""
        ids = sample_idx.reshape(-1).long().cpu()
        positions = torch.searchsorted(self._sorted_ids, ids).clamp_max(len(self._sorted_ids) - 1)
        if not bool((self._sorted_ids[positions] == ids).all()):
            raise ValueError("the batch has a `sample_idx` that is not in the training set ULGMCallback was set up with")
        return self._row_order[positions]

    def _initialize(self, outputs) -> None:
        if outputs.unimodal_logits is None or not outputs.unimodal_logits:
            raise ValueError("ULGMCallback trains the unimodal heads on generated labels: build the model with unimodal_heads=True")
        names = list(outputs.unimodal_logits)
        fused, unimodal = self._common_features(outputs)
        sizes = {name: unimodal[name].shape[-1] for name in names}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"ULGMCallback needs every modality's feature in one size, got {sizes}: set "
                             "MMBalanceConfig.common_space_size (the SUGRM layout)")
        size = len(self.sample_ids)
        y_m = self.labels["fused"]
        self._label_bank = y_m.unsqueeze(0).repeat(len(names) + 1, 1)  # y_s^(1) = y_m
        self._unimodal_features = torch.zeros(len(names), size, next(iter(sizes.values())))
        self.features = {"fused": torch.zeros(size, fused.shape[-1])}
        self.filled = torch.zeros(size, dtype=torch.bool)
        self.names = names
        self._bind_views()
        tracked = torch.linspace(0, size - 1, steps=min(self.config.track_samples, size)).long().tolist()
        self.trajectories = {str(int(self.sample_ids[row])): [] for row in tracked}

    def _bind_views(self) -> None:
        self.labels = {"fused": self._label_bank[0], **{n: self._label_bank[1 + i] for i, n in enumerate(self.names)}}
        self.features = {"fused": self.features["fused"],
                         **{n: self._unimodal_features[i] for i, n in enumerate(self.names)}}

    @staticmethod
    def _common_features(outputs):
        if outputs.projected_fused_features is not None:
            return outputs.projected_fused_features, outputs.projected_features
        return outputs.fused_features, outputs.features

    # ----- the step -----
    def training_loss(self, args, state, *, model, inputs, outputs):
        if model.config.task != "regression":
            raise ValueError("ULGM generates labels for multimodal REGRESSION (task='regression')")
        if self._sorted_ids is None:
            raise RuntimeError("ULGMCallback has no label bank: train with MultimodalTrainer and a `sample_idx` column")
        if not self.names:
            self._initialize(outputs)
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
        batch = {"rows": rows, "fused": fused.detach().float().cpu(),
                 "unimodal": torch.stack([unimodal[name].detach() for name in self.names]).float().cpu()}
        if is_distributed():  # every rank applies every rank's update: identical banks
            gathered = gather_from_ranks(batch)
            batch = {"rows": torch.cat([part["rows"] for part in gathered]),
                     "fused": torch.cat([part["fused"] for part in gathered]),
                     "unimodal": torch.cat([part["unimodal"] for part in gathered], dim=1)}
        epoch = int(state.epoch or 0) + 1  # 1-based
        if epoch > 1:
            self._update_labels(batch["rows"], batch["fused"], batch["unimodal"], epoch)
        self.features["fused"][batch["rows"]] = batch["fused"]
        self._unimodal_features[:, batch["rows"]] = batch["unimodal"]
        if not bool(self.filled.all()):
            self.filled[batch["rows"]] = True
            self._fused_weights = None  # the set of stored samples changed
        return loss

    def _update_labels(self, rows: torch.Tensor, fused: torch.Tensor, unimodal: torch.Tensor, epoch: int) -> None:
        """Generate ŷ_s for the batch's rows, every modality at once, and fold it into the bank by momentum."""
        H = self.config.label_range
        fused_pos, fused_neg, extreme_pos, extreme_neg = self._fused_centres()
        y_m = self.labels["fused"][rows]
        if self.config.variant == "sugrm":
            d_max = max_distance(extreme_pos, extreme_neg)
            generated = sugrm_unimodal_labels(y_m, fused, unimodal, fused_pos, fused_neg, d_max, H)
        else:
            uni_pos, uni_neg = self._unimodal_centres()
            generated = selfmm_unimodal_labels(y_m, fused, unimodal, fused_pos, fused_neg, uni_pos, uni_neg, H)
        bank = self._label_bank[1:]
        bank[:, rows] = momentum_update(bank[:, rows], generated, epoch)

    def _fused_centres(self) -> torch.Tensor:
        """(4, d): mean stored F*_m of the positive, negative, +H and -H samples (SUGRM §3.3; the ±H sets are
        `extreme_masks`, over the stored samples). y_m never changes, so the averaging weights only change while
        the bank fills (the first epoch): they are cached, and a step costs one matrix product."""
        if self._fused_weights is None:
            stored = self.filled
            y_m = self.labels["fused"]
            extreme = torch.zeros(2, len(y_m), dtype=torch.bool)
            if bool(stored.any()):
                extreme[:, stored] = torch.stack(
                    extreme_masks(y_m[stored], self.config.label_range, self.config.extreme_quantile)
                )
            masks = torch.stack([(y_m > 0) & stored, (y_m < 0) & stored, extreme[0], extreme[1]]).float()
            self._fused_weights = masks / masks.sum(dim=1, keepdim=True).clamp_min(1)  # an empty set: a zero centre
        return self._fused_weights @ self.features["fused"]

    def _unimodal_centres(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, d) each: mean stored F*_s of the samples whose current y_s is positive / negative (Self-MM)."""
        y_s = self._label_bank[1:]
        masks = torch.stack([(y_s > 0) & self.filled, (y_s < 0) & self.filled], dim=1).float()  # (M, 2, N)
        weights = masks / masks.sum(dim=-1, keepdim=True).clamp_min(1)
        centres = torch.bmm(weights, self._unimodal_features)  # (M, 2, d)
        return centres[:, 0], centres[:, 1]

    # ----- diagnostics -----
    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.names:
            return
        epoch = int(round(state.epoch or 0))
        y_m = self.labels["fused"]
        logs = {}
        for name in self.names:
            logs[f"{LOG_PREFIX}mean_abs_offset_{name}"] = float((self.labels[name] - y_m).abs().mean())
            if name in self.true_labels:
                truth = self.true_labels[name]
                logs[f"{LOG_PREFIX}corr_generated_{name}"] = _pearson(self.labels[name], truth)
                logs[f"{LOG_PREFIX}corr_multimodal_{name}"] = _pearson(y_m, truth)
        self._epoch_logs = logs
        rows = self.rows_of(torch.tensor([int(sample_id) for sample_id in self.trajectories]))
        for sample_id, row in zip(self.trajectories, rows.tolist()):
            self.trajectories[sample_id].append([float(self.labels[name][row]) for name in self.names])
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
            columns = [self.labels["fused"], *(self.labels[name] for name in self.names)]
            for row, sample_id in enumerate(self.sample_ids.tolist()):
                writer.writerow([sample_id, *(round(float(c[row]), 6) for c in columns)])
        return path

    def plot_diagnostics(self, log_history: list[dict], output_dir: str) -> list[str]:
        from .diagnostics import plot_label_trajectories

        return plot_label_trajectories(self, output_dir)

    # ----- checkpoints -----
    def save_checkpoint_state(self, checkpoint_dir: str) -> None:
        if not self.names:
            return
        tensors = {f"labels.{k}": v.contiguous() for k, v in self.labels.items()}
        tensors.update({f"features.{k}": v.contiguous() for k, v in self.features.items()})
        tensors["filled"] = self.filled
        save_file(tensors, os.path.join(checkpoint_dir, STATE_FILE))
        with open(os.path.join(checkpoint_dir, META_FILE), "w", encoding="utf-8") as handle:
            json.dump({"config": self.config.to_dict(), "names": self.names, "trajectories": self.trajectories}, handle)

    def load_checkpoint_state(self, checkpoint_dir: str) -> None:
        path = os.path.join(checkpoint_dir, STATE_FILE)
        if not os.path.isfile(path):
            return
        tensors = load_file(path)
        with open(os.path.join(checkpoint_dir, META_FILE), encoding="utf-8") as handle:
            meta = json.load(handle)
        self.names = meta["names"]
        self.trajectories = meta["trajectories"]
        self._label_bank = torch.stack([tensors["labels.fused"], *(tensors[f"labels.{n}"] for n in self.names)])
        self._unimodal_features = torch.stack([tensors[f"features.{n}"] for n in self.names])
        self.features = {"fused": tensors["features.fused"]}
        self.filled = tensors["filled"]
        self._fused_weights = None
        self._bind_views()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


__all__ = ["ULGMCallback", "STATE_FILE"]
