"""Reads bert-beam output back: numpy records, or a tf.data pipeline with a parse spec.

Everything derives from the schema written beside the shards
(``PREFIX.schema.pbtxt``): which outputs the run wrote and the hidden size.

    from pipeline.reader import read_embeddings
    for record in read_embeddings("out/emb"):
        record.id, record.pooled_output.shape, record.sequence_output.shape  # [H], [T, H]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline import schema

SHARD_PATTERN = "-?????-of-?????" + schema.SHARD_SUFFIX


@dataclass(frozen=True)
class OutputLayout:
    """What a run wrote: its output kinds and the width of its vectors."""

    outputs: tuple[str, ...]
    hidden_size: int
    sequence_dtype: str = schema.FLOAT32


@dataclass(frozen=True)
class EmbeddingRecord:
    """One output record as numpy arrays, a field per ``schema.FEATURES`` key; sequence_output is
    [sequence_length, hidden_size]."""

    id: str
    window: int
    token_offset: int
    sequence_length: int
    input_ids: np.ndarray
    segment_ids: np.ndarray
    hidden_size: int
    pooled_output: np.ndarray | None
    mean_output: np.ndarray | None
    sequence_output: np.ndarray | None


def load_layout(prefix: str) -> OutputLayout:
    """Reads ``PREFIX.schema.pbtxt`` and says which outputs it declares and their width."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with tf.io.gfile.GFile(prefix + schema.SCHEMA_SUFFIX, "r") as handle:
        parsed = text_format.Parse(handle.read(), schema_pb2.Schema())
    names = {feature.name: feature for feature in parsed.feature}
    outputs = tuple(kind for kind, key in schema.OUTPUT_FEATURES.items() if key in names)
    sequence_dtype = schema.FLOAT32
    if schema.SEQUENCE_OUTPUT in names:
        for tag in names[schema.SEQUENCE_OUTPUT].annotation.tag:
            if tag.startswith(schema.DTYPE_TAG):
                sequence_dtype = tag.removeprefix(schema.DTYPE_TAG)
    return OutputLayout(outputs, int(names[schema.HIDDEN_SIZE].int_domain.max), sequence_dtype)


def feature_spec(outputs: tuple[str, ...], hidden_size: int, sequence_dtype: str = schema.FLOAT32) -> dict:
    """The ``tf.io.parse_example`` spec of the records a run with ``outputs`` writes.

    With a 16-bit ``sequence_dtype``, ``sequence_output`` parses as raw bytes; decode it
    with ``tf.io.decode_raw`` (``make_dataset`` does).
    """
    import tensorflow as tf

    types = {schema.BYTES: tf.string, schema.INT64: tf.int64, schema.FLOAT32: tf.float32}
    spec = {}
    for feature in schema.written_features(outputs, sequence_dtype):
        dtype = types[feature.dtype]
        if feature.single_value:
            spec[feature.key] = tf.io.FixedLenFeature([], dtype)
        elif feature.shape == schema.HIDDEN:
            spec[feature.key] = tf.io.FixedLenFeature([hidden_size], dtype)
        else:
            spec[feature.key] = tf.io.RaggedFeature(dtype)
    return spec


def shard_files(prefix: str) -> list[str]:
    """The output shards of ``prefix``, compressed or not, sorted."""
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(prefix + SHARD_PATTERN) + tf.io.gfile.glob(prefix + SHARD_PATTERN + ".gz"))


def make_dataset(prefix: str, layout: OutputLayout | None = None):
    """A tf.data.Dataset of parsed records; ``sequence_output`` reshaped to [T, H]."""
    import tensorflow as tf

    layout = layout or load_layout(prefix)
    files = shard_files(prefix)
    if not files:
        raise FileNotFoundError(f"No shards match {prefix}{SHARD_PATTERN}[.gz].")
    spec = feature_spec(layout.outputs, layout.hidden_size, layout.sequence_dtype)
    matrices = [feature for feature in schema.written_features(layout.outputs, layout.sequence_dtype)
                if feature.shape == schema.PER_TOKEN_HIDDEN]
    compressions = {"GZIP" if name.endswith(".gz") else "" for name in files}
    if len(compressions) > 1:
        raise ValueError(f"{prefix} mixes compressed and uncompressed shards.")
    dataset = tf.data.TFRecordDataset(files, compression_type=compressions.pop())

    def parse(serialized):
        record = tf.io.parse_single_example(serialized, spec)
        for feature in matrices:
            values = record[feature.key]
            if feature.raw_dtype is not None:
                values = tf.cast(tf.io.decode_raw(values, tf.as_dtype(feature.raw_dtype), little_endian=True),
                                 tf.float32)
            record[feature.key] = tf.reshape(values, [-1, record[schema.HIDDEN_SIZE]])
        return record

    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_embeddings(prefix: str) -> Iterator[EmbeddingRecord]:
    """Every record under ``prefix`` as numpy, shard by shard."""
    layout = load_layout(prefix)
    for record in make_dataset(prefix, layout).as_numpy_iterator():
        yield EmbeddingRecord(**{feature.key: _numpy_value(feature, record.get(feature.key))
                                 for feature in schema.FEATURES})


def _numpy_value(feature: schema.OutputFeature, value):
    """A parsed value as ``EmbeddingRecord`` holds it: a one-value feature as str or int."""
    if value is None or not feature.single_value:
        return value
    return value.decode("utf-8") if feature.dtype == schema.BYTES else int(value)
