"""CrossModalityIdentitySampler: batch composition, determinism, epoch length, DDP sharding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from df2am.data.sampler import CrossModalityIdentitySampler
from df2am.errors import ConfigError


def _labels(num_ids: int, rgb_per: list[int], ir_per: list[int], seed: int = 0):
    """Shuffled label lists with rgb_per[i] RGB and ir_per[i] IR images of id i."""
    rng = np.random.default_rng(seed)
    rgb = np.repeat(np.arange(num_ids), rgb_per)
    ir = np.repeat(np.arange(num_ids), ir_per)
    return rng.permutation(rgb), rng.permutation(ir)


def _batches(sampler):
    return [(r.copy(), i.copy()) for r, i in sampler]


def test_batch_composition_and_labels():
    # ids 0..9; id 3 has only 2 IR images (< M*=4: drawn with replacement); id 9 has no IR.
    rgb_per = [7, 5, 9, 6, 4, 8, 5, 6, 7, 3]
    ir_per = [5, 6, 4, 2, 8, 5, 7, 4, 6, 0]
    rgb, ir = _labels(10, rgb_per, ir_per)
    s = CrossModalityIdentitySampler(rgb, ir, num_ids=3, num_per_modality=4, seed=5)
    batches = _batches(s)
    assert len(batches) == len(s) > 0
    for r_idx, i_idx in batches:
        assert r_idx.shape == i_idx.shape == (12,)
        r_lab, i_lab = rgb[r_idx], ir[i_idx]
        # id-major: rows 4k..4k+3 belong to the k-th id in both lists.
        np.testing.assert_array_equal(r_lab, i_lab)
        ids = r_lab.reshape(3, 4)
        assert (ids == ids[:, :1]).all()
        assert len(set(ids[:, 0].tolist())) == 3
        assert 9 not in ids  # no IR images -> never sampled
        for k in range(3):
            pid = ids[k, 0]
            rows_r = r_idx[4 * k : 4 * k + 4]
            rows_i = i_idx[4 * k : 4 * k + 4]
            # Without replacement when the id has >= M* images of that modality.
            assert len(set(rows_r.tolist())) == 4
            if ir_per[pid] >= 4:
                assert len(set(rows_i.tolist())) == 4


def test_epoch_length_and_eligible_images():
    rgb_per = [7, 5, 9, 6, 4, 8, 5, 6, 7, 3]
    ir_per = [5, 6, 4, 2, 8, 5, 7, 4, 6, 0]
    rgb, ir = _labels(10, rgb_per, ir_per)
    # Eligible ids 0..8: 57 RGB images, 47 IR images -> ceil(57 / (3*4*world)).
    assert len(CrossModalityIdentitySampler(rgb, ir, 3, 4)) == math.ceil(57 / 12) == 5
    assert len(CrossModalityIdentitySampler(rgb, ir, 3, 4, rank=1, world_size=2)) == 3
    assert len(CrossModalityIdentitySampler(rgb, ir, 2, 2)) == math.ceil(57 / 4)


def test_determinism_and_epochs():
    rgb, ir = _labels(12, [6] * 12, [5] * 12)
    a = CrossModalityIdentitySampler(rgb, ir, 4, 3, seed=1)
    b = CrossModalityIdentitySampler(rgb, ir, 4, 3, seed=1)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for (ra, ia), (rb, ib) in zip(_batches(a), _batches(b), strict=True):
            np.testing.assert_array_equal(ra, rb)
            np.testing.assert_array_equal(ia, ib)
    a.set_epoch(0)
    first = np.concatenate([r for r, _ in _batches(a)])
    assert np.array_equal(first, np.concatenate([r for r, _ in _batches(a)]))  # re-iterable
    a.set_epoch(1)
    assert not np.array_equal(first, np.concatenate([r for r, _ in _batches(a)]))
    c = CrossModalityIdentitySampler(rgb, ir, 4, 3, seed=2)
    assert not np.array_equal(first, np.concatenate([r for r, _ in _batches(c)]))


def test_state_dict_resumes_exactly():
    rgb, ir = _labels(12, [6] * 12, [5] * 12)
    a = CrossModalityIdentitySampler(rgb, ir, 4, 3, seed=7)
    a.set_epoch(4)
    b = CrossModalityIdentitySampler(rgb, ir, 4, 3, seed=0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == {"seed": 7, "epoch": 4}
    for (ra, ia), (rb, ib) in zip(_batches(a), _batches(b), strict=True):
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ia, ib)


def test_no_global_rng_use():
    rgb, ir = _labels(12, [6] * 12, [5] * 12)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    _batches(CrossModalityIdentitySampler(rgb, ir, 4, 3, seed=7))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_sharding(world_size):
    # 20 ids (not a multiple of N*·world), many images each so an epoch spans several passes.
    num_ids, n_star = 20, 3
    rgb, ir = _labels(num_ids, [30] * num_ids, [20] * num_ids, seed=world_size)
    samplers = [
        CrossModalityIdentitySampler(rgb, ir, n_star, 2, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [_batches(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1
    steps_per_pass = math.ceil(num_ids / (n_star * world_size))
    assert len(per_rank[0]) >= 2 * steps_per_pass
    step_ids = []
    for step in zip(*per_rank, strict=True):
        sets = []
        for r_idx, i_idx in step:
            np.testing.assert_array_equal(rgb[r_idx], ir[i_idx])  # both modalities on one rank
            sets.append(set(rgb[r_idx].tolist()))
            assert len(sets[-1]) == n_star
        union = set().union(*sets)
        assert len(union) == n_star * world_size  # disjoint across ranks
        step_ids.append(union)
    # A pass through the permutation: its first ceil(E / (N*·W)) steps cover every id.
    assert set().union(*step_ids[:steps_per_pass]) == set(range(num_ids))
    # All ranks agree on the shared schedule, and each rank uses its own row of it.
    sched = samplers[0].id_schedule()
    for r, s in enumerate(samplers):
        np.testing.assert_array_equal(s.id_schedule(), sched)
        got = np.stack([rgb[b[0]].reshape(n_star, 2)[:, 0] for b in per_rank[r]])
        np.testing.assert_array_equal(got, sched[:, r])


def test_every_pass_covers_all_ids():
    # 7 eligible ids, 4 per step: passes overlap step boundaries, still each pass is complete.
    rgb, ir = _labels(7, [40] * 7, [40] * 7)
    s = CrossModalityIdentitySampler(rgb, ir, 2, 1, seed=0, world_size=2)
    flat = s.id_schedule(num_steps=70).reshape(-1)
    for step in s.id_schedule(num_steps=70):
        assert len(set(step.reshape(-1).tolist())) == 4
    # Count of each id in the first k*7 slots (k full passes) is exactly k.
    for k in (1, 2, 5):
        counts = np.bincount(flat[: 7 * k], minlength=7)
        assert (counts == k).all(), counts


def test_too_few_ids_is_a_clear_error():
    rgb, ir = _labels(5, [4] * 5, [4] * 5)
    with pytest.raises(ConfigError, match="needs at least 6 identities"):
        CrossModalityIdentitySampler(rgb, ir, 3, 2, world_size=2)
    # Ids with one modality only do not count.
    rgb2, ir2 = _labels(5, [4] * 5, [4, 4, 0, 0, 0])
    with pytest.raises(ConfigError, match="found 2"):
        CrossModalityIdentitySampler(rgb2, ir2, 3, 2)
