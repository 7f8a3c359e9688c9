"""Readers survive hostile files: every record is embedded or dead-lettered with a reason."""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import lzma
import os
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
from helpers import dead_letters, run_pipeline, write_jsonl
from input_helpers import read_in_pipeline
from reference_bert import original_convert_single_example, original_full_tokenizer

from pipeline.inputs import sources
from pipeline.inputs.sources import (
    SNIFF_BYTES,
    InputConfig,
    _bounded_lines,
    _read_chunks,
    _read_head,
    _ReadRecords,
    _SplitFiles,
    binary_inputs_error,
    format_for_path,
    parse_record,
    sniff_binary_format,
    sniff_file,
)
from pipeline.reader import read_embeddings
from transforms import counters
from transforms.records import STAGE_READ, Document, Rejected

JSONL = InputConfig(input_format="jsonl")


@pytest.mark.parametrize("path, explicit, expected", [
    ("a/b.jsonl", None, "jsonl"), ("a/b.jsonl.gz", None, "jsonl"), ("b.ndjson.bz2", None, "jsonl"),
    ("b.txt", None, "text"), ("b.txt.gz", None, "text"), ("b.txt", "jsonl", "jsonl"), ("b.dat", None, "text"),
    ("b.csv", None, "csv"), ("b.TSV.gz", None, "csv"), ("b.parquet", None, "parquet"),
    ("b.csv", "text", "text"),
])
def test_format_comes_from_the_extension_unless_given(path, explicit, expected):
    assert format_for_path(path, explicit) == expected


@pytest.mark.parametrize("raw, reason", [
    (b'{"text": "ok"', "invalid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    (b'"just a string"', "not an object"),
    (b'{"text": null}', "field 'text' is null, not a string"),
    (b'{"text": "a", "id": null}', "field 'id' is null, not a string or integer"),
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
    lines = list(_bounded_lines([data], 100))
    assert [(n, oversize) for n, _, oversize in lines] == [(1, False), (2, True), (3, False), (4, False)]
    assert len(lines[1][1]) <= 1000 and lines[2][1] == b"after\n" and lines[3][1] == b"last"


@pytest.mark.parametrize("head_size", [0, 1, 5, 6, 7, 100])
def test_lines_after_a_peeked_head_are_the_lines_of_the_whole_file(head_size):
    data = b"short\n" + b"x" * 50 + b"\nafter\nlast"
    handle = io.BytesIO(data)
    head = _read_head(handle, head_size)
    assert list(_bounded_lines(_read_chunks(handle, head), 20)) == list(_bounded_lines([data], 20))


def _read_records(path, config: InputConfig = JSONL) -> list[Document | Rejected]:
    """What the reading DoFn makes of one file, main and rejected outputs in order."""
    readable = fileio.ReadableFile(FileMetadata(str(path), os.path.getsize(path)))
    outputs = [output for task in _SplitFiles(config).process(readable)
               for output in _ReadRecords(config).process(task)]
    return [output.value if isinstance(output, TaggedOutput) else output for output in outputs]


def test_a_bad_record_is_rejected_alone_and_reading_goes_on(tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": "first", "text": "the dog"}, "not json", b'{"text": "\xff"}', {"text": "x" * 200},
        {"text": 5}, {"id": "last", "text": "a cat"}])
    records = _read_records(docs, InputConfig(input_format="jsonl", max_record_bytes=100))
    assert [type(r).__name__ for r in records] == ["Document", *["Rejected"] * 4, "Document"]
    assert [r.source for r in records] == [f"{docs}:{n}" for n in range(1, 7)]
    assert all(r.stage == STAGE_READ and "unreadable" not in r.reason for r in records[1:5])
    assert records[-1].id == "last"


class _FailingHandle(io.BytesIO):
    """A file whose storage fails (``error``) once ``good`` bytes have been read."""

    def __init__(self, good: bytes, error: Exception) -> None:
        super().__init__(good)
        self._error = error

    def read(self, size: int = -1) -> bytes:
        block = super().read(size)
        if not block:
            raise self._error
        return block


def _fail_reading_after(monkeypatch, good: bytes, error: Exception) -> None:
    @contextlib.contextmanager
    def failing_open(path, compression):
        yield _FailingHandle(good, error)

    monkeypatch.setattr(sources, "_open_decompressed", failing_open)


@pytest.mark.parametrize("name, content, failure", [
    ("cut.txt.gz", gzip.compress(b"".join(b"line %d\n" % i for i in range(5000)))[:8000], "EOFError"),
    ("cut.txt.bz2", bz2.compress(b"the dog\n" * 1000)[:40], "EOFError"),
    ("noise.txt.gz", b"\x1f\x8b" + bytes(range(256)) * 4, "BadGzipFile"),
    ("broken.txt.xz", lzma.compress(b"the dog\n")[:12] + bytes(64), "LZMAError"),
])
def test_an_io_error_ends_a_file_after_the_lines_it_gave(tmp_path, name, content, failure):
    path = tmp_path / name
    path.write_bytes(content)
    *lines, rest = _read_records(path, InputConfig())
    assert all(isinstance(line, Document) for line in lines)
    assert [line.source for line in lines] == [f"{path}:{n}" for n in range(1, len(lines) + 1)]
    assert isinstance(rest, Rejected) and rest.stage == STAGE_READ and rest.raw == ""
    assert rest.source == f"{path}:{len(lines) + 1}"
    assert rest.reason.startswith(f"file unreadable after line {len(lines)}: {failure}: ")


def test_storage_failing_mid_file_is_one_rejection_for_the_unread_rest(tmp_path, monkeypatch):
    # Past the first block, so lines come before the failure; the cut-off last line is not one of them.
    _fail_reading_after(monkeypatch, b"the dog\n" * 2000 + b"the fo", ConnectionResetError("reset by peer"))
    path = tmp_path / "docs.txt"
    path.write_bytes(b"")
    *lines, rest = _read_records(path, InputConfig())
    assert [line.text for line in lines] == ["the dog"] * 2000
    assert rest == Rejected(f"{path}:2001", "", "file unreadable after line 2000: ConnectionResetError: "
                            "reset by peer", STAGE_READ)


def test_a_bug_is_raised_not_taken_for_an_unreadable_file(tmp_path, monkeypatch):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "the dog"}, {"text": "a cat"}])

    def broken_parse(raw, source, path, config):
        raise TypeError("a bug in parsing")

    monkeypatch.setattr(sources, "parse_record", broken_parse)
    with pytest.raises(TypeError, match="a bug in parsing"):
        _read_records(docs)
    _fail_reading_after(monkeypatch, b"the dog\n", ValueError("a bug in reading"))
    with pytest.raises(ValueError, match="a bug in reading"):
        _read_records(docs)
    with pytest.raises(ValueError, match="a bug in reading"):
        binary_inputs_error([str(docs)])


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


