"""`CurriculumSampler`: the whole BSS curriculum as ONE pass of the training set for the `Trainer`.

Why one pass: BSS epochs have different lengths (the heuristic scheduler trains epoch e on ceil(N * lambda(e))
samples), and the `Trainer` of transformers 5 computes the steps per epoch once, from the loader's length, for
the LR schedule, `max_steps`, logging and the resume position. So the sampler yields curriculum epochs
1..E back to back as a single `Trainer` epoch of sum_e |epoch e| samples, and `MultimodalTrainer` runs exactly
one pass (`spans_all_epochs`): every count the `Trainer` derives from that length is then exact, and a mid-pass
resume skips the right number of batches. The curriculum epoch of a step follows from the cumulative sizes.

Each epoch's order is built lazily, when the loader first asks for it (a learned scheduler rescores the
training set with the model as trained so far), and kept in `orders`: the callback saves them with every
checkpoint, so a resumed run replays exactly the orders of the uninterrupted one. The order of an epoch is
the same on every rank (the callback builds it identically or broadcasts it); accelerate shards the batches.
A batch may hold the last samples of one curriculum epoch and the first of the next.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from torch.utils.data import Sampler


class CurriculumSampler(Sampler[int]):
    """Yields curriculum epochs 1..E back to back; `build_order(e)` returns epoch e's dataset indices."""

    spans_all_epochs = True  # read by MultimodalTrainer: run one Trainer epoch of len(self) samples

    def __init__(self, num_samples: int, epoch_sizes: Sequence[int], build_order: Callable[[int], Sequence[int]]):
        if num_samples < 1:
            raise ValueError("the training set is empty: BSS needs at least one sample to order")
        if not epoch_sizes or any(size < 1 or size > num_samples for size in epoch_sizes):
            raise ValueError(f"epoch sizes must lie in [1, {num_samples}], got {list(epoch_sizes)}")
        self.num_samples = num_samples
        self.epoch_sizes = [int(size) for size in epoch_sizes]
        self.build_order = build_order
        self.orders: dict[int, list[int]] = {}
        self._ends = [sum(self.epoch_sizes[: i + 1]) for i in range(len(self.epoch_sizes))]

    def __len__(self) -> int:
        return self._ends[-1]

    def __iter__(self) -> Iterator[int]:
        for epoch in range(1, len(self.epoch_sizes) + 1):
            yield from self.order_of(epoch)

    def order_of(self, epoch: int) -> list[int]:
        """Epoch `epoch`'s indices (1-based), built on first use and then kept."""
        order = self.orders.get(epoch)
        if order is None:
            order = [int(i) for i in self.build_order(epoch)]
            if len(order) != self.epoch_sizes[epoch - 1]:
                raise RuntimeError(f"epoch {epoch}: the order has {len(order)} samples, the plan {self.epoch_sizes[epoch - 1]}")
            self.orders[epoch] = order
        return order

    def set_epoch(self, epoch: int) -> None:
        # The Trainer only ever runs pass 0; the curriculum epochs live inside it.
        self.pass_index = epoch

    def epochs_completed(self, samples_consumed: int) -> int:
        """How many curriculum epochs lie wholly within the first `samples_consumed` samples of the pass."""
        return bisect.bisect_right(self._ends, samples_consumed)

    def epoch_at(self, position: int) -> int:
        """The curriculum epoch (1-based) of the `position`-th sample of the pass (0-based)."""
        return min(bisect.bisect_right(self._ends, position) + 1, len(self.epoch_sizes))


__all__ = ["CurriculumSampler"]
