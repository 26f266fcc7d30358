"""docs/benchmarks.md is what bench/report.py renders from the committed bench/results/*.json."""
from __future__ import annotations

import json
import subprocess
import sys
import pytest

from helpers import ROOT


def _report():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_benchmarks_doc_equals_the_generated_one():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_result_file_has_its_table_and_the_numbers_come_from_it(tmp_path):
    report = _report()
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / "bench" / "results").glob("*.json"):
        (results / path.name).write_text(path.read_text())
    assert report.render(doc, results) == doc

    # a changed figure changes the table
    serving = json.loads((results / "serving.json").read_text())
    serving["results"][0]["requests_per_s"] = 123456.0
    (results / "serving.json").write_text(json.dumps(serving))
    assert "| 123,456 |" in report.render(doc, results)

    # a result file without its block is refused, naming it
    (results / "new_case.json").write_text(json.dumps({"results": [{"case": "a", "ms": 1.5}]}))
    with pytest.raises(ValueError, match="no generated block for bench/results/new_case.json"):
        report.render(doc, results)

    # files without a layout get a generic table of their rows
    block = "<!-- generated from bench/results/new_case.json -->\n<!-- end generated -->\n"
    assert "| a | 1.5 |" in report.render(doc + block, results)