def _parquet_bytes(tmp_path) -> bytes:
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["the dog", "a cat"]}), path)
    return path.read_bytes()


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("docs.txt", "the dog\na cat\n")
    return buffer.getvalue()


@pytest.mark.parametrize("make, name, evidence", [
    (_parquet_bytes, "Parquet", "magic PAR1"),
    (lambda _: _zip_bytes(), "zip", "magic 50 4B 03 04"),
    (lambda _: gzip.compress(b"the dog\n"), "gzip", "magic 1F 8B"),
    (lambda _: bz2.compress(b"the dog\n"), "bzip2", "magic BZh91AY&SY"),
    (lambda _: bz2.compress(b""), "bzip2", "magic 42 5A 68 39 17"),
    (lambda _: lzma.compress(b"the dog\n"), "xz", "magic FD 37 7A 58 5A 00"),
    (lambda _: b"\x28\xb5\x2f\xfd" + bytes(20), "zstd", "magic 28 B5 2F FD"),
    (lambda _: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF", "magic %PDF-"),
    (lambda _: "the dog\n".encode("utf-16"), "unknown format", "NUL bytes in the first 8 KiB"),
    (lambda _: b"a" * (SNIFF_BYTES - 1) + b"\x00", "unknown format", "NUL bytes"),
])
def test_binary_formats_are_named_by_their_first_bytes(tmp_path, make, name, evidence):
    detected = sniff_binary_format(make(tmp_path)[:SNIFF_BYTES])
    assert detected is not None and detected.name == name and detected.evidence.startswith(evidence)
    assert detected.reason.startswith(f"binary file ({name}, ")
    assert f"): not text, JSON Lines or CSV{detected.hint}" in detected.reason


@pytest.mark.parametrize("head", [
    b"", b"the dog is hairy\n", b'{"id": 1, "text": "PAR1 is a magic"}\n', b"PAR", b"PK is a name\n",
    b"BZh9 is not bzip2\n", b"\xef\xbb\xbfthe dog\r\n", "caf\u00e9 \u6771\u4eac \U0001f436\n".encode(),
    b"\xc3\x28 invalid UTF-8 is still text, rejected line by line\n",
    b"a" * SNIFF_BYTES + b"\x00",
])
def test_text_is_not_taken_for_binary(head):
    assert sniff_binary_format(head) is None


def test_files_are_sniffed_after_the_decompression_the_run_applies(tmp_path):
    packed = tmp_path / "docs.txt"
    packed.write_bytes(gzip.compress(b"the dog\n"))
    assert sniff_file(str(packed), "none").name == "gzip"
    assert sniff_file(str(packed), "gzip") is None
    parquet_gz = tmp_path / "table.parquet.gz"
    parquet_gz.write_bytes(gzip.compress(_parquet_bytes(tmp_path)))
    assert sniff_file(str(parquet_gz)).name == "Parquet"
    text_bz2 = tmp_path / "docs.txt.bz2"
    text_bz2.write_bytes(bz2.compress(b"the dog\n"))
    assert sniff_file(str(text_bz2)) is None


def test_only_binary_inputs_are_a_configuration_error(tmp_path):
    parquet, archive, text = tmp_path / "t.dat", tmp_path / "a.zip", tmp_path / "docs.txt"
    parquet.write_bytes(_parquet_bytes(tmp_path))
    archive.write_bytes(_zip_bytes())
    text.write_text("the dog\n")
    message = binary_inputs_error([str(parquet)])
    assert message == (f"--input {str(parquet)!r} is a binary file (Parquet, magic PAR1), "
                       "not text, JSON Lines or CSV; read Parquet with --input_format parquet.")
    message = binary_inputs_error([str(parquet), str(archive)])
    assert message.startswith(f"All 2 files --input matches are binary ({str(parquet)!r}: Parquet")
    assert message.endswith("not text, JSON Lines or CSV; read Parquet with --input_format parquet.")
    assert "\n" not in message
    assert binary_inputs_error([str(parquet)], input_format="parquet") is None
    assert binary_inputs_error([str(parquet), str(archive)], input_format="parquet") is None
    assert binary_inputs_error([str(parquet), str(text), str(archive)]) is None
    assert binary_inputs_error([str(tmp_path / "missing.txt")]) is None
    assert binary_inputs_error([]) is None
    packed = tmp_path / "packed.txt"
    packed.write_bytes(gzip.compress(b"the dog\n"))
    assert "--compression=gzip" in binary_inputs_error([str(packed)], "none")
    assert binary_inputs_error([str(packed)], "gzip") is None


def test_each_binary_file_is_one_dead_letter_beside_embedded_text(tmp_path, tf1_module):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_bytes(b"the dog is hairy\na quick brown fox\n")
    (folder / "table.dat").write_bytes(_parquet_bytes(tmp_path))
    (folder / "archive.zip").write_bytes(_zip_bytes())
    (folder / "nul.txt").write_bytes(b"the dog\n\x00\x01\x02binary\na cat\n")
    (folder / "packed.txt").write_bytes(gzip.compress(b"the dog\na cat\n" * 100))
    prefix = str(tmp_path / "out" / "emb")
    summary = run_pipeline(str(folder / "*"), prefix, tf1_module, "--compression=none", "--outputs=pooled")
    records = list(read_embeddings(prefix))
    assert sorted(r.id for r in records) == [f"{folder}/good.txt:1", f"{folder}/good.txt:2"]
    letters = dead_letters(str(tmp_path / "out" / "dead_letter" / "emb"))
    reasons = {os.path.basename(d["source"]): d["reason"] for d in letters}
    assert sorted(reasons) == ["archive.zip:1", "nul.txt:1", "packed.txt:1", "table.dat:1"]
    assert reasons["table.dat:1"] == ("binary file (Parquet, magic PAR1): not text, JSON Lines or CSV; "
                                      "read Parquet with --input_format parquet")
    assert reasons["archive.zip:1"].startswith("binary file (zip, magic 50 4B 03 04)")
    assert reasons["nul.txt:1"].startswith("binary file (unknown format, NUL bytes in the first 8 KiB)")
    assert reasons["packed.txt:1"].startswith("binary file (gzip, magic 1F 8B)")
    assert all(d["stage"] == STAGE_READ and d["raw"] == "" for d in letters)
    assert summary["documents_read"] == 2 + 4
    assert (summary["documents_embedded"], summary["documents_rejected"]) == (2, 4)
    assert summary.accounted


def test_a_pair_whose_first_text_is_empty_is_embedded_as_the_original_builds_it(
    tmp_path, tf1_module, vocab_lines
):
    docs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "empty-a", "text": "", "text_b": "the quick brown fox"},
        {"id": "blank-a", "text": " \t", "text_b": "a lazy dog"},
        {"id": "empty-b", "text": "the dog", "text_b": ""},
        {"id": "both-empty", "text": "", "text_b": " "},
        {"id": "no-wordpieces", "text": "", "text_b": "\u200b\u0001"},
    ])
    prefix = str(tmp_path / "out" / "emb")
    summary = run_pipeline(str(docs), prefix, tf1_module, "--text_b_field=text_b", "--outputs=pooled",
                           "--max_seq_length=16")
    records = {r.id: r for r in read_embeddings(prefix)}
    assert sorted(records) == ["blank-a", "empty-a", "empty-b"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(vocab_lines) + "\n", encoding="utf-8")
    original = original_full_tokenizer(str(vocab), do_lower_case=True)
    for text_a, text_b, doc_id in (("", "the quick brown fox", "empty-a"), (" \t", "a lazy dog", "blank-a"),
                                   ("the dog", "", "empty-b")):
        expected = original_convert_single_example(original, text_a, text_b, 16)
        length = sum(expected.input_mask)
        assert records[doc_id].input_ids.tolist() == expected.input_ids[:length]
        assert records[doc_id].segment_ids.tolist() == expected.segment_ids[:length]
        assert records[doc_id].pooled_output.shape == (32,)
    assert records["empty-a"].segment_ids.tolist()[:3] == [0, 0, 1]
    assert not records["empty-b"].segment_ids.any()
    letters = dead_letters(str(tmp_path / "out" / "dead_letter" / "emb"))
    letters = {letter["source"].rsplit(":", 1)[1]: letter for letter in letters}
    assert letters["4"]["reason"] == "field 'text' is empty and so is 'text_b'"
    assert letters["5"]["reason"].startswith("text and text_b have no wordpieces")
    assert summary.accounted and summary["documents_read"] == 5


