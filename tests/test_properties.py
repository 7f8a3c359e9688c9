"""Property tests: no input crashes parsing or feature building, and BERT's invariants always hold."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.inputs.sources import InputConfig, parse_record
from transforms.features import FeatureConfig, document_features, pad_batch
from transforms.records import Document, Rejected
from transforms.tokenization import FullTokenizer

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
WORDS = st.sampled_from("the dog cat running fast quick brown fox ##s a Hello WORLD ß 東京 🐶".split())
TEXT = st.one_of(st.text(max_size=200), st.lists(WORDS, max_size=120).map(" ".join))


@SETTINGS
@given(raw=st.binary(max_size=300), as_json=st.booleans())
def test_any_bytes_become_a_document_or_a_reason(raw, as_json):
    config = InputConfig(input_format="jsonl" if as_json else "text", text_b_field="b")
    result = parse_record(raw, "f:1", "f", config)
    assert isinstance(result, (Document, Rejected))
    if isinstance(result, Rejected):
        assert result.reason and len(result.raw) <= 1100


@SETTINGS
@given(text=st.text(max_size=100), text_b=st.none() | st.text(max_size=50), doc_id=st.text(max_size=20))
def test_any_json_record_becomes_a_document_or_a_reason(text, text_b, doc_id):
    raw = json.dumps({"id": doc_id, "text": text, "b": text_b}).encode("utf-8")
    result = parse_record(raw, "f:1", "f", InputConfig(input_format="jsonl", text_b_field="b"))
    if not doc_id.strip():  # a blank id names no document
        assert isinstance(result, Rejected)
    elif text.strip() or (text_b or "").strip():  # an empty text beside a text_b makes a pair, as in BERT
        assert result == Document(id=doc_id, text=text, source="f:1", text_b=text_b or None)
    else:
        assert isinstance(result, Rejected)


@SETTINGS
@given(text=TEXT, text_b=st.none() | TEXT, max_seq_length=st.integers(3, 64),
       mode=st.sampled_from(["truncate", "window"]), stride_fraction=st.floats(0.01, 1.0))
def test_features_keep_bert_invariants(vocab_lines, text, text_b, max_seq_length, mode, stride_fraction):
    tokenizer = FullTokenizer(vocab_lines, do_lower_case=True)
    capacity = max_seq_length - 2
    config = FeatureConfig(max_seq_length, mode, max(1, int(capacity * stride_fraction)))
    document = Document("d", text, "s", text_b)
    features = list(document_features(document, tokenizer, config))
    wordpieces = tokenizer.tokenize_to_ids(text)
    assert [f.window for f in features] == list(range(len(features)))
    covered: dict[int, int] = {}
    for f in features:
        ids, segments = f.input_ids, f.segment_ids
        assert ids.dtype == np.int32 and segments.dtype == np.int32
        assert 2 <= len(ids) <= max_seq_length and len(ids) == len(segments)
        assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
        separators = int((ids == tokenizer.sep_id).sum())
        pair = bool(segments.any())
        assert separators >= (2 if pair else 1)
        assert list(segments) == sorted(segments), "segment ids go 0... then 1..."
        batch = pad_batch([f], max_seq_length)
        assert batch["input_mask"].sum() == len(ids)
        assert not batch["input_ids"][0, len(ids):].any()
        if not pair:
            for position, token in enumerate(ids[1:-1]):
                covered[f.token_offset + position] = int(token)
    if not (text_b and tokenizer.tokenize_to_ids(text_b)):
        expected = wordpieces if mode == "window" else wordpieces[:capacity]
        assert [covered[i] for i in range(len(expected))] == expected
