"""`ULGMCallback`: self-supervised unimodal labels for multimodal regression, as a `MultimodalTrainer` callback.

Per training micro-batch (Self-MM's released training step, which SUGRM keeps):
  1. the loss replaces the model's: L1(fused, y_m) + sum_s mean_i tanh(|y_s - y_m|) |pred_s - y_s| with the
     current label bank (METHODS.md §2);
  2. from the second epoch on, the batch's unimodal labels are regenerated from the feature banks' centres —
     SUGRM: y_m + direction * magnitude (D_max from the +-H samples); Self-MM: 0.5 alpha y_f + 0.5 (y_f + d_s - d_f)
     — clamped to [-H, H] and merged by momentum with the 1-based epoch;
  3. the batch's common-space features F*_m, F*_s are written into the feature banks.
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
from ...trainer.distributed import gather_from_ranks
from .config import ULGMConfig
from .updates import (
    extreme_centres,
    max_distance,
    momentum_update,
    selfmm_unimodal_labels,
    sugrm_unimodal_labels,
    ulgm_loss,
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
    heads (and, for the paper's layout, `common_space_size`), and a `sample_idx` column in the training set."""

    method_name = "ulgm"
    citation = SUGRM_CITATION

    def __init__(self, config: ULGMConfig | None = None, **options: Any):
        self.config = self.resolve_config(ULGMConfig, config, options)
        self.names: list[str] = []
        self.row_of: dict[int, int] = {}
        self.sample_ids: torch.Tensor | None = None
        self.labels: dict[str, torch.Tensor] = {}  # "fused" = y_m, then y_s per modality
        self.features: dict[str, torch.Tensor] = {}  # "fused" = F*_m, then F*_s per modality
        self.filled: torch.Tensor | None = None
        self.true_labels: dict[str, torch.Tensor] = {}
        self.trajectories: dict[str, list[list[float]]] = {}
        self._epoch_logs: dict[str, float] = {}

    # ----- banks -----
    def get_train_sampler(self, train_dataset, args):
        columns = train_dataset.column_names
        if "sample_idx" not in columns:
            raise ValueError("ULGMCallback indexes its label and feature banks by `sample_idx`: add that column")
        truths = [c for c in columns if c.startswith("true_")]
        table = train_dataset.select_columns(["sample_idx", "labels", *truths]).with_format("numpy")[:]
        ids = torch.as_tensor(table["sample_idx"]).long()
        self.sample_ids = ids
        self.row_of = {int(i): row for row, i in enumerate(ids.tolist())}
        # Update, not replace: on resume the checkpoint's banks may already be loaded.
        self.labels["fused"] = torch.as_tensor(table["labels"]).float().reshape(-1)
        self.true_labels = {c[len("true_"):]: torch.as_tensor(table[c]).float() for c in truths}
        return None  # the Trainer's own order

    def _initialize(self, outputs) -> None:
        if outputs.unimodal_logits is None or not outputs.unimodal_logits:
            raise ValueError("ULGMCallback trains the unimodal heads on generated labels: build the model with unimodal_heads=True")
        self.names = list(outputs.unimodal_logits)
        fused, unimodal = self._common_features(outputs)
        size = len(self.row_of)
        for name in self.names:
            self.labels[name] = self.labels["fused"].clone()  # y_s^(1) = y_m
        self.features = {"fused": torch.zeros(size, fused.shape[-1])}
        self.features.update({name: torch.zeros(size, unimodal[name].shape[-1]) for name in self.names})
        self.filled = torch.zeros(size, dtype=torch.bool)
        tracked = torch.linspace(0, size - 1, steps=min(self.config.track_samples, size)).long().tolist()
        self.trajectories = {str(int(self.sample_ids[row])): [] for row in tracked}

    @staticmethod
    def _common_features(outputs):
        if outputs.projected_fused_features is not None:
            return outputs.projected_fused_features, outputs.projected_features
        return outputs.fused_features, outputs.features

    # ----- the step -----
    def training_loss(self, args, state, *, model, inputs, outputs):
        if model.config.task != "regression":
            raise ValueError("ULGM generates labels for multimodal REGRESSION (task='regression')")
        if not self.row_of:
            raise RuntimeError("ULGMCallback has no label bank: train with MultimodalTrainer and a `sample_idx` column")
        if not self.names:
            self._initialize(outputs)
        rows = torch.tensor([self.row_of[int(i)] for i in inputs["sample_idx"].tolist()])
        y_m = self.labels["fused"][rows].to(outputs.logits.device)
        unimodal_targets = {name: self.labels[name][rows].to(outputs.logits.device) for name in self.names}
        unimodal_preds = {name: outputs.unimodal_logits[name].reshape(-1) for name in self.names}
        loss = ulgm_loss(outputs.logits.reshape(-1), y_m, unimodal_preds, unimodal_targets)

        fused, unimodal = self._common_features(outputs)
        batch = {"rows": rows, "fused": fused.detach().float().cpu(),
                 **{name: unimodal[name].detach().float().cpu() for name in self.names}}
        gathered = gather_from_ranks(batch)  # every rank applies every rank's update: identical banks
        rows_all = torch.cat([part["rows"] for part in gathered])
        features_all = {key: torch.cat([part[key] for part in gathered]) for key in ["fused", *self.names]}
        epoch = int(state.epoch or 0) + 1  # 1-based
        if epoch > 1:
            self._update_labels(rows_all, features_all, epoch)
        for key, value in features_all.items():
            self.features[key][rows_all] = value
        self.filled[rows_all] = True
        return loss

    def _update_labels(self, rows, features, epoch: int) -> None:
        H = self.config.label_range
        filled = self.filled
        fused_bank, bank_labels = self.features["fused"][filled], self.labels["fused"][filled]
        # The fused-space centres (and SUGRM's D_max) are the same for every modality: computed once per step.
        fused_pos, fused_neg = _sign_centres(fused_bank, bank_labels)
        if self.config.variant == "sugrm":
            d_max = max_distance(*extreme_centres(fused_bank, bank_labels, H, self.config.extreme_quantile))
        y_m = self.labels["fused"][rows]
        for name in self.names:
            if self.config.variant == "sugrm":
                generated = sugrm_unimodal_labels(y_m, features["fused"], features[name], fused_pos, fused_neg, d_max, H)
            else:
                uni_pos, uni_neg = _sign_centres(self.features[name][filled], self.labels[name][filled])
                generated = selfmm_unimodal_labels(y_m, features["fused"], features[name], fused_pos, fused_neg,
                                                   uni_pos, uni_neg, H)
            self.labels[name][rows] = momentum_update(self.labels[name][rows], generated, epoch)

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
        for sample_id in self.trajectories:
            row = self.row_of[int(sample_id)]
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
        self.labels = {k[len("labels."):]: v for k, v in tensors.items() if k.startswith("labels.")}
        self.features = {k[len("features."):]: v for k, v in tensors.items() if k.startswith("features.")}
        self.filled = tensors["filled"]


def _sign_centres(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of the samples with a positive / negative label (zeros when a side is empty)."""
    positive, negative = labels > 0, labels < 0
    zeros = features.new_zeros(features.shape[-1])
    return (features[positive].mean(0) if positive.any() else zeros, features[negative].mean(0) if negative.any() else zeros)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


__all__ = ["ULGMCallback", "STATE_FILE"]
