"""Split rules: the radiodiff scheme reproduces the original shuffle and ranges exactly; disjoint has no overlap."""

import numpy as np
import pytest

from radiodiff_vae.data.splits import shuffled_map_indices, split_map_ids, split_positions

ALL_IDS = list(range(1, 701))


def _original_shuffle() -> np.ndarray:
    """RadioUNet's / RadioDiff's own procedure, literally (global seed), with the global state restored after."""
    state = np.random.get_state()
    try:
        maps_inds = np.arange(0, 700, 1, dtype=np.int16)
        np.random.seed(42)
        np.random.shuffle(maps_inds)
    finally:
        np.random.set_state(state)
    return maps_inds.astype(np.int64)


def _positions(order: np.ndarray, first: int, last: int) -> list:
    return [int(index) + 1 for index in order[first : last + 1]]


def test_shuffle_matches_the_original_procedure():
    np.testing.assert_array_equal(shuffled_map_indices(700), _original_shuffle())


def test_radiodiff_scheme_reproduces_the_original_ranges():
    order = _original_shuffle()
    train = split_map_ids(ALL_IDS, "train", "radiodiff")
    val = split_map_ids(ALL_IDS, "val", "radiodiff")
    test = split_map_ids(ALL_IDS, "test", "radiodiff")
    # Positions both ends included: train 0..600, validation 501..600, test 600..699, in the shuffled order.
    assert train == _positions(order, 0, 600)
    assert val == _positions(order, 501, 600)
    assert test == _positions(order, 600, 699)
    assert (len(train), len(val), len(test)) == (601, 100, 100)
    assert set(val) <= set(train)
    assert set(train) & set(test) == {int(order[600]) + 1}
    assert set(train) | set(test) == set(ALL_IDS)


def test_disjoint_scheme_is_radiounet_split_without_overlap():
    order = _original_shuffle()
    train = split_map_ids(ALL_IDS, "train", "disjoint")
    val = split_map_ids(ALL_IDS, "validation", "disjoint")  # the 🤗 spelling is accepted
    test = split_map_ids(ALL_IDS, "test", "disjoint")
    assert train == _positions(order, 0, 500)
    assert val == _positions(order, 501, 600)
    assert test == _positions(order, 601, 699)
    assert (len(train), len(val), len(test)) == (501, 100, 99)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert set(train) | set(val) | set(test) == set(ALL_IDS)


@pytest.mark.parametrize("scheme", ["radiodiff", "disjoint"])
def test_a_partial_folder_keeps_the_rule_on_the_ids_it_holds(scheme):
    held = [3, 17, 42, 99, 100, 250, 400, 555, 600, 699, 700]
    for split in ("train", "val", "test"):
        expected = [map_id for map_id in split_map_ids(ALL_IDS, split, scheme) if map_id in held]
        assert split_map_ids(held, split, scheme) == expected
    covered = set().union(*(split_map_ids(held, split, scheme) for split in ("train", "val", "test")))
    assert covered == set(held)


def test_more_than_700_maps_scale_the_cut_points_and_cover_every_map():
    ids = list(range(1, 1401))
    assert split_positions(1400, "train", "disjoint") == (0, 1000)
    assert split_positions(1400, "test", "radiodiff") == (1200, 1399)
    disjoint = [set(split_map_ids(ids, split, "disjoint")) for split in ("train", "val", "test")]
    assert [len(part) for part in disjoint] == [1001, 200, 199]
    assert set().union(*disjoint) == set(ids)


def test_bad_split_arguments_are_rejected():
    with pytest.raises(ValueError, match="split_scheme must be one of"):
        split_map_ids(ALL_IDS, "train", "random")
    with pytest.raises(ValueError, match="split must be one of"):
        split_map_ids(ALL_IDS, "dev", "disjoint")
    with pytest.raises(ValueError, match="1-based"):
        split_map_ids([0, 1, 2], "train", "disjoint")
