"""Entry point: ``python -m pipeline.run --input PATTERN --output PREFIX --model HANDLE``.

read → validate → tokenize → batch → infer → encode → write. Everything that can
be checked before the run (inputs exist, the model loads and answers, the
output is writable, max_seq_length fits) is checked first, so a
misconfigured job fails in seconds with a sentence, not after hours.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import apache_beam as beam

from pipeline.options import BertBeamOptions, ConfigurationError, parse_pipeline_options
from pipeline.plan import RunPlan, prepare_run
from pipeline.sinks import WriteDeadLetters, WriteEmbeddings
from pipeline.sources import ReadDocuments
from pipeline.summary import RunSummary, summarize
from transforms.embed import EmbedDocuments
from transforms.model_handler import BertModelHandler
from transforms.records import REJECTED_TAG


def build_pipeline(plan: RunPlan, pipeline: beam.Pipeline) -> beam.Pipeline:
    """Wires the stages onto ``pipeline`` without running it."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(plan.input_pattern, plan.input_config)
    documents = read.documents | "Redistribute" >> beam.Reshuffle()
    handler = BertModelHandler(
        plan.model_config, plan.batching, large_model=plan.large_model, model_copies=plan.model_copies
    )
    embedded = documents | "EmbedDocuments" >> EmbedDocuments(
        plan.tokenizer_config, plan.feature_config, plan.batching, handler
    )
    _ = embedded["embeddings"] | "WriteEmbeddings" >> WriteEmbeddings(
        plan.output_prefix, plan.outputs, plan.hidden_size, plan.output_compression, plan.num_shards
    )
    _ = (
        (read[REJECTED_TAG], embedded[REJECTED_TAG])
        | "MergeRejected" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(plan.dead_letter_prefix)
    )
    return pipeline


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Validates the configuration, runs the pipeline to the end and returns its summary."""
    options = parse_pipeline_options(list(argv) if argv is not None else sys.argv[1:])
    plan = prepare_run(options.view_as(BertBeamOptions))
    logging.info("bert-beam: %s", plan.describe())
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    result = build_pipeline(plan, pipeline).run()
    result.wait_until_finish()
    summary = summarize(result, plan.output_prefix, plan.dead_letter_prefix)
    print(summary.line(), flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``bert-beam``); exit status 2 on misconfiguration."""
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("apache_beam.typehints").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        run(argv)
    except ConfigurationError as error:
        print(f"bert-beam: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
