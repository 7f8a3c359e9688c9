"""Checks a run's configuration before any work starts and resolves it into one typed RunPlan.

``prepare_run`` reads the options once and decides every derived default (the GPU and model
sharing, TensorFlow's threads, the dead-letter prefix, the Dataflow additions); the stages are
wired from the plan alone (``pipeline.run.build_pipeline``).
"""

from __future__ import annotations

import copy
import gc
import logging
import posixpath
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.runners.runner import create_runner

from pipeline import schema
from pipeline.dataflow import check_dataflow_job, dataflow_job_options, is_dataflow
from pipeline.incremental import EarlierOutput, check_earlier_outputs, parse_prefixes
from pipeline.inputs.sources import InputConfig, binary_inputs_error, input_columns_error
from pipeline.manifest import model_fingerprint
from pipeline.options import BertBeamOptions, ConfigurationError
from pipeline.outputs.sinks import default_dead_letter_prefix
from pipeline.whitening_math import DEFAULT_WHITENING_DIMS, DEFAULT_WHITENING_SOURCE, whitening_error
from pipeline.workers import WorkerPlan, plan_workers
from transforms.batching import BatchingConfig
from transforms.call_conventions import POOLED_OUTPUT, SEQUENCE_OUTPUT
from transforms.embed import TokenizerConfig
from transforms.features import WINDOW, FeatureConfig, pad_batch, parse_bucket_boundaries
from transforms.model_handler import BertModelHandler
from transforms.model_loading import LoadedBert, ModelConfig, ModelError, parse_tensor_names
from transforms.model_ops import parse_op_names
from transforms.model_outputs import OutputRequest
from transforms.records import Features
from transforms.tokenization import FullTokenizer, read_vocab_file

__all__ = ["EmbeddingPlan", "InputPlan", "OutputPlan", "RunPlan", "job_options", "prepare_run",
           "probe_failure_kind"]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputPlan:
    """What ``ReadDocuments`` reads."""

    pattern: str
    config: InputConfig
    files: int  # matched when the run was planned
    skip_embedded_in: tuple[EarlierOutput, ...] = ()  # completed earlier outputs whose documents are skipped


@dataclass(frozen=True)
class EmbeddingPlan:
    """What ``EmbedDocuments`` needs: tokenizer, features, batching, the model and where it runs."""

    tokenizer: TokenizerConfig
    features: FeatureConfig
    batching: BatchingConfig
    model: ModelConfig
    outputs: OutputRequest
    workers: WorkerPlan
    model_path: str  # the handle resolved: the folder the model was loaded from
    model_description: str
    hidden_size: int

    def model_handler(self) -> BertModelHandler:
        return BertModelHandler(
            self.model,
            self.batching,
            outputs=self.outputs,
            large_model=self.workers.large_model,
            model_copies=self.workers.model_copies,
            require_gpu=self.workers.require_gpu,
            tf_threads=self.workers.tf_threads,
        )


@dataclass(frozen=True)
class OutputPlan:
    """What ``WriteEmbeddings`` and ``WriteDeadLetters`` write, and where."""

    prefix: str
    outputs: OutputRequest
    hidden_size: int
    format: str
    compression: str
    num_shards: int
    dead_letter_prefix: str
    excerpt_chars: int
    whitening_dims: int = DEFAULT_WHITENING_DIMS  # 0: no whitened_output
    whitening_source: str = DEFAULT_WHITENING_SOURCE


