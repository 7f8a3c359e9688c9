"""bert-beam's command-line options, one PipelineOptions subclass, with typed parsing."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipeline.inputs.csv_input import parse_delimiter
from pipeline.inputs.sources import COMPRESSIONS, INPUT_FORMATS, InputConfig
from pipeline.outputs.sinks import OUTPUT_COMPRESSIONS
from pipeline.schema import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS, SEQUENCE_DTYPES
from pipeline.whitening_math import DEFAULT_WHITENING_DIMS, DEFAULT_WHITENING_SOURCE, WHITENING_SOURCES
from transforms.batching import BatchingConfig
from transforms.features import LONG_DOCUMENT_MODES, FeatureConfig
from transforms.model_outputs import OutputRequest
from transforms.records import EXCERPT_CHARS

__all__ = ["DEFAULT_MODEL", "BertBeamOptions", "ConfigurationError", "all_options_parser", "excerpt_length",
           "non_negative_int", "parse_bool", "parse_pipeline_options", "positive_int",
           "spell_out_bare_booleans", "valued_booleans"]

DEFAULT_MODEL = "https://tfhub.dev/google/bert_cased_L-24_H-1024_A-16/1"


class ConfigurationError(ValueError):
    """The run cannot start; the message tells the user what to change."""


def parse_bool(text: str | bool) -> bool:
    """``true``/``false`` (also 1/0, yes/no), so that "False" is never truthy."""
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def excerpt_length(text: str) -> int:
    value = int(text)
    if not 0 <= value <= EXCERPT_CHARS:
        raise argparse.ArgumentTypeError(f"expected 0 to {EXCERPT_CHARS}, got {text!r}")
    return value


class BertBeamOptions(PipelineOptions):
    """Every bert-beam flag; Beam's own options (``--runner`` ...) are parsed beside these."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("bert-beam")
        group.add_argument("--input", help="File pattern of input documents, local or gs:// "
                           "(e.g. 'docs/*.jsonl'). Required.")
        group.add_argument("--output", help="Output prefix; shards are PREFIX-SSSSS-of-NNNNN.tfrecord. "
                           "Required.")
        group.add_argument("--model", default=DEFAULT_MODEL,
                           help="TF Hub handle: tfhub.dev or Kaggle URL, local or gs:// SavedModel "
                           "folder, or a .tar.gz archive of one.")
        group.add_argument("--max_seq_length", type=positive_int, default=FeatureConfig.max_seq_length,
                           help="Tokens per sequence including [CLS]/[SEP]; at most the model's "
                           "position limit.")
        group.add_argument("--input_format", choices=INPUT_FORMATS, default=None,
                           help="text (one document per line), jsonl, csv (a header row names the "
                           "columns) or parquet; default from the extension (.jsonl/.ndjson/.json: jsonl, "
                           ".csv/.tsv: csv, .parquet: parquet, else text).")
        group.add_argument("--id_field", default=InputConfig.id_field,
                           help="JSON Lines field or CSV/Parquet column holding the document id.")
        group.add_argument("--text_field", default=InputConfig.text_field,
                           help="JSON Lines field or CSV/Parquet column holding the text.")
        group.add_argument("--text_b_field", default=InputConfig.text_b_field,
                           help="JSON Lines field or CSV/Parquet column holding the second text of a "
                           "pair (optional).")
        group.add_argument("--csv_delimiter", type=parse_delimiter, default=InputConfig.csv_delimiter,
                           help="CSV field delimiter: one ASCII character, \\t or tab for a tab "
                           "(default: a comma; a tab for .tsv).")
        group.add_argument("--skip_embedded_in", default=None,
                           help="Comma-separated output prefixes of completed earlier runs; documents "
                           "whose id one of them holds with every window are skipped (counted in "
                           "documents_skipped).")
        group.add_argument("--long_document", choices=LONG_DOCUMENT_MODES,
                           default=FeatureConfig.long_document,
                           help="truncate: keep the first max_seq_length-2 wordpieces; window: "
                           "overlapping windows covering every wordpiece.")
        group.add_argument("--doc_stride", type=positive_int, default=None,
                           help="Wordpieces between window starts (default: half a window).")
        group.add_argument("--vocab_file", default=None,
                           help="Override the model's vocab.txt.")
        group.add_argument("--do_lower_case", type=parse_bool, default=None,
                           help="Override the model's lower-casing (true|false).")
        group.add_argument("--outputs", default=",".join(OutputRequest.kinds),
                           help="Comma-separated outputs to write: pooled, mean, sequence.")
        group.add_argument("--sequence_dtype", choices=SEQUENCE_DTYPES, default=OutputRequest.sequence_dtype,
                           help="Storage of sequence_output: float32 (a float list), or float16 / "
                           "bfloat16 (half the size, raw little-endian bytes; the reader decodes them).")
        group.add_argument("--whitening_dims", type=non_negative_int, default=DEFAULT_WHITENING_DIMS,
                           help="Whiten --whitening_source to this many dimensions with a whitening fitted "
                           "on the run's own records (tf.Transform), saved as PREFIX.whitening/; 0: off.")
        group.add_argument("--whitening_source", choices=WHITENING_SOURCES, default=DEFAULT_WHITENING_SOURCE,
                           help="The output that --whitening_dims whitens: mean or pooled; it must be in "
                           "--outputs.")
        group.add_argument("--dead_letter", default=None,
                           help="Prefix for rejected records (JSON Lines); default "
                           "DIR/dead_letter/NAME beside --output DIR/NAME.")
        group.add_argument("--dead_letter_excerpt_chars", type=excerpt_length, default=EXCERPT_CHARS,
                           help=f"Characters of a rejected record kept in its dead letter, 0 to "
                           f"{EXCERPT_CHARS}; 0 keeps only its location (for sensitive data).")
        group.add_argument("--compression", choices=sorted(COMPRESSIONS), default=InputConfig.compression,
                           help="Input decompression: auto (from the extension), gzip or none.")
        group.add_argument("--output_format", choices=OUTPUT_FORMATS, default=DEFAULT_OUTPUT_FORMAT,
                           help="tfrecord (tf.Examples) or parquet (one row per record, the same features "
                           "as columns); shards PREFIX-SSSSS-of-NNNNN.tfrecord or .parquet.")
        group.add_argument("--output_compression", choices=sorted(OUTPUT_COMPRESSIONS), default="none",
                           help="Output shard compression: none or gzip (.tfrecord.gz; for Parquet, GZIP "
                           "pages).")
        group.add_argument("--num_shards", type=int, default=0,
                           help="Output shards; 0 lets the runner decide.")
        group.add_argument("--signature", default=None,
                           help="SavedModel signature or traced function to call (default: tokens for "
                           "TF1 Hub modules, else the first of __call__, serving_default, serve that "
                           "takes BERT's inputs).")
        group.add_argument("--signature_tensors", default=None,
                           help="Map pipeline tensors to signature tensors: "
                           "input_ids=X,input_mask=Y,segment_ids=Z,pooled_output=P,sequence_output=S.")
        group.add_argument("--allow_model_ops", default=None,
                           help="Comma-separated TensorFlow operations to accept in the model's graphs "
                           "beyond those a BERT needs (e.g. WriteFile); only for a model you trust.")
        group.add_argument("--batch_size", type=positive_int, default=BatchingConfig.max_batch_size,
                           help="Largest number of sequences per model call.")
        group.add_argument("--max_batch_tokens", type=positive_int, default=BatchingConfig.max_batch_tokens,
                           help="Largest padded size (sequences x padded length) of one model call.")
        group.add_argument("--bucket_boundaries",
                           default=",".join(map(str, BatchingConfig.bucket_boundaries)),
                           help="Padded lengths: a batch is padded to the smallest one that holds "
                           "its longest sequence (none: always pad to max_seq_length).")
        group.add_argument("--round_batch_rows", type=parse_bool, nargs="?", const=True, default=None,
                           help="Pad a partial batch with empty rows to a power of two, so the model "
                           "sees few distinct shapes (each new shape costs a first-call warm-up; with "
                           "--jit_compile a compilation). Default: true with --jit_compile, else false.")
        group.add_argument("--large_model", type=parse_bool, nargs="?", const=True, default=None,
                           help="Share one model copy across the SDK processes of a worker "
                           "(default: true with --gpu_type unless --model_copies is given, else false).")
        group.add_argument("--model_copies", type=positive_int, default=None,
                           help="Exact number of model copies per worker (implies sharing).")
        group.add_argument("--jit_compile", type=parse_bool, nargs="?", const=True, default=False,
                           help="Compile the model call with XLA (once per batch shape); outputs "
                           "stay within 1e-5 of the plain call.")
        group.add_argument("--tf_threads", type=non_negative_int, default=None,
                           help="TensorFlow intra- and inter-op threads per worker process (0: "
                           "TensorFlow's default, every core). Default: cores / processes when "
                           "--direct_num_workers runs several processes that each load the model, else 0.")
        group.add_argument("--max_record_bytes", type=positive_int, default=InputConfig.max_record_bytes,
                           help="Largest input record accepted (a line, a CSV record, a Parquet row's "
                           "texts); larger ones are dead-lettered.")
        cloud = parser.add_argument_group("bert-beam on Google Cloud Dataflow")
        cloud.add_argument("--gpu_type", default=None,
                           help="GPU for the Dataflow workers, e.g. nvidia-l4 or nvidia-tesla-t4; sets "
                           "worker_accelerator, the machine type and model sharing (see README).")
        cloud.add_argument("--gpu_count", type=positive_int, default=None,
                           help="GPUs per worker (default 1 with --gpu_type).")
        cloud.add_argument("--require_gpu", type=parse_bool, nargs="?", const=True, default=None,
                           help="A worker whose TensorFlow sees no GPU fails at model load "
                           "(true|false; default true with --gpu_type).")
        cloud.add_argument("--right_fitting", type=parse_bool, nargs="?", const=True, default=False,
                           help="Only the embedding step runs on GPU workers (resource hints); "
                           "reading and writing stay on the job's CPU workers.")
        cloud.add_argument("--wait_until_finish", type=parse_bool, nargs="?", const=True, default=False,
                           help="After submitting a Dataflow job, wait for it to finish, then print its "
                           "summary and write PREFIX.manifest.json as a local run does (an output that "
                           "--skip_embedded_in can name). Not with a Flex Template launch.")


