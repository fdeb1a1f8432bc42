"""One ULGM update checked against the pure rules (`methods/ulgm/updates.py`) plus momentum, for any model: shared by
the MLP tests (test_ulgm_callback.py) and the backbone tests (test_methods_on_backbones.py)."""

import torch

from hf_mmbalance.methods.ulgm import (
    extreme_centres,
    max_distance,
    momentum_update,
    selfmm_unimodal_labels,
    sugrm_unimodal_labels,
    ulgm_loss,
)

LABEL_RANGE = 3.0


class SecondEpoch:
    epoch = 1.0  # the second epoch (0-based floor 1 -> 1-based 2)


def check_one_update(callback, model, batch, inputs, variant) -> int:
    """Run `training_loss` on `batch` at epoch 2 and assert: the loss is ULGM's (+ the 0.03 alignment term for sugrm),
    every modality's bank rows of the batch are momentum_update(before, rule(...), 2), the other rows are untouched,
    labels stay in [-H, H], the feature banks hold the batch's features. Returns how many labels moved."""
    outputs = model(**{key: batch[key] for key in inputs})
    rows = callback.rows_of(batch["sample_idx"])
    before = {name: callback.labels[name].clone() for name in callback.names}
    fused_bank, y_bank = callback.features["fused"].clone(), callback.labels["fused"].clone()
    uni_banks = {name: callback.features[name].clone() for name in callback.names}

    loss = callback.training_loss(None, SecondEpoch(), model=model, inputs=batch, outputs=outputs)
    expected_loss = ulgm_loss(outputs.logits.reshape(-1), y_bank[rows],
                              {n: outputs.unimodal_logits[n].reshape(-1) for n in callback.names},
                              {n: before[n][rows] for n in callback.names})
    if variant == "sugrm":  # + 0.03 * sum_s mean_i ||F*_s - sg(F*_m)||^2, the default common-space alignment
        target = outputs.projected_fused_features.detach()
        for name in callback.names:
            squared = ((outputs.projected_features[name].detach() - target) ** 2).sum(1)
            expected_loss = expected_loss + 0.03 * squared.mean()
    torch.testing.assert_close(loss, expected_loss)

    F_m = outputs.projected_fused_features.detach()
    positive, negative = fused_bank[y_bank > 0].mean(0), fused_bank[y_bank < 0].mean(0)
    changed = 0
    for name in callback.names:
        F_s = outputs.projected_features[name].detach()
        if variant == "sugrm":
            d_max = max_distance(*extreme_centres(fused_bank, y_bank, LABEL_RANGE, 0.05))
            generated = sugrm_unimodal_labels(y_bank[rows], F_m, F_s, positive, negative, d_max, LABEL_RANGE)
        else:
            y_s = before[name]
            generated = selfmm_unimodal_labels(y_bank[rows], F_m, F_s, positive, negative,
                                               uni_banks[name][y_s > 0].mean(0), uni_banks[name][y_s < 0].mean(0),
                                               LABEL_RANGE)
        expected = momentum_update(before[name][rows], generated, 2)
        torch.testing.assert_close(expected, before[name][rows] / 3 + 2 * generated / 3)  # e = 2: 1/3 old + 2/3 new
        torch.testing.assert_close(callback.labels[name][rows], expected)
        untouched = torch.ones(len(before[name]), dtype=torch.bool)
        untouched[rows] = False
        assert torch.equal(callback.labels[name][untouched], before[name][untouched])
        assert callback.labels[name].abs().max() <= LABEL_RANGE
        changed += int((callback.labels[name][rows] != before[name][rows]).sum())
        torch.testing.assert_close(callback.features[name][rows], F_s)
    torch.testing.assert_close(callback.features["fused"][rows], F_m)
    return changed
