"""Reads CSV and TSV files (RFC 4180) as records of named fields, streamed with bounded memory.

The first record is the header; it names the columns ``--text_field``, ``--text_b_field`` and
``--id_field`` select. ``split_records`` cuts the raw bytes into records by RFC 4180 quoting (a quoted
field may hold delimiters, newlines and doubled quotes), each bounded by ``--max_record_bytes``;
each record is then decoded and parsed alone by Python's csv module in strict mode. So a malformed
record (bad quoting, a wrong number of fields, invalid UTF-8) is rejected alone, located by the line
it starts on, and reading goes on with the next record.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.inputs.record_fields import column_problem, document_from_fields
from transforms.records import EXCERPT_CHARS, STAGE_READ, Document, Rejected, excerpt

__all__ = ["DEFAULT_DELIMITER", "TSV_DELIMITER", "TSV_EXTENSION", "RawRecord", "csv_records", "delimiter_for",
           "parse_delimiter", "parse_fields", "split_records"]

if TYPE_CHECKING:
    from pipeline.inputs.sources import InputConfig

DEFAULT_DELIMITER = ","
TSV_DELIMITER = "\t"
TSV_EXTENSION = ".tsv"
_DELIMITER_NAMES = {"\\t": TSV_DELIMITER, "tab": TSV_DELIMITER}
_BOM = b"\xef\xbb\xbf"
_QUOTE = ord('"')
_NEWLINE = ord("\n")
_QUOTE_OR_NEWLINE = re.compile(b'["\n]')


def parse_delimiter(text: str) -> str:
    """``--csv_delimiter``: one ASCII character, ``\\t`` or ``tab`` for a tab; never a quote or line end,
    which RFC 4180 quoting and record splitting reserve."""
    delimiter = _DELIMITER_NAMES.get(text.lower(), text)
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n':
        raise argparse.ArgumentTypeError(
            f"expected one ASCII character other than a quote or a line end (\\t for a tab), got {text!r}")
    return delimiter


def delimiter_for(extension: str, configured: str | None) -> str:
    """The delimiter of a file with this extension: ``configured`` if set, else a tab for ``.tsv``."""
    if configured:
        return configured
    return TSV_DELIMITER if extension == TSV_EXTENSION else DEFAULT_DELIMITER


@dataclass(frozen=True)
class RawRecord:
    """One record's bytes as split from a file: the line it starts on and how many lines it spans.

    ``raw`` is the whole record with its line end, or only its first bytes when ``oversize``;
    ``unterminated`` means the file ended inside a quoted field.
    """

    line: int
    raw: bytes
    lines: int
    oversize: bool = False
    unterminated: bool = False

    @property
    def last_line(self) -> int:
        return self.line + self.lines - 1


class _RecordEnds:
    """Finds where records end in a CSV byte stream, keeping the quoting state from chunk to chunk.

    As Python's csv module reads it, a quote opens a quoted field only at a field's start; inside
    one, a doubled quote is a quote and delimiters and newlines are data. A newline outside quotes
    ends the record. Every byte tested is ASCII, so UTF-8 text never looks like one.
    """

    def __init__(self, delimiter: str) -> None:
        self._delimiter = ord(delimiter)
        self.quoted = False
        self._starts_field = True  # whether the buffer's first byte begins a field

    def new_record(self) -> None:
        self.quoted, self._starts_field = False, True

    def find(self, buffer: bytearray, position: int) -> tuple[int, int]:
        """Scans ``buffer`` from ``position``: (the index past the record's newline or -1, where to go on)."""
        size = len(buffer)
        while position < size:
            if self.quoted:
                quote = buffer.find(b'"', position)
                if quote < 0:
                    return -1, size
                if quote + 1 == size:
                    return -1, quote  # a closing quote or the first of a doubled one: the next byte tells
                self.quoted = buffer[quote + 1] == _QUOTE
                position = quote + 2 if self.quoted else quote + 1
                continue
            found = _QUOTE_OR_NEWLINE.search(buffer, position)
            if found is None:
                return -1, size
            index = found.start()
            if buffer[index] == _NEWLINE:
                return index + 1, index + 1
            self.quoted = buffer[index - 1] == self._delimiter if index else self._starts_field
            position = index + 1
        return -1, size

    def drop_scanned(self, buffer: bytearray, position: int) -> int:
        """Drops ``buffer[:position]``, keeping what its last byte says of the next; the newlines dropped."""
        if position:
            self._starts_field = buffer[position - 1] == self._delimiter
        newlines = buffer.count(b"\n", 0, position)
        del buffer[:position]
        return newlines

    def end_of_file(self, buffer: bytearray, position: int) -> None:
        """At the end of the file, a quote still undecided closes its field."""
        if self.quoted and position == len(buffer) - 1:
            self.quoted = False


def _without_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A stream's chunks without the UTF-8 byte order mark it may start with."""
    head = b""
    chunks = iter(chunks)
    for chunk in chunks:
        head += chunk
        if len(head) >= len(_BOM):
            break
    yield head.removeprefix(_BOM)
    yield from chunks


def split_records(chunks: Iterable[bytes], delimiter: str, limit: int) -> Iterator[RawRecord]:
    """A CSV file's records, from its bytes chunk by chunk.

    Never holds more than ``limit`` bytes of one record (plus a chunk): an oversize record keeps only
    its first bytes, and is yielded once its end is found so that reading resumes at the next record.
    """
    ends = _RecordEnds(delimiter)
    buffer = bytearray()
    position, line = 0, 1
    skipped: bytes | None = None  # the first bytes of an oversize record whose rest is being dropped
    skipped_lines = 0
    for chunk in _without_bom(chunks):
        buffer += chunk
        while (found := ends.find(buffer, position))[0] >= 0:
            end = found[0]
            lines = buffer.count(b"\n", 0, end)
            if skipped is not None:
                record = RawRecord(line, skipped, skipped_lines + lines, oversize=True)
                skipped, skipped_lines = None, 0
            elif end - 1 > limit:
                record = RawRecord(line, bytes(buffer[: min(end, EXCERPT_CHARS)]), lines, oversize=True)
            else:
                record = RawRecord(line, bytes(buffer[:end]), lines)
            yield record
            line += record.lines
            del buffer[:end]
            position = 0
            ends.new_record()
        position = found[1]
        if skipped is None and len(buffer) > limit:
            skipped = bytes(buffer[:EXCERPT_CHARS])
        if skipped is not None:
            skipped_lines += ends.drop_scanned(buffer, position)
            position = 0
    if skipped is not None:
        yield RawRecord(line, skipped, skipped_lines + buffer.count(b"\n") + 1, oversize=True)
    elif buffer:  # a last record without a line end; never oversize, or it would be skipped
        ends.end_of_file(buffer, position)
        yield RawRecord(line, bytes(buffer), buffer.count(b"\n") + 1, unterminated=ends.quoted)


def parse_fields(record: RawRecord, delimiter: str, limit: int) -> list[str] | str:
    """A record's fields (none for a blank line), or the reason it has none."""
    if record.oversize:
        return f"record over --max_record_bytes ({limit} bytes)"
    if record.unterminated:
        return "quoted field not closed before the end of the file"
    try:
        text = record.raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid UTF-8 at byte {error.start}"
    try:
        # A record holds one unquoted line end at most, its last, so the reader makes one row of it.
        rows = list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error as error:
        return f"malformed CSV: {error}"
    return rows[0] if rows else []


def csv_records(items: Iterable[RawRecord | Rejected], path: str, delimiter: str,
                config: InputConfig) -> Iterator[Document | Rejected]:
    """Documents and Rejected from a file's ``split_records`` (Rejected passed on as they come).

    The first record is the header: one that is unreadable or lacks a configured column rejects the
    file whole, in one Rejected, and ends its reading. Blank lines are no records, as for csv.DictReader.
    """
    header: tuple[str, ...] | None = None
    for item in items:
        if isinstance(item, Rejected):
            yield item
            continue
        source = f"{path}:{item.line}"
        fields = parse_fields(item, delimiter, config.max_record_bytes)
        if header is None:
            problem = (f"unreadable: {fields}" if isinstance(fields, str) else
                       column_problem(fields, config))
            if problem:
                yield Rejected(source, excerpt(item.raw), f"CSV header {problem}", STAGE_READ)
                return
            header = tuple(fields)
            continue
        if fields == []:
            continue
        if isinstance(fields, list) and len(fields) != len(header):
            fields = f"{len(fields)} fields where the header has {len(header)}"
        result = fields if isinstance(fields, str) else document_from_fields(
            dict(zip(header, fields, strict=True)), source, config)
        yield result if isinstance(result, Document) else Rejected(source, excerpt(item.raw), result,
                                                                     STAGE_READ)
