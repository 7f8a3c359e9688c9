"""CSV and TSV inputs: records as Python's csv module reads them, malformed ones dead-lettered alone."""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
from hypothesis import given, settings
from hypothesis import strategies as st
from input_helpers import read_in_pipeline

from pipeline.inputs import csv_input
from pipeline.inputs.csv_input import (
    RawRecord,
    csv_records,
    delimiter_for,
    parse_delimiter,
    parse_fields,
    split_records,
)
from pipeline.inputs.sources import (
    COLUMN_CHECK_TRIES,
    InputConfig,
    _ReadRecords,
    _SplitFiles,
    input_columns_error,
)
from transforms import counters
from transforms.records import Document, Rejected

ROWS = [
    ["1", 'the "quick" dog', ""],
    ["2", "a cat, over\ntwo lines", "and a pair"],
    ["3", "  spaced  ", "tab\tinside"],
    ["4", "\u6771\u4eac \U0001f436 caf\u00e9", "\r\nleading line end"],
    ["5", "", "an empty first text"],
    ["6", " ", ""],
]


def _csv_bytes(rows, delimiter: str = ",", lineterminator: str = "\r\n", bom: bool = False) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=lineterminator).writerows(rows)
    return ("\ufeff" if bom else "").encode() + buffer.getvalue().encode("utf-8")


