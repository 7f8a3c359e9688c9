"""Reads Parquet files with pyarrow: one row group at a time, only the columns a Document needs.

``split_row_groups`` reads a file's footer alone and names its row groups, so that different workers
read different row groups of one big file, as Beam's ``ReadFromParquet`` splits it; ``read_row_group``
then streams one row group in batches. Each row is a record of named fields, located as
``FILE:row N`` (1-based within the file, as lines are), and judged by ``document_from_fields``.
Parquet files are read as they are: their pages carry their own compression.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from google.api_core.exceptions import GoogleAPIError

from pipeline.inputs.record_fields import column_problem, document_from_fields
from transforms.records import EXCERPT_CHARS, STAGE_READ, Document, Rejected, excerpt

__all__ = ["PARQUET_ERRORS", "RowGroup", "parquet_columns", "read_row_group", "split_row_groups"]

if TYPE_CHECKING:
    from pipeline.inputs.sources import InputConfig

_BATCH_ROWS = 1024
# What reading a Parquet file raises when the file or its storage is at fault: ArrowInvalid (not
# Parquet, a corrupt footer or page), ArrowNotImplementedError (a codec or encoding this pyarrow
# lacks), UnicodeDecodeError (a corrupt footer's column name), OSError (pyarrow's and Beam's I/O
# errors), EOFError and GCS's API errors. Anything else is a bug and fails the bundle.
PARQUET_ERRORS: tuple[type[Exception], ...] = (
    pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError, OSError, EOFError, GoogleAPIError)


@dataclass(frozen=True)
class RowGroup:
    """One row group of a Parquet file, the unit of reading; ``first_row`` rows of the file precede it."""

    path: str
    index: int
    first_row: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class _NotUtf8:
    """A string value whose bytes are not UTF-8 (pyarrow does not check them when it reads)."""

    start: int


def _location(path: str, row: int) -> str:
    return f"{path}:row {row}"


@contextlib.contextmanager
def _open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened through Beam's filesystems (local, ``gs://`` ...), undecompressed."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        yield pq.ParquetFile(handle)


def parquet_columns(path: str) -> tuple[str, ...]:
    """The top-level column names of a Parquet file, from its footer alone; raises ``PARQUET_ERRORS``."""
    with _open_parquet(path) as parquet:
        return tuple(parquet.schema_arrow.names)


def split_row_groups(path: str, config: InputConfig) -> Iterator[RowGroup | Rejected]:
    """A Parquet file's non-empty row groups, from its footer; one Rejected for a file that is not
    readable Parquet or lacks a configured column."""
    try:
        with _open_parquet(path) as parquet:
            names = parquet.schema_arrow.names
            sizes = [parquet.metadata.row_group(index).num_rows for index in range(parquet.num_row_groups)]
    except PARQUET_ERRORS as error:
        yield Rejected(_location(path, 1), "", f"not a readable Parquet file: {type(error).__name__}: "
                       f"{str(error).strip()}", STAGE_READ)
        return
    problem = column_problem(names, config)
    if problem:
        yield Rejected(_location(path, 1), "", f"Parquet file {problem}", STAGE_READ)
        return
    wanted = (config.text_field, config.text_b_field, config.id_field)
    columns = tuple(dict.fromkeys(name for name in wanted if name in names))
    first_row = 0
    for index, rows in enumerate(sizes):
        if rows:
            yield RowGroup(path, index, first_row, columns)
        first_row += rows


def _batches(group: RowGroup) -> Iterator[pa.RecordBatch | Rejected]:
    """A row group's batches, ending in a Rejected for the unread rest where reading raises
    ``PARQUET_ERRORS``."""
    row = group.first_row
    try:
        with _open_parquet(group.path) as parquet:
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group.index],
                                              columns=list(group.columns)):
                row += batch.num_rows
                yield batch
    except PARQUET_ERRORS as error:
        yield Rejected(_location(group.path, row + 1), "", f"row group {group.index} unreadable after "
                       f"row {row}: {type(error).__name__}: {str(error).strip()}", STAGE_READ)


def _values(column: pa.Array) -> list:
    """A column's Python values; a string that is not UTF-8 becomes a ``_NotUtf8`` alone."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        values = []
        for scalar in column:
            try:
                values.append(scalar.as_py())
            except UnicodeDecodeError as error:
                values.append(_NotUtf8(error.start))
        return values


def _over_limit(document: Document, limit: int) -> bool:
    """Whether a document's texts take more than ``limit`` bytes as UTF-8 (at most 4 bytes a character)."""
    texts = (document.text, document.text_b or "")
    if sum(len(text) for text in texts) * 4 <= limit:
        return False
    return sum(len(text.encode("utf-8")) for text in texts) > limit


def _shown(fields: Mapping[str, object]) -> str:
    """A row as JSON for its dead letter, each string cut to an excerpt's length first."""
    cut = {name: value[:EXCERPT_CHARS] if isinstance(value, (str, bytes)) else value
           for name, value in fields.items()}
    return json.dumps(cut, ensure_ascii=False, default=repr)


def _row_record(fields: Mapping[str, object], source: str, config: InputConfig) -> Document | Rejected:
    """One row as a Document, or a Rejected saying why it is none."""
    not_utf8 = next(((name, value) for name, value in fields.items() if isinstance(value, _NotUtf8)), None)
    if not_utf8:
        name, value = not_utf8
        result: Document | str = f"field {name!r} is invalid UTF-8 at byte {value.start}"
    else:
        result = document_from_fields(fields, source, config)
    if isinstance(result, Document) and _over_limit(result, config.max_record_bytes):
        result = f"record over --max_record_bytes ({config.max_record_bytes} bytes)"
    if isinstance(result, Document):
        return result
    return Rejected(source, excerpt(_shown(fields)), result, STAGE_READ)


def read_row_group(group: RowGroup, config: InputConfig) -> Iterator[Document | Rejected]:
    """A row group's rows as Documents and Rejected, one each, batch by batch."""
    row = group.first_row
    for batch in _batches(group):
        if isinstance(batch, Rejected):
            yield batch
            continue
        columns = {name: _values(batch.column(name)) for name in batch.schema.names}
        for index in range(batch.num_rows):
            row += 1
            fields = {name: values[index] for name, values in columns.items()}
            yield _row_record(fields, _location(group.path, row), config)
