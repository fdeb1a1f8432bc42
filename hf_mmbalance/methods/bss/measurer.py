"""BSS measurer: a per-sample balance score from one of the 8 criteria of the BSS appendix, Table 1.

Pure torch on an `MMBalanceModel` (no Trainer). Criteria and their Table 1 rows (u, v two modalities; with
M > 2 modalities the similarity is the mean of the M(M-1)/2 pairwise cosines, METHODS.md §1):

===========================================  ================================================================
criterion                                    Table 1 row / balance score (higher = more balanced = earlier)
===========================================  ================================================================
``feature_similarity``                       sim(e_u, e_v) = cos of the unimodal features z_m;  Norm(sim)
``prediction_similarity``                    sim(ŷ_u, ŷ_v) = cos of softmax(unimodal heads);    Norm(sim)
``gradient_magnitude``                       ‖∇_θ L_ce(x_i, y_i)‖₂;                             −Norm(grad)
``training_loss``                            L_ce(x_i, y_i);                                    −Norm(loss)
``feature_similarity-gradient_magnitude``    Norm(sim(e_u, e_v)) − Norm(‖∇_θ L_ce‖₂)
``feature_similarity-training_loss``         Norm(sim(e_u, e_v)) − Norm(L_ce)
``prediction_similarity-gradient_magnitude`` Norm(sim(ŷ_u, ŷ_v)) − Norm(‖∇_θ L_ce‖₂)
``prediction_similarity-training_loss``      Norm(sim(ŷ_u, ŷ_v)) − Norm(L_ce)
===========================================  ================================================================

``Norm`` is the min-max normalization over the whole measured set (`min_max_normalize`).

Decisions (METHODS.md §1):

* L_ce of a sample is the training loss of that sample, i.e. the same weighted combination of the fused and
  unimodal terms that `MMBalanceModel.combine_losses` builds for a batch (released code), see
  `per_sample_losses`. The Ada2I auxiliary terms ``modal`` / ``feature`` (fusions ``amw`` / ``afw``) are left
  out: ``feature`` is a batch-level loss with no per-sample value, and BSS scores the prediction losses.
* The gradient magnitude is exact for the parameters it covers. ``gradient="closed_form"`` (default) covers the
  last linear layers of the heads that enter the training loss (`closed_form_parameter_names`): for a linear
  head with CE, ∂ℓ/∂[W b] = (p − onehot(y)) [a; 1]ᵀ, so the per-sample gradient over all those heads has
  squared norm Σ_h w_h² ‖p_h − y‖² (‖a_h‖² + 1), with w_h the head's loss weight and a_h its input.
  ``gradient="exact"`` differentiates the per-sample training loss w.r.t. any chosen parameters (default: all
  trainable ones) with ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``); it costs about one backward
  pass per sample and holds ``batch_size`` × (number of chosen parameters) gradient values at once.
* Scoring is inference: eval mode and no grad (the released code scores in train mode, which updates BatchNorm
  statistics — not copied). Every module's train/eval flag is restored afterwards; parameters and their
  ``.grad`` are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...progress import batches_of, progress
from ...trainer.batches import needs_collator, ordered_batches


CRITERIA = (
    "feature_similarity",
    "prediction_similarity",
    "gradient_magnitude",
    "training_loss",
    "feature_similarity-gradient_magnitude",
    "feature_similarity-training_loss",
    "prediction_similarity-gradient_magnitude",
    "prediction_similarity-training_loss",
)
GRADIENT_MODES = ("closed_form", "exact")
# Fusions whose fused prediction is one or more linear layers on tensors the model outputs (the closed form).
CLOSED_FORM_FUSIONS = ("concat", "sum", "gated")


def criterion_parts(criterion: str) -> tuple[str | None, str | None]:
    """Split a criterion into (similarity kind, cost kind): similarity in {"feature", "prediction", None}, cost in
    {"loss", "gradient", None}. Unknown names raise a ValueError listing the valid ones."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is unknown; expected one of {list(CRITERIA)}")
    similarity = cost = None
    for part in criterion.split("-"):
        if part.endswith("_similarity"):
            similarity = part.removesuffix("_similarity")
        else:
            cost = "loss" if part == "training_loss" else "gradient"
    return similarity, cost


