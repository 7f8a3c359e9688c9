"""The rules that turn one record's named fields into a Document, shared by every structured format.

A JSON object, a CSV row and a Parquet row are each a mapping of names to values; the same
``--text_field``, ``--text_b_field`` and ``--id_field`` rules apply to all three, so a record is
accepted or rejected for the same reason whatever file it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from transforms.records import Document

__all__ = ["column_problem", "document_from_fields"]

if TYPE_CHECKING:
    from pipeline.inputs.sources import InputConfig

_COLUMNS_SHOWN = 10


def _kind(value: object) -> str:
    """``null`` for a missing value (JSON null, a Parquet null), else ``a TYPE``."""
    return "null" if value is None else f"a {type(value).__name__}"


def document_from_fields(fields: Mapping[str, object], source: str, config: InputConfig) -> Document | str:
    """The Document that ``fields`` make, or the reason they make none.

    A missing id is the record's location ``source``, so every document has one; a null or blank one
    is a reason.
    """
    text = fields.get(config.text_field)
    if not isinstance(text, str):
        missing = config.text_field not in fields
        return f"field {config.text_field!r} is " + ("missing" if missing else
                                                      f"{_kind(text)}, not a string")
    text_b = fields.get(config.text_b_field) if config.text_b_field else None
    if text_b is not None and not isinstance(text_b, str):
        return f"field {config.text_b_field!r} is {_kind(text_b)}, not a string"
    # google-research/bert's convert_single_example takes an empty text_a beside a text_b:
    # [CLS] [SEP] B [SEP].
    if not text.strip() and not (text_b or "").strip():
        return f"field {config.text_field!r} is empty" + (
            f" and so is {config.text_b_field!r}" if config.text_b_field else "")
    doc_id = fields.get(config.id_field, source)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return f"field {config.id_field!r} is {_kind(doc_id)}, not a string or integer"
    # A blank id (a CSV's empty cell) names no document: all of them would be one key to
    # --skip_embedded_in's join, and to whoever joins the output back.
    if isinstance(doc_id, str) and not doc_id.strip():
        return f"field {config.id_field!r} is blank"
    return Document(id=str(doc_id), text=text, source=source, text_b=text_b or None)


def _show_columns(columns: Sequence[str]) -> str:
    """A file's column names for a message, the first ``_COLUMNS_SHOWN`` of many."""
    if not columns:
        return "none"
    shown = ", ".join(repr(name) for name in columns[:_COLUMNS_SHOWN])
    return shown if len(columns) <= _COLUMNS_SHOWN else f"{shown}, ... ({len(columns)} in all)"


def column_problem(columns: Sequence[str], config: InputConfig) -> str | None:
    """Why a CSV header or Parquet schema with ``columns`` cannot give the configured fields, or None.

    The text column, and the second text's when ``--text_b_field`` is set, must each be exactly one
    column: a file without them has no document to give. The id column is optional (ids are then
    locations, as for JSON Lines) but must not be ambiguous.
    """
    wanted = (("--text_field", config.text_field, True), ("--text_b_field", config.text_b_field, True),
              ("--id_field", config.id_field, False))
    for flag, name, required in wanted:
        count = columns.count(name) if name else 0
        if count == 0 and required and name:
            return f"has no column {name!r} ({flag}); its columns are {_show_columns(columns)}"
        if count > 1:
            return f"has {count} columns named {name!r} ({flag})"
    return None
