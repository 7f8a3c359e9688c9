"""The whole job through ``pipeline.run`` on the inputs and outputs users keep their data in: CSV and
Parquet in, Parquet out, and corpus-fitted whitening; each input accounted for."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from helpers import dead_letters, run_pipeline

from pipeline.manifest import read_manifest, verify
from pipeline.options import ConfigurationError
from pipeline.reader import feature_spec, load_layout, load_whitening, read_embeddings
from transforms import counters

TEXTS = ["the quick brown fox", "hello world", "jumps over the lazy dog", "a sentence of words",
         "the dog sleeps", "brown words over the fox", "lazy hello", "quick quick dog"]


def _good_rows() -> list[dict]:
    return [{"id": f"doc-{i}", "text": f"{text} {i}"} for i, text in enumerate(TEXTS)]


def _ids(prefix: str) -> list[str]:
    return sorted(record.id for record in read_embeddings(prefix))


def test_a_csv_input_embeds_its_good_rows_and_dead_letters_the_malformed_ones(tmp_path, tf1_module):
    rows = _good_rows()
    lines = ["id,text", *(f"{r['id']},{r['text']}" for r in rows[:4]),
             "doc-extra,one field,too many",  # line 6
             'doc-lines,"two\r\nlines, quoted"',  # lines 7-8
             'doc-quote,"bad"quoting',  # line 9
             *(f"{r['id']},{r['text']}" for r in rows[4:])]
    path = tmp_path / "docs.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    prefix = str(tmp_path / "out" / "emb")
    summary = run_pipeline(str(path), prefix, tf1_module, "--max_seq_length=16")

    letters = dead_letters(str(tmp_path / "out" / "dead_letter" / "emb"))
    assert sorted(letter["source"] for letter in letters) == [f"{path}:6", f"{path}:9"]
    assert all(letter["stage"] == "read" for letter in letters)
    # Python's csv module on the same bytes without the two malformed records: the embedded ones.
    kept = b"".join(line for number, line in enumerate(path.read_bytes().splitlines(keepends=True), 1)
                    if number not in (6, 9))
    reference = list(csv.DictReader(kept.decode("utf-8-sig").splitlines(keepends=True)))
    assert _ids(prefix) == sorted(row["id"] for row in reference)
    assert {r.id: r.sequence_length for r in read_embeddings(prefix)}["doc-lines"] > 3
    assert summary.accounted and summary[counters.DOCUMENTS_READ] == len(rows) + 3


def test_a_parquet_input_embeds_every_row_group_and_dead_letters_null_texts(tmp_path, tf1_module):
    rows = _good_rows()
    table = pa.table({"id": [r["id"] for r in rows] + ["doc-null"],
                      "text": [r["text"] for r in rows] + [None]})
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, row_group_size=3)
    prefix = str(tmp_path / "out" / "emb")
    summary = run_pipeline(str(path), prefix, tf1_module, "--max_seq_length=16")
    assert _ids(prefix) == sorted(r["id"] for r in rows)
    (letter,) = dead_letters(str(tmp_path / "out" / "dead_letter" / "emb"))
    assert letter["source"] == f"{path}:row {len(rows) + 1}" and "null" in letter["reason"]
    assert summary.accounted and summary[counters.DOCUMENTS_READ] == len(rows) + 1


def test_a_parquet_input_without_its_text_column_fails_before_the_run(tmp_path, tf1_module):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["1"], "body": ["the dog"]}), path)
    with pytest.raises(ConfigurationError, match="has no column 'text'"):
        run_pipeline(str(path), str(tmp_path / "out" / "emb"), tf1_module)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("emb-*"))


def _tfrecord_rows(prefix: str) -> list[dict]:
    """The TFRecord shards parsed by tf.data with the run's own schema: the independent reader."""
    layout = load_layout(prefix)
    spec = feature_spec(layout.outputs, layout.hidden_size, layout.sequence_dtype)
    files = sorted(tf.io.gfile.glob(prefix + "-*-of-*.tfrecord"))
    rows = []
    for serialized in tf.data.TFRecordDataset(files):
        parsed = tf.io.parse_single_example(serialized, spec)
        rows.append({key: value.numpy() for key, value in parsed.items()})
    return rows


