"""Item text: an item table's attributes as key-value text, keyed by the encoded item ids of the
interaction workflow, and its tokens cached per item.

`item_text_workflow` is a one-operator NVTabular workflow over the item table: `ItemText` encodes
the raw item ids through the interaction workflow's vocabulary (the same ids training uses) and
writes one text column per attribute (`text-<key>`; a list attribute such as genres is joined
with spaces). `item_tokens` then tokenises every attribute column in one batch call and packs the
catalogue as flat token ids + offsets: per item, for each non-empty attribute, its key's tokens
(type KEY) followed by at most `budget` of its value's tokens (type VALUE).

`flatten` gives the plain `key value key value ...` strings (tokenizer training, TF-IDF).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from merlin.dag import ColumnSelector
from nvtabular.ops import Operator

from .arrays import FIRST_ITEM_ID, ITEM_COL, OOV_ID, encode_sorted, offsets_from_lengths, sorted_vocabulary
from .token_pack import (CLS, CLS_TOKEN, MASK, MASK_TOKEN, NUM_TOKEN_TYPES, PAD, PAD_TOKEN,  # noqa: F401
                         SEP, SEP_TOKEN, SPECIAL_TOKENS, TOKENS_FILE, TYPE_CLS, TYPE_KEY, TYPE_PAD,
                         TYPE_VALUE, UNK, UNK_TOKEN, ItemTokens)

TEXT_PREFIX = "text-"
TOKENIZER_FILE = "tokenizer.json"


def text_column(key: str) -> str:
    return TEXT_PREFIX + key


def _as_text(column: pd.Series) -> pa.Array:
    """One attribute column -> Arrow strings ("" where missing); lists joined with spaces."""
    if column.dtype == object and len(column) and isinstance(column.dropna().iloc[0] if column.notna().any()
                                                             else "", (list, np.ndarray)):
        lists = pa.array(column.to_list(), type=pa.list_(pa.string()))
        return pc.binary_join(lists, " ").fill_null("")
    text = pa.array(column.astype("string").fillna("").to_numpy(dtype=object), type=pa.string())
    return pc.utf8_trim_whitespace(text)


class ItemText(Operator):
    """Item table rows -> `item_id` (encoded by `vocabulary`: encoded id -> original id, reserved
    ids -1) and `text-<key>` per attribute (`attributes`: key -> source column). Items the
    interaction data never saw encode to OOV and are dropped: no sequence can hold them."""

    def __init__(self, attributes: dict[str, str], vocabulary: np.ndarray):
        super().__init__()
        self.attributes = dict(attributes)
        self.keys, self.codes = sorted_vocabulary(np.asarray(vocabulary, dtype=np.int64))

    def transform(self, col_selector: ColumnSelector, df):
        missing = [c for c in [ITEM_COL, *self.attributes.values()] if c not in df.columns]
        if missing:
            raise ValueError(f"item table has no column(s) {missing}; it has {list(df.columns)}")
        encoded = encode_sorted(self.keys, self.codes, df[ITEM_COL].to_numpy(dtype=np.int64))
        keep = encoded != OOV_ID
        out = {ITEM_COL: encoded[keep].astype(np.int64)}
        for key, source in self.attributes.items():
            out[text_column(key)] = _as_text(df[source]).filter(pa.array(keep)).to_pandas()
        return pd.DataFrame(out)

    def column_mapping(self, col_selector):
        mapping = {ITEM_COL: [ITEM_COL]}
        mapping.update({text_column(k): [s] for k, s in self.attributes.items()})
        return mapping

    def _compute_dtype(self, col_schema, input_schema):
        return col_schema.with_dtype(np.int64 if col_schema.name == ITEM_COL else str)


def item_text_workflow(attributes: dict[str, str], vocabulary: np.ndarray):
    import nvtabular as nvt

    columns = list(dict.fromkeys([ITEM_COL, *attributes.values()]))
    return nvt.Workflow(columns >> ItemText(attributes, vocabulary))


def item_texts(items: pd.DataFrame, attributes: dict[str, str], vocabulary: np.ndarray) -> pd.DataFrame:
    """The item table through the item-text workflow: one row per encoded item (those of the
    vocabulary without a row in the table are absent), sorted by encoded id."""
    from .workflow import transform_frame

    missing = [c for c in [ITEM_COL, *attributes.values()] if c not in items.columns]
    if missing:
        raise ValueError(f"item table has no column(s) {missing}; it has {list(items.columns)}")
    workflow = item_text_workflow(attributes, vocabulary)
    workflow.fit(_dataset(items[list(dict.fromkeys([ITEM_COL, *attributes.values()]))]))
    out = transform_frame(workflow, items)
    dupes = out[ITEM_COL].duplicated()
    if dupes.any():
        raise ValueError(f"item table lists encoded item {int(out[ITEM_COL][dupes].iloc[0])} twice")
    return out.sort_values(ITEM_COL, kind="stable").reset_index(drop=True)


def _dataset(frame):
    from .workflow import as_dataset

    return as_dataset(frame)


def flatten(texts: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """`key value key value ...` per row (empty attributes left out), as an object array."""
    parts = []
    for key in keys:
        value = pa.array(texts[text_column(key)].to_numpy(dtype=object), type=pa.string())
        has = pc.greater(pc.utf8_length(value), 0)
        parts.append(pc.if_else(has, pc.binary_join_element_wise(pa.scalar(key), value, " "), ""))
    joined = pc.binary_join_element_wise(*parts, " ") if len(parts) > 1 else parts[0]
    return np.asarray(pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, r"\s+", " "))
                      .to_numpy(zero_copy_only=False), dtype=object)


# ---------------------------------------------------------------------------- tokens

def train_tokenizer(texts, vocab_size: int = 8000, min_frequency: int = 1):
    """A lower-casing BPE tokenizer trained on `texts` (an iterable of strings); the special tokens
    hold ids 0-4 (PAD, UNK, CLS, SEP, MASK). The same texts always give the same tokenizer.

    BPE without a continuing-subword prefix: the `tokenizers` trainer creates prefixed pieces
    (WordPiece's `##`) in hash-map order, and merges of equal counts are broken by those ids, so
    a WordPiece vocabulary (and every id after it) changes from run to run of the same data
    (huggingface/tokenizers#1794); here every piece comes from the sorted alphabet and the ordered
    merges only. Words stay apart: the pre-tokenizer splits on whitespace and punctuation first."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == i
    return tokenizer


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _encode(tokenizer, strings) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (flat token ids, lengths), one batch call into the tokenizer."""
    encodings = tokenizer.encode_batch(list(strings), add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter((t for e in encodings for t in e.ids), dtype=np.int32, count=int(lengths.sum()))
    return flat, lengths


def item_tokens(texts: pd.DataFrame, keys: list[str], budgets: dict[str, int] | int, tokenizer,
                num_items: int) -> ItemTokens:
    """Tokens of every item of `texts` (item_text output): per attribute, the key's tokens then
    the first `budget` value tokens; an empty value drops its key too. `budgets`: one per key or
    one for all."""
    items = texts[ITEM_COL].to_numpy(dtype=np.int64)
    if len(items) and (items.min() < FIRST_ITEM_ID or items.max() >= num_items):
        raise ValueError(f"item ids must lie in [{FIRST_ITEM_ID}, {num_items}), got "
                         f"[{items.min()}, {items.max()}]")
    n = len(items)
    segments_ids, segments_types, segments_len = [], [], []
    for key in keys:
        budget = budgets if isinstance(budgets, int) else budgets[key]
        if budget < 1:
            raise ValueError(f"token budget of attribute {key!r} is {budget}: it must be >= 1")
        key_ids, _ = _encode(tokenizer, [key])
        flat, lengths = _encode(tokenizer, texts[text_column(key)].to_numpy(dtype=object))
        starts = offsets_from_lengths(lengths)[:-1]
        kept = np.minimum(lengths, budget)
        value_pos = np.repeat(starts, kept) + (np.arange(kept.sum()) - np.repeat(offsets_from_lengths(kept)[:-1], kept))
        key_len = np.where(kept > 0, len(key_ids), 0)
        seg_len = key_len + kept
        seg_off = offsets_from_lengths(seg_len)
        ids = np.empty(int(seg_len.sum()), dtype=np.int32)
        types = np.empty(len(ids), dtype=np.int8)
        rows_k = np.repeat(np.arange(n), key_len)
        within_k = np.arange(len(rows_k)) - np.repeat(offsets_from_lengths(key_len)[:-1], key_len)
        ids[seg_off[rows_k] + within_k] = key_ids[within_k]
        types[seg_off[rows_k] + within_k] = TYPE_KEY
        rows_v = np.repeat(np.arange(n), kept)
        within_v = np.arange(len(rows_v)) - np.repeat(offsets_from_lengths(kept)[:-1], kept)
        ids[seg_off[rows_v] + key_len[rows_v] + within_v] = flat[value_pos]
        types[seg_off[rows_v] + key_len[rows_v] + within_v] = TYPE_VALUE
        segments_ids.append(ids), segments_types.append(types), segments_len.append(seg_len)
    # interleave: item i's tokens are its segments of attribute 0, 1, ... in key order
    seg_len = np.stack(segments_len, axis=1) if keys else np.zeros((n, 0), dtype=np.int64)  # [n, A]
    per_item = np.zeros(num_items, dtype=np.int64)
    per_item[items] = seg_len.sum(axis=1)
    offsets = offsets_from_lengths(per_item)
    ids = np.empty(int(offsets[-1]), dtype=np.int32)
    types = np.empty(len(ids), dtype=np.int8)
    before = np.cumsum(seg_len, axis=1) - seg_len  # tokens of earlier attributes, per item
    for a in range(len(keys)):
        lengths = seg_len[:, a]
        rows = np.repeat(np.arange(n), lengths)
        within = np.arange(len(rows)) - np.repeat(offsets_from_lengths(lengths)[:-1], lengths)
        target = offsets[items[rows]] + before[rows, a] + within
        ids[target], types[target] = segments_ids[a], segments_types[a]
    return ItemTokens(ids, types, offsets)


def save_text_meta(folder: str | Path, keys: list[str], budgets) -> None:
    (Path(folder) / "item_text.json").write_text(json.dumps({"keys": keys, "budgets": budgets}, indent=2))
