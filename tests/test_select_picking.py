"""nanonet.active.picking on constructed embeddings: what a cold-start and a next-round
pick must and must not take, against expectations built by hand (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from nanonet.active.picking import NEAR_DUPLICATE, cold_start, margin_uncertainty, next_round, text_key


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(sizes: list[int], dim: int = 64, spread: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters of the given sizes (random directions in 64 dimensions are
    nearly orthogonal); returns the points and each point's cluster."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(len(sizes), dim)))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return unit(centres[truth] + spread * rng.normal(size=(len(truth), dim))), truth


def keys_for(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


SIZES = [400, 200, 100, 60, 30, 20, 12, 8, 6, 5, 4, 3]  # uneven, as intents are


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_cold_start_covers_every_cluster_at_a_budget_of_one_per_cluster(seed):
    x, truth = clustered(SIZES, seed=seed)
    pick = cold_start(x, keys_for(len(x)), len(SIZES), seed)
    assert sorted(set(truth[pick.rows].tolist())) == list(range(len(SIZES)))


def test_random_picks_typically_miss_clusters_there():
    # the baseline the cold start is meant to beat: uniform draws of 12 from the same pool
    x, truth = clustered(SIZES)
    covered = [len(set(truth[np.random.default_rng(s).permutation(len(x))[: len(SIZES)]].tolist())) for s in range(200)]
    assert np.mean(covered) < len(SIZES) - 3
    assert max(covered) < len(SIZES)


def test_cold_start_takes_the_text_nearest_each_centre():
    x, truth = clustered([50, 50, 50], seed=7)
    pick = cold_start(x, keys_for(len(x)), 3, seed=1)
    for row in pick.rows:
        members = np.flatnonzero(truth == truth[row])
        centre = unit(x[members].mean(0))
        assert row == members[np.argmax(x[members] @ centre)]


def test_same_seed_same_pick_exact_budget_no_repeats():
    x, _ = clustered(SIZES, spread=0.3)
    a = cold_start(x, keys_for(len(x)), 20, seed=4)
    b = cold_start(x, keys_for(len(x)), 20, seed=4)
    assert a.rows == b.rows and a.scores == b.scores
    assert len(a.rows) == 20 and len(set(a.rows)) == 20
    assert cold_start(x, keys_for(len(x)), 20, seed=5).rows != a.rows


def test_exact_duplicates_and_labeled_texts_are_never_picked():
    x, _ = clustered([30, 30, 30], spread=0.3, seed=2)
    keys = keys_for(len(x))
    keys[1::2] = keys[0::2]  # every text twice (same words, other spacing or case)
    labeled_rows = [0, 30, 60]
    pick = cold_start(x, keys, 20, seed=1, labeled=x[labeled_rows], labeled_keys=keys[labeled_rows])
    picked_keys = keys[pick.rows]
    assert len(set(picked_keys.tolist())) == 20
    assert not set(picked_keys.tolist()) & set(keys[labeled_rows].tolist())


def test_near_duplicates_are_not_both_picked():
    # five texts, each with a near-duplicate twin (other words, nearly the same meaning)
    base = unit(np.random.default_rng(3).normal(size=(5, 64)))
    twins = unit(base + 0.02 * np.random.default_rng(4).normal(size=base.shape))
    x = np.concatenate([base, twins])
    assert np.all(np.einsum("nh,nh->n", base, twins) >= NEAR_DUPLICATE)
    pick = cold_start(x, keys_for(10), 5, seed=1)
    assert sorted(r % 5 for r in pick.rows) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="only 5 texts that are not near-duplicates"):
        cold_start(x, keys_for(10), 6, seed=1)  # six would need both of a pair
    with pytest.raises(ValueError, match="only 4 texts"):
        cold_start(x, keys_for(10), 5, seed=1, labeled=base[:1], labeled_keys=np.array([99]))  # a twin of text 0 is labeled


def test_a_budget_above_the_pool_is_refused():
    x, _ = clustered([3, 3])
    with pytest.raises(ValueError, match="the pool has 6 distinct texts not yet labeled, fewer than the budget of 7"):
        cold_start(x, keys_for(6), 7, seed=1)


def test_margin_uncertainty():
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.7, 0.1, 0.2], [0.2, 0.3, 0.5]])
    assert np.allclose(margin_uncertainty(probs), [1.0, 0.0, 0.5, 0.8])


def test_next_round_prefers_unsure_texts_and_spreads_them():
    # region A: the model is torn (margin 0.02); region B: unsure (0.2); C: the bulk, sure (0.9)
    x, truth = clustered([20, 20, 200], spread=0.05, seed=5)
    margins = np.where(truth == 0, 0.02, np.where(truth == 1, 0.2, 0.9))
    probs = np.stack([(1 + margins) / 2, (1 - margins) / 2], 1)
    pick = next_round(x, keys_for(len(x)), probs, 4, seed=1)
    regions = truth[pick.rows]
    assert len(pick.rows) == 4 and set(regions.tolist()) == {0, 1}  # all unsure, from both unsure regions
    assert np.allclose(pick.scores, margin_uncertainty(probs)[pick.rows])


def test_next_round_skips_labeled_texts():
    x, truth = clustered([20, 20], spread=0.05, seed=6)
    probs = np.full((40, 2), 0.5)
    labeled = list(range(0, 40, 2))
    keys = keys_for(40)
    pick = next_round(x, keys, probs, 5, seed=1, labeled=x[labeled], labeled_keys=keys[labeled])
    assert not set(pick.rows) & set(labeled)
    near = x[pick.rows] @ x[labeled].T
    assert near.max() < NEAR_DUPLICATE


def test_text_key_ignores_case_and_spacing_only():
    assert text_key("Book a  table\n") == text_key("book a table")
    assert text_key("book a table") != text_key("book the table")
