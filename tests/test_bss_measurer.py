"""BSS measurer (appendix Table 1): every criterion against explicit per-sample loops, the closed-form and exact
gradient magnitudes against per-sample autograd, Norm edge cases, no side effect on the model, clear errors."""

import copy
import math

import datasets
import pytest
import torch

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification, MMBalanceForRegression
from hf_mmbalance.methods.bss.measurer import (
    CRITERIA,
    closed_form_gradient_norms,
    closed_form_parameter_names,
    criterion_parts,
    exact_gradient_norms,
    measure,
    min_max_normalize,
    pairwise_mean_cosine,
    per_sample_losses,
)

NUM_LABELS = 3
NUM_SAMPLES = 10
INPUT_SIZES = {"a": 5, "b": 3, "c": 4}


def make_model(num_modalities=2, fusion="concat", feature_sizes=None, task="classification", seed=0, **kwargs):
    names = list(INPUT_SIZES)[:num_modalities]
    feature_sizes = feature_sizes or dict.fromkeys(names, 4)
    modalities = {
        name: {"input_size": INPUT_SIZES[name], "hidden_sizes": [6], "feature_size": feature_sizes[name]}
        for name in names
    }
    torch.manual_seed(seed)
    if task == "regression":
        return MMBalanceForRegression(MMBalanceConfig(modalities=modalities, task="regression", fusion=fusion, **kwargs))
    return MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=NUM_LABELS, fusion=fusion, **kwargs))


def make_data(num_modalities=2, num_samples=NUM_SAMPLES, seed=1, task="classification"):
    generator = torch.Generator().manual_seed(seed)
    data = {name: torch.randn(num_samples, INPUT_SIZES[name], generator=generator) for name in list(INPUT_SIZES)[:num_modalities]}
    if task == "regression":
        data["labels"] = torch.randn(num_samples, generator=generator)
    else:
        data["labels"] = torch.randint(0, NUM_LABELS, (num_samples,), generator=generator)
    data["sample_idx"] = torch.arange(100, 100 + num_samples)
    return data


def batches_of(data, size):
    n = len(data["labels"])
    return [{key: value[start : start + size] for key, value in data.items()} for start in range(0, n, size)]


def sample(data, i):
    return {key: value[i : i + 1] for key, value in data.items() if key not in ("labels", "sample_idx")}


def cosine(u, v):
    norms = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
    return sum(x * y for x, y in zip(u, v)) / norms if norms else 0.0  # a zero vector (ReLU) has cosine 0


def softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def mean_pairwise(vectors):
    pairs = [(i, j) for i in range(len(vectors)) for j in range(i + 1, len(vectors))]
    return sum(cosine(vectors[i], vectors[j]) for i, j in pairs) / len(pairs)


def hand_norm(values):
    low, high = min(values), max(values)
    return [0.0 if high == low else (v - low) / (high - low) for v in values]


def reference_components(model, data, head_parameter_names=None):
    """Per-sample loops on a copy of the model: similarities from each sample's own forward, the loss as the
    model's own `loss` on a batch of one, and the gradient norm from a backward per sample."""
    model = copy.deepcopy(model).eval()
    parameters = dict(model.named_parameters())
    names = head_parameter_names or closed_form_parameter_names(model)
    features, predictions, losses, grads = [], [], [], []
    for i in range(len(data["labels"])):
        with torch.no_grad():
            out = model(**sample(data, i))
        if len({value.shape for value in out.features.values()}) == 1:
            features.append(mean_pairwise([out.features[m][0].tolist() for m in out.features]))
        if out.unimodal_logits:
            predictions.append(mean_pairwise([softmax(out.unimodal_logits[m][0].tolist()) for m in out.unimodal_logits]))
        model.zero_grad(set_to_none=True)
        loss = model(labels=data["labels"][i : i + 1], **sample(data, i)).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(math.sqrt(sum(parameters[n].grad.pow(2).sum().item() for n in names)))
    return {"feature": features, "prediction": predictions, "loss": losses, "gradient": grads}


def test_criteria_cover_table_1():
    assert len(CRITERIA) == 8
    assert criterion_parts("feature_similarity") == ("feature", None)
    assert criterion_parts("training_loss") == (None, "loss")
    assert criterion_parts("prediction_similarity-gradient_magnitude") == ("prediction", "gradient")
    assert {criterion_parts(c) for c in CRITERIA} == {
        (s, c) for s in ("feature", "prediction", None) for c in ("loss", "gradient", None) if (s, c) != (None, None)
    }


def test_min_max_normalize_edge_cases():
    assert min_max_normalize(torch.tensor([2.0, 4.0, 3.0])).tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert min_max_normalize(torch.tensor([-1.0, -1.0, -1.0])).tolist() == [0.0, 0.0, 0.0]
    assert min_max_normalize(torch.tensor([7.0])).tolist() == [0.0]
    assert min_max_normalize(torch.tensor([])).numel() == 0
    assert not torch.isnan(min_max_normalize(torch.full((5,), 1e-30))).any()