def all_options_parser() -> argparse.ArgumentParser:
    """A parser of bert-beam's flags and every Beam pipeline option, as ``--help`` shows them."""
    parser = _BeamArgumentParser(
        prog="bert-beam",
        allow_abbrev=False,
        description="Embed documents with a BERT SavedModel on any Apache Beam runner. "
        "bert-beam's own flags come first; every Beam pipeline option (--runner, "
        "--direct_num_workers, --project, ...) is accepted too.",
    )
    BertBeamOptions._add_argparse_args(parser)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__() if cls is not BertBeamOptions}
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def valued_booleans(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Boolean flags that need a value: Beam's (``--dry_run``, TestOptions), unlike bert-beam's own."""
    return frozenset(flag for action in parser._actions
                     if action.nargs is None and isinstance(action.default, bool)
                     for flag in action.option_strings)


def spell_out_bare_booleans(argv: Sequence[str], flags: frozenset[str]) -> list[str]:
    """``--dry_run`` alone, last or before another flag, becomes ``--dry_run=true``.

    Beam defines it with a required value and re-parses the flags itself (``get_all_options``),
    so the bare form is spelled out before any parser sees it; ``--dry_run false`` is left as is.
    """
    argv = list(argv)
    following = [*argv[1:], None]
    return [f"{arg}=true" if arg in flags and (after is None or after.startswith("-")) else arg
            for arg, after in zip(argv, following, strict=True)]


def parse_pipeline_options(argv: Sequence[str]) -> PipelineOptions:
    """Parses the command line; ``--help`` prints every flag, an unknown flag is an error.

    Beam itself only warns about flags it does not know; a typo such as
    ``--max_seq_lenght`` would then silently run with the default.
    """
    parser = all_options_parser()
    argv = spell_out_bare_booleans(argv, valued_booleans(parser))
    _, unknown = parser.parse_known_args(argv)
    flags = [arg for arg in unknown if arg.startswith("-")]
    if flags:
        raise ConfigurationError(f"Unknown flag(s): {' '.join(flags)}. See --help.")
    return PipelineOptions(argv)
