"""google-research/bert's own tokenizer and feature conversion, importable under TF2, as golden references.

bert-tensorflow 1.0.4 already imports ``tensorflow.compat.v1``, so ``tf.gfile``, ``tf.flags``,
``tf.logging`` and ``tf.train.Optimizer`` all still exist and need no shim. Two things do, and both
are applied here and nowhere else, once, on first use:

* ``bert.modeling`` (imported by ``run_classifier``) does ``from tensorflow.contrib import layers``;
  ``tensorflow.contrib`` is gone in TF2. Only ``modeling.layer_norm`` uses it, which feature
  conversion never calls, so an empty stand-in module is enough. It is registered for that import
  only, so that code probing for TF1's contrib elsewhere in the process still finds none.
* ``bert.tokenization`` reads the absl flag ``--preserve_unused_tokens`` on every call, and absl
  refuses to read flags before they are parsed. Marking the flags parsed keeps its default, False,
  which is the behaviour of every released BERT model.
"""

from __future__ import annotations

import functools
import sys
import types

# run_classifier logs the tokens of the examples it converts with an index below 5.
_UNLOGGED_EXAMPLE_INDEX = 5
_LABEL = "0"


@functools.cache
def _original_modules() -> tuple[types.ModuleType, types.ModuleType]:
    contrib = types.ModuleType("tensorflow.contrib")
    contrib.layers = types.ModuleType("tensorflow.contrib.layers")
    sys.modules["tensorflow.contrib"] = contrib
    try:
        from bert import run_classifier, tokenization
    finally:
        del sys.modules["tensorflow.contrib"]
    tokenization.FLAGS.mark_as_parsed()
    return tokenization, run_classifier


def original_full_tokenizer(vocab_path: str, do_lower_case: bool):
    """The original ``tokenization.FullTokenizer`` reading ``vocab_path``."""
    tokenization, _ = _original_modules()
    return tokenization.FullTokenizer(vocab_file=vocab_path, do_lower_case=do_lower_case)


def original_convert_single_example(
    tokenizer, text_a: str, text_b: str | None, max_seq_length: int, guid: str = "reference-0"
):
    """The original ``run_classifier.convert_single_example``: padded ids, mask and segment ids."""
    _, run_classifier = _original_modules()
    example = run_classifier.InputExample(guid=guid, text_a=text_a, text_b=text_b, label=_LABEL)
    return run_classifier.convert_single_example(
        _UNLOGGED_EXAMPLE_INDEX, example, [_LABEL], max_seq_length, tokenizer
    )
