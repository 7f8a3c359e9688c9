"""Length-aware batching: records of similar length share a batch, padded only to their bucket.

A batch closes when it holds ``max_batch_size`` records or when one more record would take
its padded size (records × bucket length) over ``max_batch_tokens``, so long and short
batches cost about the same. Batches are formed within a bundle, like Beam's BatchElements.

The model sees each batch as a [rows, length] tensor. TensorFlow pays a first-call cost for
every new shape (oneDNN primitives on CPU, kernel selection on GPU, a compilation with
``--jit_compile``). With ``round_batch_rows`` a partial batch (the end of a bundle) is padded
with empty rows to a power of two, at most the bucket's full batch, so a bucket sees a handful
of shapes, not one per row count, at the price of computing the empty rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.features import bucket_length
from transforms.records import Features

__all__ = ["BatchByLength", "BatchingConfig"]


@dataclass(frozen=True)
class BatchingConfig:
    """How records are grouped for the model."""

    max_seq_length: int
    bucket_boundaries: tuple[int, ...] = (16, 32, 48, 64, 80, 96, 128, 160, 208, 272, 368, 512)
    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    round_batch_rows: bool = False

    def describe(self) -> str:
        """What a run's log says about its batches."""
        buckets = sorted({self.padded_length(b) for b in (*self.bucket_boundaries, self.max_seq_length)})
        return (f"batches of at most {self.max_batch_size} records and {self.max_batch_tokens} "
                f"padded tokens, padded to length buckets {','.join(map(str, buckets))}"
                f"{', rows rounded to powers of two' if self.round_batch_rows else ''}")

    def padded_length(self, length: int) -> int:
        return bucket_length(length, self.bucket_boundaries, self.max_seq_length)

    def batch_padded_length(self, batch: Sequence[Features]) -> int:
        """The length a batch is padded to: the bucket of its longest record."""
        return self.padded_length(max(f.sequence_length for f in batch))

    def full_batch_rows(self, length: int) -> int:
        """Records in a full batch of a bucket: by count, then by token budget."""
        return max(1, min(self.max_batch_size, self.max_batch_tokens // length))

    def batch_padded_rows(self, rows: int, length: int) -> int:
        """The rows a batch of ``rows`` records is padded to: the next power of two, at most
        the bucket's full batch (never fewer than ``rows``)."""
        if not self.round_batch_rows:
            return rows
        return max(rows, min(1 << (rows - 1).bit_length(), self.full_batch_rows(length)))


class _BatchByLength(beam.DoFn):
    def __init__(self, config: BatchingConfig) -> None:
        self._config = config
        self._buffers: dict[int, list[Features]] = {}

    def start_bundle(self) -> None:
        self._buffers = {}

    def process(self, element: Features) -> Iterator[list[Features]]:
        bucket = self._config.padded_length(element.sequence_length)
        buffer = self._buffers.setdefault(bucket, [])
        buffer.append(element)
        if len(buffer) >= self._config.full_batch_rows(bucket):
            yield self._buffers.pop(bucket)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for bucket in sorted(self._buffers):
            yield WindowedValue(self._buffers[bucket], GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._buffers = {}


class BatchByLength(beam.PTransform[beam.PCollection[Features], beam.PCollection[list[Features]]]):
    """Features → lists of Features of one length bucket."""

    def __init__(self, config: BatchingConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, features: beam.PCollection[Features]) -> beam.PCollection[list[Features]]:
        return features | "BatchByLength" >> beam.ParDo(_BatchByLength(self._config))