@dataclass(frozen=True)
class RunPlan:
    """Everything the pipeline needs, resolved and validated; ``pipeline_options`` are the job's Beam
    options: the user's, with what a Dataflow job needs added."""

    input: InputPlan
    embedding: EmbeddingPlan
    output: OutputPlan
    pipeline_options: PipelineOptions
    waits: bool = True  # for the job to finish, and then writes the manifest: all but a Dataflow submission

    def describe(self) -> str:
        embedding = self.embedding
        return (
            f"{self.input.files} input file(s) matching {self.input.pattern}{self._skipping()}; model: "
            f"{embedding.model_description}; hidden size {embedding.hidden_size}; max_seq_length "
            f"{embedding.features.max_seq_length}, {embedding.features.long_document}; "
            f"vocab of {len(embedding.tokenizer.vocab_lines)} tokens, "
            f"do_lower_case={embedding.tokenizer.do_lower_case}; {embedding.batching.describe()}; "
            f"{embedding.workers.describe_sharing()}; outputs "
            f"{','.join(self.output.outputs.kinds)}{self._whitening()} → {self.output.prefix}; "
            f"dead letters → {self.output.dead_letter_prefix}"
        )

    def _whitening(self) -> str:
        output = self.output
        if not output.whitening_dims:
            return ""
        return f", {output.whitening_source} whitened to {output.whitening_dims} dimensions"

    def _skipping(self) -> str:
        earlier = self.input.skip_embedded_in
        if not earlier:
            return ""
        return f", skipping documents embedded in {', '.join(output.prefix for output in earlier)}"

    def resolved_flags(self) -> dict[str, object]:
        """The bert-beam flags whose defaults the plan derived, with the values the job runs with."""
        embedding, workers = self.embedding, self.embedding.workers
        return {"dead_letter": self.output.dead_letter_prefix, **_record_shaping_defaults(embedding),
                "large_model": workers.large_model, "require_gpu": workers.require_gpu,
                "round_batch_rows": embedding.batching.round_batch_rows, "tf_threads": workers.tf_threads}


def _record_shaping_defaults(embedding: EmbeddingPlan) -> dict[str, object]:
    """The record-shaping flags whose default the plan resolves: the casing (the model's unless
    given) and, for windows, the stride (half a window unless given)."""
    resolved: dict[str, object] = {"do_lower_case": embedding.tokenizer.do_lower_case}
    if embedding.features.long_document == WINDOW:
        resolved["doc_stride"] = embedding.features.stride
    return resolved


def _check_earlier_dead_letters_reachable(earlier: Sequence[EarlierOutput], options: PipelineOptions) -> None:
    """A Dataflow job's workers read an earlier run's dead letters only from Cloud Storage."""
    if not is_dataflow(options):
        return
    for output in earlier:
        if output.dead_letter_pattern and not output.dead_letter_pattern.startswith("gs://"):
            raise ConfigurationError(
                f"--skip_embedded_in {output.prefix!r} needs its dead letters {output.dead_letter_pattern}, "
                "which a Dataflow job's workers cannot reach: run this job locally, or drop the prefix "
                "to embed its documents again.")


def _match_input_files(pattern: str, config: InputConfig) -> list[str]:
    """The files ``--input`` matches; fails when there are none, when all are binary (and not read as
    Parquet), or when the first CSV or Parquet file lacks a column the flags name."""
    try:
        matched = [metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list]
    except Exception as error:  # filesystems raise their own types for bad paths or buckets
        raise ConfigurationError(f"Cannot list --input {pattern!r}: {error}") from error
    if not matched:
        raise ConfigurationError(f"No file matches --input {pattern!r}.")
    message = binary_inputs_error(matched, config.compression, config.input_format) or (
        input_columns_error(matched, config))
    if message:
        raise ConfigurationError(message)
    return matched


def _check_writable(prefix: str) -> None:
    """Writes and deletes a probe file in the output folder (never under the prefix itself)."""
    directory = posixpath.dirname(prefix) or "."
    probe = FileSystems.join(directory, f".bert-beam-write-check-{uuid.uuid4().hex}")
    try:
        if "://" not in directory and not FileSystems.exists(directory):
            FileSystems.mkdirs(directory)
        with FileSystems.create(probe) as handle:
            handle.write(b"ok")
        FileSystems.delete([probe])
    except Exception as error:  # any filesystem failure means "cannot write there"
        raise ConfigurationError(f"Cannot write to {directory!r}: {error}") from error


