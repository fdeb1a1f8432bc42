"""BMMAL modality contributions (Eq. 5, 9-11, 13) and rank-1 gradient embeddings (Eq. 12, 14)."""

import itertools
import math

import pytest
import torch

from hf_mmbalance import MMBalanceConfig, MMBalanceForClassification
from hf_mmbalance.methods.active.embeddings import (
    embedding_sq_norms,
    gradient_embedding_factors,
    materialize_embeddings,
)
from hf_mmbalance.methods.active.shapley import (
    dominance,
    fused_value_fn,
    modality_contributions,
    modality_weights,
    pseudo_labels,
    shapley_values,
    subset_values,
)


def random_table(num_modalities, num_rows=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        frozenset(c): torch.rand(num_rows, generator=generator, dtype=torch.float64)
        for r in range(num_modalities + 1)
        for c in itertools.combinations(range(num_modalities), r)
    }


def brute_force_shapley(table, num_modalities):
    """Average over all M! arrival orders of each player's marginal contribution."""
    orders = list(itertools.permutations(range(num_modalities)))
    phi = torch.zeros(next(iter(table.values())).shape[0], num_modalities, dtype=torch.float64)
    for order in orders:
        coalition = frozenset()
        for player in order:
            phi[:, player] += table[coalition | {player}] - table[coalition]
            coalition = coalition | {player}
    return phi / len(orders)


def test_subset_values_enumerates_all_masks():
    seen = []

    def value_fn(mask):
        seen.append(mask)
        return torch.tensor([float(sum(mask))])

    values = subset_values(value_fn, 3)
    assert len(values) == 8 and len(set(seen)) == 8
    for subset, value in values.items():
        assert value.item() == len(subset)
    assert values[frozenset({0, 2})].item() == 2
    mask_of = {frozenset(m for m, keep in enumerate(mask) if keep): mask for mask in seen}
    assert mask_of[frozenset({0, 2})] == (True, False, True)


def test_shapley_two_modalities_is_eq10():
    table = random_table(2)
    v0, v1, v2, v12 = (table[frozenset(s)] for s in [(), (0,), (1,), (0, 1)])
    phi = shapley_values(table, 2)
    torch.testing.assert_close(phi[:, 0], 0.5 * ((v12 - v2) + (v1 - v0)))
    torch.testing.assert_close(phi[:, 1], 0.5 * ((v12 - v1) + (v2 - v0)))


@pytest.mark.parametrize("num_modalities", [3, 4])
def test_shapley_efficiency_and_permutation_average(num_modalities):
    table = random_table(num_modalities, seed=num_modalities)
    phi = shapley_values(table, num_modalities)
    assert phi.shape == (7, num_modalities)
    everyone = frozenset(range(num_modalities))
    torch.testing.assert_close(phi.sum(dim=1), table[everyone] - table[frozenset()])
    torch.testing.assert_close(phi, brute_force_shapley(table, num_modalities))


def test_shapley_requires_every_coalition():
    table = random_table(3)
    del table[frozenset({1})]
    with pytest.raises(ValueError, match="coalitions"):
        shapley_values(table, 3)


def test_contributions_normalize_and_uniform_when_all_zero():
    phi = torch.tensor([[0.3, -0.1, 0.0], [0.0, 0.0, 0.0], [-2.0, -2.0, 4.0]])
    contributions = modality_contributions(phi)
    assert torch.isfinite(contributions).all()
    torch.testing.assert_close(contributions.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(contributions[0], torch.tensor([0.75, 0.25, 0.0]))
    torch.testing.assert_close(contributions[1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(contributions[2], torch.tensor([0.25, 0.25, 0.5]))


def test_dominance_is_eq5():
    contributions = torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    expected = torch.tensor([(0.5 - 0.3) + (0.5 - 0.2), 0.25 + 0.25, 0.0])
    torch.testing.assert_close(dominance(contributions), expected)


def test_weights_are_eq13_for_two_modalities():
    contributions = modality_contributions(torch.randn(50, 2, generator=torch.Generator().manual_seed(1)))
    weights = modality_weights(contributions)
    rho_paper = (contributions[:, 0] - contributions[:, 1]).abs()  # §3.5: rho = |Phi_1 - Phi_2|
    torch.testing.assert_close(dominance(contributions), rho_paper)  # Eq. 5 agrees for M = 2
    m1_strong = contributions[:, 0] >= contributions[:, 1]
    expected_1 = torch.where(m1_strong, torch.ones(50), 1 - rho_paper)
    expected_2 = torch.where(m1_strong, 1 - rho_paper, torch.ones(50))
    torch.testing.assert_close(weights[:, 0], expected_1)
    torch.testing.assert_close(weights[:, 1], expected_2)
    # Exact tie: rho = 0, so both get 1 whichever way the tie is broken.
    torch.testing.assert_close(modality_weights(torch.tensor([[0.5, 0.5]])), torch.ones(1, 2))


def test_weights_many_modalities():
    weights = modality_weights(torch.tensor([[0.5, 0.3, 0.2]]))
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.8, 0.7]]))


