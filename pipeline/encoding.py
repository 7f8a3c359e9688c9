"""Embeddings → serialized ``tf.train.Example`` records, a batch at a time.

``ExampleEncoder`` writes the protobuf wire format straight from the numpy outputs (no
per-float Python work); tests compare its records with tfx-bsl's C++ Arrow encoder
(``tests/reference_encoding.py``). The feature keys come from ``pipeline.schema``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline import example_wire as wire
from pipeline import schema
from transforms.records import Embedding


def sequence_numpy_dtype(sequence_dtype: str) -> np.dtype:
    """The little-endian numpy dtype of a ``--sequence_dtype``."""
    import ml_dtypes

    return {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"),
            "bfloat16": np.dtype(ml_dtypes.bfloat16)}[sequence_dtype]


class ExampleEncoder:
    """Serializes batches of embeddings as tf.Example bytes, in protobuf wire format written
    straight from the numpy outputs (``pipeline.example_wire``)."""

    def __init__(self, outputs: Sequence[str], sequence_dtype: str = schema.FLOAT32) -> None:
        self._outputs = tuple(outputs)
        self._half = None if sequence_dtype == schema.FLOAT32 else sequence_numpy_dtype(sequence_dtype)

    def encode(self, embeddings: Sequence[Embedding]) -> list[bytes]:
        if not embeddings:
            return []
        features = [e.features for e in embeddings]
        ends = np.cumsum([f.sequence_length for f in features])
        input_ids = wire.Int64Varints(np.concatenate([f.input_ids for f in features]))
        segment_ids = wire.Int64Varints(np.concatenate([f.segment_ids for f in features]))
        records = []
        for index, (embedding, feature) in enumerate(zip(embeddings, features, strict=True)):
            start, stop = int(ends[index]) - feature.sequence_length, int(ends[index])
            fields = [
                (schema.ID, wire.bytes_feature([feature.id.encode("utf-8")])),
                (schema.WINDOW, wire.int64_scalar_feature(feature.window)),
                (schema.TOKEN_OFFSET, wire.int64_scalar_feature(feature.token_offset)),
                (schema.SEQUENCE_LENGTH, wire.int64_scalar_feature(feature.sequence_length)),
                (schema.INPUT_IDS, wire.int64_feature(input_ids.span(start, stop))),
                (schema.SEGMENT_IDS, wire.int64_feature(segment_ids.span(start, stop))),
                (schema.HIDDEN_SIZE, wire.int64_scalar_feature(embedding.hidden_size)),
            ]
            if schema.POOLED in self._outputs:
                fields.append((schema.POOLED_OUTPUT, wire.float_feature(embedding.pooled_output)))
            if schema.MEAN in self._outputs:
                fields.append((schema.MEAN_OUTPUT, wire.float_feature(embedding.mean_output)))
            if schema.SEQUENCE in self._outputs:
                fields.append((schema.SEQUENCE_OUTPUT, self._sequence_feature(embedding.sequence_output)))
            records.append(wire.example(fields))
        return records

    def _sequence_feature(self, sequence_output: np.ndarray) -> wire.Chunks:
        if self._half is None:
            return wire.float_feature(sequence_output)
        raw = np.ascontiguousarray(sequence_output.astype(self._half, copy=False))
        return wire.bytes_feature([memoryview(raw.reshape(-1).view(np.uint8))])