def _tokenizer_config(options: BertBeamOptions, model: LoadedBert) -> TokenizerConfig:
    """The vocab and casing: the user's flags where given (the model is not asked), else the model's."""
    import tensorflow as tf

    model_lower = model.do_lower_case()
    vocab_path = options.vocab_file or model.vocab_file()
    do_lower_case = options.do_lower_case if options.do_lower_case is not None else model_lower
    if vocab_path is None or do_lower_case is None:
        missing = [name for name, value in (("--vocab_file", vocab_path),
                                            ("--do_lower_case", do_lower_case)) if value is None]
        raise ConfigurationError(
            f"The model declares no {' and no '.join(m.removeprefix('--') for m in missing)} "
            f"(it has no tokenization_info signature, vocab_file attribute or assets/vocab.txt). "
            f"It is {model.describe()}. Pass {' and '.join(missing)}."
        )
    if model_lower is not None and do_lower_case != model_lower:
        _LOG.warning("--do_lower_case=%s overrides the model's own do_lower_case=%s.",
                     do_lower_case, model_lower)
    try:
        vocab_lines = read_vocab_file(vocab_path)
        FullTokenizer(vocab_lines, do_lower_case)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise ConfigurationError(f"Cannot use vocab file {vocab_path!r}: {error}") from error
    if model.vocab_rows is not None and len(vocab_lines) > model.vocab_rows:
        raise ConfigurationError(
            f"The vocab file {vocab_path!r} has {len(vocab_lines)} tokens but the model's word "
            f"embedding table has {model.vocab_rows} rows: it is not the model's own vocabulary."
        )
    return TokenizerConfig(vocab_lines=vocab_lines, do_lower_case=do_lower_case)


def _probe_hidden_size(model: LoadedBert, tokenizer: TokenizerConfig, outputs: tuple[str, ...]) -> int:
    """Runs [CLS] (last vocab id) [SEP] through the model: proves it answers and the vocab fits."""
    if schema.POOLED in outputs and POOLED_OUTPUT not in model.output_keys:
        raise ConfigurationError(
            f"--outputs asks for pooled, but the model has no pooled output (it is "
            f"{model.describe()}); use --outputs mean,sequence or map one with --signature_tensors "
            "pooled_output=NAME.")
    full = FullTokenizer(tokenizer.vocab_lines, tokenizer.do_lower_case)
    ids = np.array([full.cls_id, len(tokenizer.vocab_lines) - 1, full.sep_id], np.int32)
    probe = Features("probe", ids, np.zeros(3, np.int32))
    try:
        result = model(pad_batch([probe], 3))
    except Exception as error:  # TF raises many types; any failure here is a misconfiguration
        raise ConfigurationError(
            f"The model failed on a probe batch [CLS] (id {len(tokenizer.vocab_lines) - 1}) [SEP]: "
            f"{probe_failure_kind(error, len(tokenizer.vocab_lines))} It was called as "
            f"{model.convention.describe()}: {type(error).__name__}: {str(error)[:300]} "
            f"Its callables:\n{model.describe_callables()}"
        ) from error
    return int(result[SEQUENCE_OUTPUT].shape[-1])


def probe_failure_kind(error: BaseException, vocab_size: int) -> str:
    """One sentence on what failed in a model call: binding, dtypes, shapes or the vocabulary."""
    text = str(error)
    if isinstance(error, TypeError) or "Binding inputs" in text or "matching concrete function" in text:
        return "Binding failed: the model's function does not accept the inputs it was given."
    if re.search(r"indices\[[^]]*\] = -?\d+ is not in \[0, \d+\)", text):
        return (f"The vocabulary does not fit: its ids (up to {vocab_size - 1}) go beyond the model's "
                "embedding table, so it is not the model's own vocab.")
    if re.search(r"expected to be an? \w+ tensor|dtype|DataType", text, re.IGNORECASE):
        return "Dtypes failed: the model wants other input types than it was given."
    if re.search(r"shape|dimension|rank", text, re.IGNORECASE):
        return "Shapes failed: the model wants inputs of other shapes than [batch, length]."
    return "The model call failed."


