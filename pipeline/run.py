"""Entry point: ``python -m pipeline.run --input PATTERN --output PREFIX --model HANDLE``.

read → validate → tokenize → batch → infer → encode → write. Everything that can
be checked before the run (inputs exist, the model loads and answers, the
output is writable, max_seq_length fits) is checked first, so a
misconfigured job fails in seconds with a sentence, not after hours.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.dataflow import (
    inference_resource_hints,
    is_dataflow,
    resolve_dataflow_options,
    submitted_message,
)
from pipeline.dry_run import describe_dry_run, dry_run_requested
from pipeline.manifest import (
    build_manifest,
    delete_files,
    model_fingerprint,
    stale_outputs,
    stale_shard_summaries,
    write_manifest,
)
from pipeline.options import BertBeamOptions, ConfigurationError, worker_tf_threads
from pipeline.plan import RunPlan, prepare_run
from pipeline.sinks import WriteDeadLetters, WriteEmbeddings
from pipeline.sources import ReadDocuments
from pipeline.summary import RunSummary, summarize
from transforms.embed import EmbedDocuments
from transforms.model_handler import BertModelHandler
from transforms.model_outputs import OutputRequest


def build_pipeline(plan: RunPlan, pipeline: beam.Pipeline) -> beam.Pipeline:
    """Wires the stages onto ``pipeline`` without running it."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(plan.input_pattern, plan.input_config)
    documents = read.documents | "Redistribute" >> beam.Reshuffle()
    handler = BertModelHandler(
        plan.model_config,
        plan.batching,
        outputs=OutputRequest(plan.outputs, plan.sequence_dtype),
        large_model=plan.large_model,
        model_copies=plan.model_copies,
        require_gpu=bool(pipeline.options.view_as(BertBeamOptions).require_gpu),
        tf_threads=worker_tf_threads(pipeline.options),
    )
    # --right_fitting puts the model step (and only it) on GPU workers; no hints otherwise.
    embedded = documents | "EmbedDocuments" >> EmbedDocuments(
        plan.tokenizer_config, plan.feature_config, plan.batching, handler,
        inference_hints=inference_resource_hints(pipeline.options),
    )
    _ = embedded.embeddings | "WriteEmbeddings" >> WriteEmbeddings(
        plan.output_prefix, plan.outputs, plan.hidden_size, plan.output_compression, plan.num_shards,
        plan.sequence_dtype,
    )
    _ = (
        (read.rejected, embedded.rejected)
        | "MergeRejected" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(plan.dead_letter_prefix, plan.excerpt_chars)
    )
    return pipeline


def _new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on ``options``; Beam's own option checks (project id, gs:// paths ...) run here."""
    try:
        return beam.Pipeline(options=options)
    except ValueError as error:  # Beam raises "Pipeline has validations errors: ..."
        raise ConfigurationError(str(error).strip()) from error


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary | None:
    """Validates the configuration, runs the pipeline to the end and returns its summary.

    On Dataflow it submits the job and returns None without waiting (a Flex Template launch
    must exit once the job exists); the counters are on the job's console page. With
    ``--dry_run`` it prints what would run, runs nothing and returns None.
    """
    options = resolve_dataflow_options(list(argv) if argv is not None else sys.argv[1:])
    dry_run = dry_run_requested(options)
    pipeline = test_pipeline if test_pipeline is not None else _new_pipeline(options)
    plan = prepare_run(options.view_as(BertBeamOptions))
    logging.info("bert-beam: %s", plan.describe())
    build_pipeline(plan, pipeline)
    if dry_run:
        print(describe_dry_run(options, pipeline, plan.describe()), flush=True)
        return None
    _remove_earlier_outputs(plan)
    started = time.monotonic()
    result = pipeline.run()
    if is_dataflow(options):
        print(submitted_message(result, options), flush=True)
        return None
    result.wait_until_finish()
    summary = summarize(result, plan.output_prefix, plan.dead_letter_prefix, time.monotonic() - started)
    manifest = build_manifest(
        plan.output_prefix,
        summary.counters,
        {"handle": plan.model_config.handle, "path": plan.model_path,
         "fingerprint": model_fingerprint(plan.model_path)},
        options.view_as(BertBeamOptions).get_all_options(current_only=True),
    )
    write_manifest(plan.output_prefix, manifest)
    delete_files(stale_shard_summaries(plan.output_prefix))
    print(summary.report(), flush=True)
    print(summary.line(), flush=True)
    return summary


def _remove_earlier_outputs(plan: RunPlan) -> None:
    """A rerun replaces what an earlier (perhaps killed) run left under the same prefixes.

    Beam's sinks finalise shards by renaming; shards of an earlier run with another shard
    count would otherwise stay beside the new ones and be read twice.
    """
    stale = stale_outputs(plan.output_prefix, plan.dead_letter_prefix)
    if stale:
        logging.warning("bert-beam: replacing %d file(s) of an earlier run under %s, e.g. %s",
                        len(stale), plan.output_prefix, stale[0])
        delete_files(stale)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``bert-beam``); exit status 2 on misconfiguration.

    ``bert-beam convert ...`` is ``python -m pipeline.conversion ...``.
    """
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv[:1] == ["convert"]:
        from pipeline.conversion import convert

        return convert.main(argv[1:])
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("apache_beam.typehints").setLevel(logging.WARNING)
    try:
        run(argv)
    except ConfigurationError as error:
        print(f"bert-beam: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
