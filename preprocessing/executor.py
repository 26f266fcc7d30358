"""Merlin's local executor without its frame copies, for in-memory pandas frames.

The stock `LocalExecutor` selects columns with `df[names]` and joins upstream outputs with
`reset_index` + `pd.concat`: each is a copy of every column passing through (on a 10M-row log
the copies cost about as much as the grouping itself). Here selections and joins build frames
from the columns' own arrays (`copy=False`, no block consolidation), so a column is copied only
when an operator computes a new one. Same graph, same operators, same outputs: rows are aligned
by position as `concat_columns` does. cuDF frames and tensor tables keep the stock code.
"""
from __future__ import annotations

import pandas as pd
from merlin.dag.executors import LocalExecutor
from merlin.dag.ops.concat_columns import ConcatColumns
from merlin.dag.ops.selection import SelectionOp


def _array(series: pd.Series):
    """The column's own storage: a numpy view, or the extension array (Arrow lists, ...)."""
    if pd.api.types.is_extension_array_dtype(series.dtype):
        return series.array
    return series.to_numpy(copy=False)


def select(frame: pd.DataFrame, names, index=None) -> pd.DataFrame:
    """frame[names] without copying the columns."""
    return pd.DataFrame({n: _array(frame[n]) for n in names},
                        index=frame.index if index is None else index, copy=False)


def join(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The columns of equally long frames side by side, by position (later frames win a name),
    with a fresh RangeIndex, as merlin's concat_columns; nothing is copied."""
    columns = {}
    for frame in frames:
        columns.update({n: _array(frame[n]) for n in frame.columns})
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frames[0])), copy=False)


def _pandas(*data) -> bool:
    return all(isinstance(d, pd.DataFrame) for d in data)


class LeanExecutor(LocalExecutor):
    """`LocalExecutor` whose column selections and joins share the columns' memory."""

    def _append_addl_root_columns(self, node, transformable, upstream_outputs):
        if not _pandas(transformable):
            return super()._append_addl_root_columns(node, transformable, upstream_outputs)
        wanted = set(node.input_schema.column_names) | set(node.dependency_columns.names)
        present = {c for out in upstream_outputs for c in wanted if c in out}
        root = [c for c in transformable.columns if c in wanted - present]  # input order
        if root:
            upstream_outputs.append(select(transformable, root))
        return upstream_outputs

    def _merge_upstream_columns(self, upstream_outputs, merge_fn=None):
        if not _pandas(*upstream_outputs) or len({len(o) for o in upstream_outputs}) > 1:
            return super()._merge_upstream_columns(upstream_outputs)
        if len(upstream_outputs) == 1:
            return upstream_outputs[0]
        return join(upstream_outputs)

    def _run_node_transform(self, node, input_data, capture_dtypes=False, strict=False):
        # selection and `+` nodes only pick columns: a view instead of df[names]
        if isinstance(node.op, (SelectionOp, ConcatColumns)) and _pandas(input_data):
            selection = node.input_columns.resolve(node.input_schema)
            if isinstance(node.op, SelectionOp):
                selection = selection or node.op.selector
            output = select(input_data, selection.names)
            if capture_dtypes:
                self._capture_dtypes(node, output)
            return output
        return super()._run_node_transform(node, input_data, capture_dtypes, strict)

    def _combine_node_outputs(self, node, transformed, output):
        if not _pandas(transformed) or (output is not None and not _pandas(output)):
            return super()._combine_node_outputs(node, transformed, output)
        names = list(dict.fromkeys(node.output_schema.column_names))
        selected = select(transformed, names)
        return selected if output is None else join([output, selected])
