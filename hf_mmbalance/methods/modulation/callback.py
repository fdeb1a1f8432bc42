"""`GradientModulationCallback`: Ada2I / OGM-GE gradient modulation as a `MultimodalTrainer` callback.

Per optimizer step (Ada2I Algorithm 1; METHODS.md §3), with `apply="pre_optimizer_step"` (the default's choice on one
process, DDP and FSDP2):
  1. `on_train_batch_outputs` (every micro-batch): s_m += sum_i softmax(out_m)_i[y_i] from the batch already
     forwarded, so gradient accumulation sums the scores of all the step's micro-batches;
  2. just before the trainer clips (gradients all-reduced and unscaled): sum the scores over ranks, rho_m and k_m
     (Eq. 17-18); `MultimodalTrainer` multiplies g by c * k_m in its clipping (`clipping_factors`: the same update as
     clipping and then scaling, without a second pass over the gradients); `on_pre_optimizer_step` adds the GE noise
     (Eq. 19). Without clipping (`max_grad_norm=0`) or under another trainer, `on_pre_optimizer_step` computes k_m
     and applies g <- k_m * g (+ noise) itself.
With `apply="backward_hook"` (the default's choice under DeepSpeed and FSDP1) step 1 also sums the micro-batch's
scores over the ranks, computes k_m and hooks z_m so backward scales every encoder gradient by k_m; step 2 only adds
the noise. See `application.py` for why each engine gets which, and what differs (accumulation, clipping).
Every rank sees the same reduced scores and draws the same noise (seed + global step), so replicas stay
identical; the noise seed depends only on the step, so a resumed run draws what an uninterrupted one draws.
Scores, ratios, coefficients and the noise std stay on the device; they reach the host only at logging steps
(`metrics_to_log`) and when saved.

Mixed precision: the scores are computed in float32 from the (autocast) logits. With fp16 and gradient clipping,
`Trainer` unscales the gradients before `on_pre_optimizer_step`; without clipping they still carry the loss
scale S there, and both operations are scale-equivariant (k*(S g) and noise of std std(S g) = S std(g)), so the
update after the optimizer's unscaling is the same.

Refused at train start (`on_train_begin`): a regression model (the scores are softmax probabilities of the true
class, so modulation is classification-only) and a second modulation callback in the same trainer (the gradients
would be scaled twice).

Checkpoint state: `gradient_modulation.json`, written atomically: `config` (the `ModulationConfig` fields),
`seed` (the resolved noise seed), `modality_names`, `last_ratios`, `last_coefficients`. Resuming refuses
(`CheckpointStateError`, naming the file) a missing, unreadable or incomplete file and one saved with another config
or seed; `MultimodalTrainer(method_state_on_resume="restart")` starts the modulation fresh instead.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from ...trainer.callbacks import BalancingCallback
from ...trainer.checkpoint_state import (
    RESTART_HINT,
    CheckpointStateError,
    check_same_config,
    read_json_state,
    require_keys,
    write_json_atomic,
)
from ...trainer.distributed import sum_over_ranks
from .application import capture_encoder_outputs, resolve_apply, scale_feature_gradients
from .config import ModulationConfig
from .diagnostics import LOG_PREFIX, plot_disparity_ratios
from .disparity import disparity_ratios, modality_scores, modulation_coefficients
from .gradient import modulate_gradients

STATE_FILE = "gradient_modulation.json"
LOG_FOLD = 64  # steps of rho / k kept as tensors before they are summed (between two logs)
STATE_KEYS = ("config", "seed", "modality_names", "last_ratios", "last_coefficients")
# Set on the run's `TrainerState` by the first modulation callback of a `train()` call (every callback of a trainer
# gets the same state object in `on_train_begin`, a new one per call): a second one refuses to scale again.
_RUN_MARKER = "_hf_mmbalance_gradient_modulation"

ADA2I_CITATION = """@inproceedings{nguyen2024ada2i,
  title     = {Ada2I: Enhancing Modality Balance for Multimodal Conversational Emotion Recognition},
  author    = {Nguyen, Cam-Van Thi and Tran, The-Son and Le, Duc-Trong and others},
  booktitle = {Proceedings of the 32nd ACM International Conference on Multimedia},
  year      = {2024}
}"""
OGM_GE_CITATION = """@inproceedings{peng2022balanced,
  title     = {Balanced Multimodal Learning via On-the-fly Gradient Modulation},
  author    = {Peng, Xiaokang and Wei, Yake and Deng, Andong and Wang, Dong and Hu, Di},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2022}
}"""


class GradientModulationCallback(BalancingCallback):
    """Disparity-ratio gradient modulation (Ada2I for any M >= 2; OGM-GE for M = 2). Needs `MultimodalTrainer`
    (it reads each batch's `modality_logits`) and a model whose encoders are `model.encoders[<modality>]`.

    Logs `modulation/rho_<m>` and `modulation/k_<m>` (means over the steps since the last log) with the loss.
    """

    def __init__(self, config: ModulationConfig | None = None, **options: Any):
        self.config = self.resolve_config(ModulationConfig, config, options)
        # A monitor-only run modulates nothing: its card says so and cites no method it did not apply.
        monitored = self.config.monitor_only
        self.method_name = self.config.mode.replace("_", "-") + ("-monitored" if monitored else "")
        self.citation = None if monitored else ADA2I_CITATION if self.config.mode == "ada2i" else OGM_GE_CITATION
        self.modality_names: list[str] | None = None
        self.applied: str | None = None  # the mode `apply` resolved to for this run's engine (on_train_begin)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # the latest (rho, k), (M,) each, on the device
        self._restored_last: tuple[dict, dict] | None = None  # a checkpoint's latest rho / k, until a step replaces them
        self._step_scores: torch.Tensor | None = None
        self._step_k: torch.Tensor | None = None  # backward_hook: the sum of the step's micro-batch k (for the noise)
        self._pre_k: torch.Tensor | None = None  # pre_optimizer_step: this step's k, once computed
        self._scaled_in_clipping = False  # pre_optimizer_step: the trainer's clipping already multiplied g by k
        self._step_batches = 0
        self._encoder_outputs: dict[str, torch.Tensor] = {}  # backward_hook: z_m of the latest forward, by modality
        self._capture_handles: list = []
        self._log_sums: torch.Tensor | None = None  # (2, M) float64 on the device: sums of rho / k since the last log
        self._log_pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rho, k) of steps not yet in the sums
        self._log_count = 0
        self._parameters: dict[str, list[torch.nn.Parameter]] | None = None
        self._parameters_of: int | None = None
        self._seed: int | None = None
        self._restored: tuple[str, Any] | None = None  # (path, saved seed), checked when the run's seed is known

    # ----- checks at train start -----
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        config = getattr(model, "config", None)
        task = getattr(config, "task", "classification")
        if task != "classification":
            raise ValueError(
                f"GradientModulationCallback is classification-only (its scores are the softmax probabilities of the true "
                f"class, Ada2I Eq. 16); this model has task={task!r}. Remove the callback for regression models"
            )
        others = getattr(state, _RUN_MARKER, None) if state is not None else []
        if others is None:
            others = []
            setattr(state, _RUN_MARKER, others)  # not a dataclass field: never written to trainer_state.json
        if others:
            names = " and ".join(cb.describe() for cb in [*others, self])
            raise ValueError(
                f"two gradient-modulation callbacks in one trainer ({names}) would scale the gradients twice; keep one"
            )
        others.append(self)
        c = self.config
        engine = self.training_engine(args, model)
        self.applied = resolve_apply(c.apply, engine.name, noise=c.noise, parameter_filter=c.parameter_filter,
                                     monitor_only=c.monitor_only)
        self._seed = int(args.seed if self.config.seed is None else self.config.seed)
        self._remove_capture()
        self._step_k, self._step_batches = None, 0  # nothing carried over from an interrupted earlier train()
        self._pre_k, self._scaled_in_clipping = None, False
        if self.applied == "backward_hook" and model is not None and getattr(model, "encoders", None) is not None:
            self._capture_handles = capture_encoder_outputs(model.encoders, self._encoder_outputs)
        if self._restored is not None:
            path, saved_seed = self._restored
            if saved_seed is not None and saved_seed != self._seed:
                raise CheckpointStateError(
                    f"{type(self).__name__}: the checkpoint's state ({path}) drew its noise with seed {saved_seed} "
                    f"(ModulationConfig.seed, else TrainingArguments.seed), this run has seed {self._seed}; resume "
                    f"with the same seed. {RESTART_HINT}"
                )
            self._restored = None  # checked once, for the run that resumed from it

    def describe(self) -> str:
        """e.g. `GradientModulationCallback(mode='ada2i', alpha=0.1)`, for error messages."""
        return f"{type(self).__name__}(mode={self.config.mode!r}, alpha={self.config.alpha!r})"

    @property
    def last_ratios(self) -> dict[str, float]:
        """The latest step's rho_m by modality (read from the device: a host sync, for inspection)."""
        return self._last_values(0)

    @property
    def last_coefficients(self) -> dict[str, float]:
        """The latest step's k_m by modality (read from the device: a host sync, for inspection)."""
        return self._last_values(1)

    def _last_values(self, row: int) -> dict[str, float]:
        if self._last is None:
            return dict(self._restored_last[row]) if self._restored_last else {}
        return dict(zip(self.modality_names, self._last[row].tolist()))

    # ----- scores, per micro-batch -----
    def on_train_batch_outputs(self, args, state, *, model, inputs, outputs) -> None:
        field = "modality_logits" if self.config.score == "dot" else "modality_cosine_logits"
        logits = getattr(outputs, field, None)
        if not logits:
            raise ValueError(
                f"GradientModulationCallback(score={self.config.score!r}) needs the model output `{field}` "
                "(each modality's share of the fused logits); this model does not provide it"
            )
        if self.modality_names is None:
            self.modality_names = list(logits)
            if self.config.mode == "ogm_ge" and len(self.modality_names) != 2:
                raise ValueError(
                    f"mode='ogm_ge' is defined for exactly 2 modalities, the model has {self.modality_names}; use mode='ada2i'"
                )
        if "labels" not in inputs:
            raise ValueError("GradientModulationCallback needs 'labels' in every training batch (the scores use y_i)")
        scores = modality_scores(logits, inputs["labels"])
        if self._mode() == "backward_hook":
            # k from this micro-batch, summed over ranks before backward (one all-reduce of M numbers).
            coefficients = self._coefficients(sum_over_ranks(scores))
            if self._active(state):
                # The encoders' own outputs (captured in forward), else the returned features (a hand-driven loop).
                features = {name: self._encoder_outputs.get(name, outputs.features[name]) for name in self.modality_names}
                scale_feature_gradients(features, dict(zip(self.modality_names, coefficients.unbind())))
            self._encoder_outputs.clear()
            if self.config.noise:  # the noise std "before" scaling divides by the step's mean k
                self._step_k = coefficients if self._step_k is None else self._step_k + coefficients
            self._step_batches += 1
            return None
        self._step_scores = scores if self._step_scores is None else self._step_scores + scores
        return None

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_capture()

    def _remove_capture(self) -> None:
        for handle in self._capture_handles:
            handle.remove()
        self._capture_handles = []
        self._encoder_outputs.clear()

    def _mode(self) -> str:
        if self.applied is None:  # on_train_begin not called (a hand-driven loop): resolve for what is found now
            c = self.config
            self.applied = resolve_apply(c.apply, self.training_engine().name, noise=c.noise,
                                         parameter_filter=c.parameter_filter, monitor_only=c.monitor_only)
        return self.applied

    def _active(self, state: TrainerState) -> bool:
        # Before the step's end `state.epoch` still holds the previous step's value, e + s/n with s < n, or
        # exactly e at the first step of epoch e: its floor is the current 0-based epoch.
        return not self.config.monitor_only and self.config.in_window(int(state.epoch or 0))

    def _coefficients(self, scores: torch.Tensor) -> torch.Tensor:
        """rho and k (Eq. 17-18) from scores summed over the ranks; records them for the logs; returns k."""
        ratios = disparity_ratios(scores, self.config.mode)
        coefficients = modulation_coefficients(ratios, self.config.alpha)
        self._last = (ratios, coefficients)
        self._record_for_logs()
        return coefficients

    # ----- modulation, per optimizer step -----
    def clipping_factors(self, args, state, model):
        """`pre_optimizer_step`: k_m of this step (its scores are all in), handed to the trainer's clipping as
        (encoder parameters of m, k_m), so the gradients get c * k_m in one multiply. None in the other mode and
        outside the modulation window."""
        if self._mode() != "pre_optimizer_step" or self._step_scores is None:
            return None
        self._pre_k = self._coefficients(self._take_step_scores())
        if not self._active(state):
            return None
        self._scaled_in_clipping = True
        parameters = self._modulated_parameters(model)
        return [(parameters[name], k) for name, k in zip(self.modality_names, self._pre_k.unbind())]

    def _take_step_scores(self) -> torch.Tensor:
        scores = sum_over_ranks(self._step_scores)  # METHODS.md §3: reduce before the ratio
        self._step_scores = None
        return scores

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._mode() == "backward_hook":
            if not self._step_batches:
                raise RuntimeError(self._no_outputs_message())
            # The gradients already carry k (scaled inside backward): only the GE noise is left.
            step_k, count, self._step_k, self._step_batches = self._step_k, self._step_batches, None, 0
            if self.config.noise and self._active(state):
                mean_k = step_k / count
                modulate_gradients(
                    self._modulated_parameters(kwargs["model"]),
                    dict(zip(self.modality_names, mean_k.unbind())),
                    noise=True,
                    noise_std_from=self.config.noise_std_from,
                    seed=self._noise_seed(args, state),
                    already_scaled=True,
                )
            return
        if self._pre_k is None:  # the trainer did not clip (or clipped without asking): k from the scores now
            if self._step_scores is None:
                raise RuntimeError(self._no_outputs_message())
            self._pre_k = self._coefficients(self._take_step_scores())
        coefficients, scaled = self._pre_k, self._scaled_in_clipping
        self._pre_k, self._scaled_in_clipping = None, False
        if self._active(state) and (self.config.noise or not scaled):
            modulate_gradients(
                self._modulated_parameters(kwargs["model"]),
                dict(zip(self.modality_names, coefficients.unbind())),
                noise=self.config.noise,
                noise_std_from=self.config.noise_std_from,
                seed=self._noise_seed(args, state),
                already_scaled=scaled,
            )

    @staticmethod
    def _no_outputs_message() -> str:
        return ("GradientModulationCallback saw no batch outputs before this optimizer step: train with "
                "hf_mmbalance.MultimodalTrainer, which hands each batch's modality_logits to the callbacks")

    def _noise_seed(self, args: TrainingArguments, state: TrainerState) -> int:
        seed = args.seed if self.config.seed is None else self.config.seed
        return (int(seed) * 1_000_003 + state.global_step) % (2**63 - 1)

    def _modulated_parameters(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        if self._parameters is not None and self._parameters_of == id(model):
            return self._parameters
        encoders = getattr(model, "encoders", None)
        missing = [name for name in self.modality_names if encoders is None or name not in encoders]
        if missing:
            raise ValueError(
                f"GradientModulationCallback modulates `model.encoders[<modality>]`; {type(model).__name__} has no encoder "
                f"for {missing}"
            )
        pattern = re.compile(self.config.parameter_filter) if self.config.parameter_filter else None
        selected = {
            name: [
                param
                for param_name, param in encoders[name].named_parameters()
                if param.requires_grad and (pattern is None or pattern.search(param_name))
            ]
            for name in self.modality_names
        }
        if not any(selected.values()):
            raise ValueError(
                f"parameter_filter={self.config.parameter_filter!r} selects no trainable encoder parameter; "
                f"encoder parameter names look like {[n for n, _ in encoders[self.modality_names[0]].named_parameters()][:4]}"
            )
        self._parameters, self._parameters_of = selected, id(model)
        return selected

    # ----- diagnostics -----
    def _record_for_logs(self) -> None:
        # The step's own tensors are kept (no device op per step, no host sync) and summed in float64 at the next
        # log, or every LOG_FOLD steps, so a run that never logs holds a bounded list.
        self._log_pending.append(self._last)
        self._log_count += 1
        if len(self._log_pending) >= LOG_FOLD:
            self._fold_pending_logs()

    def _fold_pending_logs(self) -> None:
        if not self._log_pending:
            return
        steps = torch.stack([torch.stack(pair) for pair in self._log_pending]).double().sum(dim=0)
        self._log_sums = steps if self._log_sums is None else self._log_sums + steps
        self._log_pending = []

    def metrics_to_log(self) -> dict[str, float]:
        if not self._log_count:
            return {}
        self._fold_pending_logs()
        ratios, coefficients = (self._log_sums / self._log_count).tolist()  # the one host transfer, at a logging step
        logs = {}
        for name, rho, k in zip(self.modality_names, ratios, coefficients):
            logs[f"{LOG_PREFIX}rho_{name}"] = round(rho, 6)
            logs[f"{LOG_PREFIX}k_{name}"] = round(k, 6)
        self._log_sums, self._log_pending, self._log_count = None, [], 0
        return logs

    def plot_diagnostics(self, log_history: list[dict], output_dir: str) -> list[str]:
        return plot_disparity_ratios(log_history, self.modality_names or [], output_dir, monitored=self.config.monitor_only)

    # ----- checkpoints -----
    def save_checkpoint_state(self, checkpoint_dir: str) -> None:
        # The step's scores are consumed before every checkpoint and the noise seed follows the step, so this
        # small file is all there is: the options, the noise seed and the latest rho / k (for inspection and the logs).
        state = {
            "config": self.config.to_dict(),
            "seed": self._seed,
            "modality_names": self.modality_names,
            "last_ratios": self.last_ratios,
            "last_coefficients": self.last_coefficients,
        }
        write_json_atomic(os.path.join(checkpoint_dir, STATE_FILE), state, indent=1)

    def load_checkpoint_state(self, checkpoint_dir: str) -> None:
        """Restore the latest rho / k; refuse (`CheckpointStateError`, naming the file) a missing, unreadable or
        incomplete `gradient_modulation.json` and one saved with another config."""
        path = os.path.join(checkpoint_dir, STATE_FILE)
        method = type(self).__name__
        state = read_json_state(path, method)
        require_keys(state, STATE_KEYS, path, method)
        # `apply` came later: a checkpoint without it was trained as `auto` picks on one process / DDP.
        check_same_config({"apply": "auto", **state["config"]}, self.config.to_dict(), path, method)
        names, ratios, coefficients = state["modality_names"], state["last_ratios"], state["last_coefficients"]
        if not (names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names))) or not all(
            isinstance(d, dict) for d in (ratios, coefficients)
        ):
            raise CheckpointStateError(f"{method}: {path} is damaged (modality_names / last_ratios / last_coefficients "
                                       f"have the wrong types). {RESTART_HINT}")
        self._restored = (path, state["seed"])  # the run's seed is known at on_train_begin, which comes after
        self.modality_names = names
        self._last, self._restored_last = None, (ratios, coefficients)


__all__ = ["GradientModulationCallback", "STATE_FILE"]
