"""The reference output encoder: tfx-bsl's C++ Arrow → tf.Example encoder.

bert-beam writes tf.Examples itself (``pipeline.outputs.encoding``); this builds the same records
the independent way, as one Arrow RecordBatch serialized by tfx-bsl's
``RecordBatchToExamplesEncoder``, for tests and ``benchmarks/encode_outputs.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.outputs.encoding import sequence_numpy_dtype
from transforms.records import Embedding


def _list_column(values: np.ndarray, lengths: Sequence[int]) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def _scalar_column(values: Sequence[int]) -> pa.Array:
    return _list_column(np.asarray(values, dtype=np.int64), [1] * len(values))


def embeddings_to_record_batch(
    embeddings: Sequence[Embedding], outputs: Sequence[str], sequence_dtype: str = schema.FLOAT32
) -> pa.RecordBatch:
    """One Arrow row per embedding, one list column per output feature."""
    features = [e.features for e in embeddings]
    lengths = [f.sequence_length for f in features]
    hidden = [int(e.sequence_output.shape[-1]) for e in embeddings]
    ids = pa.LargeListArray.from_arrays(
        pa.array(np.arange(len(features) + 1, dtype=np.int64)),
        pa.array([f.id.encode("utf-8") for f in features], type=pa.large_binary()),
    )
    columns = {
        schema.ID: ids,
        schema.WINDOW: _scalar_column([f.window for f in features]),
        schema.TOKEN_OFFSET: _scalar_column([f.token_offset for f in features]),
        schema.SEQUENCE_LENGTH: _scalar_column(lengths),
        schema.INPUT_IDS: _list_column(
            np.concatenate([f.input_ids for f in features]).astype(np.int64), lengths),
        schema.SEGMENT_IDS: _list_column(
            np.concatenate([f.segment_ids for f in features]).astype(np.int64), lengths),
        schema.HIDDEN_SIZE: _scalar_column(hidden),
    }
    if schema.POOLED in outputs:
        pooled = np.stack([e.pooled_output for e in embeddings]).astype(np.float32, copy=False)
        columns[schema.POOLED_OUTPUT] = _list_column(pooled.reshape(-1), hidden)
    if schema.MEAN in outputs:
        mean = np.stack([e.mean_output for e in embeddings]).astype(np.float32, copy=False)
        columns[schema.MEAN_OUTPUT] = _list_column(mean.reshape(-1), hidden)
    if schema.SEQUENCE in outputs and sequence_dtype == schema.FLOAT32:
        sequence = np.concatenate([e.sequence_output.reshape(-1) for e in embeddings])
        columns[schema.SEQUENCE_OUTPUT] = _list_column(
            sequence.astype(np.float32, copy=False), [t * h for t, h in zip(lengths, hidden, strict=True)])
    elif schema.SEQUENCE in outputs:
        dtype = sequence_numpy_dtype(sequence_dtype)
        raw = [e.sequence_output.astype(dtype).tobytes() for e in embeddings]
        columns[schema.SEQUENCE_OUTPUT] = pa.LargeListArray.from_arrays(
            pa.array(np.arange(len(raw) + 1, dtype=np.int64)), pa.array(raw, type=pa.large_binary()))
    return pa.RecordBatch.from_arrays(list(columns.values()), list(columns))




def encode_with_tfx_bsl(
    embeddings: Sequence[Embedding], outputs: Sequence[str], sequence_dtype: str = schema.FLOAT32
) -> list[bytes]:
    """Serialized tf.Examples of the embeddings, by tfx-bsl."""
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    return RecordBatchToExamplesEncoder().encode(
        embeddings_to_record_batch(embeddings, outputs, sequence_dtype))