def test_every_input_format_through_read_documents(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    text_lines = ["the dog is hairy", "", "a cat"]
    (folder / "docs.txt").write_text("".join(line + "\n" for line in text_lines))
    json_lines = ['{"id": "j1", "text": "hello world"}', "not json", '{"text": "no id"}']
    (folder / "docs.jsonl").write_text("".join(line + "\n" for line in json_lines))
    csv_rows = [["id", "text"], ["c1", "quoted, with a comma"], ["c2", "two\nlines"]]
    csv_text = io.StringIO()
    csv.writer(csv_text).writerows(csv_rows)
    (folder / "docs.csv").write_text(csv_text.getvalue() + "c3\r\n", newline="")
    (folder / "docs.tsv.gz").write_bytes(gzip.compress(b"id\ttext\nt1\tthe fox, quick\n"))
    parquet_rows = {"id": ["p1", "p2", "p3"], "text": ["the dog", None, "a lazy dog"]}
    pq.write_table(pa.table(parquet_rows), folder / "table.parquet", row_group_size=2)
    (folder / "table.csv").write_bytes(_parquet_bytes(tmp_path))
    (folder / "lacking.csv").write_text("id,body\n1,the dog\n")
    path = f"{folder}/"
    documents = [Document(f"{path}docs.txt:{n}", line, f"{path}docs.txt:{n}")
                 for n, line in enumerate(text_lines, start=1) if line]
    documents += [Document(record.get("id", f"{path}docs.jsonl:{n}"), record["text"], f"{path}docs.jsonl:{n}")
                  for n, record in ((n, json.loads(line)) for n, line in enumerate(json_lines, start=1)
                                    if line.startswith("{"))]
    documents += [Document("c1", csv_rows[1][1], f"{path}docs.csv:2"),
                  Document("c2", csv_rows[2][1], f"{path}docs.csv:3"),
                  Document("t1", "the fox, quick", f"{path}docs.tsv.gz:2")]
    documents += [Document(row["id"], row["text"], f"{path}table.parquet:row {n}")
                  for n, row in enumerate(pq.read_table(folder / "table.parquet").to_pylist(), start=1)
                  if row["text"]]
    rejected = [(f"{path}docs.txt:2", "empty text"), (f"{path}docs.jsonl:2", "invalid JSON"),
                (f"{path}docs.csv:5", "1 fields where the header has 2"),
                (f"{path}table.parquet:row 2", "field 'text' is null, not a string"),
                (f"{path}table.csv:1", "binary file (Parquet, magic PAR1): not text, JSON Lines or CSV; "
                 "read Parquet with --input_format parquet"),
                (f"{path}lacking.csv:1", "CSV header has no column 'text' (--text_field)")]
    totals = read_in_pipeline(str(folder / "*"), InputConfig(), documents, rejected)
    assert totals[counters.FILES_READ] == 7
    assert totals[counters.DOCUMENTS_READ] == len(documents) + len(rejected)
