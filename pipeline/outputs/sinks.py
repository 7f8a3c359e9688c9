"""Writes embeddings as sharded TFRecords or Parquet files, the schema beside them, and dead letters.

All three use Beam's file sinks, which write to temporary files and rename
them into place when the run finalises; the shards' own sinks also summarise
each shard for the manifest (``shard_sink``, ``parquet_sink``).
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from pipeline import schema
from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.example_wire import SerializedParts
from pipeline.outputs.parquet_encoding import ArrowEncoder, arrow_schema, writer_options
from pipeline.outputs.parquet_sink import ParquetShardSink
from pipeline.outputs.shard_sink import TFRecordShardSink
from transforms import counters
from transforms.records import EXCERPT_CHARS, Embedding, Rejected, excerpt

__all__ = ["DEAD_LETTER_SUFFIX", "OUTPUT_COMPRESSIONS", "PARQUET_CODECS", "WriteDeadLetters",
           "WriteEmbeddings", "default_dead_letter_prefix", "rejected_to_json", "shard_suffix"]

OUTPUT_COMPRESSIONS = {"none": CompressionTypes.UNCOMPRESSED, "gzip": CompressionTypes.GZIP}
# --output_compression for Parquet shards: the codec of every column's pages (the file is never
# gzipped whole: readers find the codec in the footer, and BigQuery and DuckDB read GZIP pages).
PARQUET_CODECS = {"none": "NONE", "gzip": "GZIP"}
DEAD_LETTER_SUFFIX = ".jsonl"
_LOG = logging.getLogger(__name__)
_ENCODE_BATCH = 64


def shard_suffix(output_compression: str, output_format: str = schema.DEFAULT_OUTPUT_FORMAT) -> str:
    """``.tfrecord``, ``.tfrecord.gz`` for gzip-compressed TFRecord shards, or ``.parquet``."""
    if output_format == schema.PARQUET:
        return schema.PARQUET_SUFFIX
    return schema.SHARD_SUFFIX + (schema.GZIP_SUFFIX if output_compression == "gzip" else "")


def default_dead_letter_prefix(output_prefix: str) -> str:
    """``DIR/dead_letter/NAME`` for ``--output DIR/NAME``: beside the output, not under its prefix."""
    directory, name = posixpath.split(output_prefix)
    return posixpath.join(directory, "dead_letter", name)


class _EncodeBatches(beam.DoFn):
    """Batches of Embeddings → what the format's shard sink writes: serialized tf.Examples as parts
    (TFRecord), or one Arrow record batch (Parquet); counts records and documents."""

    def __init__(self, output_format: str, outputs: Sequence[str], sequence_dtype: str,
                 whitening_dims: int) -> None:
        self._format = output_format
        self._layout = (tuple(outputs), sequence_dtype, whitening_dims)
        self._records = Metrics.counter(counters.NAMESPACE, counters.RECORDS_WRITTEN)
        self._documents = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_EMBEDDED)
        self._encode: Callable[[Sequence[Embedding]], list] | None = None

    def setup(self) -> None:
        self._progress = _Progress()
        if self._format == schema.PARQUET:
            arrow = ArrowEncoder(*self._layout)
            self._encode = lambda batch: [arrow.encode(batch)]
        else:
            self._encode = ExampleEncoder(*self._layout).encode_parts

    def process(self, batch: Sequence[Embedding]) -> Iterator[SerializedParts | pa.RecordBatch]:
        encoded = self._encode(batch)
        self._records.inc(len(batch))
        self._documents.inc(sum(1 for e in batch if e.features.window == 0))
        self._progress.add(len(batch))
        yield from encoded


class _Progress:
    """Logs records written by this worker process and their rate, at most every 30 seconds."""

    def __init__(self, every_seconds: float = 30.0) -> None:
        self._every = every_seconds
        self._start = self._last = time.monotonic()
        self._count = 0

    def add(self, records: int) -> None:
        self._count += records
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            _LOG.info("bert-beam progress: %d records written by this worker, %.1f records/s",
                      self._count, self._count / (now - self._start))


class WriteEmbeddings(beam.PTransform[beam.PCollection[Embedding], dict[str, beam.PCollection[str]]]):
    """Embeddings → ``PREFIX-SSSSS-of-NNNNN.tfrecord[.gz]`` (or ``.parquet``) plus ``PREFIX.schema.pbtxt``."""

    def __init__(
        self,
        output_prefix: str,
        outputs: Sequence[str],
        hidden_size: int,
        output_compression: str = "none",
        num_shards: int = 0,
        sequence_dtype: str = schema.FLOAT32,
        output_format: str = schema.DEFAULT_OUTPUT_FORMAT,
        whitening_dims: int = 0,
    ) -> None:
        super().__init__()
        if output_format not in schema.OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {', '.join(schema.OUTPUT_FORMATS)}; "
                             f"got {output_format!r}.")
        self._prefix = output_prefix
        self._outputs = tuple(outputs)
        self._hidden_size = hidden_size
        self._compression = output_compression
        self._num_shards = num_shards
        self._sequence_dtype = sequence_dtype
        self._format = output_format
        self._whitening_dims = whitening_dims

    def expand(self, embeddings: beam.PCollection[Embedding]) -> dict[str, beam.PCollection[str]]:
        batches = (
            embeddings
            # A fixed size: Beam's adaptive sizing fits a regression per batch, for nothing here.
            | "BatchForEncoding" >> beam.BatchElements(min_batch_size=_ENCODE_BATCH,
                                                       max_batch_size=_ENCODE_BATCH)
        )
        suffix = shard_suffix(self._compression, self._format)
        encode = _EncodeBatches(self._format, self._outputs, self._sequence_dtype, self._whitening_dims)
        if self._format == schema.PARQUET:
            arrow = arrow_schema(self._outputs, self._hidden_size, self._sequence_dtype, self._whitening_dims)
            written = (
                batches
                | "EncodeArrowBatches" >> beam.ParDo(encode)
                | "WriteParquet" >> beam.io.Write(ParquetShardSink(
                    self._prefix, suffix, self._num_shards, arrow,
                    writer_options(PARQUET_CODECS[self._compression], arrow)))
            )
        else:
            written = (
                batches
                | "EncodeExamples" >> beam.ParDo(encode)
                | "WriteTFRecords" >> beam.io.Write(TFRecordShardSink(
                    self._prefix,
                    file_name_suffix=suffix,
                    num_shards=self._num_shards,
                    compression_type=OUTPUT_COMPRESSIONS[self._compression],
                ))
            )
        schema_file = (
            embeddings.pipeline
            | "CreateSchema" >> beam.Create([schema.schema_text(
                self._outputs, self._hidden_size, self._sequence_dtype, self._whitening_dims)])
            | "WriteSchema" >> beam.io.WriteToText(
                self._prefix + schema.SCHEMA_SUFFIX.removesuffix(".pbtxt"),
                file_name_suffix=".pbtxt",
                shard_name_template="",
                num_shards=1,
            )
        )
        return {"shards": written, "schema": schema_file}


def rejected_to_json(rejected: Rejected, excerpt_chars: int = EXCERPT_CHARS) -> str:
    """One dead-letter line: where the record came from, why it was rejected, a bounded excerpt,
    and for a window failed at inference its index and its document's ``id`` (both kept when the
    excerpt is not: ``--skip_embedded_in`` reads them)."""
    letter = {"source": rejected.source, "stage": rejected.stage, "reason": rejected.reason,
              "raw": excerpt(rejected.raw, excerpt_chars) if excerpt_chars else ""}
    if rejected.window is not None:
        letter["window"] = rejected.window
    if rejected.document_id is not None:
        letter["id"] = rejected.document_id
    return json.dumps(letter, ensure_ascii=False)


class _CountAndFormatRejected(beam.DoFn):
    def __init__(self, excerpt_chars: int) -> None:
        self._excerpt_chars = excerpt_chars
        self._documents = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_REJECTED)
        self._windows = Metrics.counter(counters.NAMESPACE, counters.WINDOWS_REJECTED)

    def process(self, rejected: Rejected) -> Iterator[str]:
        if rejected.rejects_document:
            self._documents.inc()
        if rejected.window is not None:
            self._windows.inc()
        yield rejected_to_json(rejected, self._excerpt_chars)


class WriteDeadLetters(beam.PTransform[beam.PCollection[Rejected], beam.PCollection[str]]):
    """Rejected → ``PREFIX-SSSSS-of-NNNNN.jsonl``, counted as ``documents_rejected`` and ``windows_rejected``.

    Every rejected record leaves through here: its ``raw`` is cut to ``excerpt_chars``
    (0 keeps only its location), whatever stage rejected it. A window failed at inference counts
    in ``windows_rejected``, and in ``documents_rejected`` only if it is window 0, so that each
    document counts once without joining its windows.
    """

    def __init__(self, prefix: str, excerpt_chars: int = EXCERPT_CHARS) -> None:
        super().__init__()
        self._prefix = prefix
        self._excerpt_chars = excerpt_chars

    def expand(self, rejected: beam.PCollection[Rejected]) -> beam.PCollection[str]:
        return (
            rejected
            | "ToJson" >> beam.ParDo(_CountAndFormatRejected(self._excerpt_chars))
            | "WriteJsonLines" >> beam.io.WriteToText(self._prefix, file_name_suffix=DEAD_LETTER_SUFFIX)
        )
