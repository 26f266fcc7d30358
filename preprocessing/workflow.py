"""The NVTabular workflow: encode item ids, group rows into time-sorted sequences.

The same saved workflow runs at training time (whole dataset) and at serving time (one raw request
per sequence), so the model always sees ids encoded exactly as in training.
"""
from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", message=".*Tensorflow dtype mappings.*")
warnings.filterwarnings("ignore", message=".*CPU mode is experimental.*")

import nvtabular as nvt  # noqa: E402
from merlin.io import Dataset  # noqa: E402
from nvtabular import ops  # noqa: E402

from merlin.dag import Graph  # noqa: E402
from merlin.dag.executors import clear_stats  # noqa: E402
from merlin.dag.ops.stat_operator import StatOperator  # noqa: E402
from merlin.schema import Tags  # noqa: E402

from .arrays import (FIRST_ITEM_ID, ITEM_COL, ITEM_LIST, KEY_COL, NULL_ID, OOV_ID, PAD_ID,  # noqa: E402,F401
                     TIME_COL, encode_sorted, sorted_vocabulary)
from .ops import DropConsecutiveRepeats, GroupSequences, ItemAge, TimeFeatures  # noqa: E402
from .encoding import SortedCategorify  # noqa: E402
from .executor import LeanExecutor  # noqa: E402

# rows transformed once after the fit to learn output dtypes (their values do not matter)
DTYPE_SAMPLE_ROWS = 100_000


def build_workflow(
    categories_dir: Path,
    max_len: int | None,
    min_len: int = 1,
    *,
    key: str = KEY_COL,
    freq_threshold: int = 0,
    remove_repeats: bool = False,
    max_session_len: int | None = None,
    categorical: tuple[str, ...] = (),
    continuous: tuple[str, ...] = (),
    log_continuous: tuple[str, ...] = (),
    time_features: bool = False,
    item_age: bool = False,
) -> nvt.Workflow:
    """Categorify items (and categorical side columns), normalise continuous side columns (log
    first for heavy-tailed ones such as price), then group into per-key sequences.

    Items seen fewer than `freq_threshold` times map to the OOV id, like unseen ones.
    """
    out_path = str(categories_dir)
    items = [ITEM_COL] >> SortedCategorify(out_path=out_path, freq_threshold=freq_threshold) >> ops.TagAsItemID()
    features = items + [key, TIME_COL]
    if categorical:
        features += list(categorical) >> SortedCategorify(out_path=out_path, freq_threshold=freq_threshold)
    plain = [c for c in continuous if c not in log_continuous]
    if plain:
        features += plain >> ops.FillMissing() >> ops.Normalize() >> ops.AddTags([Tags.CONTINUOUS])
    if log_continuous:
        features += (
            list(log_continuous) >> ops.FillMissing() >> ops.Clip(min_value=0) >> ops.LogOp()
            >> ops.Normalize() >> ops.AddTags([Tags.CONTINUOUS])
        )
    if time_features:  # before repeat removal: the gap is to the previous raw interaction
        features += [key, TIME_COL] >> TimeFeatures(key, TIME_COL)
    if item_age:  # raw ids: an item's age does not depend on its Categorify code
        features += [ITEM_COL, TIME_COL] >> ItemAge(ITEM_COL, TIME_COL)
    if remove_repeats:
        features = features >> DropConsecutiveRepeats(key, TIME_COL, ITEM_COL)
    grouped = features >> GroupSequences(
        key, TIME_COL, max_len=max_len, min_len=min_len, max_session_len=max_session_len
    )
    return nvt.Workflow(grouped)


def sequence_key(workflow: nvt.Workflow) -> str:
    """The column the saved workflow groups by (user_id, session_id, ...)."""
    return next(n.op for n in _nodes(workflow.output_node) if isinstance(n.op, GroupSequences)).key


def as_dataset(frame: pd.DataFrame, npartitions: int = 1) -> Dataset:
    return Dataset(frame, cpu=True, npartitions=npartitions)


def fit_workflow(workflow: nvt.Workflow, frame: pd.DataFrame) -> nvt.Workflow:
    """Fit on an in-memory frame, the stock fit's steps without Dask: the statistics phase by
    phase (an operator's inputs computed by the graph above it), each operator's `fit_frame`
    where it has one, else its own fit on one Dask partition; then, as the stock fit does on its
    first partition, one transform of the first rows to learn the output dtypes."""
    graph = workflow.graph
    if not isinstance(frame, pd.DataFrame) or any(
            n.op.is_subgraph for n in Graph.get_nodes_by_op_type([graph.output_node], StatOperator)):
        workflow.fit(Dataset(frame, cpu=isinstance(frame, pd.DataFrame)))  # cuDF, subgraphs: stock
        return workflow
    clear_stats(graph)
    schema = as_dataset(frame.iloc[:DTYPE_SAMPLE_ROWS]).schema  # dtypes only: a small sample
    if not graph.output_schema:
        graph.construct_schema(schema)
    pending = {node: Graph.get_nodes_by_op_type(node.parents_with_dependencies, StatOperator)
               for node in Graph.get_nodes_by_op_type([graph.output_node], StatOperator)}
    while pending:
        phase = [node for node, needs in pending.items() if not needs]
        for node in phase:
            _fit_node(node, frame)
            del pending[node]
        for needs in pending.values():
            needs.difference_update(phase)
    LeanExecutor().transform(frame.iloc[:DTYPE_SAMPLE_ROWS], graph.output_node, capture_dtypes=True)
    graph.construct_schema(schema, preserve_dtypes=True)
    return workflow