@pytest.mark.parametrize("sequence_dtype", ["float32", "bfloat16"])
def test_parquet_output_read_with_pyarrow_equals_the_tfrecord_output_of_the_same_run(
        tmp_path, tf1_module, sequence_dtype):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(row) + "\n" for row in _good_rows()), encoding="utf-8")
    flags = ("--max_seq_length=16", "--outputs=pooled,mean,sequence", f"--sequence_dtype={sequence_dtype}")
    tfrecord, parquet = str(tmp_path / "tfrecord" / "emb"), str(tmp_path / "parquet" / "emb")
    run_pipeline(str(docs), tfrecord, tf1_module, *flags)
    summary = run_pipeline(str(docs), parquet, tf1_module, *flags, "--output_format=parquet")
    assert summary.accounted and verify(parquet) == []
    assert [shard["name"].endswith(".parquet") for shard in read_manifest(parquet)["shards"]] == [True] * len(
        read_manifest(parquet)["shards"])
    table = pq.read_table(sorted(tf.io.gfile.glob(parquet + "-*-of-*.parquet")))
    by_id = {row["id"]: row for row in table.to_pylist()}
    expected = {row["id"].decode(): row for row in _tfrecord_rows(tfrecord)}
    assert sorted(by_id) == sorted(expected)
    for doc_id, want in expected.items():
        got = by_id[doc_id]
        for key in ("window", "token_offset", "sequence_length"):
            assert got[key] == int(np.asarray(want[key]).reshape(-1)[0]), key
        for key in ("input_ids", "segment_ids"):
            np.testing.assert_array_equal(np.asarray(got[key]), want[key])
        for key in ("pooled_output", "mean_output"):
            np.testing.assert_array_equal(np.asarray(got[key], np.float32), want[key])
        sequence = want["sequence_output"]
        if sequence_dtype == "float32":
            np.testing.assert_array_equal(np.asarray(got["sequence_output"], np.float32), sequence)
        else:
            assert got["sequence_output"] == np.asarray(sequence).reshape(-1)[0]  # the same raw bytes
    # pipeline.reader reads both formats to the same records.
    for mine, theirs in zip(sorted(read_embeddings(parquet), key=lambda r: r.id),
                            sorted(read_embeddings(tfrecord), key=lambda r: r.id), strict=True):
        np.testing.assert_array_equal(mine.sequence_output, theirs.sequence_output)
        np.testing.assert_array_equal(mine.pooled_output, theirs.pooled_output)


def test_whitening_in_a_run_gives_every_record_a_whitened_output_that_the_saved_transform_reproduces(
        tmp_path, tf1_module):
    rows = [{"id": f"doc-{i}", "text": f"{TEXTS[i % len(TEXTS)]} {TEXTS[(3 * i) % len(TEXTS)]} {i}"}
            for i in range(40)]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    prefix = str(tmp_path / "out" / "emb")
    dims = 6
    summary = run_pipeline(str(docs), prefix, tf1_module, "--max_seq_length=16", "--outputs=pooled,mean",
                           f"--whitening_dims={dims}", "--whitening_source=pooled")
    assert summary.accounted and summary[counters.RECORDS_WHITENED] == len(rows)
    records = sorted(read_embeddings(prefix), key=lambda r: r.id)
    raw = np.stack([r.pooled_output for r in records]).astype(np.float64)
    whitened = np.stack([r.whitened_output for r in records]).astype(np.float64)
    assert whitened.shape == (len(rows), dims)
    # Whitened on its own corpus: zero mean, identity covariance (numpy, 1/N as Su et al.).
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False, bias=True), np.eye(dims), atol=1e-3)
    saved = load_whitening(prefix)
    np.testing.assert_allclose(saved.mean, raw.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(saved.apply(raw.astype(np.float32)), whitened, atol=1e-5)
    manifest = read_manifest(prefix)
    assert manifest["whitening"] and manifest["options"]["whitening_dims"] == dims
    assert verify(prefix) == []


def test_whitening_more_dimensions_than_the_model_has_fails_before_the_run(tmp_path, tf1_module):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "1", "text": "the dog"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="--whitening_dims 33 is more than the model's hidden size"):
        run_pipeline(str(docs), str(tmp_path / "out" / "emb"), tf1_module, "--outputs=mean",
                     "--whitening_dims=33")
