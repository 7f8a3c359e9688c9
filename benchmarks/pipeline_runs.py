"""Runs bert-beam in-process through ``pipeline.run.run`` and keeps its timing and metrics.

``run`` takes a ``test_pipeline``; the one passed here is an ordinary ``beam.Pipeline``
built from the same flags that only remembers its result, so that RunInference's own
distributions (batch count, time in ``run_inference``) can be read beside the RunSummary.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.run import run
from pipeline.summary import RunSummary
from transforms import counters


class RecordingPipeline(beam.Pipeline):
    """A Beam pipeline that keeps the result of its run."""

    result = None

    def run(self, test_runner_api="AUTO"):
        self.result = super().run(test_runner_api)
        return self.result


@dataclass(frozen=True)
class PipelineRun:
    """One finished bert-beam run: wall time, counters and RunInference distributions."""

    seconds: float
    summary: RunSummary
    batches: int
    inference_seconds: float
    model_load_ms: list[int]

    @property
    def documents(self) -> int:
        return self.summary[counters.DOCUMENTS_EMBEDDED]

    @property
    def real_tokens(self) -> int:
        return self.summary[counters.REAL_TOKENS]

    @property
    def padded_tokens(self) -> int:
        return self.summary[counters.PADDED_TOKENS]


def _distribution(result, name: str):
    query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE).with_name(name))
    values = [d.committed or d.attempted for d in query["distributions"]]
    return [v for v in values if v is not None]


def run_bert_beam(input_pattern: str, output_prefix: str, model: str, *extra: str) -> PipelineRun:
    """Runs the whole pipeline (read → ... → write) on the DirectRunner and times it.

    The clock covers everything ``run()`` does: option parsing, the fail-fast plan (which
    loads the model once in the launcher), the run itself and the summary.
    """
    for path in glob.glob(output_prefix + "*"):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    argv = [f"--input={input_pattern}", f"--output={output_prefix}", f"--model={model}",
            "--runner=DirectRunner", *extra]
    pipeline = RecordingPipeline(options=PipelineOptions(argv))
    start = time.perf_counter()
    summary = run(argv, test_pipeline=pipeline)
    seconds = time.perf_counter() - start
    if summary is None or pipeline.result is None:
        raise RuntimeError("bert-beam returned no summary (dry run or Dataflow?).")
    latency = _distribution(pipeline.result, "inference_batch_latency_micro_secs")
    loads = _distribution(pipeline.result, counters.MODEL_LOAD_MS)
    return PipelineRun(
        seconds=seconds,
        summary=summary,
        batches=sum(d.count for d in latency),
        inference_seconds=sum(d.sum for d in latency) / 1e6,
        model_load_ms=[int(d.sum / max(d.count, 1)) for d in loads for _ in range(d.count)],
    )
