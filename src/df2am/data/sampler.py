"""Identity-balanced cross-modality batch sampler (method.md, "Training recipe"; paper §4.1).

Every batch holds N* identities and, for each of them, M* RGB and M* IR images, so that the
triplet loss and the affinity loss L_A (Eq. 9–12) always see positives in both modalities::

    from df2am.data.sampler import CrossModalityIdentitySampler
    sampler = CrossModalityIdentitySampler(rgb_labels, ir_labels, num_ids=8,
                                           num_per_modality=4, seed=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for rgb_idx, ir_idx in sampler:      # two int64 arrays of length N*·M*
            ...                              # rows i·M*..(i+1)·M*-1 belong to id i in both

Rules (each one a documented choice):

* **Eligible ids.** Only identities that have at least one RGB *and* one IR image are sampled;
  fewer than N*·world_size of them is a :class:`~df2am.errors.ConfigError`.
* **Epoch length.** "As many batches as cover the larger modality once": with n_rgb and n_ir
  the numbers of images of eligible ids, each rank yields
  ``ceil(max(n_rgb, n_ir) / (N*·M*·world_size))`` batches, so all ranks together draw at least
  max(n_rgb, n_ir) images of each modality per epoch.
* **Identity schedule.** Ids are taken in order from a seeded permutation of the eligible ids,
  N*·world_size per step; rank r gets the r-th group of N* of them (whole identities: both
  modalities of an id land on the same rank, and ranks never share an id within a step). When a
  permutation has fewer ids left than a step needs, the step takes the leftover ids and fills up
  with ids of the next permutation that are not among the leftovers; those are counted as already
  used in the new pass. Hence every pass through a permutation covers every eligible id exactly
  once, over all ranks together.
* **Images of an id.** M* distinct images per modality (drawn uniformly without replacement
  within the id) when the id has at least M* images of that modality, otherwise M* draws with
  replacement. M* larger than the most images any id has in a modality is a
  :class:`~df2am.errors.ConfigError` naming both numbers (every batch would be repeats); M*
  above the count of more than half the ids is a warning.
* **Determinism.** Everything is a function of (seed, epoch, rank, world_size): the id schedule
  comes from a local ``numpy.random.Generator`` seeded with (seed, epoch), shared by all ranks;
  the image choice of rank r from one seeded with (seed, epoch, r). The global NumPy / torch /
  ``random`` state is never touched. :meth:`state_dict` / :meth:`load_state_dict` carry
  (seed, epoch), enough for a resumed run to continue exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from df2am.errors import ConfigError

__all__ = ["CrossModalityIdentitySampler"]

log = logging.getLogger(__name__)

# Stream tags that keep the id schedule and the per-rank image choice statistically independent.
_ID_STREAM = 0x1D5
_IMAGE_STREAM = 0x1A6


class _Groups:
    """Indices of one modality grouped by identity (CSR layout: order + offsets)."""

    def __init__(self, labels: np.ndarray, ids: np.ndarray) -> None:
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        # First and one-past-last position of each eligible id in the sorted order.
        self.start = np.searchsorted(sorted_labels, ids, side="left")
        self.count = np.searchsorted(sorted_labels, ids, side="right") - self.start
        self.order = order
        self.total = int(self.count.sum())

    def draw(self, slots: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        """M* image indices for each id slot (positions into the eligible ids), id-major."""
        counts = self.count[slots]
        width = int(counts.max())
        # Random keys, with the padding beyond each id's count set to +inf: the M* smallest keys
        # of a row are then M* distinct images of that id (sampling without replacement).
        keys = rng.random((len(slots), width))
        keys[np.arange(width)[None, :] >= counts[:, None]] = np.inf
        if width >= m:
            local = np.argpartition(keys, m - 1, axis=1)[:, :m]
        else:  # every id here has fewer than M* images; all rows are redrawn below
            local = np.zeros((len(slots), m), dtype=np.int64)
        # Ids with fewer than M* images: draw with replacement instead.
        few = counts < m
        if few.any():
            local[few] = np.floor(rng.random((int(few.sum()), m)) * counts[few, None]).astype(int)
        return self.order[self.start[slots, None] + local].reshape(-1)


class CrossModalityIdentitySampler:
    """Batches of N* ids × (M* RGB + M* IR) images; see the module docstring for the rules.

    Args:
        rgb_labels: training label of every RGB record (indices refer to this list).
        ir_labels: training label of every IR record.
        num_ids: N*, identities per batch (``SamplerConfig.num_ids``).
        num_per_modality: M*, images per identity and modality (``SamplerConfig.num_per_modality``).
        seed: base seed; with the epoch it fixes the whole epoch.
        rank, world_size: this process's place in distributed training.

    Iterating yields ``(rgb_indices, ir_indices)``, two int64 arrays of length N*·M* each,
    id-major: rows ``i*M* .. (i+1)*M*-1`` of both arrays belong to the i-th id of the batch.
    """

    def __init__(
        self,
        rgb_labels: Sequence[int] | np.ndarray,
        ir_labels: Sequence[int] | np.ndarray,
        num_ids: int,
        num_per_modality: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_ids < 1 or num_per_modality < 1:
            raise ConfigError(
                f"sampler.num_ids and sampler.num_per_modality must be >= 1, "
                f"got {num_ids} and {num_per_modality}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        rgb = np.asarray(rgb_labels, dtype=np.int64).reshape(-1)
        ir = np.asarray(ir_labels, dtype=np.int64).reshape(-1)
        self.num_ids = int(num_ids)
        self.num_per_modality = int(num_per_modality)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

        #: The eligible identities (labels present in both modalities), ascending.
        self.ids = np.intersect1d(rgb, ir)
        need = self.num_ids * self.world_size
        if len(self.ids) < need:
            raise ConfigError(
                f"sampler.num_ids={self.num_ids} x world_size={self.world_size} needs at least "
                f"{need} identities with both RGB and IR images, found {len(self.ids)} "
                f"(of {len(np.unique(rgb))} RGB ids and {len(np.unique(ir))} IR ids)"
            )
        self._rgb = _Groups(rgb, self.ids)
        self._ir = _Groups(ir, self.ids)
        for name, groups in (("RGB", self._rgb), ("IR", self._ir)):
            self._check_per_id(name, groups.count)
        self._len = math.ceil(
            max(self._rgb.total, self._ir.total)
            / (self.num_ids * self.num_per_modality * self.world_size)
        )

    def _check_per_id(self, modality: str, counts: np.ndarray) -> None:
        """M* above every id's image count is an error; above most ids' a warning."""
        m, most = self.num_per_modality, int(counts.max())
        if m > most:
            raise ConfigError(
                f"sampler.num_per_modality={m} is larger than any identity's {modality} "
                f"images (the most one id has: {most}; {int(counts.sum())} {modality} images "
                f"in all): every batch would repeat each image ~{m / most:.0f} times "
                f"({self.num_ids * m} {modality} images per batch); use a value <= {most}")
        short = int((counts < m).sum())
        if short * 2 > len(counts):
            log.warning("sampler.num_per_modality=%d exceeds the %s images of %d of %d "
                        "identities (median %d): their images repeat within a batch",
                        m, modality, short, len(counts), int(np.median(counts)))

    # ------------------------------------------------------------------ schedule

    def __len__(self) -> int:
        return self._len

    @property
    def batch_size(self) -> int:
        """Images per modality in one batch of this rank (N*·M*)."""
        return self.num_ids * self.num_per_modality

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; its order is a function of (seed, epoch) only."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])

    def id_schedule(self, num_steps: int | None = None) -> np.ndarray:
        """Label of every id of every rank at every step: ``(steps, world_size, N*)``.

        Shared by all ranks (it only depends on seed and epoch); rank r uses ``[:, r]``.
        """
        steps = len(self) if num_steps is None else int(num_steps)
        rng = np.random.default_rng([self.seed, self.epoch, _ID_STREAM])
        n_eligible = len(self.ids)
        need = self.num_ids * self.world_size
        out = np.empty((steps, need), dtype=np.int64)
        queue = rng.permutation(n_eligible)
        pos = 0
        step = 0
        while step < steps:
            full = (len(queue) - pos) // need
            take = min(full, steps - step)
            if take:
                # Whole steps inside the current permutation, in one slice.
                out[step : step + take] = queue[pos : pos + take * need].reshape(take, need)
                pos += take * need
                step += take
                continue
            # Pass boundary: leftovers + ids of the next permutation that are not leftovers.
            rest = queue[pos:]
            nxt = rng.permutation(n_eligible)
            fresh = nxt[~np.isin(nxt, rest)]
            fill = fresh[: need - len(rest)]
            out[step] = np.concatenate([rest, fill])
            step += 1
            queue = nxt[~np.isin(nxt, fill)]
            pos = 0
        return self.ids[out].reshape(steps, self.world_size, self.num_ids)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Positions (into self.ids) of this rank's ids, per step.
        labels = self.id_schedule()[:, self.rank]
        slots = np.searchsorted(self.ids, labels)
        rng = np.random.default_rng([self.seed, self.epoch, _IMAGE_STREAM, self.rank])
        m = self.num_per_modality
        for step_slots in slots:
            yield self._rgb.draw(step_slots, m, rng), self._ir.draw(step_slots, m, rng)
