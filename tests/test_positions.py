"""The catalogue's id → row map shared between versions: every version reads as its own dict would, edits copy only
the changes, and the changes fold into a new base at the threshold."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.catalogue import Catalogue
from recsys.features import ItemArrays
from recsys.positions import FOLD_AT, RowPositions, changed, fold_at
from recsys.stats import InteractionStats, StatsConfig

IDS = [f"i{j}" for j in range(12)]
EDITS = st.lists(st.tuples(st.booleans(), st.sampled_from(IDS), st.integers(0, 99)), max_size=40)


def _same(mapping, expected: dict) -> None:
    assert dict(mapping) == expected and len(mapping) == len(expected) and set(mapping) == set(expected)
    if isinstance(mapping, RowPositions):
        assert mapping.rows([*IDS, "nope"]).tolist() == [expected.get(key, -1) for key in [*IDS, "nope"]]
    for key in [*IDS, "nope"]:
        assert (key in mapping) == (key in expected) and mapping.get(key, -7) == expected.get(key, -7)
        if key in expected:
            assert mapping[key] == expected[key]
        else:
            with pytest.raises(KeyError):
                mapping[key]


@settings(max_examples=60, deadline=None)
@given(start=st.dictionaries(st.sampled_from(IDS), st.integers(0, 99), min_size=8), edits=EDITS)
def test_every_version_reads_as_its_own_dict(start, edits):
    """A random run of moves and removals: each version equals the dict it would have been, before and after the
    versions that follow it were made."""
    versions, expected = [start], [dict(start)]
    for remove, key, row in edits:
        reference = dict(expected[-1])
        if remove:
            versions.append(changed(versions[-1], gone=[key]))
            reference.pop(key, None)
        else:
            versions.append(changed(versions[-1], [(key, row)]))
            reference[key] = row
        expected.append(reference)
    for mapping, reference in zip(versions, expected):
        _same(mapping, reference)
    assert start == expected[0]  # the base was never written to


def test_an_edit_copies_the_changes_not_the_base_and_folds_at_the_threshold():
    base = {f"k{j}": j for j in range(80_000)}
    one = changed(base, [("new", 80_000)], gone=["k3"])
    assert isinstance(one, RowPositions) and one.n_changes == 2 and one._base is base and len(one) == 80_000
    mapping = one
    for j in range(FOLD_AT - 2):
        mapping = changed(mapping, [(f"n{j}", 80_001 + j)])
    assert isinstance(mapping, RowPositions) and mapping._base is base and mapping.n_changes == FOLD_AT
    folded = changed(mapping, gone=["k4"])  # one change past the threshold: a plain dict again
    assert type(folded) is dict and len(folded) == 80_000 + (FOLD_AT - 2) - 1 and "k4" not in folded
    assert folded["n0"] == 80_001 and "k3" not in folded and len(base) == 80_000
    assert fold_at(80_000) == FOLD_AT and fold_at(40) == 5  # a small catalogue folds sooner: its copy is cheap
    assert changed(base) is base  # nothing to change: the same map


def test_catalogue_versions_share_their_rows_and_keep_their_own():
    """Upserts and deletions on a catalogue: the versions share one base map and one id storage, and a version
    taken before the edits still reads its own ids, rows, records and re-ranker arrays."""
    n = 400
    items = pl.DataFrame({"item_id": [f"i{j}" for j in range(n)], "text": [f"T{j}" for j in range(n)],
                          "category": [f"c{j % 7}" for j in range(n)]})
    rng = np.random.default_rng(0)
    catalogue = Catalogue(items, rng.normal(size=(n, 8)).astype(np.float32))
    events = pl.DataFrame({"user_id": ["u"] * 3, "item_id": ["i0", "i1", "i2"], "timestamp": [1, 2, 3]})
    stats = InteractionStats.fit(events, StatsConfig(time_mode="absolute"))
    catalogue.attach_features(lambda state: ItemArrays.of(state, stats))
    first = catalogue.state
    assert first.records[5]["text"] == "T5"  # built: later versions carry them
    versions = []
    for j in range(30):
        catalogue.upsert([{"item_id": f"n{j}", "text": f"N{j}", "category": "new" if j % 2 else "c1"}],
                         rng.normal(size=(1, 8)).astype(np.float32))
        versions.append(catalogue.state)
    after_one = versions[0]
    catalogue.remove(["i7", "n3"])
    catalogue.upsert([{"item_id": "i9", "text": "T9 again", "category": "c2"}], np.ones((1, 8), np.float32))
    state = catalogue.state
    assert isinstance(state.position, RowPositions) and state.position._base is first.position
    # one storage since the first append (which grew it by an eighth): no copy of the ids, codes or vectors
    assert len(state) == n + 31 and all(
        getattr(state, name).ctypes.data == getattr(after_one, name).ctypes.data for name in ("ids", "vectors")) \
        and state.features.stats_code.ctypes.data == after_one.features.stats_code.ctypes.data
    assert state.position["i9"] == n + 30 and "i7" not in state.position and "n3" not in state.position
    assert state.record("i9")["text"] == "T9 again" and state.records[n + 4]["text"] == "N4"
    codes = state.features.codes["category"]
    assert codes[n + 1] == codes[n + 3] != codes[n] == codes[1]  # a new value: one new code, the same each time
    assert state.features.stats_code[n:].tolist() == [-1] * 31 and state.features.stats_code[0] >= 0
    # the first version is as it was
    assert len(first) == n and first.position == {f"i{j}": j for j in range(n)} and first.record("i9")["text"] == "T9"
    assert len(first.features.codes["category"]) == n == len(first.features.stats_code) == len(first.records)
    assert catalogue.compact() == 3
    compacted = catalogue.state
    assert type(compacted.position) is dict and len(compacted.position) == n + 28 == len(compacted)
    assert compacted.position["i9"] == n + 27 and compacted.ids[compacted.position["n29"]] == "n29"