def _reference(data: bytes, path: str, delimiter: str, config: InputConfig) -> tuple[list, list]:
    """What Python's csv module reads from ``data``: the documents of its good rows, each located by
    the line it starts on, and the (source, reason) of rows whose text is empty."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter)
    header = next(reader)
    documents, rejected = [], []
    line = reader.line_num + 1
    for row in reader:
        source, line = f"{path}:{line}", reader.line_num + 1
        if not row:
            continue
        fields = dict(zip(header, row, strict=True))
        text, text_b = fields[config.text_field], fields.get(config.text_b_field or "") or None
        if text.strip() or (text_b or "").strip():
            documents.append(Document(fields.get(config.id_field, source), text, source, text_b))
        else:
            rejected.append((source, f"field {config.text_field!r} is empty"))
    return documents, rejected


@pytest.mark.parametrize("name, delimiter, lineterminator, bom, compress", [
    ("docs.csv", ",", "\r\n", False, False),
    ("bom.csv", ",", "\n", True, False),
    ("docs.tsv", "\t", "\n", False, False),
    ("docs.tsv.gz", "\t", "\r\n", True, True),
])
def test_csv_files_read_as_the_csv_module_reads_them(tmp_path, name, delimiter, lineterminator, bom,
                                                     compress):
    data = _csv_bytes([["id", "text", "text_b"], *ROWS], delimiter, lineterminator, bom) + b"\r\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress else data)
    config = InputConfig(text_b_field="text_b")
    documents, rejected = _reference(data, str(path), delimiter, config)
    assert len(documents) == 5 and len(rejected) == 1  # the blank last line is no record
    totals = read_in_pipeline(str(path), config, documents, rejected)
    assert totals[counters.FILES_READ] == 1
    assert totals[counters.DOCUMENTS_READ] == len(ROWS)


def _records(data: bytes, config: InputConfig, delimiter: str = ",", path: str = "f.csv"):
    return list(csv_records(split_records([data], delimiter, config.max_record_bytes), path, delimiter,
                            config))


def test_malformed_records_are_rejected_alone_and_reading_goes_on(tmp_path):
    limit = 200
    segments = [  # (bytes, good?) in file order
        (b"id,text\r\n", None),
        (b"1,the dog\r\n", True),
        (b'2,"bad"quote\r\n', False),
        (b"3,too,many\r\n", False),
        (b"4,bad \xc3\x28 utf8\r\n", False),
        (b'5,"a field over\r\ntwo lines"\r\n', True),
        (b'6,"x" \r\n', False),
        (b"7\r\n", False),
        (b'8,"' + b"oversize,\r\nfield\r\n" * 30 + b'"\r\n', False),
        (b"9,after the oversize field\r\n", True),
        (b'10,"never closed\r\nto the end', False),
    ]
    data = b"".join(raw for raw, _ in segments)
    path = tmp_path / "docs.csv"
    path.write_bytes(data)
    config = InputConfig(max_record_bytes=limit)
    documents, starts, line = [], {}, 1
    for raw, good in segments:
        if good:  # the csv module reading the record alone, as the reference
            (row,) = csv.reader(io.StringIO(raw.decode(), newline=""))
            documents.append(Document(row[0], row[1], f"{path}:{line}"))
        elif good is False:
            starts[raw[: raw.index(b",") if b"," in raw else -2]] = f"{path}:{line}"
        line += raw.count(b"\n")
    rejected = [
        (starts[b"2"], "malformed CSV: ',' expected after '\"'"),
        (starts[b"3"], "3 fields where the header has 2"),
        (starts[b"4"], "invalid UTF-8 at byte 6"),
        (starts[b"6"], "malformed CSV: ',' expected after '\"'"),
        (starts[b"7"], "1 fields where the header has 2"),
        (starts[b"8"], f"record over --max_record_bytes ({limit} bytes)"),
        (starts[b"10"], "quoted field not closed before the end of the file"),
    ]
    totals = read_in_pipeline(str(path), config, documents, rejected)
    assert totals[counters.DOCUMENTS_READ] == len(documents) + len(rejected) == len(segments) - 1
    (oversize,) = [r for r in _records(data, config, path=str(path)) if r.source == starts[b"8"]]
    assert len(segments[8][0]) > limit and segments[8][0].startswith(oversize.raw.encode())


def test_an_oversize_field_is_never_held_whole():
    limit, chunk = 1024 * 1024, 1024 * 1024

    def chunks():
        yield b'id,text\n1,"'
        for _ in range(32):  # a 32 MiB quoted field of many lines, streamed
            yield b"the dog,\n" * (chunk // 9)
        yield b'"\n2,after\n'

    tracemalloc.start()
    try:
        records = list(split_records(chunks(), ",", limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    field_lines = 32 * (chunk // 9) + 1  # the field's lines, and the line its closing quote ends
    assert [(r.line, r.oversize) for r in records] == [(1, False), (2, True), (2 + field_lines, False)]
    assert records[2].raw == b"2,after\n" and len(records[1].raw) <= 1000
    assert peak < 4 * limit + 2 * chunk


FIELDS = st.text(st.sampled_from('ab ,;\t"\n\u00e9\U0001f436'), max_size=8)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(FIELDS, min_size=1, max_size=4), min_size=1, max_size=6),
       delimiter=st.sampled_from([",", ";", "\t"]), lineterminator=st.sampled_from(["\n", "\r\n"]),
       chunk=st.integers(1, 40))
def test_records_split_and_parse_as_the_csv_module_reads_them(rows, delimiter, lineterminator, chunk):
    data = _csv_bytes(rows, delimiter, lineterminator)
    reader = csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter, strict=True)
    expected, line = [], 1
    for row in reader:
        expected.append((line, row))
        line = reader.line_num + 1
    records = split_records([data[i : i + chunk] for i in range(0, len(data), chunk)], delimiter, 10_000)
    assert [(r.line, parse_fields(r, delimiter, 10_000)) for r in records] == expected


def test_a_header_without_the_text_column_rejects_the_file_whole():
    data = b"id,body\n1,the dog\n2,a cat\n"
    (rejected,) = _records(data, InputConfig())
    assert rejected == Rejected("f.csv:1", "id,body\n", "CSV header has no column 'text' (--text_field); "
                                "its columns are 'id', 'body'", "read")
    (twice,) = _records(b"text,id,text\n", InputConfig())
    assert twice.reason == "CSV header has 2 columns named 'text' (--text_field)"
    (bad,) = _records(b'"id,text\n', InputConfig())
    assert bad.reason == "CSV header unreadable: quoted field not closed before the end of the file"
    assert _records(b"", InputConfig()) == []


def test_ids_follow_json_lines():
    config = InputConfig()
    assert _records(b"text,id\nthe dog,7\n", config) == [Document("7", "the dog", "f.csv:2")]
    assert _records(b"text\nthe dog\n", config) == [Document("f.csv:2", "the dog", "f.csv:2")]
    (blank,) = _records(b"text,id\nthe dog, \n", config)  # a blank id names no document
    assert isinstance(blank, Rejected) and blank.source == "f.csv:2" and blank.reason == "field 'id' is blank"


def _read_path(path, config: InputConfig) -> list[Document | Rejected]:
    """What the reading DoFns make of one file, main and rejected outputs in order."""
    readable = fileio.ReadableFile(FileMetadata(str(path), os.path.getsize(path)))
    outputs = [output for task in _SplitFiles(config).process(readable)
               for output in _ReadRecords(config).process(task)]
    return [output.value if isinstance(output, TaggedOutput) else output for output in outputs]


def test_the_delimiter_is_a_tab_for_tsv_unless_the_flag_says_otherwise(tmp_path):
    assert (delimiter_for(".tsv", None), delimiter_for(".csv", None), delimiter_for(".tsv", ";")) == (
        "\t", ",", ";")
    tsv = tmp_path / "docs.tsv"
    tsv.write_bytes(b"id\ttext\n1\tthe dog, a cat\n")
    assert _read_path(tsv, InputConfig()) == [Document("1", "the dog, a cat", f"{tsv}:2")]
    assert _read_path(tsv, InputConfig(csv_delimiter=",")) == [
        Rejected(f"{tsv}:1", "id\ttext\n", "CSV header has no column 'text' (--text_field); its columns are "
                 "'id\\ttext'", "read")]
    semicolons = tmp_path / "docs.txt"
    semicolons.write_bytes(b"id;text\n1;the dog\n")
    assert _read_path(semicolons, InputConfig(input_format="csv", csv_delimiter=";")) == [
        Document("1", "the dog", f"{semicolons}:2")]


def test_a_bug_is_raised_not_taken_for_an_unreadable_file(monkeypatch):
    def broken(fields, source, config):
        raise OSError("a bug in validation")

    monkeypatch.setattr(csv_input, "document_from_fields", broken)
    with pytest.raises(OSError, match="a bug in validation"):
        _records(b"text\nthe dog\n", InputConfig())


@pytest.mark.parametrize("text, delimiter", [
    (",", ","), (";", ";"), ("\\t", "\t"), ("TAB", "\t"), ("\t", "\t"), ("|", "|")])
def test_the_delimiter_flag_takes_one_ascii_character(text, delimiter):
    assert parse_delimiter(text) == delimiter


@pytest.mark.parametrize("text", ['"', "\n", "\r", "", ",,", "\u00a7"])
def test_the_delimiter_flag_refuses_what_cannot_delimit(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected one ASCII character"):
        parse_delimiter(text)


def test_the_launcher_checks_the_first_readable_header(tmp_path, monkeypatch):
    good, other, tsv = tmp_path / "good.csv", tmp_path / "other.csv", tmp_path / "docs.tsv.gz"
    good.write_bytes(b"\xef\xbb\xbf\"id\",text,answer\r\n1,the dog,yes\r\n")
    other.write_bytes(b"id,body\n1,the dog\n")
    tsv.write_bytes(gzip.compress(b"id\ttext\n1\tthe dog\n"))
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"\x1f\x8b not gzip")
    assert input_columns_error([str(good)], InputConfig(text_b_field="answer")) is None
    assert input_columns_error([str(tsv)], InputConfig()) is None
    assert input_columns_error([str(other)], InputConfig()) == (
        f"--input file {str(other)!r} has no column 'text' (--text_field); its columns are 'id', 'body'.")
    assert input_columns_error([str(broken), str(good), str(other)], InputConfig()) is None
    assert input_columns_error([str(broken), str(other), str(good)], InputConfig()).startswith(
        f"--input file {str(other)!r}")
    parquet = tmp_path / "table.parquet"
    pq.write_table(pa.table({"body": ["the dog"]}), parquet)
    # Each format's first readable file is checked.
    assert input_columns_error([str(good), str(parquet)], InputConfig()).startswith(
        f"--input file {str(parquet)!r} has no column 'text'")
    missing = [str(tmp_path / f"missing-{i}.csv") for i in range(COLUMN_CHECK_TRIES)]
    assert input_columns_error([*missing, str(other)], InputConfig()) is None


def test_a_record_split_is_located_by_its_first_line():
    (header, record) = split_records([b'a,b\n1,"x\ny\nz"\n'], ",", 100)
    assert record == RawRecord(2, b'1,"x\ny\nz"\n', 3) and record.last_line == 4
