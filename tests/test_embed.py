"""Failed model batches become one Rejected per window, with the error's own message; a tokenizing
worker's setup freezes what it loaded."""

from __future__ import annotations

import gc
import sys
import traceback

import numpy as np
import pytest

from transforms.embed import TokenizerConfig, _failed_batch_to_rejected, _TokenizeDocument
from transforms.features import FeatureConfig
from transforms.records import STAGE_INFERENCE, Features, Rejected


class ModelBroke(RuntimeError):
    """An error from a library module, with a repr that holds no message, as TensorFlow's do."""

    def __repr__(self) -> str:
        return "ModelBroke()"


def _beam_failure(error: Exception):
    """``(type, repr, traceback lines)``: what Beam's exception handling passes for a failed batch."""
    try:
        raise error
    except Exception as caught:
        return type(caught), repr(caught), traceback.format_exception(*sys.exc_info())


def _window(doc_id: str, window: int, tokens: int) -> Features:
    return Features(doc_id, np.zeros(tokens, np.int32), np.zeros(tokens, np.int32), window=window,
                    source=f"docs.jsonl:{doc_id}")


@pytest.mark.parametrize("error, reason", [
    (ValueError("shapes [2,3] and [4] do not match"), "ValueError: shapes [2,3] and [4] do not match"),
    (ModelBroke("assertion failed: [the batch holds token 57]"),
     "ModelBroke: assertion failed: [the batch holds token 57]"),
    (ModelBroke(), "ModelBroke: ModelBroke()"),
])
def test_each_window_of_a_failed_batch_is_rejected_with_the_error(error, reason):
    batch = [_window("a", 0, 5), _window("b", 1, 7)]
    rejected = list(_failed_batch_to_rejected((batch, _beam_failure(error))))
    assert rejected == [
        Rejected("docs.jsonl:a", "a#0 (5 tokens)", f"inference failed: {reason}", STAGE_INFERENCE, 0, "a"),
        Rejected("docs.jsonl:b", "b#1 (7 tokens)", f"inference failed: {reason}", STAGE_INFERENCE, 1, "b"),
    ]
    assert [r.rejects_document for r in rejected] == [True, False]


def test_a_long_error_message_is_cut():
    (rejected,) = _failed_batch_to_rejected(([_window("a", 0, 3)], _beam_failure(ValueError("x" * 2000))))
    assert rejected.reason == "inference failed: ValueError: " + "x" * 500


def test_a_tokenizing_worker_freezes_what_it_loaded():
    vocab = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "a")
    gc.unfreeze()
    do_fn = _TokenizeDocument(TokenizerConfig(vocab, True), FeatureConfig(max_seq_length=8))
    do_fn.setup()
    assert gc.get_freeze_count() > 0  # the tokenizer, and all else alive, out of the collector's way
    gc.unfreeze()
