"""Checks a run's configuration before any work starts and resolves it into a RunPlan."""

from __future__ import annotations

import gc
import logging
import posixpath
import re
import uuid
from dataclasses import dataclass

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline import schema
from pipeline.options import BertBeamOptions, ConfigurationError
from pipeline.sinks import default_dead_letter_prefix
from pipeline.sources import InputConfig, binary_inputs_error
from transforms.batching import BatchingConfig
from transforms.call_conventions import POOLED_OUTPUT, SEQUENCE_OUTPUT
from transforms.embed import TokenizerConfig
from transforms.features import FeatureConfig, pad_batch, parse_bucket_boundaries
from transforms.model_loading import LoadedBert, ModelConfig, ModelError, parse_tensor_names
from transforms.model_ops import parse_op_names
from transforms.records import Features
from transforms.tokenization import FullTokenizer, read_vocab_file

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """Everything the pipeline needs, resolved and validated."""

    input_pattern: str
    input_config: InputConfig
    output_prefix: str
    dead_letter_prefix: str
    excerpt_chars: int
    outputs: tuple[str, ...]
    sequence_dtype: str
    output_compression: str
    num_shards: int
    model_config: ModelConfig
    model_path: str
    model_description: str
    tokenizer_config: TokenizerConfig
    feature_config: FeatureConfig
    hidden_size: int
    batching: BatchingConfig
    large_model: bool
    model_copies: int | None
    input_files: int

    def describe(self) -> str:
        return (
            f"{self.input_files} input file(s) matching {self.input_pattern}; model: "
            f"{self.model_description}; hidden size {self.hidden_size}; max_seq_length "
            f"{self.feature_config.max_seq_length}, {self.feature_config.long_document}; "
            f"vocab of {len(self.tokenizer_config.vocab_lines)} tokens, "
            f"do_lower_case={self.tokenizer_config.do_lower_case}; {self.batching.describe()}; "
            f"{self._sharing()}; outputs "
            f"{','.join(self.outputs)} → {self.output_prefix}; dead letters → {self.dead_letter_prefix}"
        )

    def _sharing(self) -> str:
        if self.model_copies is not None:
            return f"{self.model_copies} model copies per machine, shared by its worker processes"
        if self.large_model:
            return "one model copy per machine, shared by its worker processes (--large_model)"
        return "a model copy per worker process"


def _match_input_files(pattern: str, compression: str) -> list[str]:
    """The files ``--input`` matches; fails when there are none or all are binary."""
    try:
        matched = [metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list]
    except Exception as error:  # filesystems raise their own types for bad paths or buckets
        raise ConfigurationError(f"Cannot list --input {pattern!r}: {error}") from error
    if not matched:
        raise ConfigurationError(f"No file matches --input {pattern!r}.")
    message = binary_inputs_error(matched, compression)
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


def prepare_run(options: BertBeamOptions) -> RunPlan:
    """Validates every option and the model; raises ConfigurationError with a clear message."""
    for flag in ("input", "output"):
        if not getattr(options, flag):
            raise ConfigurationError(f"--{flag} is required.")
    try:
        outputs = schema.parse_outputs(options.outputs)
        feature_config = FeatureConfig(
            max_seq_length=options.max_seq_length,
            long_document=options.long_document,
            doc_stride=options.doc_stride,
        )
        batching = BatchingConfig(
            max_seq_length=options.max_seq_length,
            bucket_boundaries=parse_bucket_boundaries(options.bucket_boundaries),
            max_batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
            round_batch_rows=(options.jit_compile if options.round_batch_rows is None
                              else options.round_batch_rows),
        )
        if batching.max_batch_tokens < options.max_seq_length:
            raise ValueError(f"--max_batch_tokens ({options.max_batch_tokens}) must be at least "
                             f"--max_seq_length ({options.max_seq_length}).")
        model_config = ModelConfig(
            handle=options.model,
            signature=options.signature,
            tensor_names=parse_tensor_names(options.signature_tensors),
            jit_compile=options.jit_compile,
            allow_model_ops=parse_op_names(options.allow_model_ops),
        )
    except ValueError as error:
        raise ConfigurationError(str(error)) from error
    input_files = len(_match_input_files(options.input, options.compression))
    _check_writable(options.output)
    model_facts = _inspect_model(options, model_config, outputs)
    # The launcher needs the model only for these checks: free it (cycles included) before the
    # run, or a local multi-process run holds one more copy than its workers for its whole length.
    gc.collect()
    return RunPlan(
        input_pattern=options.input,
        input_config=InputConfig(
            input_format=options.input_format,
            id_field=options.id_field,
            text_field=options.text_field,
            text_b_field=options.text_b_field,
            compression=options.compression,
            max_record_bytes=options.max_record_bytes,
        ),
        output_prefix=options.output,
        dead_letter_prefix=options.dead_letter or default_dead_letter_prefix(options.output),
        excerpt_chars=options.dead_letter_excerpt_chars,
        outputs=outputs,
        sequence_dtype=options.sequence_dtype,
        output_compression=options.output_compression,
        num_shards=options.num_shards,
        model_config=model_config,
        model_path=model_facts.path,
        model_description=model_facts.description,
        tokenizer_config=model_facts.tokenizer_config,
        feature_config=feature_config,
        hidden_size=model_facts.hidden_size,
        batching=batching,
        large_model=options.large_model,
        model_copies=options.model_copies,
        input_files=input_files,
    )