@pytest.fixture()
def tiny_model():
    torch.manual_seed(0)
    return MMBalanceForClassification(MMBalanceConfig(modalities={"a": 6, "b": 4, "c": 5}, num_labels=3))


def tiny_inputs(rows=9):
    generator = torch.Generator().manual_seed(3)
    return {name: torch.randn(rows, size, generator=generator) for name, size in {"a": 6, "b": 4, "c": 5}.items()}


@pytest.mark.parametrize("training", [True, False])
def test_fused_value_fn_on_real_model(tiny_model, training):
    model = tiny_model
    inputs = tiny_inputs()
    with torch.no_grad():
        outputs = model(**inputs)
    features = {name: z.detach() for name, z in outputs.features.items()}
    names = list(features)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(training)
    modes = [m.training for m in model.modules()]

    labels = pseudo_labels(model.fusion, features)
    torch.testing.assert_close(labels, outputs.logits.argmax(dim=-1))
    value_fn = fused_value_fn(model.fusion, features, labels)
    rows = torch.arange(labels.shape[0])

    full = value_fn((True, True, True))
    torch.testing.assert_close(full, torch.softmax(outputs.logits, dim=-1)[rows, labels])
    assert (full >= torch.softmax(outputs.logits, dim=-1).max(dim=-1).values - 1e-6).all()  # V(all) = p_max

    for mask in itertools.product((False, True), repeat=3):
        masked = {n: features[n] if keep else torch.zeros_like(features[n]) for n, keep in zip(names, mask)}
        with torch.no_grad():
            logits = model.fusion.classifier(torch.cat([masked[n] for n in names], dim=-1))
        torch.testing.assert_close(value_fn(mask), torch.softmax(logits, dim=-1)[rows, labels])

    # The default pseudo-labels are the full-modality argmax; values flow into an efficient Shapley split.
    table = subset_values(fused_value_fn(model.fusion, features), 3)
    phi = shapley_values(table, 3)
    torch.testing.assert_close(phi.sum(dim=1), full - table[frozenset()])
    contributions = modality_contributions(phi)
    torch.testing.assert_close(contributions.sum(dim=1), torch.ones(labels.shape[0]))

    # Chunked evaluation gives the same values.
    torch.testing.assert_close(fused_value_fn(model.fusion, features, labels, batch_size=4)((True, False, True)),
                               value_fn((True, False, True)))

    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_fused_value_fn_checks_mask_length(tiny_model):
    features = {name: torch.randn(4, 32) for name in "abc"}
    value_fn = fused_value_fn(tiny_model.fusion, features)
    with pytest.raises(ValueError, match="mask"):
        value_fn((True, False))


def make_factors_inputs(rows=6, classes=4, sizes=(3, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.softmax(torch.randn(rows, classes, generator=generator), dim=-1)
    features = [torch.randn(rows, size, generator=generator) for size in sizes]
    weights = torch.rand(rows, len(sizes), generator=generator)
    return probabilities, features, weights


@pytest.mark.parametrize("weighted", [False, True])
def test_embedding_factors_match_explicit_gradient(weighted):
    probabilities, features, weights = make_factors_inputs()
    a, u = gradient_embedding_factors(probabilities, features, weights if weighted else None)
    rows, classes = probabilities.shape
    # Explicit: row k of the gradient is (p_k - 1[y_hat = k]) * [w_1 z_1 ; w_2 z_2] (Eq. 12, 14).
    expected = torch.zeros(rows, classes, sum(z.shape[1] for z in features))
    for i in range(rows):
        y_hat = int(probabilities[i].argmax())
        parts = [(weights[i, m] if weighted else 1.0) * z[i] for m, z in enumerate(features)]
        concatenated = torch.cat(parts)
        for k in range(classes):
            expected[i, k] = (probabilities[i, k] - (1.0 if k == y_hat else 0.0)) * concatenated
    embeddings = materialize_embeddings(a, u)
    torch.testing.assert_close(embeddings, expected.reshape(rows, -1))
    torch.testing.assert_close(embeddings, torch.einsum("nk,nd->nkd", a, u).reshape(rows, -1))
    torch.testing.assert_close(embedding_sq_norms(a, u), (embeddings**2).sum(dim=1))


def test_embedding_factors_unweighted_equals_unit_weights():
    probabilities, features, _ = make_factors_inputs(seed=4)
    a0, u0 = gradient_embedding_factors(probabilities, features, None)
    a1, u1 = gradient_embedding_factors(probabilities, features, torch.ones(6, 2))
    torch.testing.assert_close(a0, a1)
    torch.testing.assert_close(u0, u1)
    assert math.isclose(float(a0.sum(dim=1).abs().max()), 0.0, abs_tol=1e-6)  # p - onehot sums to 0


def test_embedding_factors_reject_bad_weights():
    probabilities, features, _ = make_factors_inputs()
    with pytest.raises(ValueError, match="weights"):
        gradient_embedding_factors(probabilities, features, torch.ones(6, 3))