def _fit_node(node, frame: pd.DataFrame) -> None:
    produced = {c for parent in node.parents_with_dependencies for c in parent.output_columns.names}
    extra = [c for c in node.input_columns.names if c not in produced]
    data = LeanExecutor().transform(frame, node.parents_with_dependencies,
                                    additional_columns=extra or None, capture_dtypes=True)
    if data is None:  # a statistic straight on input columns, no node above it
        data = frame[extra]
    fit_frame = getattr(node.op, "fit_frame", None)
    stats = fit_frame(node.input_columns, data) if fit_frame else None
    if stats is None:  # named: dask would otherwise hash every value of the frame for a name
        ddf = dd.from_pandas(data, npartitions=1, sort=False, name=f"fit-{uuid.uuid4().hex}")
        stats = dask.compute(node.op.fit(node.input_columns, ddf), scheduler="synchronous")[0]
    node.op.fit_finalize(stats)
    node.op.fitted = True


def transform_frame(workflow: nvt.Workflow, frame: pd.DataFrame) -> pd.DataFrame:
    """Apply a fitted workflow to an in-memory frame of raw rows: merlin's local executor on the
    frame itself (a Dask collection of one partition would only add graph building and hashing),
    without its copies of the frame between operators (LeanExecutor)."""
    if not workflow.graph.output_schema:
        raise ValueError("the workflow is not fitted: no output schema")
    return LeanExecutor().transform(frame, workflow.output_node, workflow.output_dtypes)


def load_workflow(path: str | Path) -> nvt.Workflow:
    return nvt.Workflow.load(str(path))


def item_vocabulary(workflow: nvt.Workflow) -> np.ndarray:
    """encoded id -> original item id (int64); the reserved ids map to -1."""
    categorify = next(
        node.op
        for node in _nodes(workflow.output_node)
        if isinstance(node.op, ops.Categorify) and ITEM_COL in node.op.categories
    )
    uniques = pd.read_parquet(categorify.categories[ITEM_COL])[ITEM_COL]
    # The unique file's index is the encoded id; reserved ids have no row.
    vocab = np.full(int(uniques.index.max()) + 1, -1, dtype=np.int64)
    vocab[uniques.index.to_numpy()] = uniques.to_numpy(dtype=np.int64)
    return vocab


def encode_items(vocabulary: np.ndarray, original_ids: np.ndarray) -> np.ndarray:
    """Original ids -> encoded ids via the vocabulary (unknown -> OOV), for checks and tools."""
    keys, codes = sorted_vocabulary(vocabulary)
    return encode_sorted(keys, codes, np.asarray(original_ids, dtype=np.int64)).astype(np.int64)


def _nodes(node):
    seen, stack = [], [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.append(current)
        stack.extend(current.parents_with_dependencies)
    return seen


def encode_sessions(workflow: nvt.Workflow, sessions: list[np.ndarray]) -> list[np.ndarray]:
    """Raw sessions (original item ids, oldest first) -> encoded id arrays, through the saved
    workflow exactly as in training (same Categorify, same ordering and truncation).

    Unknown ids encode to OOV and are dropped: they carry no signal the model learned. The i-th
    output belongs to the i-th input; an empty input (or one with only unknown ids) gives an
    empty array, which callers report as an error.
    """
    lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
    if lengths.sum() == 0:
        return [np.zeros(0, dtype=np.int64) for _ in sessions]
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions])
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    key = sequence_key(workflow)
    frame = pd.DataFrame(
        {
            key: np.repeat(np.arange(len(sessions)), lengths),
            ITEM_COL: flat,
            TIME_COL: np.arange(len(flat)) - starts,  # request order is time order
        }
    )
    grouped = transform_frame(workflow, frame)
    out = [np.zeros(0, dtype=np.int64) for _ in sessions]
    for index, items in zip(grouped[key].to_numpy(), grouped[ITEM_LIST]):
        items = np.asarray(items, dtype=np.int64)
        out[int(index)] = items[items >= FIRST_ITEM_ID]
    return out
