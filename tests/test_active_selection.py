"""Acquisition functions of the active-learning loop (hf_mmbalance.methods.active.selection)."""

from __future__ import annotations

import pytest
import torch

from hf_mmbalance.methods.active.selection import (
    coreset_greedy,
    entropy_scores,
    factorized_sq_distances,
    kmeans_plus_plus,
    materialized_kmeans_plus_plus,
    random_indices,
    top_k_indices,
)


def _factors(n=300, k=5, d=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=dtype)
    p = logits.softmax(1)
    a = p - torch.nn.functional.one_hot(p.argmax(1), k).to(dtype)
    u = torch.randn(n, d, generator=g, dtype=dtype)
    return a, u


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_factorized_distances_equal_materialized():
    a, u = _factors(n=200, k=7, d=11)
    g = (a[:, :, None] * u[:, None, :]).reshape(200, -1)
    for c in (0, 17, 199):
        expected = ((g - g[c]) ** 2).sum(1)
        for chunk in (None, 33):
            got = factorized_sq_distances(a, u, a[c], u[c], chunk_size=chunk)
            assert got.dtype == torch.float64 and got.shape == (200,)
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        assert factorized_sq_distances(a, u, a[c], u[c])[c] >= 0  # clamped at 0
    got32 = factorized_sq_distances(a.float(), u.float(), a[3].float(), u[3].float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ((g - g[3]) ** 2).sum(1), rtol=1e-4, atol=1e-4)
    got64 = factorized_sq_distances(a.float(), u.float(), a[3].float(), u[3].float(), float64=True)
    assert got64.dtype == torch.float64


def test_first_pick_is_largest_norm_and_ties_lowest_index():
    a, u = _factors()
    norms = a.norm(dim=1) * u.norm(dim=1)
    assert kmeans_plus_plus(a, u, 5, _gen(1))[0] == int(norms.argmax())
    a2 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    u2 = torch.ones(4, 3, dtype=torch.float64)
    assert kmeans_plus_plus(a2, u2, 1, _gen(0)) == [1]  # rows 1 and 2 tie
    assert kmeans_plus_plus(a2, u2, 1, _gen(0), exclude=[1]) == [2]


def test_no_repeats_full_pool_and_duplicates_fallback():
    a, u = _factors(n=60)
    picks = kmeans_plus_plus(a, u, 40, _gen(3))
    assert len(set(picks)) == 40
    assert sorted(kmeans_plus_plus(a, u, 60, _gen(4))) == list(range(60))
    # all points identical: D² is 0 everywhere after the first pick -> uniform over the unchosen ones
    ones_a, ones_u = torch.ones(10, 3), torch.ones(10, 4)
    assert sorted(kmeans_plus_plus(ones_a, ones_u, 10, _gen(5))) == list(range(10))
    # excluded rows are never picked
    picks = kmeans_plus_plus(a, u, 50, _gen(6), exclude=range(10))
    assert len(set(picks)) == 50 and min(picks) >= 10


def test_same_seed_same_indices_and_factorized_equals_materialized():
    a, u = _factors(n=300, k=5, d=16)
    first = kmeans_plus_plus(a, u, 40, _gen(7))
    assert first == kmeans_plus_plus(a, u, 40, _gen(7))
    assert first == kmeans_plus_plus(a, u, 40, _gen(7), chunk_size=64)
    assert first == materialized_kmeans_plus_plus(a, u, 40, _gen(7))
    assert first != kmeans_plus_plus(a, u, 40, _gen(8))
    a32, u32 = a.float(), u.float()
    assert kmeans_plus_plus(a32, u32, 40, _gen(9)) == materialized_kmeans_plus_plus(a32, u32, 40, _gen(9))


def test_second_pick_follows_d_squared():
    # u = 1 (D=1): g_i = a_i. First centre = row 0 (largest norm); D² to it: 1, 4, 9, 16 for rows 1..4.
    a = torch.tensor([[5.0, 5.0], [5.0, 4.0], [5.0, 3.0], [5.0, 2.0], [5.0, 1.0]], dtype=torch.float64)
    u = torch.ones(5, 1, dtype=torch.float64)
    trials = 3000
    counts = torch.zeros(5)
    for seed in range(trials):
        picks = kmeans_plus_plus(a, u, 2, _gen(seed))
        assert picks[0] == 0
        counts[picks[1]] += 1
    assert counts[0] == 0
    expected = torch.tensor([1.0, 4.0, 9.0, 16.0]) / 30.0 * trials
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, (counts, chi2)  # 3 degrees of freedom, p = 0.001


@pytest.mark.parametrize("budget, match", [(0, "got 0"), (301, "300 available.*got 301"), (-2, "got -2")])
def test_budget_errors_name_the_numbers(budget, match):
    a, u = _factors()
    with pytest.raises(ValueError, match=match):
        kmeans_plus_plus(a, u, budget, _gen(0))


def test_pool_errors():
    with pytest.raises(ValueError, match="empty pool"):
        kmeans_plus_plus(torch.zeros(0, 3), torch.zeros(0, 4), 1, _gen(0))
    a, u = _factors(n=20)
    with pytest.raises(ValueError, match="15 available.*got 16"):
        kmeans_plus_plus(a, u, 16, _gen(0), exclude=range(5))
    with pytest.raises(ValueError, match="same N"):
        kmeans_plus_plus(a, u[:10], 2, _gen(0))
    with pytest.raises(ValueError, match="pool size 5, got 6"):
        random_indices(5, 6, _gen(0))
    with pytest.raises(ValueError, match="empty pool"):
        top_k_indices(torch.zeros(0), 1)


def test_entropy_top_k_random():
    p = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
    h = entropy_scores(p)
    torch.testing.assert_close(h, torch.tensor([0.0, torch.log(torch.tensor(3.0)), 0.6931472, 0.6931472]))
    assert top_k_indices(h, 3) == [1, 2, 3]
    assert top_k_indices(torch.tensor([1.0, 2.0, 2.0, 0.5, 2.0]), 4) == [1, 2, 4, 0]
    r = random_indices(50, 20, _gen(1))
    assert len(set(r)) == 20 and all(0 <= i < 50 for i in r)
    assert r == random_indices(50, 20, _gen(1))
    assert sorted(random_indices(7, 7, _gen(2))) == list(range(7))


def test_coreset_greedy():
    x = torch.tensor([[0.0], [1.0], [10.0], [4.0], [6.0]])
    labeled = torch.tensor([True, False, False, False, False])
    # 10 is farthest from 0; then 4 and 6 tie (min distance 4 each) -> lowest index; then 6 (2 from 4) beats 1 (1)
    assert coreset_greedy(x, labeled, 3) == [2, 3, 4]
    assert coreset_greedy(x, torch.zeros(5, dtype=torch.bool), 2) == [2, 0]
    assert coreset_greedy(x, labeled, 3, chunk_size=1) == [2, 3, 4]
    with pytest.raises(ValueError, match="4 unlabeled.*got 5"):
        coreset_greedy(x, labeled, 5)
