"""Cost of ``--skip_embedded_in``: reading an earlier output's ids back and joining them with the input.

An earlier output of N ids (default 100,000; pooled output of width 768, 4 TFRecord shards) is
written by the project's own ``WriteEmbeddings`` and manifest; the new input is those N documents
and N/10 new ones, as JSON Lines. Two pipelines run on the DirectRunner in this process, ``--pairs``
times interleaved: ``ReadDocuments`` → count, and ``ReadDocuments`` → ``SkipEmbedded`` → count (the
launcher's ``check_earlier_outputs`` included). The difference of their wall times is what the join
costs; each run checks that exactly the N earlier documents were skipped. Files lie on tmpfs where
there is one (``/dev/shm``), so the figures are the CPU's.

It also times the id parse per record, on one core: ``incremental.example_key`` (walks the Example's
entries by their length headers) against ``tf.train.Example.FromString`` plus reading the two
features, on records of pooled output only and of pooled and sequence output (128 x 768).

    .venv/bin/python benchmarks/skip_embedded.py [--quick] [--ids N] [--pairs P]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import tempfile
import time

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from results import Report

from pipeline.incremental import SkipEmbedded, check_earlier_outputs
from pipeline.inputs.sources import InputConfig, ReadDocuments
from pipeline.manifest import build_manifest, delete_files, stale_shard_summaries, write_manifest
from pipeline.options import BertBeamOptions
from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.example_keys import example_key
from pipeline.outputs.sinks import WriteEmbeddings
from pipeline.summary import summarize
from transforms import counters
from transforms.records import Embedding, Features

HIDDEN = 768
TOKENS = 16
SHARDS = 4
CHUNK = 5000  # earlier records generated per element, inside the pipeline (not pickled into it)
_TMPFS = "/dev/shm"


def _embedding(index: int, tokens: int = TOKENS, sequence: bool = False) -> Embedding:
    rng = np.random.default_rng(index)
    features = Features(f"doc-{index}", rng.integers(5, 30000, tokens).astype(np.int32),
                        np.zeros(tokens, np.int32), source=f"docs.jsonl:{index + 1}")
    return Embedding(features, rng.standard_normal(HIDDEN).astype(np.float32),
                     rng.standard_normal((tokens, HIDDEN)).astype(np.float32) if sequence else None)


def _chunk(start: int, stop: int) -> list[Embedding]:
    return [_embedding(index) for index in range(start, min(start + CHUNK, stop))]


def _options(output: str) -> dict:
    argv = ["--input=docs.jsonl", "--model=bench", "--outputs=pooled", f"--output={output}"]
    return BertBeamOptions(argv).get_all_options(current_only=True)


def _write_earlier(prefix: str, ids: int) -> float:
    """Writes the earlier output and its manifest; returns the seconds it took."""
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(runner="DirectRunner")) as pipeline:
        _ = (pipeline | beam.Create(list(range(0, ids, CHUNK)))
             | beam.FlatMap(_chunk, ids)
             | WriteEmbeddings(prefix, ("pooled",), HIDDEN, num_shards=SHARDS))
    run_counters = {counters.DOCUMENTS_READ: ids, counters.DOCUMENTS_EMBEDDED: ids, counters.WINDOWS: ids,
                    counters.RECORDS_WRITTEN: ids, counters.DOCUMENTS_SKIPPED: 0}
    write_manifest(prefix, build_manifest(prefix, run_counters, {"handle": "bench", "fingerprint": ""},
                                          _options(prefix)))
    delete_files(stale_shard_summaries(prefix))
    return time.perf_counter() - started


def _write_input(path: str, ids: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(ids + ids // 10):
            record = {"id": f"doc-{index}", "text": f"document {index} of the grown corpus"}
            handle.write(json.dumps(record) + "\n")


def _run(input_path: str, earlier_prefix: str | None, new_prefix: str) -> tuple[float, int, int]:
    """One pipeline run: its wall seconds, the documents that go on, and those skipped."""
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=PipelineOptions(runner="DirectRunner"))
    documents = (pipeline | "Read" >> ReadDocuments(input_path, InputConfig())).documents
    if earlier_prefix is not None:
        earlier = check_earlier_outputs([earlier_prefix], _options(new_prefix))
        documents = (documents | "SkipEmbedded" >> SkipEmbedded(earlier)).documents
    _ = (documents | "Count" >> beam.combiners.Count.Globally()
         | "Record" >> beam.Map(_record_count))
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    summary = summarize(result, new_prefix, new_prefix)
    return seconds, summary["bench_documents_on"], summary[counters.DOCUMENTS_SKIPPED]


def _record_count(count: int) -> None:
    beam.metrics.Metrics.counter(counters.NAMESPACE, "bench_documents_on").inc(count)


def _per_record_microseconds(function, records: list[bytes], repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        for record in records:
            function(record)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) / len(records) * 1e6


def _tensorflow_key(serialized: bytes) -> tuple[str, int]:
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    return feature["id"].bytes_list.value[0].decode("utf-8"), feature["window"].int64_list.value[0]


def _parse_figures(report: Report, repeats: int) -> None:
    for label, outputs, count, sequence in (
            (f"pooled ({HIDDEN})", ("pooled",), 2000, False),
            (f"pooled and sequence (128 x {HIDDEN})", ("pooled", "sequence"), 200, True)):
        records = ExampleEncoder(outputs).encode([_embedding(i, 128, sequence) for i in range(count)])
        if [example_key(r) for r in records] != [_tensorflow_key(r) for r in records]:
            raise SystemExit("example_key and tf.train.Example.FromString disagree")
        ours = _per_record_microseconds(example_key, records, repeats)
        theirs = _per_record_microseconds(_tensorflow_key, records, repeats)
        size = sum(len(r) for r in records) / count / 1024
        report.add(f"- id parse, {label}, {size:.0f} KiB a record, median of {repeats}: example_key "
                   f"**{ours:.1f} µs**, tf.train.Example.FromString {theirs:.1f} µs a record "
                   f"({theirs / ours:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 ids, not recorded")
    parser.add_argument("--ids", type=int, default=100_000, help="ids in the earlier output")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved runs without and with the join")
    args = parser.parse_args()
    ids = 10_000 if args.quick else args.ids
    report = Report("skip_embedded", args.quick)
    _parse_figures(report, 3 if args.quick else 7)
    with tempfile.TemporaryDirectory(dir=_TMPFS if os.path.isdir(_TMPFS) else None) as folder:
        earlier, input_path = os.path.join(folder, "earlier", "emb"), os.path.join(folder, "docs.jsonl")
        written = _write_earlier(earlier, ids)
        _write_input(input_path, ids)
        megabytes = sum(os.path.getsize(p) for p in glob.glob(earlier + "-*.tfrecord")) / 1e6
        report.add(f"- earlier output: {ids:,} ids, pooled {HIDDEN} float32, {SHARDS} TFRecord shards, "
                   f"{megabytes:.0f} MB, written in {written:.1f} s; input {ids + ids // 10:,} documents "
                   f"({os.path.getsize(input_path) / 1e6:.1f} MB JSON Lines), DirectRunner in this process")
        plain, joined = [], []
        for _ in range(args.pairs):
            seconds, on, _ = _run(input_path, None, os.path.join(folder, "new", "emb"))
            if on != ids + ids // 10:
                raise SystemExit(f"without the join {on} documents went on, expected {ids + ids // 10}")
            plain.append(seconds)
            seconds, on, skipped = _run(input_path, earlier, os.path.join(folder, "new", "emb"))
            if (on, skipped) != (ids // 10, ids):
                raise SystemExit(f"the join let {on} documents on and skipped {skipped}")
            joined.append(seconds)
    cost = statistics.median(joined) - statistics.median(plain)
    report.add(f"- read and count, without --skip_embedded_in: {statistics.median(plain):.1f} s (runs: "
               f"{', '.join(f'{s:.1f}' for s in plain)}); with it (read {ids:,} earlier ids, CoGroupByKey "
               f"with the input, {ids:,} skipped): {statistics.median(joined):.1f} s (runs: "
               f"{', '.join(f'{s:.1f}' for s in joined)})")
    report.add(f"- the join costs **{cost:.1f} s** for {ids:,} earlier ids: **{cost / ids * 1e6:.0f} µs per "
               f"earlier id** on one in-process worker ({ids / cost / 1000:.1f}k ids/s)")
    report.write()


if __name__ == "__main__":
    main()