@dataclass(frozen=True)
class _ModelFacts:
    """What the launcher learns from loading the model once."""

    path: str
    description: str
    tokenizer_config: TokenizerConfig
    hidden_size: int


def _inspect_model(
    options: BertBeamOptions, model_config: ModelConfig, outputs: tuple[str, ...]
) -> _ModelFacts:
    """Loads the model, checks it against the options and runs the probe batch."""
    try:
        model = LoadedBert(model_config)
    except ModelError as error:
        raise ConfigurationError(str(error)) from error
    except Exception as error:  # loading raises TF, IO and hub errors alike
        raise ConfigurationError(
            f"Cannot load model {options.model!r}: {type(error).__name__}: {str(error)[:500]}"
        ) from error
    if model.max_positions is not None and options.max_seq_length > model.max_positions:
        raise ConfigurationError(
            f"--max_seq_length {options.max_seq_length} is over the model's limit of "
            f"{model.max_positions} positions."
        )
    fixed = model.convention.fixed_length
    if fixed is not None and options.max_seq_length > fixed:
        raise ConfigurationError(
            f"--max_seq_length {options.max_seq_length} is over the {fixed} tokens that the model's "
            f"inputs are fixed at; pass --max_seq_length {fixed} or less."
        )
    try:
        tokenizer_config = _tokenizer_config(options, model)
    except ModelError as error:
        raise ConfigurationError(str(error)) from error
    return _ModelFacts(model.path, model.describe(), tokenizer_config,
                       _probe_hidden_size(model, tokenizer_config, outputs))


def prepare_run(options: PipelineOptions) -> RunPlan:
    """Validates every option and the model, cheapest checks first; raises ConfigurationError with a
    clear message. The model is loaded last, once, and freed before the run."""
    bert = options.view_as(BertBeamOptions)
    for flag in ("input", "output"):
        if not getattr(bert, flag):
            raise ConfigurationError(f"--{flag} is required.")
    outputs, features, batching, model_config = _parse_configs(bert)
    workers = plan_workers(options)
    pipeline_options = job_options(options, workers)
    _check_beam_options(pipeline_options)
    FileSystems.set_options(pipeline_options)  # gs:// credentials for the listing and the probe below
    input_config = InputConfig(
        input_format=bert.input_format,
        id_field=bert.id_field,
        text_field=bert.text_field,
        text_b_field=bert.text_b_field,
        compression=bert.compression,
        max_record_bytes=bert.max_record_bytes,
        csv_delimiter=bert.csv_delimiter,
    )
    input_files = len(_match_input_files(bert.input, input_config))
    _check_writable(bert.output)
    earlier = parse_prefixes(bert.skip_embedded_in or "")
    if earlier and bert.whitening_dims:
        raise ConfigurationError(
            "--whitening_dims fits a whitening on the run's own records: with --skip_embedded_in it would "
            "see only the new documents, and the outputs would hold vectors whitened two ways; whiten "
            "a run of the whole corpus instead.")
    check_earlier_outputs(earlier, bert.get_all_options(current_only=True))  # before the model loads
    model_facts = _inspect_model(bert, model_config, outputs.kinds)
    message = whitening_error(bert.whitening_dims, bert.whitening_source, outputs.kinds,
                              model_facts.hidden_size)
    if message:
        raise ConfigurationError(message)
    # The launcher needs the model only for these checks: free it (cycles included) before the
    # run, or a local multi-process run holds one more copy than its workers for its whole length.
    gc.collect()
    embedding = EmbeddingPlan(
        tokenizer=model_facts.tokenizer_config,
        features=features,
        batching=batching,
        model=model_config,
        outputs=outputs,
        workers=workers,
        model_path=model_facts.path,
        model_description=model_facts.description,
        hidden_size=model_facts.hidden_size,
    )
    if earlier:  # the model, and the options as this run resolves them
        earlier = check_earlier_outputs(earlier, bert.get_all_options(current_only=True),
                                        model_fingerprint(model_facts.path),
                                        _record_shaping_defaults(embedding))
        _check_earlier_dead_letters_reachable(earlier, pipeline_options)
    return RunPlan(
        input=InputPlan(pattern=bert.input, config=input_config, files=input_files, skip_embedded_in=earlier),
        embedding=embedding,
        output=OutputPlan(
            prefix=bert.output,
            outputs=outputs,
            hidden_size=model_facts.hidden_size,
            format=bert.output_format,
            compression=bert.output_compression,
            num_shards=bert.num_shards,
            dead_letter_prefix=bert.dead_letter or default_dead_letter_prefix(bert.output),
            excerpt_chars=bert.dead_letter_excerpt_chars,
            whitening_dims=bert.whitening_dims,
            whitening_source=bert.whitening_source,
        ),
        pipeline_options=pipeline_options,
        waits=not is_dataflow(pipeline_options) or bert.wait_until_finish,
    )


