"""Output encoding throughput per core: bert-beam's tf.Example and Parquet writers, tfx-bsl's, FloatLists.

Encodes batches of BERT-Large-shaped records (hidden 1024; 32 records of 128 tokens, and 8 of
512) with pooled and sequence outputs, on one core (the encoders are single-threaded), and
prints MB/s of float32 sequence output (the model's output size, whatever the stored dtype):

* bert-beam's ``ExampleEncoder`` (protobuf wire format written from the numpy buffers),
  ``--sequence_dtype`` float32, float16 and bfloat16;
* tfx-bsl's C++ ``RecordBatchToExamplesEncoder`` on an Arrow batch of the same records;
* ``tf.train.FloatList`` and friends built from numpy, then ``SerializeToString``;
* bert-beam's Parquet path, as its shard sink runs it: ``ArrowEncoder`` builds the batch's Arrow
  columns, ``ParquetShardWriter`` writes them as one row group through the CRC32C-summing file (into
  a file that keeps no bytes), footer included; float32 and float16 (binary) sequence output;
* pyarrow alone: ``pq.write_table`` of the same Arrow table, built beforehand, into pyarrow's
  native byte-counting stream, with the same writer options: what the Parquet writer itself costs.

The tf.Example encoders produce records in memory (the TFRecord sink's framing and writes are not
timed); the Parquet figures include the writer, whose page encoding is the Parquet encoding.

Each figure is the median of REPEATS timed passes after a warm-up pass; the records of the
three tf.Example encoders are checked to parse to equal tf.Examples first, and the Parquet bytes
to read back with pyarrow as the embeddings' values.

    .venv/bin/python benchmarks/encode_outputs.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from results import Report

from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.parquet_encoding import ArrowEncoder, arrow_schema, writer_options
from pipeline.outputs.parquet_sink import ParquetShardWriter
from pipeline.outputs.shard_sink import SummingFile
from transforms.records import Embedding, Features

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

HIDDEN = 1024
LAYOUTS = ((32, 128), (8, 512))  # (records per batch, tokens per record)
TARGET_MB_PER_S = 500.0
PARQUET_TARGET_MB_PER_S = 1000.0
OUTPUTS = ("pooled", "sequence")


def _embeddings(batch: int, tokens: int) -> list[Embedding]:
    rng = np.random.default_rng(0)
    return [
        Embedding(
            Features(f"doc-{i}", rng.integers(0, 30522, tokens).astype(np.int32), np.zeros(tokens, np.int32)),
            rng.standard_normal(HIDDEN).astype(np.float32),
            rng.standard_normal((tokens, HIDDEN)).astype(np.float32),
        )
        for i in range(batch)
    ]


def _by_hand(embeddings: list[Embedding]) -> list[bytes]:
    import tensorflow as tf

    out = []
    for e in embeddings:
        feature = {
            "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[e.features.id.encode()])),
            "input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=e.features.input_ids)),
            "pooled_output": tf.train.Feature(float_list=tf.train.FloatList(value=e.pooled_output)),
            "sequence_output": tf.train.Feature(
                float_list=tf.train.FloatList(value=e.sequence_output.reshape(-1))),
        }
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


class _Discard(io.RawIOBase):
    """A file that keeps nothing: the writes' cost is the writer's and the checksum's."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return len(data)


def _parquet_writer(sequence_dtype: str, raw=None) -> Callable[[list[Embedding]], None]:
    """What the Parquet shard sink does with a batch: encode it, write it as a row group, close the file."""
    encoder = ArrowEncoder(OUTPUTS, sequence_dtype)
    arrow = arrow_schema(OUTPUTS, HIDDEN, sequence_dtype)
    options = writer_options("NONE", arrow)

    def write(embeddings: list[Embedding]) -> None:
        writer = ParquetShardWriter(SummingFile(raw or _Discard()), arrow, options)
        writer.write(encoder.encode(embeddings))
        writer.close()

    return write


