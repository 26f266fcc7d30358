"""Which held-out histories `seqrec export` checks the exported scorer on, for every split layout
the ETL writes (a time-window split has no top-level valid.parquet)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from seqrec.model_repository.export import _check_histories, _sequence_files
from seqrec.preprocessing.arrays import ITEM_LIST


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({ITEM_LIST: pa.array(rows, type=pa.list_(pa.int64()))}), path)


def test_validation_rows_of_any_layout(tmp_path):
    flat = tmp_path / "flat"
    _write(flat / "valid.parquet", [[3, 4], [5, 6, 7]])
    _write(flat / "test.parquet", [[3, 4, 5]] * 10)
    assert _sequence_files(flat) == [flat / "valid.parquet"]  # only valid, however few
    assert [h.tolist() for h in _check_histories(flat)[0]] == [[3], [5, 6]]

    windows = tmp_path / "windows"
    _write(windows / "2024-01-02" / "valid.parquet", [[8, 9]])
    _write(windows / "2024-01-01" / "valid.parquet", [[3], [4, 5, 6]])  # a one-item row: no history
    _write(windows / "2024-01-01" / "train.parquet", [[3, 4]])
    assert _sequence_files(windows) == [windows / "2024-01-01" / "valid.parquet",
                                        windows / "2024-01-02" / "valid.parquet"]
    assert [h.tolist() for h in _check_histories(windows, n=2)[0]] == [[4, 5], [8]]
    assert _sequence_files(tmp_path / "nothing") == []