def _parse_configs(
    bert: BertBeamOptions,
) -> tuple[OutputRequest, FeatureConfig, BatchingConfig, ModelConfig]:
    """The stages' configs from the flags; each config checks its own values."""
    try:
        outputs = OutputRequest(schema.parse_outputs(bert.outputs), bert.sequence_dtype)
        features = FeatureConfig(
            max_seq_length=bert.max_seq_length,
            long_document=bert.long_document,
            doc_stride=bert.doc_stride,
        )
        batching = BatchingConfig(
            max_seq_length=bert.max_seq_length,
            bucket_boundaries=parse_bucket_boundaries(bert.bucket_boundaries),
            max_batch_size=bert.batch_size,
            max_batch_tokens=bert.max_batch_tokens,
            round_batch_rows=bert.jit_compile if bert.round_batch_rows is None else bert.round_batch_rows,
        )
        if batching.max_batch_tokens < bert.max_seq_length:
            raise ValueError(f"--max_batch_tokens ({bert.max_batch_tokens}) must be at least "
                             f"--max_seq_length ({bert.max_seq_length}).")
        model_config = ModelConfig(
            handle=bert.model,
            signature=bert.signature,
            tensor_names=parse_tensor_names(bert.signature_tensors),
            jit_compile=bert.jit_compile,
            allow_model_ops=parse_op_names(bert.allow_model_ops),
        )
    except ValueError as error:
        raise ConfigurationError(str(error)) from error
    return outputs, features, batching, model_config


def job_options(options: PipelineOptions, workers: WorkerPlan) -> PipelineOptions:
    """The job's Beam options: the user's, checked by Dataflow's rules and with what a Dataflow job
    needs added when the runner is Dataflow."""
    if not is_dataflow(options):
        if options.view_as(BertBeamOptions).wait_until_finish:
            raise ConfigurationError("--wait_until_finish is for the DataflowRunner: every other run "
                                     "waits for its job already.")
        return options
    check_dataflow_job(options)
    return dataflow_job_options(options, workers.gpu)


def _check_beam_options(options: PipelineOptions) -> None:
    """Beam's own validator, as the pipeline will run it, now: before anything is listed or loaded."""
    runner = options.view_as(StandardOptions).runner or StandardOptions.DEFAULT_RUNNER
    try:
        # On a copy: validating writes some defaults (save_main_session) into the options it reads.
        errors = PipelineOptionsValidator(
            copy.deepcopy(options), create_runner(runner) if isinstance(runner, str) else runner).validate()
    except ValueError as error:  # an unknown runner name
        raise ConfigurationError(str(error).strip()) from error
    if errors:
        raise ConfigurationError("Pipeline has validations errors: \n" + "\n".join(errors))
