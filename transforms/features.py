"""Feature building rules: google-research/bert's conversion, truncation and windows.

Pure functions over wordpiece ids, unit-tested without a pipeline. Windows are
this project's extension for long documents; window 0 is always exactly the
document as google-research/bert truncates it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from transforms.call_conventions import INPUT_IDS, INPUT_MASK, SEGMENT_IDS
from transforms.records import Document, Features
from transforms.tokenization import FullTokenizer

__all__ = ["LONG_DOCUMENT_MODES", "TRUNCATE", "WINDOW", "FeatureConfig", "bucket_length", "build_input_ids",
           "document_features", "pad_batch", "parse_bucket_boundaries", "truncate_seq_pair", "window_starts"]

TRUNCATE = "truncate"
WINDOW = "window"
LONG_DOCUMENT_MODES = (TRUNCATE, WINDOW)


@dataclass(frozen=True)
class FeatureConfig:
    """How documents become fixed-length model inputs."""

    max_seq_length: int = 128
    long_document: str = TRUNCATE
    doc_stride: int | None = None

    def __post_init__(self) -> None:
        if self.max_seq_length < 3:
            raise ValueError(f"max_seq_length must be at least 3, got {self.max_seq_length}.")
        if self.long_document not in LONG_DOCUMENT_MODES:
            raise ValueError(
                f"long_document must be one of {', '.join(LONG_DOCUMENT_MODES)}, "
                f"got {self.long_document!r}."
            )
        if self.doc_stride is not None and not 1 <= self.doc_stride <= self.window_capacity:
            raise ValueError(
                f"doc_stride must be between 1 and max_seq_length - 2 = {self.window_capacity} "
                f"so that windows overlap or touch and cover every wordpiece; got {self.doc_stride}."
            )

    @property
    def window_capacity(self) -> int:
        """Wordpieces of a single text that fit beside [CLS] and [SEP]."""
        return self.max_seq_length - 2

    @property
    def stride(self) -> int:
        """The step between window starts; half a window unless set."""
        return self.doc_stride if self.doc_stride is not None else max(1, self.window_capacity // 2)


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_length: int) -> None:
    """Truncates the longer sequence one token at a time, in place, as the original does.

    On a tie the second sequence loses a token.
    """
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def build_input_ids(
    tokens_a: Sequence[int], tokens_b: Sequence[int] | None, cls_id: int, sep_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` with segment ids 0 for A, 1 for B."""
    length_a = len(tokens_a) + 2
    length_b = len(tokens_b) + 1 if tokens_b else 0
    input_ids = np.empty(length_a + length_b, dtype=np.int32)
    input_ids[0] = cls_id
    input_ids[1 : length_a - 1] = tokens_a
    input_ids[length_a - 1] = sep_id
    segment_ids = np.zeros(length_a + length_b, dtype=np.int32)
    if tokens_b:
        input_ids[length_a:-1] = tokens_b
        input_ids[-1] = sep_id
        segment_ids[length_a:] = 1
    return input_ids, segment_ids


def window_starts(num_tokens: int, capacity: int, stride: int) -> list[int]:
    """Start offsets of windows of ``capacity`` that together cover ``num_tokens``.

    The first window starts at 0; each next one ``stride`` later, until a window
    reaches the end. An empty document still has one window.
    """
    starts = [0]
    while starts[-1] + capacity < num_tokens:
        starts.append(starts[-1] + stride)
    return starts


def document_features(
    document: Document, tokenizer: FullTokenizer, config: FeatureConfig
) -> Iterator[Features]:
    """The model inputs of one document: one record, or one per window.

    Pairs (``text_b``) are always truncated longest-first like the original's
    ``_truncate_seq_pair``; windows apply to single texts. As in the original,
    a ``text_b`` with no wordpieces makes a single-text input, and a text with
    none beside a ``text_b`` with some makes ``[CLS] [SEP] B [SEP]``.
    """
    # Only as much of each text is tokenized as the record holds, plus a wordpiece that tells
    # whether it was truncated; a pair's truncation needs no more than max_seq_length - 3 of each.
    pair_capacity = config.max_seq_length - 3
    tokens_b = tokenizer.tokenize_prefix_to_ids(document.text_b, pair_capacity) if document.text_b else []
    if tokens_b:
        tokens_a = tokenizer.tokenize_prefix_to_ids(document.text, pair_capacity)
    elif config.long_document == TRUNCATE:
        tokens_a = tokenizer.tokenize_prefix_to_ids(document.text, config.window_capacity)
    else:
        tokens_a = tokenizer.tokenize_to_ids(document.text)
    if tokens_b:
        truncated = len(tokens_a) + len(tokens_b) > config.max_seq_length - 3
        truncate_seq_pair(tokens_a, tokens_b, config.max_seq_length - 3)
        input_ids, segment_ids = build_input_ids(tokens_a, tokens_b, tokenizer.cls_id, tokenizer.sep_id)
        yield Features(document.id, input_ids, segment_ids, truncated=truncated, source=document.source)
        return
    capacity = config.window_capacity
    truncated = len(tokens_a) > capacity
    if config.long_document == TRUNCATE or not truncated:
        input_ids, segment_ids = build_input_ids(
            tokens_a[:capacity], None, tokenizer.cls_id, tokenizer.sep_id
        )
        yield Features(document.id, input_ids, segment_ids, truncated=truncated, source=document.source)
        return
    for window, start in enumerate(window_starts(len(tokens_a), capacity, config.stride)):
        input_ids, segment_ids = build_input_ids(
            tokens_a[start : start + capacity], None, tokenizer.cls_id, tokenizer.sep_id
        )
        yield Features(
            document.id,
            input_ids,
            segment_ids,
            window=window,
            token_offset=start,
            source=document.source,
        )


def bucket_length(length: int, boundaries: Sequence[int], max_seq_length: int) -> int:
    """The padded length of a sequence: the smallest boundary that holds it, else max_seq_length.

    With no boundaries every sequence is padded to ``max_seq_length``, as google-research/bert
    does; the real tokens' outputs are the same either way (padding is masked).
    """
    for boundary in boundaries:
        if length <= boundary <= max_seq_length:
            return boundary
    return max_seq_length


def parse_bucket_boundaries(text: str | None) -> tuple[int, ...]:
    """``32,64,128`` → (32, 64, 128); ``none`` or empty → () (always pad to max_seq_length)."""
    if not text or text.strip().lower() == "none":
        return ()
    try:
        boundaries = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as error:
        raise ValueError(f"--bucket_boundaries must be comma-separated integers, got {text!r}.") from error
    if any(boundary < 3 for boundary in boundaries):
        raise ValueError(f"--bucket_boundaries must each be at least 3, got {text!r}.")
    return boundaries


def pad_batch(features: Sequence[Features], length: int, rows: int | None = None) -> dict[str, np.ndarray]:
    """Stacks records into zero-padded int32 ``input_ids``, ``input_mask``, ``segment_ids``;
    ``rows`` beyond the records are all padding (mask 0)."""
    batch_size = max(len(features), rows or 0)
    input_ids = np.zeros((batch_size, length), dtype=np.int32)
    input_mask = np.zeros((batch_size, length), dtype=np.int32)
    segment_ids = np.zeros((batch_size, length), dtype=np.int32)
    for row, feature in enumerate(features):
        n = feature.sequence_length
        input_ids[row, :n] = feature.input_ids
        input_mask[row, :n] = 1
        segment_ids[row, :n] = feature.segment_ids
    return {INPUT_IDS: input_ids, INPUT_MASK: input_mask, SEGMENT_IDS: segment_ids}
