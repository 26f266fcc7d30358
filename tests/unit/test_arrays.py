"""The shared array rules (preprocessing/arrays.py) against plain per-row Python."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seqrec.preprocessing import arrays


def ragged(rng, rows=40, longest=9):
    lists = [rng.integers(3, 30, size=rng.integers(0, longest + 1)) for _ in range(rows)]
    values = np.concatenate(lists)
    return lists, values, arrays.offsets_from_lengths(np.array([len(x) for x in lists]))


@pytest.mark.parametrize("max_len", [None, 1, 3, 20])
def test_keep_last_pad_unpad_match_per_row_slicing(max_len):
    lists, values, offsets = ragged(np.random.default_rng(0))
    kept_values, kept_offsets = arrays.keep_last(values, offsets, max_len)
    want = [x[-max_len:] if max_len else x for x in lists]
    assert np.array_equal(kept_values, np.concatenate(want))
    padded = arrays.pad(values, offsets, max_len)
    assert padded.shape == (len(lists), max(len(x) for x in want))
    for row, w in zip(padded, want):
        assert row[: len(w)].tolist() == w.tolist() and (row[len(w):] == arrays.PAD_ID).all()
    back, back_offsets = arrays.unpad(padded, np.diff(kept_offsets))
    assert np.array_equal(back, kept_values) and np.array_equal(back_offsets, kept_offsets)
    assert np.array_equal(arrays.padded_lengths(padded), np.diff(kept_offsets))


def test_pad_keeps_trailing_dims_and_empty_batches():
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    padded = arrays.pad(values, np.array([0, 2, 2, 5]), dtype=np.float32)
    assert padded.shape == (3, 3, 2)
    assert padded[0, :2].tolist() == [[0, 1], [2, 3]] and (padded[1] == 0).all()
    assert arrays.pad(np.zeros(0, np.int64), np.zeros(3, np.int64)).shape == (2, 1)


def test_drop_last_take_rows_last_values():
    lists, values, offsets = ragged(np.random.default_rng(1))
    v, o = arrays.drop_last(values, offsets, 2)
    assert np.array_equal(v, np.concatenate([x[:-2] if len(x) > 2 else x[:0] for x in lists]))
    pick = np.array([5, 0, 5, 39])
    v, o = arrays.take_rows(values, offsets, pick)
    assert [v[a:b].tolist() for a, b in zip(o[:-1], o[1:])] == [lists[i].tolist() for i in pick]
    full = [i for i, x in enumerate(lists) if len(x)]
    v, o = arrays.take_rows(values, offsets, full)
    assert arrays.last_values(v, o).tolist() == [lists[i][-1] for i in full]
    with pytest.raises(ValueError, match="is empty"):
        arrays.last_values(values, offsets) if any(len(x) == 0 for x in lists) else arrays.last_values(
            np.zeros(0), np.array([0, 0]))


def test_encode_sorted_and_vocabulary():
    vocabulary = np.array([-1, -1, -1, 50, 10, 30])  # encoded id -> original id
    keys, codes = arrays.sorted_vocabulary(vocabulary)
    assert keys.tolist() == [10, 30, 50] and codes.tolist() == [4, 5, 3]
    got = arrays.encode_sorted(keys, codes, np.array([30, 7, 50, 99, -1, 10]))
    assert got.tolist() == [5, arrays.OOV_ID, 3, arrays.OOV_ID, arrays.OOV_ID, 4]
    assert arrays.encode_sorted(keys[:0], codes[:0], np.array([1, 2])).tolist() == [arrays.OOV_ID] * 2


def test_time_features_and_gaps():
    seconds = np.array([0, 3600 * 6, 86400 * 4 + 3600 * 23, 86400 * 4 + 3600 * 23 + 5])
    assert np.allclose(arrays.clock_feature(seconds, "hour_sin"), np.sin(2 * np.pi * (seconds % 86400 / 3600) / 24), atol=1e-6)
    # 1970-01-01 was a Thursday (3), four days later a Monday (0)
    assert np.allclose(arrays.clock_feature(seconds, "weekday_cos"), np.cos(2 * np.pi * np.array([3, 3, 0, 0]) / 7), atol=1e-6)
    assert arrays.clock_feature(seconds, "day_index").tolist() == [0, 0, 4, 4]
    first = arrays.group_starts(np.array([0, 2, 4]))
    assert arrays.since_previous(seconds, first).tolist() == [0, 21600, 0, 5]
    age = arrays.item_age(np.array([7, 8, 9]), np.array([100, 100, 100]), np.array([7, 9]), np.array([40, 200]))
    assert age.tolist() == [60, 0, 0]  # unknown item 8: new; item 9 first seen later: never negative


def test_copied_lookups_import_the_copied_arrays_without_seqrec(tmp_path):
    """The exporter copies lookup.py, side_lookup.py and arrays.py beside the Triton model; there
    they must work with seqrec absent (the preprocessing model needs numpy only)."""
    import seqrec.model_repository.lookup as lookup
    import seqrec.model_repository.side_lookup as side_lookup

    for module in (lookup, side_lookup, arrays):
        shutil.copy(module.__file__, tmp_path)
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("seqrec", "nvtabular", "merlin", "torch"):
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import lookup, side_lookup
        assert lookup.arrays.__file__.startswith({str(tmp_path)!r}), lookup.arrays.__file__
        table = lookup.ItemLookup.from_vocabulary(np.array([-1, -1, -1, 50, 10]), 2)
        codes, offsets = table.encode(np.array([10, 99, 50, 10, 50]), np.array([0, 3, 5]))
        print(codes.tolist(), offsets.tolist())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # row 0 keeps its last 2 raw items (99 unknown -> dropped), row 1 both
    assert out.stdout.split("\n")[0] == "[3, 4, 3] [0, 1, 3]"
