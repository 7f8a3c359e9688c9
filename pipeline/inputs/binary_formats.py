"""Recognises binary file formats by their first bytes, so that a binary file given as text, JSON Lines or
CSV is one rejection that names its format, not records of garbage."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SNIFF_BYTES", "BinaryFormat", "sniff_binary_format"]

SNIFF_BYTES = 8 * 1024
_DECOMPRESS_HINT = ("; compressed input is decompressed only when its name ends in .gz, .bz2, .zst, .xz, "
                    ".lzma or .deflate, or with --compression=gzip")
# Magic numbers at offset 0, each too specific to open a line of text (bzip2's includes its block
# magic 1AY&SY). Formats without one (TFRecord, ORC, ...) are left to the NUL-byte check.
_MAGICS: tuple[tuple[re.Pattern[bytes], str, str], ...] = tuple(
    (re.compile(pattern), name, hint) for pattern, name, hint in (
        (rb"PAR1", "Parquet", "; read Parquet with --input_format parquet"),
        (rb"Obj\x01", "Avro", ""),
        (rb"ARROW1\x00\x00", "Arrow IPC", ""),
        (rb"\x93NUMPY", "NumPy .npy", ""),
        (rb"\x89HDF\r\n\x1a\n", "HDF5", ""),
        (rb"SQLite format 3\x00", "SQLite", ""),
        (rb"PK(?:\x03\x04|\x05\x06)", "zip", "; unzip it first"),
        (rb"%PDF-", "PDF", ""),
        (rb"\x89PNG\r\n\x1a\n", "PNG", ""),
        (rb"\xff\xd8\xff", "JPEG", ""),
        (rb"\x1f\x8b", "gzip", _DECOMPRESS_HINT),
        (rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)", "bzip2", _DECOMPRESS_HINT),
        (rb"\xfd7zXZ\x00", "xz", _DECOMPRESS_HINT),
        (rb"\x28\xb5\x2f\xfd", "zstd", _DECOMPRESS_HINT),
    )
)


@dataclass(frozen=True)
class BinaryFormat:
    """A binary format recognised from a file's first bytes, and how it was recognised."""

    name: str
    evidence: str
    hint: str = ""

    @property
    def reason(self) -> str:
        """The dead-letter reason for a file in this format."""
        return f"binary file ({self.name}, {self.evidence}): not text, JSON Lines or CSV{self.hint}"


def _show_magic(magic: bytes) -> str:
    """``PAR1`` as it reads when printable ASCII, else hex bytes (``1F 8B``)."""
    if all(0x20 < byte < 0x7F for byte in magic):
        return magic.decode("ascii")
    return magic.hex(" ").upper()


def sniff_binary_format(head: bytes) -> BinaryFormat | None:
    """The binary format a file's first bytes (after decompression) show, or None for text.

    A known magic number at offset 0, else a NUL byte in the first ``SNIFF_BYTES``: UTF-8 text and
    JSON never hold a raw NUL, while binary formats and UTF-16 text almost always do early on.
    """
    for pattern, name, hint in _MAGICS:
        match = pattern.match(head)
        if match:
            return BinaryFormat(name, f"magic {_show_magic(match.group())}", hint)
    if b"\x00" in head[:SNIFF_BYTES]:
        return BinaryFormat("unknown format", f"NUL bytes in the first {SNIFF_BYTES // 1024} KiB",
                            "; UTF-16 or UTF-32 text must be converted to UTF-8")
    return None
