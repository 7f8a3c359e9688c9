"""Converts a BERT checkpoint into a model bert-beam serves.

    python -m pipeline.conversion SOURCE OUTPUT_DIR --format tf1hub|tf2 [--do_lower_case true|false]

SOURCE is a Hugging Face BERT folder or a google-research/bert checkpoint folder (see
``pipeline.conversion.checkpoints``); OUTPUT_DIR receives a TF1 Hub module or a TF2 SavedModel written by
``pipeline.conversion.export``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

from pipeline.conversion.checkpoints import BertSource, CheckpointError, read_bert_source
from pipeline.conversion.export import export_tf1_hub_module, export_tf2_saved_model
from pipeline.options import parse_bool

__all__ = ["EXPORTERS", "convert", "describe", "main"]

EXPORTERS = {"tf1hub": export_tf1_hub_module, "tf2": export_tf2_saved_model}


def convert(source_dir: str, output_dir: str, output_format: str,
            do_lower_case: bool | None = None) -> BertSource:
    """Reads ``source_dir`` and exports it to ``output_dir``, which must not exist or be empty.

    The export is staged next to ``output_dir`` and moved into place only when complete.
    """
    if output_format not in EXPORTERS:
        raise CheckpointError(f"--format must be one of {', '.join(EXPORTERS)}, got {output_format!r}.")
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise CheckpointError(f"{output_dir} exists and is not empty; choose a new folder.")
    source = read_bert_source(source_dir, do_lower_case)
    staging = f"{os.path.normpath(output_dir)}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        EXPORTERS[output_format](source.weights, source.config, source.vocab_lines, source.do_lower_case,
                                 staging)
        if os.path.exists(output_dir):
            os.rmdir(output_dir)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return source


def describe(source: BertSource) -> str:
    """One line: the converted encoder's shape, activation and vocabulary."""
    config = source.config
    return (f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
            f"{config.num_attention_heads} heads, {config.hidden_act}, {len(source.vocab_lines)} "
            f"{'uncased' if source.do_lower_case else 'cased'} wordpieces")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.conversion", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="Hugging Face BERT folder or google-research/bert checkpoint folder")
    parser.add_argument("output_dir", help="new folder for the exported model")
    parser.add_argument("--format", dest="output_format", choices=sorted(EXPORTERS), required=True)
    parser.add_argument("--do_lower_case", type=parse_bool, default=None, metavar="true|false",
                        help="required for original checkpoints not named like Google's releases")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a refused conversion exits with status 1 and one sentence."""
    args = _parser().parse_args(argv)
    try:
        source = convert(args.source, args.output_dir, args.output_format, args.do_lower_case)
    except CheckpointError as error:
        print(f"Cannot convert {args.source}: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output_format} model to {args.output_dir}: {describe(source)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
