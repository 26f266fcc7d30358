"""Compile the saved workflow's side-feature steps into a SideLookup (side_lookup.py) for the
columns a model was trained with, and name the ensemble's extra tensors."""
from __future__ import annotations

import numpy as np
import pandas as pd
from nvtabular import ops

from seqrec.client.contract import side_input, side_step_tensors
from seqrec.preprocessing.ops import TIME_FEATURES, ItemAge, TimeFeatures
from seqrec.preprocessing.workflow import _nodes
from seqrec.training.features import SideFeatureConfig

from .side_lookup import SideLookup

def _ops(workflow, kind):
    return [n for n in _nodes(workflow.output_node) if isinstance(n.op, kind)]


def _vocabulary(workflow, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Categorify's raw values (sorted: int64, or text as a numpy str array) and their codes."""
    op = next(n.op for n in _ops(workflow, ops.Categorify) if column in n.op.categories)
    uniques = pd.read_parquet(op.categories[column])[column].dropna()
    if pd.api.types.is_integer_dtype(uniques):
        keys = uniques.to_numpy(np.int64)
    elif pd.api.types.is_bool_dtype(uniques) or pd.api.types.is_float_dtype(uniques):
        raise ValueError(f"categorical side column {column!r} holds {uniques.dtype} values; the "
                         "served ensemble takes raw categorical values as INT64 or text (BYTES)")
    else:  # text (brands, category paths): served as UTF-8 BYTES
        keys = uniques.astype(str).to_numpy().astype(str)
    order = np.argsort(keys, kind="stable")
    return keys[order], uniques.index.to_numpy(np.int64)[order]


def _continuous(workflow, column: str, arrays: dict) -> dict:
    for j, op in enumerate(n.op for n in _ops(workflow, ItemAge)):
        if column == op.output_name:  # the fitted first-seen times travel in the npz
            arrays[f"age{j}_items"], arrays[f"age{j}_first"] = op.items, op.first_seen
            return {"column": column, "source": op.time_col, "kind": "item_age", "index": j}
    time_ops = [n.op for n in _ops(workflow, TimeFeatures)]
    for op in time_ops:
        name = column[len(op.time_col) + 1:]
        if column.startswith(op.time_col + "-") and name in TIME_FEATURES:
            return {"column": column, "source": op.time_col, "kind": "time", "feature": name}
    norm = [n.op for n in _ops(workflow, ops.Normalize) if column in n.op.means]
    if not norm:
        raise ValueError(f"continuous side column {column!r} is neither a time feature nor "
                         "normalised by the workflow: it cannot be computed from a request")
    logs = [n.op for n in _ops(workflow, ops.LogOp) if column in n.output_columns.names]
    return {"column": column, "source": column, "kind": "normalize",
            "mean": float(norm[0].means[column]), "std": float(norm[0].stds[column]),
            "dtype": np.dtype(norm[0].output_dtype or np.float64).name, "log": bool(logs),
            "log_dtype": np.dtype(logs[0].output_dtype or np.float32).name if logs else "float32"}


def build_side_lookup(workflow, side: SideFeatureConfig) -> SideLookup:
    arrays, categorical = {}, []
    for j, column in enumerate(side.categorical):
        arrays[f"cat{j}_keys"], arrays[f"cat{j}_codes"] = _vocabulary(workflow, column)
        categorical.append({"column": column, "source": column})
    continuous = [_continuous(workflow, c, arrays) for c in side.continuous]
    inputs: dict[str, str] = {}
    for j, col in enumerate(categorical):
        inputs[col["source"]] = "BYTES" if arrays[f"cat{j}_keys"].dtype.kind == "U" else "INT64"
    for col in continuous:
        inputs[col["source"]] = "INT64" if col["kind"] in ("time", "item_age") else "FP32"
    spec = {"inputs": sorted(inputs.items()), "categorical": categorical, "continuous": continuous}
    return SideLookup(spec, arrays)


def side_tensors(lookup: SideLookup | None):
    """(raw request inputs, tensors from the preprocessing step to the model step)."""
    if lookup is None:
        return (), ()
    raw = tuple(side_input(name, dtype) for name, dtype in lookup.inputs)
    return raw, side_step_tensors(lookup.n_categorical, lookup.n_continuous)
