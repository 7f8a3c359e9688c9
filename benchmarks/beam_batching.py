"""bert-beam's length batching against Beam 2.77's own, on the same features and model.

Beam's ``ModelHandler`` takes ``batch_length_fn`` and ``batch_bucket_boundaries``. In Beam
2.77 ``BatchElements`` uses them only together with ``max_batch_duration_secs``: it then keys
every element by its length bucket and batches in a stateful DoFn per key (on a batch runner
every element of a bucket goes through one key, and there are only as many keys as buckets).
Without it, RunInference batches by count, whatever the lengths.

The features of padding.py's long-tailed corpus (max_seq_length 512) go through RunInference
with the same model handler (each batch padded to the bucket of its longest record) batched
three ways:

* ``bert-beam``: ``BatchByLength`` (one bucket per batch, at most 32 records and 16384
  padded tokens), then RunInference without batching, as the pipeline runs;
* ``Beam length buckets``: ``batch_length_fn`` + ``batch_bucket_boundaries`` (the same
  buckets; Beam's are lower-inclusive, so each boundary is shifted by one) +
  ``max_batch_duration_secs``, at most 32 records;
* ``Beam by count``: RunInference's default batching, at most 32 records.

Each prints computed/real tokens (from the handler's counters), batches and time; the
pipelines run in this process on the DirectRunner, after a warm-up run.

    .venv/bin/python benchmarks/beam_batching.py [--quick] [--documents N]
"""

from __future__ import annotations

import argparse
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from padding import MAX_SEQ_LENGTH, corpus_and_model, records
from results import Report

from transforms import counters
from transforms.batching import BatchByLength, BatchingConfig
from transforms.model_handler import BertModelHandler
from transforms.model_loading import ModelConfig

BATCH_SIZE = 32


class _BeamBatchedHandler(BertModelHandler):
    """The same handler, batched by Beam's BatchElements with the given arguments."""

    def __init__(self, model_config: ModelConfig, batching: BatchingConfig, beam_batching: dict) -> None:
        super().__init__(model_config, batching)
        self._beam_batching = beam_batching

    def batch_elements_kwargs(self) -> dict:
        return dict(self._beam_batching)


def _counter(result, name: str) -> int:
    query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE).with_name(name))
    return sum(c.committed or c.attempted or 0 for c in query["counters"])


def _run(strategy: str, records_in, model: str, batching: BatchingConfig) -> dict:
    config = ModelConfig(model)
    boundaries = [b + 1 for b in batching.bucket_boundaries]  # Beam's buckets are [low, high)
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"]))
    features = pipeline | "Create" >> beam.Create(records_in)
    if strategy == "bert-beam":
        batches = features | BatchByLength(batching)
        results = batches | RunInference(BertModelHandler(config, batching).with_no_batching())
    else:
        beam_batching = {"max_batch_size": BATCH_SIZE}
        if strategy == "Beam length buckets":
            beam_batching |= {"length_fn": lambda record: record.sequence_length,
                              "bucket_boundaries": boundaries, "max_batch_duration_secs": 5}
        results = features | RunInference(_BeamBatchedHandler(config, batching, beam_batching))
    _ = results | beam.combiners.Count.Globally()
    start = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    real = _counter(result, counters.REAL_TOKENS)
    padded = _counter(result, counters.PADDED_TOKENS)
    batches = _counter(result, counters.BATCHES)
    return {"seconds": seconds, "ratio": (real + padded) / real, "batches": batches, "real": real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run on a few documents, not recorded")
    parser.add_argument("--documents", type=int, default=None, help="documents (default 1500; 60 quick)")
    args = parser.parse_args()
    n = args.documents or (60 if args.quick else 1500)
    report = Report("beam_batching", args.quick)
    vocab, model, texts = corpus_and_model(n)
    features = list(records(texts, vocab))
    batching = BatchingConfig(MAX_SEQ_LENGTH, max_batch_size=BATCH_SIZE)
    report.add(f"- padding.py's corpus and model: {n} documents, {len(features)} records, max_seq_length "
               f"{MAX_SEQ_LENGTH}; buckets {','.join(map(str, batching.bucket_boundaries))}; at most "
               f"{BATCH_SIZE} records a batch; DirectRunner in this process after a warm-up run")
    _run("bert-beam", features[:8], model, batching)
    runs = {}
    for strategy in ("bert-beam", "Beam length buckets", "Beam by count"):
        runs[strategy] = run = _run(strategy, features, model, batching)
        report.add(f"- {strategy}: computed/real tokens **{run['ratio']:.3f}**, {run['batches']} batches, "
                   f"{run['seconds']:.1f} s ({len(features) / run['seconds']:.0f} records/s)")
    ours = runs["bert-beam"]
    for strategy in ("Beam length buckets", "Beam by count"):
        report.add(f"- bert-beam against {strategy}: {runs[strategy]['seconds'] / ours['seconds']:.2f}× "
                   f"faster, {runs[strategy]['ratio'] / ours['ratio']:.2f}× fewer computed tokens")
    report.write()


if __name__ == "__main__":
    main()
