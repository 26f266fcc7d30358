"""The gRPC client without a server: inputs checked before sending, the deadline and fail-fast
paths against an address where nothing listens, the printed table."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("tritonclient.grpc")

from seqrec.client import (  # noqa: E402
    Recommendation,
    RecommendationError,
    RecommenderClient,
    format_table,
)


@pytest.mark.parametrize("bad, shown", [([1, 2.5], "2.5"), (["a"], "'a'"), ([1, None], "None"),
                                        ([True], "True"), ([[1, 2]], "shape")])
def test_client_rejects_non_integer_ids(bad, shown):
    c = RecommenderClient("127.0.0.1:1")  # never contacted: validation happens first
    with pytest.raises(ValueError, match=shown.replace(".", r"\.").replace("(", r"\(")):
        c.recommend(bad)
    c.close()


def test_unreachable_server_waits_out_the_deadline_then_raises():
    # a restarting server is waited for (gRPC waitForReady) until the call's deadline
    c = RecommenderClient("127.0.0.1:1", timeout_s=1.5)
    t0 = time.perf_counter()
    with pytest.raises(RecommendationError, match="DEADLINE_EXCEEDED"):
        c.recommend([1])
    assert 1.4 <= time.perf_counter() - t0 < 5
    assert not c.is_ready(timeout_s=0.5)
    c.close()
    # retries=0: fail fast, no waiting
    c = RecommenderClient("127.0.0.1:1", retries=0, timeout_s=5)
    t0 = time.perf_counter()
    with pytest.raises(RecommendationError, match="UNAVAILABLE"):
        c.recommend([1])
    assert time.perf_counter() - t0 < 1.5
    c.close()


def test_format_table():
    rec = Recommendation(item_ids=[42, 7], scores=[0.9, 0.25], latency_ms=1.0)
    table = format_table(rec, {42: "The Answer"})
    lines = table.splitlines()
    assert lines[0].split() == ["rank", "item_id", "score", "title"]
    assert lines[1].split() == ["1", "42", "0.9000", "The", "Answer"]
    assert lines[2].split() == ["2", "7", "0.2500"]


def test_client_checks_features_before_sending():
    from seqrec.client import build_inputs

    dtypes = {"item_ids": "INT64", "rating": "FP32", "release_year": "INT64"}
    tensors = build_inputs([[1, 2, 3], [4]], dtypes=dtypes,
                           features={"rating": [[4, 5, 3], [1.5]], "release_year": [[1977.0, 1990, 1991], [2000]]})
    assert {t.name(): (t.datatype(), t.shape()) for t in tensors}["rating"] == ("FP32", [2, 3])
    assert {t.name(): t.datatype() for t in tensors}["release_year"] == "INT64"
    with pytest.raises(ValueError, match=r"no input 'ratin'"):
        build_inputs([[1, 2, 3]], features={"ratin": [[1, 2, 3]]}, dtypes=dtypes)
    with pytest.raises(ValueError, match=r"'release_year' takes integers \(INT64\), got 1.5"):
        build_inputs([[1, 2, 3]], features={"release_year": [[1.5, 2, 3]]}, dtypes=dtypes)
    with pytest.raises(ValueError, match=r"'rating' has 1 rows for 2 sessions"):
        build_inputs([[1], [2]], features={"rating": [[1]]}, dtypes=dtypes)
