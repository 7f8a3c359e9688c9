"""Embeddings → Arrow record batches with the output's features as columns, and their Parquet layout.

Every column derives from ``pipeline.schema``'s table of features, as the tf.Example writer does:
one row per record; a one-value feature is a scalar column (``id`` a string, the rest int64), a
per-token or per-hidden one a list of int64 or float32 (``sequence_output`` flat, row-major
[T, H]), and a 16-bit ``sequence_output`` one binary value of the raw little-endian numbers, the
TFRecord feature's bytes. A batch's values are gathered with one numpy concatenation per column and
become Arrow arrays without per-value Python work. Plain (not fixed-size) lists: what BigQuery's
list inference and DuckDB read as arrays. No column holds nulls, so all are declared non-nullable
(BigQuery: REQUIRED).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.outputs.encoding import feature_value, sequence_numpy_dtype
from transforms.records import Embedding

__all__ = ["LAYOUT_KEY", "ArrowEncoder", "arrow_schema", "layout", "read_layout", "writer_options"]

# The key of the Parquet file's key-value metadata that holds the layout, as JSON.
LAYOUT_KEY = "bert_beam.layout"
_ELEMENT = "element"  # the list item's name in Parquet's standard LIST layout
_VALUE_TYPES = {schema.INT64: (pa.int64(), np.dtype("<i8")), schema.FLOAT32: (pa.float32(), np.dtype("<f4"))}


def _column_type(feature: schema.OutputFeature) -> pa.DataType:
    if feature.raw_dtype is not None:
        return pa.binary()
    if feature.dtype == schema.BYTES:
        return pa.string()
    value_type = _VALUE_TYPES[feature.dtype][0]
    return value_type if feature.single_value else pa.list_(pa.field(_ELEMENT, value_type, nullable=False))


def _offsets(arrays: Sequence[np.ndarray], scale: int = 1) -> pa.Array:
    """Arrow's int32 offsets of consecutive arrays (times ``scale`` bytes); raises rather than wraps
    past 2³¹ (a batch of 64 records of 512 tokens stays below it up to a hidden size of 65536)."""
    ends = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([array.size for array in arrays], out=ends[1:])
    return pa.array(ends * scale, pa.int32())


def _flat(arrays: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The arrays' values one after the other, as ``dtype``: one pass, cast (as ``astype``) as copied."""
    if not arrays:
        return np.empty(0, dtype)
    return np.concatenate([array.reshape(-1) for array in arrays], dtype=dtype, casting="unsafe")


def _builder(feature: schema.OutputFeature, column_type: pa.DataType) -> Callable[[list], pa.Array]:
    """How a batch's values of ``feature`` (one per record) become its column."""
    if feature.raw_dtype is not None:
        raw_dtype = sequence_numpy_dtype(feature.raw_dtype)

        def raw(arrays: list[np.ndarray]) -> pa.Array:
            offsets = _offsets(arrays, raw_dtype.itemsize).buffers()[1]
            data = pa.py_buffer(_flat(arrays, raw_dtype))
            return pa.BinaryArray.from_buffers(column_type, len(arrays), [None, offsets, data])

        return raw
    if feature.dtype == schema.BYTES:
        return lambda texts: pa.array(texts, column_type)
    numpy_dtype = _VALUE_TYPES[feature.dtype][1]
    if feature.single_value:
        return lambda values: pa.array(np.array(values, dtype=numpy_dtype), column_type)
    return lambda arrays: pa.ListArray.from_arrays(_offsets(arrays), pa.array(_flat(arrays, numpy_dtype)),
                                                   type=column_type)


class _Column(NamedTuple):
    value: Callable[[Embedding], object]
    build: Callable[[list], pa.Array]


class ArrowEncoder:
    """Batches of embeddings → Arrow record batches, a row per embedding, a column per written feature."""

    def __init__(self, outputs: Sequence[str], sequence_dtype: str = schema.FLOAT32,
                 whitening_dims: int = 0) -> None:
        fields, columns = [], []
        for feature in schema.written_features(outputs, sequence_dtype, whitening_dims):
            column_type = _column_type(feature)
            fields.append(pa.field(feature.key, column_type, nullable=False))
            columns.append(_Column(feature_value(feature), _builder(feature, column_type)))
        self.schema = pa.schema(fields)
        self._columns = tuple(columns)

    def encode(self, embeddings: Sequence[Embedding]) -> pa.RecordBatch:
        """The batch's rows, in order."""
        arrays = [column.build([column.value(e) for e in embeddings]) for column in self._columns]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def layout(outputs: Sequence[str], hidden_size: int, sequence_dtype: str = schema.FLOAT32,
           whitening_dims: int = 0) -> dict:
    """What a Parquet shard's metadata says of its run: outputs, hidden size, sequence dtype, whitening
    dimensions (0: none), and each column's Arrow type, values per record (``schema``'s shape names)
    and description (the schema file's comment); a raw 16-bit column also names its ``raw_dtype``."""
    features = []
    for feature in schema.written_features(outputs, sequence_dtype, whitening_dims):
        entry = {"name": feature.key, "type": str(_column_type(feature)), "values": feature.shape,
                 "description": feature.comment}
        if feature.raw_dtype is not None:
            entry["raw_dtype"] = feature.raw_dtype
        features.append(entry)
    return {"outputs": list(outputs), "hidden_size": hidden_size, "sequence_dtype": sequence_dtype,
            "whitening_dims": whitening_dims, "features": features}


def arrow_schema(outputs: Sequence[str], hidden_size: int, sequence_dtype: str = schema.FLOAT32,
                 whitening_dims: int = 0) -> pa.Schema:
    """The Parquet shards' schema: ``ArrowEncoder``'s columns, the layout in its key-value metadata."""
    return ArrowEncoder(outputs, sequence_dtype, whitening_dims).schema.with_metadata(
        {LAYOUT_KEY: json.dumps(layout(outputs, hidden_size, sequence_dtype, whitening_dims))})


def read_layout(metadata: dict[bytes, bytes] | None) -> dict:
    """The layout from a Parquet file's (or Arrow schema's) key-value metadata."""
    if not metadata or LAYOUT_KEY.encode() not in metadata:
        raise ValueError(f"no {LAYOUT_KEY} in the Parquet file's metadata: not a bert-beam shard")
    return json.loads(metadata[LAYOUT_KEY.encode()])


def writer_options(codec: str, arrow: pa.Schema) -> dict:
    """``pyarrow.parquet.ParquetWriter`` options: ``codec`` on every column, no dictionaries (float
    vectors and ids do not repeat), min/max statistics on the scalar columns only (what a reader
    filters on, e.g. ``window = 0``; on the vectors they cost a pass and serve nothing)."""
    scalars = [field.name for field in arrow if field.type in (pa.string(), pa.int64())]
    return {"compression": codec, "use_dictionary": False, "write_statistics": scalars}
