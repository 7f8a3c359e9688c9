"""Output encoding throughput: tfx-bsl's Arrow encoder vs building tf.train.Examples by hand.

Prints MB/s of sequence output encoded on one core, float32 and float16, for one BERT-Large-shaped
record layout (128 tokens x 1024 floats) and appends the figures, with machine
details, to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/encode_outputs.py
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import UTC, datetime

import numpy as np

from pipeline.encoding import ExampleEncoder
from transforms.records import Embedding, Features

TOKENS, HIDDEN, BATCH, REPEATS = 128, 1024, 32, 7


def _embeddings() -> list[Embedding]:
    rng = np.random.default_rng(0)
    ids = np.arange(TOKENS, dtype=np.int32)
    return [
        Embedding(
            Features(f"doc-{i}", ids, np.zeros(TOKENS, np.int32)),
            rng.standard_normal(HIDDEN).astype(np.float32),
            rng.standard_normal((TOKENS, HIDDEN)).astype(np.float32),
        )
        for i in range(BATCH)
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


def _median_seconds(function, embeddings) -> float:
    function(embeddings)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function(embeddings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    embeddings = _embeddings()
    megabytes = sum(e.sequence_output.nbytes for e in embeddings) / 1e6
    arrow = megabytes / _median_seconds(ExampleEncoder(("pooled", "sequence")).encode, embeddings)
    half = megabytes / _median_seconds(ExampleEncoder(("pooled", "sequence"), "float16").encode, embeddings)
    by_hand = megabytes / _median_seconds(_by_hand, embeddings)
    lines = [
        f"## encode_outputs ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        f"- command: `.venv/bin/python benchmarks/encode_outputs.py` ({BATCH} records of "
        f"{TOKENS}x{HIDDEN} float32, median of {REPEATS})",
        f"- tfx-bsl RecordBatchToExamplesEncoder: {arrow:.0f} MB/s of float32 sequence output",
        f"- same, --sequence_dtype float16: {half:.0f} MB/s (MB of the float32 model output)",
        f"- tf.train.FloatList built from numpy: {by_hand:.0f} MB/s",
        f"- ratio: {arrow / by_hand:.1f}x",
        "",
    ]
    print("\n".join(lines))
    with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
