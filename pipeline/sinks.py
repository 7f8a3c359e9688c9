"""Writes embeddings as sharded TFRecords, the schema beside them, and dead letters.

All three use Beam's file sinks, which write to temporary files and rename
them into place when the run finalises; the shards' own sink also summarises
each shard for the manifest (``shard_sink``).
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from pipeline import schema
from pipeline.encoding import ExampleEncoder
from pipeline.example_wire import SerializedParts
from pipeline.shard_sink import TFRecordShardSink
from transforms import counters
from transforms.records import EXCERPT_CHARS, Embedding, Rejected, excerpt

OUTPUT_COMPRESSIONS = {"none": CompressionTypes.UNCOMPRESSED, "gzip": CompressionTypes.GZIP}
DEAD_LETTER_SUFFIX = ".jsonl"
_LOG = logging.getLogger(__name__)
_ENCODE_BATCH = 64


def shard_suffix(output_compression: str) -> str:
    """``.tfrecord``, or ``.tfrecord.gz`` for gzip-compressed shards."""
    return schema.SHARD_SUFFIX + (".gz" if output_compression == "gzip" else "")


def default_dead_letter_prefix(output_prefix: str) -> str:
    """``DIR/dead_letter/NAME`` for ``--output DIR/NAME``: beside the output, not under its prefix."""
    directory, name = posixpath.split(output_prefix)
    return posixpath.join(directory, "dead_letter", name)


class _EncodeExamples(beam.DoFn):
    """Batches of Embeddings → serialized tf.Examples, as parts for the shard sink; counts them."""

    def __init__(self, outputs: Sequence[str], sequence_dtype: str) -> None:
        self._outputs = tuple(outputs)
        self._sequence_dtype = sequence_dtype
        self._encoder: ExampleEncoder | None = None
        self._records = Metrics.counter(counters.NAMESPACE, counters.RECORDS_WRITTEN)
        self._documents = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_EMBEDDED)

    def setup(self) -> None:
        self._encoder = ExampleEncoder(self._outputs, self._sequence_dtype)
        self._progress = _Progress()

    def process(self, batch: Sequence[Embedding]) -> Iterator[SerializedParts]:
        encoded = self._encoder.encode_parts(batch)
        self._records.inc(len(encoded))
        self._documents.inc(sum(1 for e in batch if e.features.window == 0))
        self._progress.add(len(encoded))
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


class WriteEmbeddings(beam.PTransform):
    """Embeddings → ``PREFIX-SSSSS-of-NNNNN.tfrecord[.gz]`` plus ``PREFIX.schema.pbtxt``."""

    def __init__(
        self,
        output_prefix: str,
        outputs: Sequence[str],
        hidden_size: int,
        output_compression: str = "none",
        num_shards: int = 0,
        sequence_dtype: str = schema.FLOAT32,
    ) -> None:
        super().__init__()
        self._prefix = output_prefix
        self._outputs = tuple(outputs)
        self._hidden_size = hidden_size
        self._compression = output_compression
        self._num_shards = num_shards
        self._sequence_dtype = sequence_dtype

    def expand(self, embeddings):
        written = (
            embeddings
            # A fixed size: Beam's adaptive sizing fits a regression per batch, for nothing here.
            | "BatchForEncoding" >> beam.BatchElements(min_batch_size=_ENCODE_BATCH,
                                                       max_batch_size=_ENCODE_BATCH)
            | "EncodeExamples" >> beam.ParDo(_EncodeExamples(self._outputs, self._sequence_dtype))
            | "WriteTFRecords" >> beam.io.Write(TFRecordShardSink(
                self._prefix,
                file_name_suffix=shard_suffix(self._compression),
                num_shards=self._num_shards,
                compression_type=OUTPUT_COMPRESSIONS[self._compression],
            ))
        )
        schema_file = (
            embeddings.pipeline
            | "CreateSchema" >> beam.Create(
                [schema.schema_text(self._outputs, self._hidden_size, self._sequence_dtype)])
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
    and for a window failed at inference its index (kept when the excerpt is not)."""
    letter = {"source": rejected.source, "stage": rejected.stage, "reason": rejected.reason,
              "raw": excerpt(rejected.raw, excerpt_chars) if excerpt_chars else ""}
    if rejected.window is not None:
        letter["window"] = rejected.window
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


class WriteDeadLetters(beam.PTransform):
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

    def expand(self, rejected):
        return (
            rejected
            | "ToJson" >> beam.ParDo(_CountAndFormatRejected(self._excerpt_chars))
            | "WriteJsonLines" >> beam.io.WriteToText(self._prefix, file_name_suffix=DEAD_LETTER_SUFFIX)
        )
