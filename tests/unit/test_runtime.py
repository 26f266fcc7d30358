"""The served models' numpy runtime (model_repository/runtime.py), without a server: request
checks and limits, per-row errors, batching of several requests, answers in original ids."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from seqrec.client import contract as C
from seqrec.model_repository.lookup import ItemLookup
from seqrec.model_repository.runtime import Preprocessor, Ranker, RequestError, scored

# encoded id -> original id; 0, 1, 2 reserved
VOCAB = np.array([-1, -1, -1, 50, 172, 7, 900, 33], dtype=np.int64)


FINGERPRINT = C.fingerprint_value("f00dfacecafe0123")


def preprocessor(max_len=4):
    return Preprocessor(ItemLookup.from_vocabulary(VOCAB, max_len), fingerprint=FINGERPRINT)


def getter(**inputs):
    return lambda name: None if inputs.get(name) is None else np.asarray(inputs[name])


def test_request_errors_name_the_problem():
    pre = preprocessor()
    cases = [
        (dict(), r"missing input 'item_ids'"),
        (dict(item_ids=np.zeros((0, 3), dtype=np.int64)), r"'item_ids' has no rows: send at least one session"),
        (dict(item_ids=[[50]], exclude_item_ids=np.zeros((0, 2), dtype=np.int64)), r"'exclude_item_ids' has 0 rows"),
        (dict(item_ids=[[50, 7]], k=[[0]]), r"'k' must be >= 1, got 0"),
        (dict(item_ids=[[50], [7]], k=[[2], [3]]), r"one value per row, the same"),
        (dict(item_ids=[[50, 7]], lengths=[[3]]), r"lengths\[0\] = 3 is outside 0..2"),
        (dict(item_ids=[[50, 7]], lengths=[[1], [1]]), r"'lengths' has 2 rows but 'item_ids' has 1"),
        (dict(item_ids=[[50]], exclude_item_ids=[[1], [2]]), r"'exclude_item_ids' has 2 rows"),
        (dict(item_ids=np.ones((1, C.MAX_ITEM_IDS_PER_ROW + 1), dtype=np.int64)),
         rf"{C.MAX_ITEM_IDS_PER_ROW + 1} ids per row; the limit is {C.MAX_ITEM_IDS_PER_ROW}"),
        (dict(item_ids=[[50]], exclude_item_ids=np.ones((1, C.MAX_EXCLUDED_PER_ROW + 1), dtype=np.int64)),
         rf"the limit is {C.MAX_EXCLUDED_PER_ROW}"),
    ]
    for inputs, message in cases:
        with pytest.raises(RequestError, match=message):
            pre.parse(getter(**inputs))


def test_rows_are_encoded_truncated_and_bad_rows_named():
    pre = preprocessor(max_len=3)
    a = pre.parse(getter(item_ids=[[50, 172, 999, 7, 900], [0, 0, 0, 0, 0]], lengths=[[5], [0]]))
    b = pre.parse(getter(item_ids=[[-3, 888], [33, -1]], k=[[4], [4]], exclude_item_ids=[[7, 12345], [50, 33]]))
    out_a, out_b = pre.run([a, b])
    # the last 3 raw items (999 unknown, dropped after the cut), as the workflow does
    np.testing.assert_array_equal(out_a[C.ENCODED_ITEMS.name], [[5, 6], [0, 0]])
    assert scored(out_a[C.ENCODED_ITEMS.name]).tolist() == [True, False]
    assert out_a[C.ROW_ERRORS.name].ravel().tolist() == [b"", b"empty session (row 1): 'item_ids' needs at least one item id"]
    assert out_a[C.STEP_ARGS.name].tolist() == [[0, FINGERPRINT, 0], [0, FINGERPRINT, 0]]
    assert b"unknown item id(s) [-3, 888]" in out_b[C.ROW_ERRORS.name].ravel()[0]
    np.testing.assert_array_equal(out_b[C.ENCODED_ITEMS.name], [[0], [7]])
    # k, the fingerprint, then the encoded exclusions (unknown -> 0)
    np.testing.assert_array_equal(out_b[C.STEP_ARGS.name], [[4, FINGERPRINT, 5, 0], [4, FINGERPRINT, 3, 7]])


def step_request(items, k=0, exclude=None, fingerprint=FINGERPRINT):
    items = np.asarray(items, dtype=np.int64)
    exclude = np.zeros((len(items), 1), np.int64) if exclude is None else np.asarray(exclude)
    head = np.tile(np.array([[k, fingerprint]], np.int64), (len(items), 1))
    return {C.ENCODED_ITEMS.name: items, C.STEP_ARGS.name: np.concatenate([head, exclude], axis=1)}


def test_ranker_batches_requests_and_maps_answers_back():
    ranker = Ranker(VOCAB, default_k=2, fingerprint=FINGERPRINT)
    batch = ranker.gather([step_request([[3, 4, 0]], k=3), step_request([[5], [0]]),
                           step_request([[7, 6]], k=100)])
    assert batch.items.shape == (4, 3) and batch.ok.tolist() == [True, True, False, True]
    assert batch.k == [3, 2, 5] and batch.depth == 5  # 100 > the catalogue: all 5 items
    items, exclude, _ = ranker.good(batch)
    assert items.tolist() == [[3, 4, 0], [5, 0, 0], [7, 6, 0]]
    assert exclude.tolist() == [[0], [0], [0]] and exclude.flags.c_contiguous
    ids = np.array([[7, 6, 5, 3, 4], [3, 4, 6, 7, 5], [5, 4, 3, 6, 7]])
    scores = np.array([[5, 4, 3, 2, -np.inf], [9, 8, 7, 6, 5], [3, 2, 1, -np.inf, -np.inf]], np.float32)
    a, b, c = ranker.answers(batch, ids, scores)
    assert a[C.TOP_ITEM_IDS.name].tolist() == [[33, 900, 7]]
    assert b[C.TOP_ITEM_IDS.name].tolist()[0] == [50, 172]
    assert b[C.TOP_ITEM_IDS.name].tolist()[1] == [-1, -1] and np.isnan(b[C.TOP_SCORES.name][1]).all()
    assert c[C.TOP_ITEM_IDS.name].tolist() == [[7, 172, 50, -1, -1]]  # excluded tail: -1 / -inf
    assert np.isneginf(c[C.TOP_SCORES.name][0, 3:]).all()
    assert a[C.TOP_SCORES.name].dtype == np.float32 and a[C.TOP_ITEM_IDS.name].flags.c_contiguous


def test_step_tensors_of_another_export_are_refused_naming_both_fingerprints():
    pre, ranker = preprocessor(), Ranker(VOCAB, default_k=2, fingerprint=FINGERPRINT)
    ours = pre.run([pre.parse(getter(item_ids=[[50, 7]], exclude_item_ids=[[172]]))])[0]
    assert ranker.mismatch(ours) is None
    other = C.fingerprint_value("8000000000000001")  # above 2**63: negative as INT64
    theirs = Preprocessor(pre.lookup, fingerprint=other)
    foreign = theirs.run([theirs.parse(getter(item_ids=[[50, 7], [33, 900]]))])[0]
    message = ranker.mismatch(foreign)
    assert "export mismatch" in message
    assert "8000000000000001" in message and "f00dfacecafe0123" in message
    assert C.fingerprint_text(other) == "8000000000000001"
    with pytest.raises(ValueError, match="16 hex digits"):
        C.fingerprint_value("1" * 17)


def test_64_rows_of_100k_exclusions_stay_linear_in_memory():
    """Exclusions are encoded per id and handed on as [rows, excluded]: no table of rows x
    candidates x excluded. 64 rows x 100k ids (51 MB of int64) peak well under 10x that."""
    rng = np.random.default_rng(0)
    vocab = np.concatenate([[-1, -1, -1], rng.permutation(200_000)[:100_000]])
    pre = Preprocessor(ItemLookup.from_vocabulary(vocab, 50))
    exclude = rng.integers(0, 300_000, size=(64, C.MAX_EXCLUDED_PER_ROW))
    items = vocab[rng.integers(3, len(vocab), size=(64, 30))]
    tracemalloc.start()
    request = pre.parse(getter(item_ids=items, exclude_item_ids=exclude))
    out = pre.run([request])[0]
    ranker = Ranker(vocab, 10)
    batch = ranker.gather([out])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert batch.exclude.shape == (64, C.MAX_EXCLUDED_PER_ROW)
    known = np.isin(exclude, vocab[3:])
    assert ((batch.exclude >= 3) == known).all()
    assert peak < 8 * exclude.nbytes, f"peak {peak / 2**20:.0f} MiB for {exclude.nbytes / 2**20:.0f} MiB of ids"


def test_text_lookup_step_packs_histories_as_training_does():
    """A text model's lookup step: the same parsing, encoding and row errors as the ID models',
    then each good row's encoded history packed from the cached tokens by training's pack()."""
    from seqrec.model_repository.runtime import TextPacking, TextPreprocessor
    from seqrec.preprocessing.token_pack import ItemTokens, pack

    lengths = np.array([0, 0, 0, 2, 3, 1, 4, 2])  # per encoded id; reserved ids: no tokens
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = ItemTokens(np.arange(10, 10 + offsets[-1], dtype=np.int32),
                        np.tile(np.array([2, 3], dtype=np.int8), offsets[-1] // 2 + 1)[: offsets[-1]], offsets)
    packing = TextPacking(max_tokens=7, max_items=2, window=4)
    pre = TextPreprocessor(ItemLookup.from_vocabulary(VOCAB, 3), tokens, packing, FINGERPRINT)
    a = pre.parse(getter(item_ids=[[50, 172, 999, 7, 900], [0, 0, 0, 0, 0]], lengths=[[5], [0]]))
    b = pre.parse(getter(item_ids=[[33, 50]]))
    out_a, out_b = pre.run([a, b])
    np.testing.assert_array_equal(out_a[C.ENCODED_ITEMS.name], [[5, 6], [0, 0]])  # as the ID step
    assert out_a[C.ROW_ERRORS.name].ravel()[1].startswith(b"empty session (row 1)")
    for out, values, row_offsets in ((out_a, [5, 6], [0, 2, 2]), (out_b, [7, 3], [0, 2])):
        want = pack(tokens, np.array(values), np.array(row_offsets), 7, 2, 4)
        for key in C.TEXT_KEYS:
            np.testing.assert_array_equal(out[C.TEXT_PREFIX + key], want[key])
    # most recent first: row 0 holds item 6's 4 tokens after [CLS], then item 5's one, padded to 8
    assert out_a["text_input_ids"][0].tolist() == [2, 16, 17, 18, 19, 15, 0, 0]
    assert out_a["text_item_positions"][0].tolist() == [0, 1, 1, 1, 1, 2, 0, 0]
    with pytest.raises(ValueError, match="not one export"):
        TextPreprocessor(ItemLookup.from_vocabulary(VOCAB[:-1], 3), tokens, packing)
    # the model step stacks the text tensors of several requests (padding: token 0, mask 0)
    ranker = Ranker(VOCAB, 2, C.TEXT_KEYS, FINGERPRINT)
    batch = ranker.gather([out_a, out_b])
    items, _, packed = ranker.good(batch)
    assert items.shape[0] == 2 and set(packed) == set(C.TEXT_KEYS)
    np.testing.assert_array_equal(packed["input_ids"][1, :4], out_b["text_input_ids"][0, :4])
