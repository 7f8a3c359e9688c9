"""End to end on the DirectRunner: outputs equal direct model calls, nothing is lost."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from conftest import FAILING_TOKEN
from helpers import (
    call_tf1_module_directly,
    call_tf2_model_directly,
    dead_letters,
    padded,
    run_pipeline,
    write_jsonl,
)

from pipeline import schema
from pipeline.manifest import MANIFEST_SUFFIX, verify
from pipeline.reader import load_layout, make_dataset, read_embeddings
from transforms.features import FeatureConfig, document_features
from transforms.records import STAGE_INFERENCE, STAGE_READ, Document
from transforms.tokenization import FullTokenizer

MAX_SEQ_LENGTH = 24

GOOD = [
    {"id": "short", "text": "The dog is hairy."},
    {"id": "pair", "text": "The quick brown fox", "text_b": "jumps over the lazy dog"},
    {"id": "long", "text": " ".join(["the dog running fast"] * 30)},
    {"id": 17, "text": "A cat, a dog and a fox!"},
    {"id": "unicode", "text": "Héllo wörld — ßtraße 東京 \u200b emoji 🐶"},
    {"id": "unknown words", "text": "zzzzqqq xylophone pipelines"},
] + [{"id": f"doc-{i}", "text": f"document {i} is a text with {i % 7} words of data"} for i in range(20)]

BAD = [
    ("not json at all", "invalid JSON"),
    ('["a", "list"]', "not an object"),
    ('{"id": "no-text"}', "missing"),
    ('{"id": "number-text", "text": 42}', "not a string"),
    ('{"id": "empty", "text": ""}', "empty"),
    ('{"id": "blank", "text": "   \\t  "}', "empty"),
    ('{"id": "controls", "text": "\\u200b\\u0001\\u200d"}', "no wordpieces"),
    ('{"id": ["bad id"], "text": "fine text"}', "not a string or integer"),
    (b'{"id": "bad-utf8", "text": "caf\xe9"}', "invalid UTF-8"),
    ('{"id": "bad-pair", "text": "ok", "text_b": 3}', "not a string"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    records = list(GOOD[:10]) + [bad for bad, _ in BAD] + list(GOOD[10:])
    write_jsonl(folder / "part-1.jsonl", records[:15])
    write_jsonl(folder / "part-2.jsonl", records[15:])
    return folder


@pytest.fixture(scope="module", params=["tf1_module", "tf2_model"])
def embedded(request, corpus, tmp_path_factory):
    model = request.getfixturevalue(request.param)
    prefix = str(tmp_path_factory.mktemp("out") / "emb")
    summary = run_pipeline(
        str(corpus / "*.jsonl"), prefix, model,
        f"--max_seq_length={MAX_SEQ_LENGTH}", "--text_b_field=text_b", "--long_document=window",
        "--doc_stride=8", "--batch_size=4", "--outputs=pooled,mean,sequence",
    )
    records = list(read_embeddings(prefix))
    return request.param, model, prefix, summary, records


def test_every_record_is_embedded_or_dead_lettered_exactly_once(embedded):
    _, _, prefix, summary, records = embedded
    embedded_ids = sorted({r.id for r in records})
    assert embedded_ids == sorted(str(doc["id"]) for doc in GOOD)
    letters = dead_letters(os.path.join(os.path.dirname(prefix), "dead_letter", "emb"))
    by_source = {os.path.basename(letter["source"]): letter for letter in letters}
    assert len(by_source) == len(letters) == len(BAD)
    for index, (raw, reason) in enumerate(BAD):
        position = len(GOOD[:10]) + index
        source = f"part-1.jsonl:{position + 1}" if position < 15 else f"part-2.jsonl:{position - 14}"
        assert reason in by_source[source]["reason"], (raw, by_source[source])
    assert summary["documents_read"] == len(GOOD) + len(BAD)
    assert summary["documents_embedded"] == len(GOOD)
    assert summary["documents_rejected"] == len(BAD)
    assert summary.accounted
    assert summary["records_written"] == len(records)
    keys = [(r.id, r.window) for r in records]
    assert len(keys) == len(set(keys)), "a record was written twice"


def test_outputs_equal_direct_calls_of_the_saved_model(embedded):
    kind, model, _, _, records = embedded
    call = call_tf1_module_directly if kind == "tf1_module" else call_tf2_model_directly
    for record in records:
        direct = call(model, padded(record.input_ids, record.segment_ids, MAX_SEQ_LENGTH))
        np.testing.assert_allclose(record.pooled_output, direct["pooled_output"][0], atol=1e-5)
        np.testing.assert_allclose(
            record.sequence_output, direct["sequence_output"][0, : record.sequence_length], atol=1e-5)
        assert record.sequence_output.shape == (record.sequence_length, record.hidden_size)
        real_tokens = direct["sequence_output"][0, : record.sequence_length]
        np.testing.assert_allclose(record.mean_output, real_tokens.mean(axis=0), atol=1e-5)


def test_input_ids_are_google_research_bert_features(embedded, vocab_lines):
    _, _, _, _, records = embedded
    tokenizer = FullTokenizer(vocab_lines, do_lower_case=True)
    config = FeatureConfig(MAX_SEQ_LENGTH, "window", 8)
    by_key = {(r.id, r.window): r for r in records}
    for doc in GOOD:
        document = Document(str(doc["id"]), doc["text"], "test", doc.get("text_b"))
        for features in document_features(document, tokenizer, config):
            record = by_key[(features.id, features.window)]
            np.testing.assert_array_equal(record.input_ids, features.input_ids)
            np.testing.assert_array_equal(record.segment_ids, features.segment_ids)
            assert record.token_offset == features.token_offset
    pair = by_key[("pair", 0)]
    assert set(pair.segment_ids.tolist()) == {0, 1}


def test_long_document_windows_cover_every_wordpiece(embedded, vocab_lines):
    _, _, _, _, records = embedded
    windows = sorted((r for r in records if r.id == "long"), key=lambda r: r.window)
    assert len(windows) > 1
    assert [w.window for w in windows] == list(range(len(windows)))
    full = FullTokenizer(vocab_lines, True).tokenize_to_ids(GOOD[2]["text"])
    rebuilt: dict[int, int] = {}
    for window in windows:
        for position, token in enumerate(window.input_ids[1:-1]):
            rebuilt.setdefault(window.token_offset + position, int(token))
            assert rebuilt[window.token_offset + position] == token
    assert [rebuilt[i] for i in range(len(full))] == full


def test_output_files_are_exactly_shards_schema_and_manifest(embedded):
    _, _, prefix, _, _ = embedded
    names = sorted(os.path.basename(p) for p in glob.glob(prefix + "*"))
    shards = [n for n in names if n.endswith(".tfrecord")]
    assert shards and all(n.startswith("emb-") and "-of-" in n for n in shards)
    assert set(names) - set(shards) == {"emb" + schema.SCHEMA_SUFFIX, "emb" + MANIFEST_SUFFIX}


def test_output_reads_back_with_tf_data(embedded):
    _, _, prefix, _, records = embedded
    layout = load_layout(prefix)
    assert layout.outputs == ("pooled", "mean", "sequence") and layout.hidden_size == 32
    parsed = list(make_dataset(prefix).as_numpy_iterator())
    assert len(parsed) == len(records)
    for item in parsed:
        assert item[schema.SEQUENCE_OUTPUT].shape == (item[schema.SEQUENCE_LENGTH], 32)
        assert item[schema.POOLED_OUTPUT].shape == (32,)


def test_text_files_are_one_document_per_line_with_file_line_ids(tmp_path, tf1_module):
    source = tmp_path / "notes.txt"
    source.write_bytes(b"\xef\xbb\xbfThe dog is hairy.\r\n\r\nA quick fox.\nlast line without newline")
    prefix = str(tmp_path / "out" / "emb")
    summary = run_pipeline(str(source), prefix, tf1_module, "--outputs=pooled",
                           "--output_compression=gzip")
    records = {r.id: r for r in read_embeddings(prefix)}
    assert sorted(records) == [f"{source}:1", f"{source}:3", f"{source}:4"]
    assert records[f"{source}:1"].sequence_output is None
    assert glob.glob(prefix + "-*-of-*.tfrecord.gz")
    letters = dead_letters(str(tmp_path / "out" / "dead_letter" / "emb"))
    assert [d["source"] for d in letters] == [f"{source}:2"]
    assert summary.accounted and summary["documents_read"] == 4


@pytest.mark.parametrize("dtype, tolerance", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_sixteen_bit_sequence_output_halves_the_size_and_reads_back(tmp_path, tf1_module, dtype, tolerance):
    docs = write_jsonl(tmp_path / "docs.jsonl", GOOD)
    full, half = str(tmp_path / "full" / "emb"), str(tmp_path / "half" / "emb")
    run_pipeline(str(docs), full, tf1_module, "--outputs=sequence")
    run_pipeline(str(docs), half, tf1_module, "--outputs=sequence", f"--sequence_dtype={dtype}")
    assert load_layout(half).sequence_dtype == dtype
    want = {r.id: r.sequence_output for r in read_embeddings(full)}
    got = {r.id: r.sequence_output for r in read_embeddings(half)}
    assert sorted(got) == sorted(want)
    for key, values in want.items():
        assert got[key].dtype == np.float32 and got[key].shape == values.shape
        np.testing.assert_allclose(got[key], values, atol=tolerance * np.abs(values).max())
    sizes = [sum(os.path.getsize(p) for p in glob.glob(prefix + "-*.tfrecord")) for prefix in (full, half)]
    assert sizes[1] < 0.6 * sizes[0]


def test_batches_the_model_fails_on_are_dead_lettered_and_the_rest_embedded(
    tmp_path, failing_model, vocab_lines
):
    docs = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": "dog", "text": "The dog is hairy."},
        {"id": "fox", "text": f"The quick brown {FAILING_TOKEN}"},
        {"id": "cat", "text": "A cat, a dog"},
        {"id": "foxes", "text": f"{FAILING_TOKEN} jumps over the lazy {FAILING_TOKEN}"},
        "not json",
        {"id": "last", "text": "hello world"},
    ])
    prefix = str(tmp_path / "out" / "emb")
    # One window a batch: the model fails on exactly the batches of the windows holding the token.
    summary = run_pipeline(str(docs), prefix, failing_model, "--batch_size=1", "--outputs=pooled")
    records = list(read_embeddings(prefix))
    assert sorted(r.id for r in records) == ["cat", "dog", "last"]
    letters = dead_letters(os.path.join(os.path.dirname(prefix), "dead_letter", "emb"))
    by_source = {os.path.basename(letter["source"]): letter for letter in letters}
    assert sorted(by_source) == ["docs.jsonl:2", "docs.jsonl:4", "docs.jsonl:5"]
    assert by_source["docs.jsonl:5"]["stage"] == STAGE_READ
    token_id = vocab_lines.index(FAILING_TOKEN)
    for source, key, tokens in (("docs.jsonl:2", "fox#0", 6), ("docs.jsonl:4", "foxes#0", 8)):
        letter = by_source[source]
        assert letter["stage"] == STAGE_INFERENCE
        assert letter["reason"].startswith("inference failed: InvalidArgumentError: ")
        assert f"the batch holds token {token_id}" in letter["reason"]
        assert letter["raw"] == f"{key} ({tokens} tokens)"
    assert summary["documents_read"] == 6
    assert (summary["documents_embedded"], summary["documents_rejected"]) == (3, 3)
    assert summary["records_written"] == len(records) == 3
    assert summary.accounted


def test_a_document_counts_once_when_only_some_of_its_windows_fail(tmp_path, failing_model):
    # Six wordpieces each: one whole window.
    clean, failing = "the dog running fast the dog", f"{FAILING_TOKEN} is a lazy dog {FAILING_TOKEN}"
    docs = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": "tail", "text": f"{clean} {clean} {failing} the {FAILING_TOKEN}"},
        {"id": "head", "text": f"{failing} {clean}"},
        {"id": "dog", "text": "The dog is hairy."},
        "not json",
        {"id": "last", "text": "hello world"},
    ])
    prefix = str(tmp_path / "out" / "emb")
    # Windows of six wordpieces that do not overlap, one a batch: only the windows holding the token fail.
    summary = run_pipeline(str(docs), prefix, failing_model, "--batch_size=1", "--outputs=pooled",
                           "--max_seq_length=8", "--long_document=window", "--doc_stride=6")
    records = sorted((r.id, r.window) for r in read_embeddings(prefix))
    assert records == [("dog", 0), ("head", 1), ("last", 0), ("tail", 0), ("tail", 1)]
    letters = dead_letters(os.path.join(os.path.dirname(prefix), "dead_letter", "emb"))
    inference = sorted((letter["raw"], letter["window"], os.path.basename(letter["source"]))
                       for letter in letters if letter["stage"] == STAGE_INFERENCE)
    assert inference == [("head#0 (8 tokens)", 0, "docs.jsonl:2"), ("tail#2 (8 tokens)", 2, "docs.jsonl:1"),
                         ("tail#3 (4 tokens)", 3, "docs.jsonl:1")]
    assert all(letter["reason"].startswith("inference failed: InvalidArgumentError: ")
               for letter in letters if letter["stage"] == STAGE_INFERENCE)
    (unreadable,) = (letter for letter in letters if letter["stage"] == STAGE_READ)
    assert unreadable["source"].endswith("docs.jsonl:4") and "window" not in unreadable
    assert {name: summary[name] for name in ("documents_read", "documents_embedded", "documents_rejected",
                                             "documents_windowed", "windows", "windows_rejected",
                                             "records_written")} == {
        "documents_read": 5, "documents_embedded": 3, "documents_rejected": 2, "documents_windowed": 2,
        "windows": 8, "windows_rejected": 3, "records_written": 5}
    assert summary.accounted
    assert "rejected 2, 3 windows dead-lettered at inference; " in summary.line()
    assert "DO NOT ADD UP" not in summary.line()
    assert verify(prefix) == []