def _pyarrow_alone(embeddings: list[Embedding]) -> Callable[[list[Embedding]], None]:
    """``pq.write_table`` of the batch's Arrow table, built once here, into a stream that keeps nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = arrow_schema(OUTPUTS, HIDDEN)
    table = pa.Table.from_batches([ArrowEncoder(OUTPUTS).encode(embeddings)]).replace_schema_metadata(
        arrow.metadata)
    return lambda _: pq.write_table(table, pa.MockOutputStream(), **writer_options("NONE", arrow))


class _Kept(io.BytesIO):
    """An in-memory file that keeps its bytes when closed."""

    def close(self) -> None:
        self.kept = self.getvalue()
        super().close()


def _median_seconds(function: Callable, embeddings: list[Embedding], repeats: int) -> float:
    function(embeddings)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(embeddings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _check_equal(embeddings: list[Embedding]) -> None:
    import tensorflow as tf
    from reference_encoding import encode_with_tfx_bsl

    for dtype in ("float32", "float16"):
        ours = ExampleEncoder(OUTPUTS, dtype).encode(embeddings)
        theirs = encode_with_tfx_bsl(embeddings, OUTPUTS, dtype)
        if [tf.train.Example.FromString(r) for r in ours] != [tf.train.Example.FromString(r) for r in theirs]:
            raise SystemExit(f"bert-beam's and tfx-bsl's {dtype} records differ")
    import pyarrow.parquet as pq

    kept = _Kept()
    _parquet_writer("float32", kept)(embeddings)
    column = pq.ParquetFile(io.BytesIO(kept.kept)).read().column("sequence_output").combine_chunks()
    expected = np.concatenate([e.sequence_output.reshape(-1) for e in embeddings])
    if not np.array_equal(column.flatten().to_numpy(), expected):
        raise SystemExit("the Parquet sequence_output does not read back as the embeddings'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repeats, not recorded")
    args = parser.parse_args()
    from reference_encoding import encode_with_tfx_bsl

    repeats = 3 if args.quick else 9
    report = Report("encode_outputs", args.quick)
    report.add(f"- one core; median of {repeats} passes after a warm-up; MB/s counts the float32 sequence "
               "output (tokens x 1024 x 4 bytes) encoded, whatever the stored dtype")
    for batch, tokens in LAYOUTS:
        embeddings = _embeddings(batch, tokens)
        _check_equal(embeddings)
        megabytes = sum(e.sequence_output.nbytes for e in embeddings) / 1e6
        rates = {}
        for name, function in [
            ("bert-beam float32", ExampleEncoder(OUTPUTS).encode),
            ("bert-beam float16", ExampleEncoder(OUTPUTS, "float16").encode),
            ("bert-beam bfloat16", ExampleEncoder(OUTPUTS, "bfloat16").encode),
            ("tfx-bsl float32", lambda e: encode_with_tfx_bsl(e, OUTPUTS)),
            ("tfx-bsl float16 (bytes)", lambda e: encode_with_tfx_bsl(e, OUTPUTS, "float16")),
            ("tf.train.FloatList float32", _by_hand),
            ("bert-beam parquet float32", _parquet_writer("float32")),
            ("bert-beam parquet float16 (binary)", _parquet_writer("float16")),
            ("pyarrow write_table alone float32", _pyarrow_alone(embeddings)),
        ]:
            rates[name] = megabytes / _median_seconds(function, embeddings, repeats)
        report.add(f"- {batch} records x {tokens} tokens x {HIDDEN} ({megabytes:.0f} MB float32 per batch): "
                   + ", ".join(f"{name} **{rate:.0f} MB/s**" for name, rate in rates.items()))
        ours = rates["bert-beam float32"]
        verdict = "met" if ours >= TARGET_MB_PER_S else "MISSED"
        report.add(f"  - float32: bert-beam / tfx-bsl {ours / rates['tfx-bsl float32']:.1f}x, "
                   f"/ FloatList {ours / rates['tf.train.FloatList float32']:.0f}x; "
                   f"target ≥ {TARGET_MB_PER_S:.0f} MB/s per core: {verdict}")
        parquet, alone = rates["bert-beam parquet float32"], rates["pyarrow write_table alone float32"]
        verdict = "met" if parquet >= PARQUET_TARGET_MB_PER_S else "MISSED"
        report.add(f"  - parquet float32: {parquet / alone:.2f}x of pyarrow alone; "
                   f"target ≥ {PARQUET_TARGET_MB_PER_S:.0f} MB/s per core: {verdict}")
    report.write()


if __name__ == "__main__":
    main()