def min_max_normalize(values: torch.Tensor) -> torch.Tensor:
    """Norm(x) = (x − min) / (max − min) over all entries (BSS Table 1); a constant (or empty) input gives zeros."""
    values = values.float()
    if values.numel() == 0:
        return values.clone()
    low, high = values.min(), values.max()
    span = high - low
    if not torch.isfinite(span) or span <= 0:
        return torch.zeros_like(values)
    return (values - low) / span


def pairwise_mean_cosine(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-sample mean over all modality pairs (u, v) of cos(vectors[u]_i, vectors[v]_i) (Table 1 `sim`).

    `vectors`: M >= 2 tensors of the same shape `(N, D)`. With M = 2 this is the cosine itself. Returns `(N,)`
    in float32. A zero vector has cosine 0 with everything (eps of `F.cosine_similarity`).
    """
    vectors = [v.float() for v in vectors]
    if len(vectors) < 2:
        raise ValueError(f"a similarity needs at least 2 modalities, got {len(vectors)}")
    shapes = {tuple(v.shape) for v in vectors}
    if len(shapes) != 1:
        raise ValueError(f"pairwise_mean_cosine needs tensors of one shape, got shapes {sorted(shapes)}")
    cosines = [F.cosine_similarity(u, v, dim=-1) for u, v in combinations(vectors, 2)]
    return torch.stack(cosines).mean(dim=0)


def feature_similarity(features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """sim(e_u, e_v) of the encoder features z_m (Table 1 "Feature similarity"), averaged over pairs when M > 2.

    The cosine needs one feature size for every modality; otherwise a ValueError names the sizes (set equal
    `feature_size`s, or use the prediction similarity, which compares the unimodal heads' K-class outputs).
    """
    sizes = {name: int(value.shape[-1]) for name, value in features.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"feature_similarity needs equal feature sizes for all modalities to take a cosine, got {sizes}; "
            "give the modalities the same `feature_size` or use a prediction_similarity criterion"
        )
    return pairwise_mean_cosine(list(features.values()))


def prediction_similarity(unimodal_logits: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """sim(ŷ_u, ŷ_v) = cos(softmax(ŷ_u), softmax(ŷ_v)) of the unimodal heads (Table 1 "Prediction similarity")."""
    if not unimodal_logits:
        raise ValueError(
            "prediction_similarity needs the unimodal heads' outputs; build the model with "
            "MMBalanceConfig(unimodal_heads=True) or use a feature_similarity criterion"
        )
    return pairwise_mean_cosine([torch.softmax(logits.float(), dim=-1) for logits in unimodal_logits.values()])


def prediction_loss_weights(model: nn.Module, outputs: Any) -> dict[str, float]:
    """Weight of each prediction term (``fused`` and one per unimodal head) in `model.combine_losses`:
    `config.loss_weights[name]` (missing = 1), or 1/P for all P terms without `loss_weights` (their mean)."""
    names = ["fused", *(outputs.unimodal_logits or {})]
    weights = model.config.loss_weights
    if weights is None:
        return dict.fromkeys(names, 1.0 / len(names))
    return {name: float(weights.get(name, 1.0)) for name in names}


def _check_labels(model: nn.Module, labels: torch.Tensor) -> None:
    if model.config.task != "classification":
        return
    if labels.is_floating_point():
        raise ValueError(f"labels must be integer class ids for classification, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= model.config.num_labels):
        raise ValueError(
            f"labels must lie in [0, {model.config.num_labels}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def _per_sample_task_loss(model: nn.Module, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's `task_loss` with reduction per sample: CE, or L1 / MSE averaged over the outputs."""
    predictions = predictions.float()
    if model.config.task == "classification":
        return F.cross_entropy(predictions, labels.long(), reduction="none")
    target = labels.to(predictions.dtype).reshape(predictions.shape)
    loss = F.l1_loss if model.config.regression_loss == "l1" else F.mse_loss
    return loss(predictions, target, reduction="none").reshape(len(predictions), -1).mean(dim=1)


def per_sample_losses(model: nn.Module, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample training loss L_ce(x_i, y_i), `(N,)` float32: `model.combine_losses` applied per sample.

    Σ_h w_h ℓ(logits_h,i, y_i) over the fused head and the unimodal heads, w_h from `prediction_loss_weights`
    (the config's `loss_weights`, or the mean of the prediction terms without them — BMMAL Eq. 1). The Ada2I
    auxiliary terms ``modal`` / ``feature`` are not included. For a model without them, the batch mean equals
    `outputs.loss`.
    """
    weights = prediction_loss_weights(model, outputs)
    logits = {"fused": outputs.logits, **(outputs.unimodal_logits or {})}
    return sum(weight * _per_sample_task_loss(model, logits[name], labels) for name, weight in weights.items())


def _head_inputs(model: nn.Module, outputs: Any) -> list[tuple[str, torch.Tensor]]:
    """(loss term, input of a final linear layer) for every last linear layer the closed form covers."""
    fusion = model.config.fusion
    if fusion not in CLOSED_FORM_FUSIONS:
        raise ValueError(
            f"gradient='closed_form' supports fusion in {list(CLOSED_FORM_FUSIONS)}, got fusion={fusion!r}: its fused "
            "head is an MLP whose last layer's input is not exposed; use gradient='exact' (torch.func, any "
            "parameters)"
        )
    if fusion == "sum":  # logits = Σ_m (W_m z_m + b_m): one linear layer per modality, all fed the same dℓ/dlogits
        inputs = [("fused", outputs.features[name]) for name in model.fusion.heads]
    else:  # concat: classifier on [z_1; ...; z_M]; gated: classifier on h = Σ_m g_m * p_m
        inputs = [("fused", outputs.fused_features)]
    inputs += [(name, outputs.features[name]) for name in outputs.unimodal_logits or {}]
    return inputs


def closed_form_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters the closed-form gradient magnitude covers (exactly): the fused classifier's weight
    and bias (``fusion.classifier`` for concat / gated, ``fusion.heads.<m>`` for sum) and every unimodal head."""
    fusion = model.config.fusion
    if fusion not in CLOSED_FORM_FUSIONS:
        _head_inputs(model, None)  # raises the explanatory error
    if fusion == "sum":
        names = [f"fusion.heads.{m}.{p}" for m in model.fusion.heads for p in ("weight", "bias")]
    else:
        names = ["fusion.classifier.weight", "fusion.classifier.bias"]
    return names + [f"unimodal_heads.{m}.{p}" for m in model.unimodal_heads for p in ("weight", "bias")]


def _loss_logit_gradient(model: nn.Module, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∂ℓ_i/∂logits_i of the per-sample task loss: p − onehot(y) for CE; sign(ŷ − y)/K (L1), 2(ŷ − y)/K (MSE)."""
    predictions = predictions.float()
    if model.config.task == "classification":
        residual = torch.softmax(predictions, dim=-1)
        return residual - F.one_hot(labels.long(), predictions.shape[-1]).to(residual.dtype)
    difference = predictions - labels.to(predictions.dtype).reshape(predictions.shape)
    outputs = predictions.reshape(len(predictions), -1).shape[1]
    if model.config.regression_loss == "l1":
        return torch.sign(difference) / outputs
    return 2 * difference / outputs


def closed_form_gradient_norms(model: nn.Module, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖∇ L_ce(x_i, y_i)‖₂ over `closed_form_parameter_names(model)`, exact, `(N,)` float32.

    For a linear layer logits = W a + b, ∂ℓ/∂W = r aᵀ and ∂ℓ/∂b = r with r = ∂ℓ/∂logits (p − onehot(y) for CE),
    so ‖∂ℓ/∂[W b]‖² = ‖r‖² (‖a‖² + 1). The training loss weights head h by w_h, hence
    ‖∇‖² = Σ_h w_h² ‖r_h‖² (‖a_h‖² + 1) (the heads' parameters are disjoint).
    """
    weights = prediction_loss_weights(model, outputs)
    logits = {"fused": outputs.logits, **(outputs.unimodal_logits or {})}
    residual_sq = {
        name: _loss_logit_gradient(model, logits[name], labels).pow(2).sum(dim=-1) for name in weights
    }
    total = torch.zeros(len(labels), dtype=torch.float32, device=outputs.logits.device)
    for term, head_input in _head_inputs(model, outputs):
        input_sq = head_input.float().pow(2).sum(dim=-1) + 1.0
        total = total + weights[term] ** 2 * residual_sq[term] * input_sq
    return total.sqrt()


def exact_gradient_norms(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    parameters: Iterable[str] | None = None,
) -> torch.Tensor:
    """Per-sample ‖∇_θ L_ce(x_i, y_i)‖₂ over the named parameters (default: all with `requires_grad`), `(N,)`.

    ``torch.func``: vmap (or, for a backbone that vmap cannot batch, a loop) over the samples of grad of the per-sample
    training loss (`per_sample_losses` of a batch
    of one), through `functional_call` with detached copies of the parameters, so nothing accumulates in `.grad`.
    Cost: about one forward + backward per sample, and N × (size of the chosen parameters) floats at once.
    The model's current train/eval mode is used as is (`measure` puts it in eval mode: no dropout, no BatchNorm
    update; batch-statistics layers are not per-sample in train mode anyway).
    """
    from torch.func import functional_call, grad, vmap

    named = dict(model.named_parameters())
    if parameters is None:
        names = [name for name, parameter in named.items() if parameter.requires_grad]
    else:
        names = list(parameters)
        unknown = [name for name in names if name not in named]
        if unknown:
            raise ValueError(f"unknown parameter names {unknown}; see model.named_parameters()")
    if not names:
        raise ValueError("no parameters to differentiate: pass `parameters` or unfreeze some")
    chosen = {name: named[name].detach() for name in names}
    fixed = {name: p.detach() for name, p in named.items() if name not in chosen}
    fixed.update({name: b.detach() for name, b in model.named_buffers()})

    def sample_loss(params, sample_inputs, label):
        batch = {key: value.unsqueeze(0) for key, value in sample_inputs.items()}
        outputs = functional_call(model, {**fixed, **params}, args=(), kwargs=batch)
        return per_sample_losses(model, outputs, label.unsqueeze(0)).squeeze(0)

    try:
        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(chosen, dict(inputs), labels)
    except RuntimeError as error:
        if "vmap" not in str(error):
            raise
        # Some backbones write into tensors in place inside forward (wav2vec2 builds its frame mask with
        # index_put_), which vmap cannot batch: the same gradients, one sample at a time.
        per_sample = [grad(sample_loss)(chosen, {k: v[i] for k, v in inputs.items()}, labels[i]) for i in range(len(labels))]
        grads = {name: torch.stack([g[name] for g in per_sample]) for name in chosen}
    squared = sum(g.float().reshape(len(labels), -1).pow(2).sum(dim=1) for g in grads.values())
    return squared.sqrt()


def _iterate_batches(model: nn.Module, data: Any, batch_size: int, collate_fn: Any = None) -> Iterable[Mapping[str, Any]]:
    """Batches in order: a `datasets.Dataset` (its model columns sliced from Arrow, or collated by `collate_fn` /
    through its processing transform, as in training), a single batch dict, or any iterable of batch dicts."""
    import datasets

    if isinstance(data, datasets.Dataset):
        missing = [name for name in model.config.modalities if name not in data.column_names]
        if missing and not needs_collator(data):
            raise ValueError(f"the dataset lacks the modality columns {missing}; it has {data.column_names}")
        return ordered_batches(model, data, batch_size, collate_fn)
    if isinstance(data, Mapping):
        return [data]
    return data


def measure(
    model: nn.Module,
    data: Any,
    criterion: str,
    *,
    batch_size: int = 256,
    gradient: str = "closed_form",
    parameters: Iterable[str] | None = None,
    collate_fn: Any = None,
    show_progress: bool = False,
    desc: str | None = None,
) -> dict[str, Any]:
    """Balance score of every sample of `data` under `criterion` (one of `CRITERIA`), in data order.

    Args:
        model: an `MMBalanceModel` (classification; regression works for the loss / gradient criteria).
        data: a `datasets.Dataset` (iterated in order by `batch_size`) or an iterable of batch dicts holding the
            modality tensors (and `<m>_attention_mask`), `labels` (needed by loss / gradient criteria) and an
            optional `sample_idx`.
        criterion: see the module docstring (BSS appendix Table 1).
        gradient: ``closed_form`` (last linear layers of the heads, `closed_form_parameter_names`) or ``exact``
            (torch.func over `parameters`, default all trainable parameters).
        parameters: parameter names for ``gradient="exact"``.
        collate_fn: how a `datasets.Dataset`'s rows become batches (the trainer's collator, for raw or
            variable-length columns); None slices fixed-size columns straight from Arrow.
        show_progress: a bar over the batches on stderr (display only), titled `desc` (default: the criterion).

    Returns a dict of `(N,)` float32 CPU tensors: ``score`` (higher = more balanced = earlier; Norm(sim),
    −Norm(cost) or Norm(sim) − Norm(cost)), the raw components the criterion uses among ``similarity``,
    ``loss`` and ``grad_norm``, ``sample_idx`` (int64) when every batch has one, and ``criterion``.
    One inference pass: eval mode under `torch.no_grad()`; each module's train/eval flag is restored after.
    """
    similarity_kind, cost = criterion_parts(criterion)
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient={gradient!r} is unknown; expected one of {list(GRADIENT_MODES)}")
    if parameters is not None and not (cost == "gradient" and gradient == "exact"):
        raise ValueError("`parameters` applies to gradient='exact' with a gradient_magnitude criterion only")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if similarity_kind == "prediction" and model.config.task != "classification":
        raise ValueError("prediction_similarity compares class probabilities: it needs task='classification'")
    if similarity_kind == "prediction" and not len(getattr(model, "unimodal_heads", ())):
        prediction_similarity(None)  # raises the explanatory error
    if cost == "gradient" and gradient == "closed_form":
        closed_form_parameter_names(model)  # fail fast on unsupported fusions

    input_keys = set(model.input_names)
    device = next(model.parameters()).device
    modes = {module: module.training for module in model.modules()}
    parts: dict[str, list[torch.Tensor]] = {"similarity": [], "loss": [], "grad_norm": [], "sample_idx": []}
    has_index = True
    model.eval()
    try:
        batches = _iterate_batches(model, data, batch_size, collate_fn)
        total = batches_of(len(data), batch_size) if hasattr(data, "column_names") else None
        batches = progress(batches, total=total, desc=desc or f"BSS scoring ({criterion})", disable=not show_progress,
                           unit="batch", leave=False)
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k in input_keys and v is not None}
            labels = batch.get("labels")
            if cost is not None:
                if labels is None:
                    raise ValueError(f"criterion={criterion!r} needs `labels` in every batch")
                labels = torch.as_tensor(labels).to(device)
                _check_labels(model, labels)
            with torch.no_grad():
                outputs = model(**inputs)
                if similarity_kind == "feature":
                    parts["similarity"].append(feature_similarity(outputs.features).cpu())
                elif similarity_kind == "prediction":
                    parts["similarity"].append(prediction_similarity(outputs.unimodal_logits).cpu())
                if cost == "loss":
                    parts["loss"].append(per_sample_losses(model, outputs, labels).cpu())
                elif cost == "gradient" and gradient == "closed_form":
                    parts["grad_norm"].append(closed_form_gradient_norms(model, outputs, labels).cpu())
            if cost == "gradient" and gradient == "exact":
                parts["grad_norm"].append(exact_gradient_norms(model, inputs, labels, parameters).detach().cpu())
            index = batch.get("sample_idx")
            has_index = has_index and index is not None
            if has_index:
                parts["sample_idx"].append(torch.as_tensor(index).reshape(-1).long().cpu())
    finally:
        for module, training in modes.items():
            module.training = training

    result: dict[str, Any] = {"criterion": criterion}
    for key in ("similarity", "loss", "grad_norm"):
        if parts[key]:
            result[key] = torch.cat(parts[key]).float()
    if has_index and parts["sample_idx"]:
        result["sample_idx"] = torch.cat(parts["sample_idx"])
    if not any(key in result for key in ("similarity", "loss", "grad_norm")):
        raise ValueError("`data` yielded no batches")
    score = torch.zeros_like(next(result[k] for k in ("similarity", "loss", "grad_norm") if k in result))
    if similarity_kind is not None:
        score = score + min_max_normalize(result["similarity"])
    if cost is not None:
        score = score - min_max_normalize(result["loss" if cost == "loss" else "grad_norm"])
    result["score"] = score
    return result


__all__ = [
    "CRITERIA",
    "CLOSED_FORM_FUSIONS",
    "GRADIENT_MODES",
    "closed_form_gradient_norms",
    "closed_form_parameter_names",
    "criterion_parts",
    "exact_gradient_norms",
    "feature_similarity",
    "measure",
    "min_max_normalize",
    "pairwise_mean_cosine",
    "per_sample_losses",
    "prediction_loss_weights",
    "prediction_similarity",
]
