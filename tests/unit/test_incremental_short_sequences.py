"""Time-window data preprocessed with min_len: 1 keeps 1-item sessions; `seqrec incremental`
cannot train or evaluate on them and counts them per window and split, in its report and output."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from seqrec.preprocessing.arrays import ITEM_LIST
from seqrec.preprocessing.pipeline import ETLConfig, run_etl


def sessions_with_singletons(days=2, per_day=60, seed=4) -> pd.DataFrame:
    """Sessions of 1 to 5 items inside one day each (about one in five of a single item)."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        for s in range(per_day):
            sid, start = day * per_day + s, 1_700_000_000 + day * 86400 + s * 60
            rows += [(sid, int(rng.integers(1, 40)), start + 5 * k) for k in range(int(rng.integers(1, 6)))]
    return pd.DataFrame(rows, columns=["session_id", "item_id", "timestamp"])


def test_incremental_counts_the_sequences_it_cannot_use(tmp_path, capsys):
    from seqrec.cli import main
    from seqrec.training.incremental import SHORT

    raw = sessions_with_singletons()
    singletons = int((raw.groupby("session_id").size() == 1).sum())
    assert singletons > 10
    data = tmp_path / "data"
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=1,
                      max_len=10, valid_fraction=0.2, test_fraction=0.2),
            interactions=raw, progress=False)
    windows = sorted(p.name for p in data.glob("20*"))
    assert len(windows) == 2
    lengths = {w: {s: pd.read_parquet(data / w / f"{s}.parquet")[ITEM_LIST].map(len)
                   for s in ("train", "valid", "test")} for w in windows}
    want = {w: {f"{s}: {SHORT}": int((n < 2).sum()) for s, n in by_split.items()}
            for w, by_split in lengths.items()}
    assert sum(sum(c.values()) for c in want.values()) == singletons  # all kept by the ETL
    recipe = tmp_path / "inc.yaml"
    recipe.write_text(json.dumps({"incremental": {
        "data_dir": str(data), "output_dir": str(tmp_path / "run"), "epochs_per_window": 1,
        "batch_size": 16, "tensorboard": False, "model": {"d_model": 16, "n_layers": 1}}}))

    assert main(["incremental", "--config", str(recipe)]) == 0
    report = json.loads((tmp_path / "run" / "incremental.json").read_text())
    assert report["dropped"] == want
    assert report["windows"][0]["sessions"] == int((lengths[windows[1]]["test"] >= 2).sum())
    out = capsys.readouterr().out
    for w, counts in want.items():
        for reason, count in counts.items():
            line = f"dropped        {count:,} sequences of window {w}: {reason}"
            assert (line in out) == (count > 0), line
