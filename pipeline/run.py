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
from apache_beam.runners.runner import PipelineState

from pipeline.dataflow import is_dataflow, submitted_message
from pipeline.dry_run import describe_dry_run, dry_run_requested
from pipeline.incremental import SkipEmbedded
from pipeline.inputs.sources import ReadDocuments
from pipeline.manifest import (
    build_manifest,
    delete_files,
    model_fingerprint,
    stale_outputs,
    stale_shard_summaries,
    write_manifest,
)
from pipeline.options import BertBeamOptions, ConfigurationError, parse_pipeline_options
from pipeline.outputs.sinks import WriteDeadLetters, WriteEmbeddings
from pipeline.plan import RunPlan, prepare_run
from pipeline.summary import RunSummary, summarize
from pipeline.whitening import WhitenEmbeddings, fit_failure, whitening_manifest
from transforms.embed import EmbedDocuments

__all__ = ["build_pipeline", "main", "run"]


class JobNotDoneError(RuntimeError):
    """A job the launcher waited for ended without completing (cancelled, drained)."""


def build_pipeline(plan: RunPlan, pipeline: beam.Pipeline) -> beam.Pipeline:
    """Wires the stages onto ``pipeline`` from the plan alone, without running it."""
    read = pipeline | "ReadDocuments" >> ReadDocuments(plan.input.pattern, plan.input.config)
    if plan.input.skip_embedded_in:
        # The join on ids spreads the documents over workers as the Reshuffle would.
        documents = (read.documents | "SkipEmbedded" >> SkipEmbedded(plan.input.skip_embedded_in)).documents
    else:
        documents = read.documents | "Redistribute" >> beam.Reshuffle()
    embedding = plan.embedding
    # --right_fitting puts the model step (and only it) on GPU workers; no hints otherwise.
    embedded = documents | "EmbedDocuments" >> EmbedDocuments(
        embedding.tokenizer, embedding.features, embedding.batching, embedding.model_handler(),
        inference_hints=embedding.workers.inference_hints,
    )
    output = plan.output
    embeddings, rejected = embedded.embeddings, [read.rejected, embedded.rejected]
    if output.whitening_dims:
        whitened = embeddings | "WhitenEmbeddings" >> WhitenEmbeddings(
            output.prefix, output.whitening_dims, output.whitening_source, output.hidden_size)
        embeddings = whitened.embeddings
        rejected.append(whitened.rejected)
    _ = embeddings | "WriteEmbeddings" >> WriteEmbeddings(
        output.prefix, output.outputs.kinds, output.hidden_size, output.compression, output.num_shards,
        output.outputs.sequence_dtype, output_format=output.format, whitening_dims=output.whitening_dims,
    )
    _ = (
        rejected
        | "MergeRejected" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(output.dead_letter_prefix, output.excerpt_chars)
    )
    return pipeline


def _new_pipeline(plan: RunPlan) -> beam.Pipeline:
    """A pipeline on the plan's options (which Beam's own checks have passed)."""
    try:
        return beam.Pipeline(options=plan.pipeline_options)
    except ValueError as error:  # Beam raises "Pipeline has validations errors: ..."
        raise ConfigurationError(str(error).strip()) from error


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary | None:
    """Validates the configuration, runs the pipeline to the end and returns its summary.

    On Dataflow it submits the job and returns None without waiting (a Flex Template launch
    must exit once the job exists); the counters are on the job's console page. With
    ``--wait_until_finish`` it waits and then summarises the job and writes its manifest as a local
    run does. With ``--dry_run`` it prints what would run, runs nothing and returns None.
    """
    options = parse_pipeline_options(list(argv) if argv is not None else sys.argv[1:])
    dry_run = dry_run_requested(options)
    plan = prepare_run(options)
    logging.info("bert-beam: %s", plan.describe())
    pipeline = build_pipeline(plan, test_pipeline if test_pipeline is not None else _new_pipeline(plan))
    if dry_run:
        print(describe_dry_run(plan.pipeline_options, pipeline, plan.describe(), plan.resolved_flags()),
              flush=True)
        return None
    _remove_earlier_outputs(plan)
    started = time.monotonic()
    result = pipeline.run()
    if is_dataflow(plan.pipeline_options):
        print(submitted_message(result, plan.pipeline_options), flush=True)
    if not plan.waits:
        return None
    state = result.wait_until_finish()
    if state not in (None, PipelineState.DONE):  # a Dataflow job cancelled or drained before its end
        raise JobNotDoneError(f"the job ended {state}, not DONE: its output may lack documents, so no "
                              "manifest was written.")
    output = plan.output
    summary = summarize(result, output.prefix, output.dead_letter_prefix, time.monotonic() - started)
    manifest = build_manifest(
        output.prefix,
        summary.counters,
        {"handle": plan.embedding.model.handle, "path": plan.embedding.model_path,
         "fingerprint": model_fingerprint(plan.embedding.model_path)},
        options.view_as(BertBeamOptions).get_all_options(current_only=True),
        plan.resolved_flags(),
    )
    if output.whitening_dims:
        manifest["whitening"] = whitening_manifest(output.prefix)
    write_manifest(output.prefix, manifest)
    delete_files(stale_shard_summaries(output.prefix))
    print(summary.report(), flush=True)
    print(summary.line(), flush=True)
    return summary


def _remove_earlier_outputs(plan: RunPlan) -> None:
    """A rerun replaces what an earlier (perhaps killed) run left under the same prefixes.

    Beam's sinks finalise shards by renaming; shards of an earlier run with another shard
    count would otherwise stay beside the new ones and be read twice.
    """
    stale = stale_outputs(plan.output.prefix, plan.output.dead_letter_prefix)
    if stale:
        logging.warning("bert-beam: replacing %d file(s) of an earlier run under %s, e.g. %s",
                        len(stale), plan.output.prefix, stale[0])
        delete_files(stale)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``bert-beam``); exit status 2 on misconfiguration, 1 when the job fails
    for a reason it states in one sentence (a whitening that cannot be fitted, a waited-for Dataflow
    job that did not complete).

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
    except JobNotDoneError as error:
        print(f"bert-beam: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # the runner re-raises a worker's failure wrapped in its own types
        message = fit_failure(error)
        if message is None:
            raise
        print(f"bert-beam: error: the run failed: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
