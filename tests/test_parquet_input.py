"""Parquet inputs: rows as pyarrow reads them, row group by row group; bad rows and files dead-lettered."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from input_helpers import read_in_pipeline

from pipeline.inputs import parquet_input, sources
from pipeline.inputs.parquet_input import RowGroup, read_row_group, split_row_groups
from pipeline.inputs.sources import COLUMN_CHECK_TRIES, InputConfig, binary_inputs_error, input_columns_error
from transforms import counters
from transforms.records import Document, Rejected


def _write(path, columns: dict, row_group_size: int | None = None, **options) -> str:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size, **options)
    return str(path)


def _rows(path: str) -> list[dict]:
    """The rows pyarrow reads from a whole file at once: the reference for streamed row groups."""
    return pq.read_table(path).to_pylist()


def _read_file(path: str, config: InputConfig) -> list[Document | Rejected]:
    """Every record of a Parquet file, read row group by row group as workers read them."""
    records: list[Document | Rejected] = []
    for task in split_row_groups(path, config):
        records.extend([task] if isinstance(task, Rejected) else read_row_group(task, config))
    return records


def test_row_groups_are_split_from_the_footer_and_read_apart_as_pyarrow_reads_the_file(tmp_path):
    texts = [f"the dog number {i}" for i in range(23)]
    path = _write(tmp_path / "docs.parquet", {"id": [f"d{i}" for i in range(23)], "text": texts,
                                              "unused": list(range(23))}, row_group_size=5)
    config = InputConfig()
    groups = list(split_row_groups(path, config))
    metadata = pq.ParquetFile(path).metadata
    assert len(groups) == metadata.num_row_groups == 5
    sizes = [metadata.row_group(index).num_rows for index in range(5)]
    assert [g.first_row for g in groups] == [sum(sizes[:index]) for index in range(5)]
    assert all(g == RowGroup(path, index, g.first_row, ("text", "id")) for index, g in enumerate(groups))
    reference = _rows(path)
    # Each row group alone, last first, as workers might read them: together they are the file.
    by_group = {g.index: list(read_row_group(g, config)) for g in reversed(groups)}
    records = [record for index in sorted(by_group) for record in by_group[index]]
    assert records == [Document(id=row["id"], text=row["text"], source=f"{path}:row {number}")
                       for number, row in enumerate(reference, start=1)]


def test_bad_rows_are_rejected_alone_with_their_row_number(tmp_path):
    path = _write(tmp_path / "docs.parquet", {
        "id": ["a", None, "c", "d", "e", "f"],
        "text": ["the dog", "a cat", None, "", "x" * 300, "fox"],
        "pair": [None, None, None, "b text", None, "a lazy dog"],
    }, row_group_size=4)
    records = _read_file(path, InputConfig(text_b_field="pair", max_record_bytes=200))
    assert [r.source for r in records] == [f"{path}:row {n}" for n in range(1, 7)]
    assert records[0] == Document("a", "the dog", f"{path}:row 1")
    assert records[1].reason == "field 'id' is null, not a string or integer"
    assert records[2].reason == "field 'text' is null, not a string"
    assert records[3] == Document("d", "", f"{path}:row 4", text_b="b text")
    assert records[4].reason == "record over --max_record_bytes (200 bytes)"
    assert records[5] == Document("f", "fox", f"{path}:row 6", text_b="a lazy dog")
    assert all(len(r.raw) <= 1100 and r.raw.startswith('{"') for r in records if isinstance(r, Rejected))


def test_ids_follow_json_lines_integers_kept_others_rejected_and_none_is_the_location(tmp_path):
    integers = _write(tmp_path / "ints.parquet", {"id": pa.array([7, 8], pa.int64()), "text": ["a", "b"]})
    floats = _write(tmp_path / "floats.parquet", {"id": [1.5, 2.0], "text": ["a", "b"]})
    no_id = _write(tmp_path / "no_id.parquet", {"text": ["a", "b"]})
    assert [r.id for r in _read_file(integers, InputConfig())] == ["7", "8"]
    assert {r.reason for r in _read_file(floats, InputConfig())} == {
        "field 'id' is a float, not a string or integer"}
    assert [r.id for r in _read_file(no_id, InputConfig())] == [f"{no_id}:row 1", f"{no_id}:row 2"]


def test_a_string_that_is_not_utf8_rejects_its_row_alone(tmp_path):
    raw = pa.array([b"the dog", b"bad \xff bytes", b"a cat"], pa.binary()).cast(pa.string(), safe=False)
    path = _write(tmp_path / "docs.parquet", {"text": raw})
    records = _read_file(path, InputConfig())
    assert [r.text for r in records if isinstance(r, Document)] == ["the dog", "a cat"]
    assert records[1].source == f"{path}:row 2"
    assert records[1].reason == "field 'text' is invalid UTF-8 at byte 4"


def test_a_corrupt_row_group_is_one_rejection_and_the_others_are_read(tmp_path):
    path = _write(tmp_path / "docs.parquet", {"text": [f"text number {i} " * 20 for i in range(40)]},
                  row_group_size=10, use_dictionary=False)
    chunk = pq.ParquetFile(path).metadata.row_group(2).column(0)
    with open(path, "r+b") as handle:  # the row group's pages, header and all, overwritten
        handle.seek(chunk.data_page_offset)
        handle.write(b"\xff" * chunk.total_compressed_size)
    records = _read_file(path, InputConfig())
    documents = [r for r in records if isinstance(r, Document)]
    assert [d.text for d in documents] == [row["text"] for row in _rows_without_group(path, 2)]
    (rest,) = [r for r in records if isinstance(r, Rejected)]
    assert rest.source == f"{path}:row 21" and rest.raw == ""
    assert rest.reason.startswith("row group 2 unreadable after row 20: OSError: ")


def test_a_footer_whose_column_name_is_not_utf8_is_one_rejection_and_passed_over_by_the_launcher(tmp_path):
    path = tmp_path / "docs.parquet"
    _write(path, {"text": ["the dog", "a cat"], "qqqq": [1, 2]})
    path.write_bytes(path.read_bytes().replace(b"qqqq", b"\xff\xfe\xff\xfe"))  # the footer's column name
    (rejected,) = list(split_row_groups(str(path), InputConfig()))
    assert isinstance(rejected, Rejected) and rejected.source == f"{path}:row 1"
    assert "UnicodeDecodeError" in rejected.reason
    assert input_columns_error([str(path)], InputConfig()) is None  # the run dead-letters it


def _rows_without_group(path: str, skipped: int) -> list[dict]:
    parquet = pq.ParquetFile(path)
    groups = [index for index in range(parquet.num_row_groups) if index != skipped]
    return parquet.read_row_groups(groups).to_pylist()


def test_a_bug_is_raised_not_taken_for_an_unreadable_file(tmp_path, monkeypatch):
    path = _write(tmp_path / "docs.parquet", {"text": ["the dog"]})

    def broken(fields, source, config):
        raise OSError("a bug in validation")

    monkeypatch.setattr(parquet_input, "document_from_fields", broken)
    with pytest.raises(OSError, match="a bug in validation"):
        _read_file(path, InputConfig())


def test_parquet_files_and_their_bad_rows_through_read_documents(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    texts = ["the dog", None, "a cat", "", "the fox", " ", "hello world", None, "data"] * 3
    big = _write(folder / "big.parquet", {"id": [f"id{i}" for i in range(len(texts))], "text": texts},
                 row_group_size=4)
    numbers = _write(folder / "numbers.parquet", {"text": pa.array([1, 2, 3], pa.int64())})
    _write(folder / "no_text.parquet", {"id": ["a"], "body": ["the dog"]})
    _write(folder / "empty.parquet", {"text": pa.array([], pa.string())})
    fake = folder / "fake.parquet"
    fake.write_bytes(b"the dog\na cat\n")
    documents, rejected = [], []
    for number, row in enumerate(_rows(big), start=1):
        source = f"{big}:row {number}"
        if row["text"] is None:
            rejected.append((source, "field 'text' is null, not a string"))
        elif not row["text"].strip():
            rejected.append((source, "field 'text' is empty"))
        else:
            documents.append(Document(row["id"], row["text"], source))
    rejected += [(f"{numbers}:row {n}", "field 'text' is a int, not a string") for n in (1, 2, 3)]
    rejected += [(f"{folder}/no_text.parquet:row 1", "Parquet file has no column 'text' (--text_field); "
                  "its columns are 'id', 'body'"),
                 (f"{fake}:row 1", "not a readable Parquet file: ArrowInvalid: ")]
    totals = read_in_pipeline(str(folder / "*"), InputConfig(), documents, rejected)
    assert pq.ParquetFile(big).metadata.num_row_groups == 7
    assert totals[counters.FILES_READ] == 5
    assert totals[counters.DOCUMENTS_READ] == len(documents) + len(rejected) == len(texts) + 3 + 2


def test_the_launcher_checks_columns_in_one_footer(tmp_path):
    good = _write(tmp_path / "good.parquet", {"id": ["a"], "text": ["the dog"], "answer": ["yes"]})
    other = _write(tmp_path / "other.parquet", {"id": ["a"], "body": ["the dog"]})
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"not parquet")
    assert input_columns_error([good], InputConfig()) is None
    assert input_columns_error([good], InputConfig(text_b_field="answer")) is None
    assert input_columns_error([good], InputConfig(text_field="body")) == (
        f"--input file {good!r} has no column 'body' (--text_field); its columns are 'id', 'text', 'answer'.")
    assert input_columns_error([good], InputConfig(text_b_field="question")) == (
        f"--input file {good!r} has no column 'question' (--text_b_field); its columns are 'id', 'text', "
        "'answer'.")
    # The first readable footer decides; a later file lacking the column is dead-lettered by the run.
    assert input_columns_error([str(fake), good, other], InputConfig()) is None
    assert input_columns_error([str(fake), other, good], InputConfig()).startswith(f"--input file {other!r}")
    # A format given by flag applies to every file.
    missing = [str(tmp_path / "x.dat")] * 2
    assert input_columns_error([*missing, other], InputConfig(input_format="parquet")).startswith(
        f"--input file {other!r} has no column 'text'")
    wide = _write(tmp_path / "wide.parquet", {f"c{i}": [i] for i in range(30)})
    message = input_columns_error([wide], InputConfig())
    assert message.endswith("its columns are 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8', 'c9', "
                            "... (30 in all).")


def test_the_launcher_reads_a_bounded_number_of_footers(tmp_path, monkeypatch):
    opened: list[str] = []

    def counting(path):
        opened.append(path)
        raise OSError("unreadable")

    monkeypatch.setattr(sources, "parquet_columns", counting)
    paths = [str(tmp_path / f"part-{i:05d}.parquet") for i in range(10_000)]
    assert input_columns_error(paths, InputConfig()) is None
    assert opened == paths[:COLUMN_CHECK_TRIES]


def test_parquet_inputs_pass_the_binary_check_and_parquet_given_as_text_does_not(tmp_path):
    path = _write(tmp_path / "docs.parquet", {"text": ["the dog"]})
    assert binary_inputs_error([path]) is None
    assert binary_inputs_error([path], input_format="parquet") is None
    message = binary_inputs_error([path], input_format="jsonl")
    assert message == (f"--input {path!r} is a binary file (Parquet, magic PAR1), not text, JSON Lines or "
                       "CSV; read Parquet with --input_format parquet.")
