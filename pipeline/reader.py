"""Reads bert-beam output back: numpy records, or a tf.data pipeline with a parse spec.

Everything derives from the schema written beside the shards
(``PREFIX.schema.pbtxt``): which outputs the run wrote and the hidden size. The shards' format,
TFRecord or Parquet, is told by their file names; ``read_embeddings`` reads either into the same
records, ``make_dataset`` reads TFRecord shards.

    from pipeline.reader import read_embeddings
    for record in read_embeddings("out/emb"):
        record.id, record.pooled_output.shape, record.sequence_output.shape  # [H], [T, H]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline import schema
from pipeline.outputs.encoding import sequence_numpy_dtype

__all__ = ["EmbeddingRecord", "OutputLayout", "feature_spec", "load_layout", "load_whitening", "make_dataset",
           "output_format", "read_embeddings", "shard_files"]


@dataclass(frozen=True)
class OutputLayout:
    """What a run wrote: its output kinds and the width of its vectors."""

    outputs: tuple[str, ...]
    hidden_size: int
    sequence_dtype: str = schema.FLOAT32
    whitening_dims: int = 0  # values of whitened_output; 0: not written
    output_format: str = schema.DEFAULT_OUTPUT_FORMAT


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
    whitened_output: np.ndarray | None = None


def load_layout(prefix: str) -> OutputLayout:
    """Reads ``PREFIX.schema.pbtxt`` and says which outputs it declares and their width, and the
    format of the shards present."""
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
    whitening_dims = (names[schema.WHITENED_OUTPUT].shape.dim[0].size if schema.WHITENED_OUTPUT in names
                      else 0)
    hidden_size = int(names[schema.HIDDEN_SIZE].int_domain.max)
    return OutputLayout(outputs, hidden_size, sequence_dtype, whitening_dims, output_format(prefix))


def feature_spec(outputs: tuple[str, ...], hidden_size: int, sequence_dtype: str = schema.FLOAT32,
                 whitening_dims: int = 0) -> dict:
    """The ``tf.io.parse_example`` spec of the records a run with ``outputs`` writes.

    With a 16-bit ``sequence_dtype``, ``sequence_output`` parses as raw bytes; decode it
    with ``tf.io.decode_raw`` (``make_dataset`` does).
    """
    import tensorflow as tf

    types = {schema.BYTES: tf.string, schema.INT64: tf.int64, schema.FLOAT32: tf.float32}
    spec = {}
    for feature in schema.written_features(outputs, sequence_dtype, whitening_dims):
        dtype = types[feature.dtype]
        if feature.single_value:
            spec[feature.key] = tf.io.FixedLenFeature([], dtype)
        elif feature.shape == schema.HIDDEN:
            spec[feature.key] = tf.io.FixedLenFeature([hidden_size], dtype)
        elif feature.shape == schema.WHITENED:
            spec[feature.key] = tf.io.FixedLenFeature([whitening_dims], dtype)
        else:
            spec[feature.key] = tf.io.RaggedFeature(dtype)
    return spec


def shard_files(prefix: str) -> list[str]:
    """The output shards of ``prefix``, of every format, compressed or not, sorted."""
    import tensorflow as tf

    return sorted(path for ending in schema.SHARD_ENDINGS
                  for path in tf.io.gfile.glob(prefix + schema.SHARD_NUMBERING + ending))


def output_format(prefix: str) -> str:
    """The format of the shards under ``prefix``, from their names: ``tfrecord`` or ``parquet``."""
    files = shard_files(prefix)
    if not files:
        raise FileNotFoundError(f"No shards match {prefix}{schema.SHARD_NUMBERING}"
                                f"{{{','.join(schema.SHARD_ENDINGS)}}}.")
    formats = sorted({schema.shard_format(path) for path in files})
    if len(formats) > 1:
        raise ValueError(f"{prefix} holds shards of more than one format ({', '.join(formats)}); "
                         "a complete run leaves one.")
    return formats[0]


def make_dataset(prefix: str, layout: OutputLayout | None = None):
    """A tf.data.Dataset of parsed TFRecord records; ``sequence_output`` reshaped to [T, H].

    TFRecord shards only: TensorFlow reads no Parquet without tensorflow-io, so Parquet shards are
    read with ``read_embeddings`` (or pyarrow, DuckDB, BigQuery) instead.
    """
    import tensorflow as tf

    layout = layout or load_layout(prefix)
    if layout.output_format != schema.TFRECORD:
        raise ValueError(f"make_dataset reads TFRecord shards, and {prefix} holds {layout.output_format} "
                         "shards: read them with pipeline.reader.read_embeddings, or pyarrow.")
    files = [path for path in shard_files(prefix) if schema.shard_format(path) == schema.TFRECORD]
    if not files:
        raise FileNotFoundError(f"No TFRecord shards match {prefix}{schema.SHARD_NUMBERING}"
                                f"{schema.SHARD_SUFFIX}[.gz].")
    spec = feature_spec(layout.outputs, layout.hidden_size, layout.sequence_dtype, layout.whitening_dims)
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
    """Every record under ``prefix`` as numpy, shard by shard, in either format."""
    layout = load_layout(prefix)
    if layout.output_format == schema.PARQUET:
        yield from _parquet_records(shard_files(prefix), layout)
        return
    for record in make_dataset(prefix, layout).as_numpy_iterator():
        yield EmbeddingRecord(**{feature.key: _numpy_value(feature, record.get(feature.key))
                                 for feature in schema.FEATURES})


def _parquet_records(files: list[str], layout: OutputLayout) -> Iterator[EmbeddingRecord]:
    """The rows of Parquet shards as ``EmbeddingRecord``s, equal to what the TFRecord path reads:
    a 16-bit ``sequence_output`` decoded to float32, the arrays the records' own."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    written = schema.written_features(layout.outputs, layout.sequence_dtype, layout.whitening_dims)
    for path in files:
        with FileSystems.open(path, compression_type="uncompressed") as handle:  # seekable, gs:// too
            for batch in pq.ParquetFile(handle).iter_batches():
                columns = {feature.key: _row_values(feature, batch.column(feature.key), layout.hidden_size)
                           for feature in written}
                for row in range(batch.num_rows):
                    yield EmbeddingRecord(**{feature.key: columns[feature.key](row) if feature.key in columns
                                             else None for feature in schema.FEATURES})


