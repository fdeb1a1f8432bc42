"""`clip_and_scale_gradients` (the trainer's clipping with per-parameter factors folded into its multiply) against a
straightforward float64 computation: c = min(1, max_norm / (||g|| + 1e-6)) over all gradients, then g * c * f. The
norm is the caller's (the trainer takes accelerate's; `test_modulation` checks the logged norms)."""

import math

import pytest
import torch

from hf_mmbalance.trainer.clipping import clip_and_scale_gradients


def parameters_with_gradients(seed=0, shapes=((4, 3), (3,), (2, 5), (7,))):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        param = torch.nn.Parameter(torch.zeros(shape))
        param.grad = torch.randn(shape, generator=generator)
        params.append(param)
    return params


def hand_norm(gradients):
    return math.sqrt(sum(float(v) ** 2 for g in gradients for v in g.double().flatten()))


def torch_norm(params):
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["binding", "not-binding"])
def test_every_gradient_gets_the_clip_coefficient_times_its_groups_factor(max_norm):
    params = parameters_with_gradients()
    before = [p.grad.clone() for p in params]
    factors = (torch.tensor(0.25), torch.tensor(0.8))
    groups = [([params[0], params[1]], factors[0]), ([params[2]], factors[1])]  # params[3] is in no group
    norm = clip_and_scale_gradients(params, max_norm, torch_norm(params), groups)
    expected_norm = hand_norm(before)
    assert float(norm) == pytest.approx(expected_norm, rel=1e-6)  # the norm before clipping and factors
    clip = min(1.0, max_norm / (expected_norm + 1e-6))
    for param, gradient, factor in zip(params, before, (0.25, 0.25, 0.8, 1.0)):
        torch.testing.assert_close(param.grad, gradient * (clip * factor), rtol=1e-6, atol=0)


def test_it_equals_torch_clipping_followed_by_the_factors():
    params, reference = parameters_with_gradients(seed=1), parameters_with_gradients(seed=1)
    torch.nn.utils.clip_grad_norm_(reference, 0.3)
    reference[1].grad.mul_(0.6)
    clip_and_scale_gradients(params, 0.3, torch_norm(params), [([params[1]], torch.tensor(0.6))])
    for param, expected in zip(params, reference):
        torch.testing.assert_close(param.grad, expected.grad, rtol=1e-6, atol=0)


def test_parameters_without_gradients_are_skipped_and_the_norm_is_a_device_tensor():
    params = parameters_with_gradients()
    params[2].grad = None
    before = [p.grad.clone() for p in params if p.grad is not None]
    norm = clip_and_scale_gradients(params, 1e6, torch_norm(params), [([params[2]], torch.tensor(0.5))])
    assert isinstance(norm, torch.Tensor) and params[2].grad is None
    assert float(norm) == pytest.approx(hand_norm(before), rel=1e-6)


def test_a_parameter_in_two_groups_and_a_non_positive_max_norm_are_refused():
    params = parameters_with_gradients()
    with pytest.raises(ValueError, match="two scaled gradient groups"):
        clip_and_scale_gradients(params, 1.0, torch_norm(params),
                                 [([params[0]], torch.tensor(0.5)), ([params[0]], torch.tensor(0.7))])
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_and_scale_gradients(params, 0.0, torch_norm(params))
