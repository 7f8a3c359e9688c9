"""Embeddings → serialized ``tf.train.Example`` records, a batch at a time.

``ExampleEncoder`` writes the protobuf wire format straight from the numpy outputs (no
per-float Python work); tests compare its records with tfx-bsl's C++ Arrow encoder
(``tests/reference_encoding.py``). What it writes, in which order, is ``pipeline.schema``'s
table of features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from pipeline import schema
from pipeline.outputs import example_wire as wire
from transforms.records import Embedding

__all__ = ["ExampleEncoder", "feature_value", "sequence_numpy_dtype"]


def sequence_numpy_dtype(sequence_dtype: str) -> np.dtype:
    """The little-endian numpy dtype of a ``--sequence_dtype``."""
    import ml_dtypes

    return {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"),
            "bfloat16": np.dtype(ml_dtypes.bfloat16)}[sequence_dtype]


def feature_value(feature: schema.OutputFeature) -> Callable[[Embedding], object]:
    """Reads a feature's value from an embedding: its attribute, or its ``Features``' one."""
    return attrgetter(f"features.{feature.key}" if feature.from_features else feature.key)


def _raw_feature(dtype: np.dtype) -> Callable[[np.ndarray], wire.Chunks]:
    def write(values: np.ndarray) -> wire.Chunks:
        raw = np.ascontiguousarray(values.astype(dtype, copy=False))
        return wire.bytes_feature([raw.reshape(-1).view(np.uint8)])

    return write


def _text_feature(text: str) -> wire.Chunks:
    return wire.bytes_feature([text.encode("utf-8")])


def _writer(feature: schema.OutputFeature) -> Callable[[object], wire.Chunks]:
    """The wire writer of one record's value of ``feature`` (a per-token one's varints)."""
    if feature.raw_dtype is not None:
        return _raw_feature(sequence_numpy_dtype(feature.raw_dtype))
    if feature.dtype == schema.BYTES:
        return _text_feature
    if feature.dtype == schema.INT64:
        return wire.int64_scalar_feature if feature.shape == schema.ONE else wire.int64_feature
    return wire.float_feature


class _Field(NamedTuple):
    """How the encoder writes one feature: a per-token one is sliced from the batch's varints."""

    key: str
    per_token: bool
    value: Callable[[Embedding], object]
    write: Callable[[object], wire.Chunks]


class ExampleEncoder:
    """Serializes batches of embeddings as tf.Example bytes, in protobuf wire format written
    straight from the numpy outputs (``pipeline.outputs.example_wire``)."""

    def __init__(self, outputs: Sequence[str], sequence_dtype: str = schema.FLOAT32,
                 whitening_dims: int = 0) -> None:
        self._fields = tuple(
            _Field(feature.key, feature.shape == schema.PER_TOKEN, feature_value(feature), _writer(feature))
            for feature in schema.written_features(outputs, sequence_dtype, whitening_dims))

    def encode(self, embeddings: Sequence[Embedding]) -> list[bytes]:
        """Each embedding's serialized Example."""
        return [bytes(parts) for parts in self.encode_parts(embeddings)]

    def encode_parts(self, embeddings: Sequence[Embedding]) -> list[wire.SerializedParts]:
        """Each embedding's serialized Example as pieces that view the outputs' buffers, for the shard
        sink to write without joining them."""
        if not embeddings:
            return []
        lengths = [e.features.sequence_length for e in embeddings]
        ends = np.cumsum(lengths)
        # Per-token int64 features are varint-encoded a batch at a time, then sliced per record.
        varints = {key: wire.Int64Varints(np.concatenate([value(e) for e in embeddings]))
                   for key, per_token, value, _ in self._fields if per_token}
        records = []
        for embedding, length, end in zip(embeddings, lengths, ends.tolist(), strict=True):
            records.append(wire.example_parts([
                (key, write(varints[key].span(end - length, end) if per_token else value(embedding)))
                for key, per_token, value, write in self._fields
            ]))
        return records