def test_pairwise_mean_cosine_by_hand():
    u, v, w = [1.0, 0.0, 2.0], [0.5, -1.0, 1.0], [0.0, 3.0, -1.0]
    two = pairwise_mean_cosine([torch.tensor([u]), torch.tensor([v])])
    assert two.tolist() == pytest.approx([cosine(u, v)], rel=1e-6)
    three = pairwise_mean_cosine([torch.tensor([u]), torch.tensor([v]), torch.tensor([w])])
    assert three.tolist() == pytest.approx([(cosine(u, v) + cosine(u, w) + cosine(v, w)) / 3], rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_mean_cosine([torch.tensor([u])])


@pytest.mark.parametrize("num_modalities", [2, 3], ids=["M=2", "M=3"])
def test_every_criterion_equals_the_per_sample_loops(num_modalities):
    model = make_model(num_modalities, loss_weights=None)
    data = make_data(num_modalities)
    reference = reference_components(model, data)
    for criterion in CRITERIA:
        similarity, cost = criterion_parts(criterion)
        result = measure(model, batches_of(data, 4), criterion)  # 3 batches, the last one short
        expected = [0.0] * NUM_SAMPLES
        if similarity is not None:
            assert result["similarity"].tolist() == pytest.approx(reference[similarity], rel=1e-5, abs=1e-6)
            expected = [e + n for e, n in zip(expected, hand_norm(reference[similarity]))]
        if cost is not None:
            key = "loss" if cost == "loss" else "grad_norm"
            assert result[key].tolist() == pytest.approx(reference[cost], rel=1e-5, abs=1e-6)
            expected = [e - n for e, n in zip(expected, hand_norm(reference[cost]))]
        assert result["score"].tolist() == pytest.approx(expected, abs=1e-5), criterion
        assert result["sample_idx"].tolist() == data["sample_idx"].tolist()


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated"])
@pytest.mark.parametrize("loss_weights", [None, {"fused": 0.7, "a": 0.2, "b": 1.5}], ids=["mean", "weighted"])
def test_per_sample_losses_mirror_combine_losses(fusion, loss_weights):
    model = make_model(2, fusion=fusion, loss_weights=loss_weights).eval()
    data = make_data(2)
    with torch.no_grad():
        outputs = model(labels=data["labels"], a=data["a"], b=data["b"])
        losses = per_sample_losses(model, outputs, data["labels"])
    assert losses.shape == (NUM_SAMPLES,)
    assert losses.mean().item() == pytest.approx(outputs.loss.item(), rel=1e-6)


@pytest.mark.parametrize("regression_loss", ["l1", "mse"])
def test_per_sample_losses_and_closed_form_for_regression(regression_loss):
    model = make_model(2, task="regression", regression_loss=regression_loss, loss_weights={"fused": 2.0, "b": 0.5})
    data = make_data(2, task="regression")
    reference = reference_components(model, data)
    result = measure(model, batches_of(data, 3), "gradient_magnitude")
    assert result["grad_norm"].tolist() == pytest.approx(reference["gradient"], rel=1e-5)
    result = measure(model, batches_of(data, 3), "training_loss")
    assert result["loss"].tolist() == pytest.approx(reference["loss"], rel=1e-5)


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated"])
@pytest.mark.parametrize(
    "options",
    [{}, {"loss_weights": {"fused": 0.7, "a": 0.2, "b": 1.5}}, {"unimodal_heads": False}],
    ids=["mean", "weighted", "no-unimodal-heads"],
)
def test_closed_form_gradient_equals_per_sample_autograd_of_the_head_parameters(fusion, options):
    model = make_model(2, fusion=fusion, feature_sizes={"a": 4, "b": 3}, **options).eval()
    data = make_data(2)
    names = closed_form_parameter_names(model)
    assert all(name in dict(model.named_parameters()) for name in names)
    if options.get("unimodal_heads") is False:
        assert not any(name.startswith("unimodal_heads") for name in names)
    reference = reference_components(model, data, names)["gradient"]
    with torch.no_grad():
        outputs = model(a=data["a"], b=data["b"])
    norms = closed_form_gradient_norms(model, outputs, data["labels"])
    assert norms.tolist() == pytest.approx(reference, rel=1e-5)


def test_exact_gradient_equals_per_sample_autograd_over_chosen_parameters():
    model = make_model(3, loss_weights={"fused": 0.5, "a": 1.0, "b": 0.25, "c": 2.0}).eval()
    data = make_data(3)
    chosen = [name for name, _ in model.named_parameters() if name.startswith(("encoders.a.", "fusion."))]
    reference = reference_components(model, data, chosen)["gradient"]
    result = measure(model, batches_of(data, 4), "gradient_magnitude", gradient="exact", parameters=chosen)
    assert result["grad_norm"].tolist() == pytest.approx(reference, rel=1e-4)
    # default: all trainable parameters
    everything = [name for name, _ in model.named_parameters()]
    reference = reference_components(model, data, everything)["gradient"]
    result = measure(model, data, "gradient_magnitude", gradient="exact")
    assert result["grad_norm"].tolist() == pytest.approx(reference, rel=1e-4)
    # over the heads, the exact mode agrees with the closed form
    heads = closed_form_parameter_names(model)
    exact = exact_gradient_norms(model, {k: data[k] for k in ("a", "b", "c")}, data["labels"], heads)
    closed = measure(model, data, "gradient_magnitude")["grad_norm"]
    assert exact.tolist() == pytest.approx(closed.tolist(), rel=1e-4)


def test_exact_mode_covers_fusions_without_closed_form():
    model = make_model(2, fusion="amw").eval()
    data = make_data(2)
    with pytest.raises(ValueError, match="gradient='exact'"):
        measure(model, data, "gradient_magnitude")
    result = measure(model, data, "feature_similarity-gradient_magnitude", gradient="exact")
    copy_ = copy.deepcopy(model)
    expected = []
    for i in range(NUM_SAMPLES):
        copy_.zero_grad(set_to_none=True)
        per_sample_losses(copy_, copy_(**sample(data, i)), data["labels"][i : i + 1]).sum().backward()
        expected.append(math.sqrt(sum(p.grad.pow(2).sum().item() for p in copy_.parameters() if p.grad is not None)))
    assert result["grad_norm"].tolist() == pytest.approx(expected, rel=1e-4)


def test_measure_accepts_a_dataset_in_order_and_ignores_other_columns():
    model = make_model(2)
    data = make_data(2)
    dataset = datasets.Dataset.from_dict(
        {**{k: v.tolist() for k, v in data.items()}, "note": ["x"] * NUM_SAMPLES}
    )
    from_dataset = measure(model, dataset, "prediction_similarity-training_loss", batch_size=3)
    from_batches = measure(model, batches_of(data, 5), "prediction_similarity-training_loss")
    assert from_dataset["sample_idx"].tolist() == data["sample_idx"].tolist()
    for key in ("score", "similarity", "loss"):
        assert from_dataset[key].tolist() == pytest.approx(from_batches[key].tolist(), rel=1e-5)
    without_index = measure(model, [{k: data[k] for k in ("a", "b", "labels")}], "training_loss")
    assert "sample_idx" not in without_index


@pytest.mark.parametrize("gradient", ["closed_form", "exact"])
def test_measure_leaves_the_model_untouched(gradient):
    modalities = {"a": {"input_size": 5, "feature_size": 4, "dropout": 0.5}, "b": {"input_size": 3, "feature_size": 4}}
    torch.manual_seed(0)
    model = MMBalanceForClassification(MMBalanceConfig(modalities=modalities, num_labels=NUM_LABELS))
    model.train()
    model.encoders["b"].eval()  # a mixed state must come back as it was
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.5)
    state = copy.deepcopy(model.state_dict())
    data = make_data(2)
    first = measure(model, data, "feature_similarity-gradient_magnitude", gradient=gradient)
    second = measure(model, data, "feature_similarity-gradient_magnitude", gradient=gradient)
    assert torch.equal(first["score"], second["score"])  # eval mode: dropout off
    assert model.training and model.encoders["a"].training and not model.encoders["b"].training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    reference = reference_components(model, data)  # eval-mode loops on a copy
    assert first["similarity"].tolist() == pytest.approx(reference["feature"], rel=1e-5)


def test_clear_errors():
    model = make_model(2)
    data = make_data(2)
    with pytest.raises(ValueError, match="feature_similarity-training_loss"):
        measure(model, data, "balance")
    with pytest.raises(ValueError, match="unimodal_heads=True"):
        measure(make_model(2, unimodal_heads=False), data, "prediction_similarity")
    with pytest.raises(ValueError, match=r"equal feature sizes.*'a': 4.*'b': 3.*prediction_similarity"):
        measure(make_model(2, feature_sizes={"a": 4, "b": 3}), data, "feature_similarity")
    with pytest.raises(ValueError, match="needs `labels`"):
        measure(model, [{k: data[k] for k in ("a", "b")}], "training_loss")
    with pytest.raises(ValueError, match="gradient="):
        measure(model, data, "gradient_magnitude", gradient="approx")
    with pytest.raises(ValueError, match="parameters"):
        measure(model, data, "gradient_magnitude", parameters=["fusion.classifier.weight"])
    with pytest.raises(ValueError, match="unknown parameter names"):
        measure(model, data, "gradient_magnitude", gradient="exact", parameters=["nope"])
    with pytest.raises(ValueError, match="at least 2 modalities"):
        measure(make_model(1), make_data(1), "feature_similarity")
