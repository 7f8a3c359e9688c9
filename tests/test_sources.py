"""Readers survive hostile files: every record is embedded or dead-lettered with a reason."""

from __future__ import annotations

import gzip
import io
import os

import pytest
from helpers import dead_letters, run_pipeline

from pipeline.reader import read_embeddings
from pipeline.sources import InputConfig, _bounded_lines, format_for_path, parse_record
from transforms.records import Document, Rejected

JSONL = InputConfig(input_format="jsonl")


@pytest.mark.parametrize("path, explicit, expected", [
    ("a/b.jsonl", None, "jsonl"), ("a/b.jsonl.gz", None, "jsonl"), ("b.ndjson.bz2", None, "jsonl"),
    ("b.txt", None, "text"), ("b.txt.gz", None, "text"), ("b.csv", None, "text"), ("b.txt", "jsonl", "jsonl"),
])
def test_format_comes_from_the_extension_unless_given(path, explicit, expected):
    assert format_for_path(path, explicit) == expected


@pytest.mark.parametrize("raw, reason", [
    (b'{"text": "ok"', "invalid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    (b'"just a string"', "not an object"),
    (b'{"text": null}', "is a NoneType"),
    (b'{"text": "a", "id": true}', "not a string or integer"),
    (b'{"text": "a", "id": 1.5}', "not a string or integer"),
    (b'{"text": "\xff"}', "invalid UTF-8 at byte 10"),
])
def test_bad_json_lines_are_rejected_with_a_reason(raw, reason):
    result = parse_record(raw, "f.jsonl:1", "f.jsonl", JSONL)
    assert isinstance(result, Rejected) and reason in result.reason
    assert len(result.raw) <= 1100


def test_a_record_without_an_id_is_named_by_its_location():
    result = parse_record(b'{"text": "hello"}\r\n', "f.jsonl:7", "f.jsonl", JSONL)
    assert result == Document(id="f.jsonl:7", text="hello", source="f.jsonl:7")


def test_bounded_lines_cut_an_oversize_line_without_holding_it():
    data = b"short\n" + b"x" * 5000 + b"\nafter\nlast"
    lines = list(_bounded_lines(io.BytesIO(data), 100))
    assert [(n, oversize) for n, _, oversize in lines] == [(1, False), (2, True), (3, False), (4, False)]
    assert len(lines[1][1]) <= 1000 and lines[2][1] == b"after\n" and lines[3][1] == b"last"


def test_hostile_files_complete_and_account_for_every_record(tmp_path, tf1_module):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.txt").write_bytes(b"")
    (folder / "bom_crlf.txt").write_bytes(b"\xef\xbb\xbfthe dog\r\na cat\r\n")
    (folder / "bad_utf8.txt").write_bytes(b"good line\nbad \xc3\x28 line\nanother good line\n")
    (folder / "long_line.txt").write_bytes(b"the dog " * 2_500_000 + b"\nshort after\n")  # a 20 MB line
    (folder / "huge_doc.jsonl").write_text('{"id": "huge", "text": "' + "quick brown fox " * 200_000 + '"}\n')
    (folder / "nested.jsonl").write_bytes(b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n"
                                          b'{"id": "dup", "text": "one"}\n{"id": "dup", "text": "two"}\n')
    good_gzip = gzip.compress(b"".join(b"line %d of the data\n" % i for i in range(200)))
    (folder / "truncated.txt.gz").write_bytes(good_gzip[: len(good_gzip) // 2])
    (folder / "garbage.txt.gz").write_bytes(os.urandom(2000))
    prefix = str(tmp_path / "out" / "emb")
    summary = run_pipeline(str(folder / "*"), prefix, tf1_module, "--max_record_bytes=8000000",
                           "--outputs=pooled")
    assert summary.accounted
    records = list(read_embeddings(prefix))
    letters = dead_letters(str(tmp_path / "out" / "dead_letter" / "emb"))
    assert summary["documents_embedded"] == len(records)
    assert summary["documents_rejected"] == len(letters)
    ids = [r.id for r in records]
    assert ids.count("dup") == 2
    assert f"{folder}/bom_crlf.txt:1" in ids and f"{folder}/bad_utf8.txt:3" in ids
    reasons = {os.path.basename(d["source"]): d["reason"] for d in letters}
    assert "invalid UTF-8" in reasons["bad_utf8.txt:2"]
    assert "over --max_record_bytes" in reasons["long_line.txt:1"]
    assert f"{folder}/long_line.txt:2" in ids
    huge = next(r for r in records if r.id == "huge")  # 3.2 million characters, truncated
    assert huge.sequence_length == 128 and summary["documents_truncated"] >= 1
    assert "invalid JSON" in reasons["nested.jsonl:1"]
    assert any(k.startswith("truncated.txt.gz") and "unreadable" in v for k, v in reasons.items())
    assert any(k.startswith("garbage.txt.gz") and "unreadable" in v for k, v in reasons.items())
    assert all(len(d["raw"]) <= 1100 for d in letters)


def test_dead_letters_keep_only_a_configurable_excerpt(tmp_path, tf1_module):
    secret = "secret " * 500
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "bad", "text": 5, "note": "' + secret + '"}\n{"id": "ok", "text": "the dog"}\n')
    for chars, expected in (("0", ""), ("20", '{"id": "bad", "text"')):
        prefix = str(tmp_path / f"out{chars}" / "emb")
        run_pipeline(str(docs), prefix, tf1_module, f"--dead_letter_excerpt_chars={chars}")
        (letter,) = dead_letters(str(tmp_path / f"out{chars}" / "dead_letter" / "emb"))
        assert letter["raw"].startswith(expected) and len(letter["raw"]) < 60
        assert letter["source"].endswith("docs.jsonl:1")