def _row_values(feature: schema.OutputFeature, column, hidden_size: int):
    """A function from a row index to that row's value of ``feature``, as ``EmbeddingRecord`` holds it."""
    if feature.raw_dtype is not None:
        dtype = sequence_numpy_dtype(feature.raw_dtype)
        return lambda row: np.frombuffer(column[row].as_buffer(), dtype).astype(np.float32).reshape(
            -1, hidden_size)
    if feature.single_value:
        values = column.to_pylist()
        return values.__getitem__
    offsets = column.offsets.to_numpy()
    values = column.flatten().to_numpy()
    starts = offsets - offsets[0]
    shape = (-1, hidden_size) if feature.shape == schema.PER_TOKEN_HIDDEN else (-1,)
    return lambda row: values[starts[row]:starts[row + 1]].reshape(shape).copy()


def _numpy_value(feature: schema.OutputFeature, value):
    """A parsed value as ``EmbeddingRecord`` holds it: a one-value feature as str or int."""
    if value is None or not feature.single_value:
        return value
    return value.decode("utf-8") if feature.dtype == schema.BYTES else int(value)


def load_whitening(prefix: str):
    """The whitening a ``--whitening_dims`` run fitted (``PREFIX.whitening/``): a ``SavedWhitening``
    with the numpy ``mean``, ``projection`` and ``eigenvalues``, and ``apply(vectors)``, which maps
    [N, H] raw vectors (a query's ``mean_output`` or ``pooled_output``, as ``source`` says) through the
    saved tf.Transform graph exactly as the run mapped its records."""
    from pipeline.whitening import SavedWhitening, whitening_dir

    return SavedWhitening.load(whitening_dir(prefix))
