"""Numpy plumbing: validate a request's rows, join requests into a batch, split outputs back.

No per-row Python loops: one slice per request and one concatenate per input.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from .config import BatchConfig
from .errors import BatchOutputError, InvalidRequest

Tensors = dict[str, np.ndarray]


class TimedOutputs(dict[str, np.ndarray]):
    """A batch's outputs with the seconds the model took on its worker, as a pool measured them.

    A ``run_batch`` that returns these lets the cost model learn the model's own time: the
    batcher's view (dispatch to outputs back) also holds the hop to the worker and any
    event-loop lag, which no batch size explains (on a core saturated by HTTP a batch of
    one row looks like milliseconds). The batcher keeps that remainder apart, as overhead.
    """

    __slots__ = ("seconds",)

    def __init__(self, outputs: Mapping[str, np.ndarray], seconds: float) -> None:
        super().__init__(outputs)
        self.seconds = seconds


def count_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows of a request: axis 0 of every input, which must agree."""
    if len(inputs) == 1:  # the common case, without the comparison below
        (arr,) = inputs.values()
        if arr.ndim and arr.shape[0]:
            return int(arr.shape[0])
    if not inputs:
        raise InvalidRequest("a request needs at least one input tensor")
    rows = {name: (arr.shape[0] if arr.ndim else None) for name, arr in inputs.items()}
    if None in rows.values():
        scalar = [n for n, r in rows.items() if r is None]
        raise InvalidRequest(f"input {scalar[0]!r} is a scalar; batched inputs need a row axis")
    distinct = set(rows.values())
    if len(distinct) != 1:
        raise InvalidRequest(f"inputs disagree on the number of rows: {rows}")
    n = distinct.pop()
    if n == 0:
        raise InvalidRequest("the request has zero rows")
    return int(n)  # type: ignore[arg-type]


def shape_key(inputs: Mapping[str, np.ndarray], config: BatchConfig) -> Hashable:
    """Requests with equal keys may share a batch; padded inputs only need equal rank."""
    if len(inputs) == 1:  # the common case, inline: a generator or a helper call costs ~1 % of a request
        ((name, arr),) = inputs.items()
        return ((name, arr.dtype, arr.ndim if name in config.pad_inputs else arr.shape[1:]),)
    return tuple(
        (name, arr.dtype, arr.ndim if name in config.pad_inputs else arr.shape[1:])
        for name, arr in sorted(inputs.items())
    )


def _pad_to(arr: np.ndarray, dims: Sequence[int], value: object) -> np.ndarray:
    widths = [(0, 0)] + [(0, target - have) for have, target in zip(arr.shape[1:], dims)]
    if all(w == (0, 0) for w in widths):
        return arr
    return np.pad(arr, widths, mode="constant", constant_values=value)  # type: ignore[call-overload]


def join(parts: Sequence[Mapping[str, np.ndarray]], padded_rows: int, config: BatchConfig) -> Tensors:
    """Concatenate request slices on axis 0, pad ragged inputs, then pad rows up to padded_rows."""
    batch: Tensors = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if name in config.pad_inputs:
            dims = np.max([a.shape[1:] for a in arrays], axis=0)
            arrays = [_pad_to(a, dims, config.pad_inputs[name]) for a in arrays]
        joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        extra = padded_rows - joined.shape[0]
        if extra > 0:
            joined = np.concatenate([joined, np.repeat(joined[:1], extra, axis=0)], axis=0)
        batch[name] = joined
    return batch


def check_outputs(outputs: object, padded_rows: int) -> Mapping[str, np.ndarray]:
    """run_batch must return a mapping of arrays with one row per batch row."""
    if not isinstance(outputs, Mapping) or not outputs:
        raise BatchOutputError(f"run_batch must return a non-empty dict of arrays, got {type(outputs).__name__}")
    for name, arr in outputs.items():
        rows = getattr(arr, "shape", (None,))[:1]
        if rows != (padded_rows,):
            raise BatchOutputError(
                f"output {name!r} has {rows[0] if rows else 'no'} rows, the batch had {padded_rows}"
            )
    return outputs


def slice_outputs(
    outputs: Mapping[str, np.ndarray],
    start: int,
    rows: int,
    request_inputs: Mapping[str, np.ndarray],
    config: BatchConfig,
) -> Tensors:
    """One request's rows of the batch outputs, ragged outputs cut back to the request's lengths."""
    if not config.ragged_outputs:
        return {name: arr[start : start + rows] for name, arr in outputs.items()}
    result: Tensors = {}
    for name, arr in outputs.items():
        part = arr[start : start + rows]
        ragged = config.ragged_outputs.get(name)
        if ragged is not None:
            length = request_inputs[ragged.source_input].shape[ragged.input_axis]
            index = [slice(None)] * part.ndim
            index[ragged.output_axis] = slice(0, length)
            part = part[tuple(index)]
        result[name] = part
    return result


def concat_parts(parts: Sequence[Tensors]) -> Tensors:
    """Reassemble a split request's outputs in row order."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
