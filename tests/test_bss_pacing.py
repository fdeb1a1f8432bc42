"""BSS pacing functions and sample orders: the pure math against hand computations (METHODS.md §1)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from hf_mmbalance.methods.bss.ordering import (
    accumulate_scores,
    curriculum_order,
    epoch_generator,
    heuristic_epoch_indices,
    learned_weights,
    weighted_permutation,
)
from hf_mmbalance.methods.bss.pacing import (
    PACING_FUNCTIONS,
    baby_step,
    geometric,
    linear,
    pacing_fraction,
    root,
    root_p,
    subset_size,
)

# ---------------------------------------------------------------- pacing


def test_registry_names_match_the_appendix():
    assert set(PACING_FUNCTIONS) == {"baby_step", "linear", "root", "root-3", "root-5", "geometric"}


# (name, epoch, lambda0, t_grow, hand value)
HAND_VALUES = [
    ("linear", 0, 0.1, 40, 0.1),
    ("linear", 10, 0.1, 40, 0.1 + 0.9 * 10 / 40),  # 0.325
    ("linear", 30, 0.2, 60, 0.2 + 0.8 * 0.5),  # 0.6
    ("linear", 40, 0.1, 40, 1.0),
    ("linear", 55, 0.1, 40, 1.0),
    ("root", 0, 0.1, 40, 0.1),
    ("root", 10, 0.1, 40, math.sqrt(0.01 + 0.99 * 0.25)),
    ("root", 20, 0.3, 40, math.sqrt(0.09 + 0.91 * 0.5)),
    ("root", 40, 0.1, 40, 1.0),
    ("root-3", 10, 0.1, 40, (0.001 + 0.999 * 0.25) ** (1 / 3)),
    ("root-3", 0, 0.1, 40, 0.1),
    ("root-5", 10, 0.1, 40, (0.00001 + 0.99999 * 0.25) ** (1 / 5)),
    ("root-5", 40, 0.1, 40, 1.0),
    ("geometric", 0, 0.1, 40, 0.1),
    ("geometric", 10, 0.1, 40, 0.1**0.75),
    ("geometric", 20, 0.1, 40, 0.1**0.5),
    ("geometric", 40, 0.1, 40, 1.0),
    ("geometric", 60, 0.1, 40, 1.0),  # 0.1 ** -0.5 > 1, capped
    # baby step, 5 bins, T = 40: one more bin every 8 epochs
    ("baby_step", 0, 0.1, 40, 0.2),
    ("baby_step", 7, 0.1, 40, 0.2),
    ("baby_step", 8, 0.1, 40, 0.4),
    ("baby_step", 15, 0.1, 40, 0.4),
    ("baby_step", 16, 0.1, 40, 0.6),
    ("baby_step", 31, 0.1, 40, 0.8),
    ("baby_step", 32, 0.1, 40, 1.0),
    ("baby_step", 40, 0.1, 40, 1.0),
    ("baby_step", 80, 0.1, 40, 1.0),
]


@pytest.mark.parametrize(("name", "epoch", "lambda0", "t_grow", "expected"), HAND_VALUES)
def test_pacing_values_equal_the_hand_formulas(name, epoch, lambda0, t_grow, expected):
    assert pacing_fraction(name, epoch, lambda0=lambda0, t_grow=t_grow) == pytest.approx(expected, rel=1e-12)


def test_direct_functions_agree_with_the_registry():
    for epoch in (0, 3, 17, 40):
        assert linear(epoch) == pacing_fraction("linear", epoch)
        assert root(epoch) == pacing_fraction("root", epoch) == root_p(epoch, p=2)
        assert root_p(epoch, p=3) == pacing_fraction("root-3", epoch)
        assert root_p(epoch, p=5) == pacing_fraction("root-5", epoch)
        assert geometric(epoch) == pacing_fraction("geometric", epoch)
        assert baby_step(epoch) == pacing_fraction("baby_step", epoch)


@pytest.mark.parametrize("name", sorted(PACING_FUNCTIONS))
@pytest.mark.parametrize(("lambda0", "t_grow"), [(0.1, 40), (0.3, 30), (0.05, 7), (1.0, 10)])
def test_pacing_starts_at_lambda0_reaches_one_at_t_grow_and_never_decreases(name, lambda0, t_grow):
    values = [pacing_fraction(name, e, lambda0=lambda0, t_grow=t_grow) for e in range(0, 2 * t_grow + 1)]
    start = 1 / 5 if name == "baby_step" else lambda0  # baby step ignores lambda0: one bin of five
    assert values[0] == pytest.approx(start, rel=1e-12)
    assert values[t_grow] == 1.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(0 < v <= 1 for v in values)
    assert all(v == 1.0 for v in values[t_grow:])
    if name != "baby_step" and lambda0 < 1:
        assert all(v < 1 for v in values[:t_grow])  # the continuous functions reach 1 exactly at T_grow


def test_root_functions_bring_samples_in_faster_and_geometric_slower():
    # appendix C.3: root functions introduce harder samples within fewer epochs, geometric spends longer on easy ones
    for epoch in range(1, 40):
        lin = linear(epoch)
        assert geometric(epoch) < lin < root(epoch) < root_p(epoch, p=3) < root_p(epoch, p=5)


def test_baby_step_bins_and_lambda0_is_unused():
    assert [baby_step(e, n_bins=4, t_grow=20) for e in (0, 4, 5, 9, 10, 14, 15, 20)] == [
        0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0
    ]
    assert baby_step(9, lambda0=0.1) == baby_step(9, lambda0=0.9)
    assert pacing_fraction("baby_step", 0, n_bins=10) == pytest.approx(0.1)
    # non-divisible stage length: T = 10, 3 bins -> new bin at e = 10/3 and 20/3, exact rational floor
    assert [baby_step(e, t_grow=10, n_bins=3) for e in (3, 4, 6, 7)] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0])
    assert baby_step(3.0, t_grow=9, n_bins=3) == pytest.approx(2 / 3)  # boundary 9/3 = 3 hit exactly


@pytest.mark.parametrize(
    ("num_samples", "fraction", "expected"),
    [(100, 0.1, 10), (100, 0.101, 11), (7, 0.5, 4), (10, 0.7, 7), (3, 0.0, 1), (5, 0.01, 1), (5, 1.0, 5), (1, 0.5, 1)],
)
def test_subset_size_is_ceil_clamped(num_samples, fraction, expected):
    assert subset_size(num_samples, fraction) == expected


def test_subset_size_follows_a_pacing_curve():
    sizes = [subset_size(1000, root(e)) for e in range(0, 41)]
    assert sizes[0] == 100 and sizes[40] == 1000
    assert sizes[10] == math.ceil(1000 * math.sqrt(0.01 + 0.99 * 0.25))
    assert sizes == sorted(sizes)


def test_pacing_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown pacing function 'cosine'.*'baby_step'.*'root-3'"):
        pacing_fraction("cosine", 1)
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lambda0"):
            pacing_fraction("linear", 1, lambda0=bad)
    for bad in (0, 0.5, -3):
        with pytest.raises(ValueError, match="t_grow must be >= 1"):
            pacing_fraction("root", 1, t_grow=bad)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        pacing_fraction("geometric", -1)
    with pytest.raises(ValueError, match="n_bins"):
        pacing_fraction("baby_step", 1, n_bins=0)
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['n_bins'\]"):
        pacing_fraction("linear", 1, n_bins=3)
    with pytest.raises(ValueError, match="p must be > 0"):
        root_p(1, p=0)
    with pytest.raises(ValueError, match="num_samples"):
        subset_size(0, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        subset_size(10, 1.2)


# ---------------------------------------------------------------- orders

SCORES = [0.5, 0.9, 0.1, 0.9, 0.5, -0.2]  # ties: (1, 3) at 0.9, (0, 4) at 0.5


def test_curriculum_order_is_most_balanced_first_with_index_tie_break():
    assert curriculum_order(SCORES).tolist() == [1, 3, 0, 4, 2, 5]
    assert curriculum_order(np.array(SCORES)).tolist() == [1, 3, 0, 4, 2, 5]
    assert curriculum_order(torch.tensor(SCORES)).dtype == torch.int64


def test_anti_curriculum_order_is_the_exact_reverse():
    assert curriculum_order(SCORES, anti=True).tolist() == [5, 2, 4, 0, 3, 1]
    assert curriculum_order([1, 1, 1], anti=True).tolist() == [2, 1, 0]
    assert curriculum_order([1, 1, 1]).tolist() == [0, 1, 2]


def test_heuristic_indices_are_the_shuffled_prefix_and_reproducible():
    order = curriculum_order(torch.linspace(1, 0, 50))  # order = 0..49
    order = order[torch.randperm(50, generator=torch.Generator().manual_seed(0))]  # any order
    picked = heuristic_epoch_indices(order, 0.325, epoch_generator(7, 3))
    assert len(picked) == math.ceil(50 * 0.325) == 17
    assert sorted(picked.tolist()) == sorted(order[:17].tolist())
    assert torch.equal(picked, heuristic_epoch_indices(order, 0.325, epoch_generator(7, 3)))
    assert not torch.equal(picked, heuristic_epoch_indices(order, 0.325, epoch_generator(8, 3)))
    assert not torch.equal(picked, heuristic_epoch_indices(order, 0.325, epoch_generator(7, 4)))
    assert not torch.equal(picked, order[:17])  # actually shuffled
    assert sorted(heuristic_epoch_indices(order, 1.0, epoch_generator(0, 0)).tolist()) == list(range(50))
    assert heuristic_epoch_indices(order, 0.0, epoch_generator(0, 0)).tolist() == [order[0].item()]


def test_learned_weights_by_hand():
    loss = [0.0, 1.0, 0.5, 0.2]
    sim = [1.0, 0.0, 0.5, 0.9]
    expected = [1 - (0.0 - 1.0) + 0.01, 1 - (1.0 - 0.0) + 0.01, 1.01, 1 - (0.2 - 0.9) + 0.01]
    assert learned_weights(loss, sim).tolist() == pytest.approx(expected, rel=1e-12)
    assert learned_weights(loss, sim).min().item() == pytest.approx(0.01)  # never zero


def test_learned_weights_errors():
    with pytest.raises(ValueError, match="norm_loss contains NaN"):
        learned_weights([0.0, float("nan")], [0.0, 1.0])
    with pytest.raises(ValueError, match="norm_sim contains NaN"):
        learned_weights([0.0, 1.0], [float("nan"), 1.0])
    with pytest.raises(ValueError, match="same length"):
        learned_weights([0.0, 1.0], [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match=r"min-max normalised"):
        learned_weights([0.0, 3.0], [0.0, 1.0])


def test_weighted_permutation_is_a_permutation_and_reproducible():
    weights = learned_weights(torch.rand(30, generator=torch.Generator().manual_seed(1)), torch.rand(30))
    draw = weighted_permutation(weights, epoch_generator(0, 1))
    assert sorted(draw.tolist()) == list(range(30))
    assert torch.equal(draw, weighted_permutation(weights, epoch_generator(0, 1)))
    assert not torch.equal(draw, weighted_permutation(weights, epoch_generator(0, 2)))


def test_weighted_permutation_first_draw_is_proportional_to_weight():
    weights = torch.tensor([0.01, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1234)
    draws = 4000
    firsts = np.bincount([weighted_permutation(weights, generator)[0].item() for _ in range(draws)], minlength=5)
    expected = (weights / weights.sum()).numpy() * draws
    assert chisquare(firsts, expected).pvalue > 0.001
    # the heaviest sample comes first about 2 / 5.01 of the time, the lightest almost never
    assert firsts[4] > firsts[3] > firsts[2] > firsts[1] > firsts[0]


def test_weighted_permutation_errors():
    with pytest.raises(ValueError, match="> 0"):
        weighted_permutation([1.0, 0.0, 2.0], epoch_generator(0, 0))
    with pytest.raises(ValueError, match="NaN"):
        weighted_permutation([1.0, float("nan")], epoch_generator(0, 0))
    with pytest.raises(TypeError, match="torch.Generator"):
        weighted_permutation([1.0, 2.0], 0)


def test_accumulation_modes_by_hand():
    prev, cur = [1.0, 2.0, -1.0], [0.5, 0.0, 3.0]
    assert accumulate_scores(prev, cur).tolist() == [1.5, 2.0, 2.0]  # default: sum
    assert accumulate_scores(prev, cur, "none").tolist() == cur
    assert accumulate_scores(prev, cur, "ema").tolist() == pytest.approx([0.95, 1.8, -0.6])
    assert accumulate_scores(prev, cur, "ema", decay=0.5).tolist() == pytest.approx([0.75, 1.0, 1.0])
    for mode in ("none", "sum", "ema"):
        assert accumulate_scores(None, cur, mode).tolist() == cur
    with pytest.raises(ValueError, match=r"unknown; expected one of \['none', 'sum', 'ema'\]"):
        accumulate_scores(prev, cur, "max")
    with pytest.raises(ValueError, match="decay"):
        accumulate_scores(prev, cur, "ema", decay=1.0)
    with pytest.raises(ValueError, match="same length"):
        accumulate_scores([1.0], cur)


def test_epoch_generator_is_deterministic_per_seed_and_epoch():
    def sample(seed, epoch):
        return torch.randperm(100, generator=epoch_generator(seed, epoch)).tolist()

    assert sample(42, 3) == sample(42, 3)
    assert sample(42, 3) != sample(42, 4)
    assert sample(42, 3) != sample(43, 3)
    assert sample(1, 2) != sample(2, 1)
    torch.manual_seed(0)
    before = sample(5, 5)
    torch.manual_seed(99)  # the global RNG plays no part
    assert sample(5, 5) == before
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        epoch_generator(-1, 0)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        epoch_generator(0, 1.5)
