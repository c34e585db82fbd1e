"""The batch plan: which frames, with which augmentation seeds, each process sees at every step.

This replaces torch's DistributedSampler, which cannot start in the middle of an epoch. For
epoch e the whole corpus is permuted with a generator seeded by (seed, e); optimizer step s of
the epoch takes the s-th slice of `global_batch` indices (the incomplete tail is dropped); rank r
takes its contiguous share of that slice, split further into `accum_steps` micro-batches. Each
sample's augmentation seed depends only on (seed, epoch, position in the epoch). A resumed run
asks for the plan from its saved global step and gets exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BatchPlan:
    """Deterministic, resumable, rank-partitioned batches of (frame index, augmentation seed)."""

    num_frames: int
    global_batch: int
    world_size: int
    rank: int
    accum_steps: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.num_frames // self.global_batch

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.world_size * self.accum_steps)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_frames, generator=g).numpy()

    def step_micro_batches(self, step: int, order: np.ndarray | None = None) -> list[list[tuple[int, int]]]:
        """This rank's micro-batches for global optimizer step `step` (0-based over the whole run)."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order = self._epoch_order(epoch) if order is None else order
        per_rank = self.global_batch // self.world_size
        start = in_epoch * self.global_batch + self.rank * per_rank
        positions = range(start, start + per_rank)
        items = [(int(order[p]), self.sample_seed(epoch, p)) for p in positions]
        mb = self.micro_batch
        return [items[i : i + mb] for i in range(0, per_rank, mb)]

    def sample_seed(self, epoch: int, position: int) -> int:
        """Augmentation seed of the sample at `position` of epoch `epoch` (independent of rank/workers)."""
        return int(np.random.SeedSequence([self.seed, epoch, position]).generate_state(1)[0])

    def micro_batches_from(self, start_step: int, end_step: int) -> Iterator[list[tuple[int, int]]]:
        """All micro-batches of steps [start_step, end_step), in order, caching each epoch's permutation."""
        cached_epoch, order = -1, None
        for step in range(start_step, end_step):
            epoch = step // self.steps_per_epoch
            if epoch != cached_epoch:
                cached_epoch, order = epoch, self._epoch_order(epoch)
            yield from self.step_micro_batches(step, order)


def resolve_accum_steps(global_batch: int, world_size: int, requested: int, max_micro_batch: int) -> int:
    """Accumulation steps so each process's micro-batch fits; 0 = smallest count with micro-batch <= max."""
    per_rank, rem = divmod(global_batch, world_size)
    if rem:
        raise ValueError(f"--batch-size {global_batch} is not divisible by the {world_size} processes")
    if requested:
        if per_rank % requested:
            raise ValueError(
                f"--batch-size {global_batch} over {world_size} process(es) = {per_rank} per process, "
                f"not divisible by --accum-steps {requested}"
            )
        return requested
    for steps in range(1, per_rank + 1):
        if per_rank % steps == 0 and per_rank // steps <= max_micro_batch:
            return steps
    return per_rank
