"""Incremental runs (``--skip_embedded_in``): documents a completed earlier run embedded are skipped.

The launcher checks each earlier output once and cheaply (``check_earlier_outputs``): its manifest is
there, so its run completed; its shards are exactly those the manifest lists, with their sizes; and it
was embedded by the same model with the same record-shaping options. The job reads the earlier ids
back from the shards and joins them with the new documents by id (``SkipEmbedded``, a CoGroupByKey:
a billion earlier ids cost a shuffle, never a worker's memory).

An earlier document counts as embedded only with all its windows. A window that failed at inference
is in that run's dead letters, so the rule is: its window 0 is in the shards, and none of its windows
is in that run's inference dead letters. Only window-0 records are joined (a failed window 0 leaves
no window 0, whatever its later windows did). The dead letters are read only where they can matter:
the manifest's counters show windows dead-lettered and documents with more than one window. Dead
letters name a failed window's document (``id``) since the counter ``documents_skipped`` exists,
so a manifest whose counters lack it predates them; such a run, where its dead letters matter,
is refused with a sentence rather than trusted or guessed at (its ``raw`` excerpt may be cut).

The shards are not CRC-checked again here: the launcher compares names and sizes only, and reading
a TFRecord shard checks every record's own CRC32C, so a corrupted one fails loudly. Checking the
manifest's whole-file CRC32C would mean reading every earlier byte (all columns of a Parquet
shard) for ids worth a few bytes a record; ``python -m pipeline.verify PREFIX`` does that.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline import schema
from pipeline.manifest import MANIFEST_SUFFIX, read_manifest, shard_patterns
from pipeline.options import ConfigurationError
from pipeline.outputs.example_keys import example_key
from pipeline.outputs.sinks import DEAD_LETTER_SUFFIX, default_dead_letter_prefix
from transforms import counters
from transforms.features import WINDOW
from transforms.records import STAGE_INFERENCE, Document

__all__ = ["RESOLVED_OPTIONS", "SAME_EMBEDDING_OPTIONS", "EarlierOutput", "SkipEmbedded",
           "SkipEmbeddedResult", "check_earlier_output", "check_earlier_outputs",
           "dead_letters_name_documents", "embedded_earlier", "failed_document_id", "needs_dead_letters",
           "option_differences", "parse_prefixes", "shard_differences"]

# Options that shape the records: an earlier output made with other values would not match this run's.
SAME_EMBEDDING_OPTIONS = ("max_seq_length", "long_document", "doc_stride", "text_field", "text_b_field",
                          "id_field", "do_lower_case", "vocab_file", "signature", "signature_tensors",
                          "outputs", "sequence_dtype")
# The record-shaping options whose defaults the plan resolves (the model's casing, half a window).
RESOLVED_OPTIONS = ("do_lower_case", "doc_stride")
_SKIPPED_TAG = "skipped"


@dataclass(frozen=True)
class EarlierOutput:
    """One completed earlier output: the shard patterns to read its ids from, by format, and the
    pattern of its dead letters where its documents' windows can only be proven complete with them."""

    prefix: str
    shard_patterns: tuple[tuple[str, str], ...]  # (format, file pattern), formats with shards only
    dead_letter_pattern: str | None = None


def parse_prefixes(text: str) -> tuple[str, ...]:
    """``--skip_embedded_in A,B`` as prefixes, in order, each once."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def _shard_ending(name: str) -> str | None:
    """The ending of a shard's file name (one of ``schema.SHARD_ENDINGS``), None for no shard."""
    return next((ending for ending in schema.SHARD_ENDINGS if name.endswith(ending)), None)


def needs_dead_letters(earlier_counters: Mapping[str, int]) -> bool:
    """Whether an earlier run can hold a document whose window 0 is written but a later window is not:
    only when it dead-lettered windows at inference and windowed some document."""
    return (earlier_counters.get(counters.WINDOWS_REJECTED, 0) > 0
            and earlier_counters.get(counters.DOCUMENTS_WINDOWED, 0) > 0)


def dead_letters_name_documents(earlier_counters: Mapping[str, int]) -> bool:
    """Whether the earlier run's inference dead letters carry their document's id: those of every run
    whose manifest counts ``documents_skipped`` (both came in together)."""
    return counters.DOCUMENTS_SKIPPED in earlier_counters


def shard_differences(listed: Mapping[str, int | None], present: Mapping[str, int]) -> list[str]:
    """What differs between the shards a manifest lists (name → bytes, None where it records no
    size) and those present (name → bytes); empty when they agree."""
    problems = [f"missing shard {name}" for name in sorted(set(listed) - set(present))]
    problems += [f"unexpected shard {name}" for name in sorted(set(present) - set(listed))]
    problems += [f"{name} is {present[name]} bytes, the manifest says {listed[name]}"
                 for name in sorted(set(listed) & set(present))
                 if listed[name] is not None and listed[name] != present[name]]
    return problems


def option_differences(
    earlier: Mapping[str, object], current: Mapping[str, object],
    earlier_resolved: Mapping[str, object] | None = None,
    current_resolved: Mapping[str, object] | None = None,
) -> list[str]:
    """The record-shaping options whose values differ between an earlier run and this one, each
    compared where both record it; ``outputs`` as a set.

    The options the plan resolves (``RESOLVED_OPTIONS``) are compared as resolved where both runs
    recorded their resolved values, so unset and the model's own casing agree. Without this run's
    (``current_resolved`` None, before the model is loaded) they wait for that comparison; against a
    manifest written before resolved values were recorded, they are compared as given.
    """
    earlier_resolved = earlier_resolved or {}
    windowed = earlier.get("long_document") == current.get("long_document") == WINDOW
    differences = []
    for name in SAME_EMBEDDING_OPTIONS:
        given = (earlier, current)
        if name in RESOLVED_OPTIONS:
            if current_resolved is None or (name == "doc_stride" and not windowed):
                continue
            if name in earlier_resolved and name in current_resolved:
                given = (earlier_resolved, current_resolved)
        if name not in given[0] or name not in given[1]:
            continue
        before, now = given[0][name], given[1][name]
        if name == "outputs" and isinstance(before, str) and isinstance(now, str):
            before, now = set(schema.parse_outputs(before)), set(schema.parse_outputs(now))
        if before != now:
            differences.append(f"--{name} {given[0][name]!r} (this run: {given[1][name]!r})")
    return differences


def _present_shards(prefix: str) -> dict[str, int]:
    """The shard files under ``prefix`` in any format bert-beam writes, name → bytes."""
    return {posixpath.basename(found.path): found.size_in_bytes
            for result in FileSystems.match(shard_patterns(prefix)) for found in result.metadata_list}


def _dead_letter_prefix(run_options: Mapping[str, object], output_prefix: str) -> str:
    """A run's dead-letter prefix from its options: ``--dead_letter``, else beside ``output_prefix``."""
    return str(run_options.get("dead_letter") or default_dead_letter_prefix(output_prefix))


def check_earlier_output(
    prefix: str, run_options: Mapping[str, object], model_fingerprint: str | None = None,
    resolved: Mapping[str, object] | None = None,
) -> EarlierOutput:
    """Checks one ``--skip_embedded_in`` prefix without reading its shards; says what the job reads.

    ``run_options`` are this run's bert-beam options as the manifest records them, ``resolved`` the
    values the plan derived (``RunPlan.resolved_flags``). Raises ConfigurationError, one sentence,
    where the output is this run's own, did not complete, has other shards than its manifest lists,
    holds a whitening fitted on its own records, was embedded by another model or with other
    record-shaping options, or its documents' windows cannot be proven complete. Without
    ``model_fingerprint`` and ``resolved`` (before the model is loaded) the model and the resolved
    options are not compared.
    """
    flag = f"--skip_embedded_in {prefix!r}"
    if prefix == run_options.get("output"):
        raise ConfigurationError(f"{flag} is this run's --output, which the run replaces before it "
                                 "could read it; write the new documents to another prefix.")
    if not FileSystems.exists(prefix + MANIFEST_SUFFIX):
        raise ConfigurationError(
            f"{flag} has no manifest {prefix}{MANIFEST_SUFFIX}: its run did not complete, predates "
            "manifests, or was a Dataflow job submitted without --wait_until_finish, so its shards "
            "cannot be trusted to hold every document they started.")
    try:
        manifest = read_manifest(prefix)
        listed = {shard["name"]: shard.get("bytes") for shard in manifest["shards"]}
        earlier_counters = {name: int(value) for name, value in manifest["counters"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"{flag}: its manifest cannot be read ({type(error).__name__}: "
                                 f"{error}).") from error
    endings = {name: _shard_ending(name) for name in listed}
    problems = shard_differences(listed, _present_shards(prefix))
    problems += [f"{name} is in no shard format bert-beam reads"
                 for name, ending in endings.items() if ending is None]
    if problems:
        raise ConfigurationError(
            f"{flag}: its shards are not those its manifest lists ({'; '.join(problems[:3])}"
            f"{f'; {len(problems) - 3} more' if len(problems) > 3 else ''}); "
            f"python -m pipeline.verify {prefix} checks them in full.")
    if manifest.get("options", {}).get("whitening_dims"):
        raise ConfigurationError(
            f"{flag} holds whitened_output from a whitening fitted on its own records only; new "
            "documents cannot be whitened the same way by another run: embed the grown corpus whole.")
    model = manifest.get("model", {})
    if model_fingerprint and model.get("fingerprint") and model["fingerprint"] != model_fingerprint:
        raise ConfigurationError(
            f"{flag} was embedded by another model ({model.get('handle')!r}, fingerprint "
            f"{model['fingerprint'][:12]}, this run's {model_fingerprint[:12]}): its records would not "
            "match this run's.")
    differences = option_differences(manifest.get("options", {}), run_options, manifest.get("resolved"),
                                      resolved)
    if differences:
        raise ConfigurationError(
            f"{flag} was embedded with {', '.join(differences)}: its records would not match this "
            "run's; pass the same options or drop it from --skip_embedded_in.")
    patterns = tuple((schema.SHARD_ENDINGS[ending], prefix + schema.SHARD_NUMBERING + ending)
                     for ending in sorted(set(endings.values())))
    return EarlierOutput(prefix, patterns, _dead_letter_pattern(
        flag, prefix, earlier_counters, manifest.get("options", {}), run_options))


def _dead_letter_pattern(
    flag: str, prefix: str, earlier_counters: Mapping[str, int], earlier_options: Mapping[str, object],
    run_options: Mapping[str, object],
) -> str | None:
    """The earlier run's dead letters where completeness needs them, None where it does not."""
    if not needs_dead_letters(earlier_counters):
        return None
    failed = earlier_counters[counters.WINDOWS_REJECTED]
    if not dead_letters_name_documents(earlier_counters):
        raise ConfigurationError(
            f"{flag}: its run dead-lettered {failed} window(s) at inference, and its dead letters, "
            "written before they named their documents, cannot tell which windowed documents lack a "
            "window; drop it from --skip_embedded_in to embed its documents again.")
    dead_letter_prefix = _dead_letter_prefix(earlier_options, prefix)
    if run_options.get("output") and dead_letter_prefix == _dead_letter_prefix(
            run_options, str(run_options["output"])):
        raise ConfigurationError(
            f"{flag}: its dead letters {dead_letter_prefix}-* are this run's, which the run replaces "
            "before it could read them; pass this run another --dead_letter.")
    pattern = dead_letter_prefix + schema.SHARD_NUMBERING + DEAD_LETTER_SUFFIX
    if not FileSystems.match([pattern])[0].metadata_list:
        raise ConfigurationError(
            f"{flag}: its run dead-lettered {failed} window(s) at inference, but no dead letters match "
            f"{pattern}, so the documents that lack a window are unknown; move them back beside it.")
    return pattern


def check_earlier_outputs(
    prefixes: Sequence[str], run_options: Mapping[str, object], model_fingerprint: str | None = None,
    resolved: Mapping[str, object] | None = None,
) -> tuple[EarlierOutput, ...]:
    """``check_earlier_output`` for every prefix, in order."""
    return tuple(check_earlier_output(prefix, run_options, model_fingerprint, resolved)
                 for prefix in prefixes)


def failed_document_id(line: str) -> str | None:
    """The document id in a dead-letter line of a window failed at inference, else None."""
    letter = json.loads(line)
    if letter.get("stage") == STAGE_INFERENCE and letter.get("id") is not None:
        return str(letter["id"])
    return None


def embedded_earlier(complete_in: Iterable[int], failed_in: Iterable[int]) -> bool:
    """Whether some earlier output (by index) holds the document's window 0 and none of its windows
    failed in that same output: a failure in one output leaves the document whole in another."""
    return bool(set(complete_in) - set(failed_in))


class _EarlierKeys(NamedTuple):
    """An earlier output's ids, each keyed to the output's index."""

    complete: beam.PCollection  # of (id, index): a window-0 record
    failed: beam.PCollection  # of (id, index): a window failed at inference


def _row_key(row: Mapping[str, object]) -> tuple[str, int]:
    """A Parquet row's ``id`` and ``window``."""
    return row[schema.ID], row[schema.WINDOW]


def _window_0(key: tuple[str, int], index: int) -> list[tuple[str, int]]:
    return [(key[0], index)] if key[1] == 0 else []


def _failed_in(line: str, index: int) -> list[tuple[str, int]]:
    document_id = failed_document_id(line)
    return [] if document_id is None else [(document_id, index)]


class _ReadEarlierKeys(beam.PTransform):
    """One earlier output → ``_EarlierKeys``: its window-0 ids, and where its dead letters are read,
    the ids of documents with a window failed at inference."""

    def __init__(self, earlier: EarlierOutput, index: int) -> None:
        super().__init__()
        self._earlier = earlier
        self._index = index

    def expand(self, pbegin: beam.pvalue.PBegin) -> _EarlierKeys:
        keys = []
        for number, (output_format, pattern) in enumerate(self._earlier.shard_patterns):
            if output_format == schema.PARQUET:
                read = (pbegin
                        | f"ReadParquet{number}" >> beam.io.ReadFromParquet(
                            pattern, validate=False, columns=[schema.ID, schema.WINDOW])
                        | f"KeyParquet{number}" >> beam.Map(_row_key))
            else:
                read = (pbegin
                        | f"ReadTFRecord{number}" >> beam.io.ReadFromTFRecord(pattern, validate=False)
                        | f"KeyTFRecord{number}" >> beam.Map(example_key))
            keys.append(read | f"Window0_{number}" >> beam.FlatMap(_window_0, self._index)
                        .with_output_types(tuple[str, int]))
        # An earlier run that embedded nothing lists no shards.
        complete = (keys | "MergeShards" >> beam.Flatten()) if keys else (
            pbegin | "NoShards" >> beam.Create([]))
        if self._earlier.dead_letter_pattern is None:
            return _EarlierKeys(complete, pbegin | "NoDeadLetters" >> beam.Create([]))
        failed = (
            pbegin
            | "ReadDeadLetters" >> beam.io.ReadFromText(self._earlier.dead_letter_pattern, validate=False)
            | "FailedDocuments" >> beam.FlatMap(_failed_in, self._index).with_output_types(tuple[str, int])
        )
        return _EarlierKeys(complete, failed)


class _SplitSkipped(beam.DoFn):
    """A document id's join → its documents, each to embed or (tagged ``skipped``) counted skipped."""

    def __init__(self) -> None:
        self._skipped = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_SKIPPED)

    def process(self, joined: tuple[str, Mapping[str, Iterable]]) -> Iterator:
        _, grouped = joined
        skip = embedded_earlier(grouped["complete"], grouped["failed"])
        for document in grouped["documents"]:
            if skip:
                self._skipped.inc()
                yield beam.pvalue.TaggedOutput(_SKIPPED_TAG, document)
            else:
                yield document


class SkipEmbeddedResult(NamedTuple):
    """What ``SkipEmbedded`` returns."""

    documents: beam.PCollection[Document]  # to embed
    skipped: beam.PCollection[Document]  # embedded, all windows, in an earlier output


class SkipEmbedded(beam.PTransform[beam.PCollection[Document], SkipEmbeddedResult]):
    """Documents → ``SkipEmbeddedResult``: those no earlier output holds whole go on, the rest are
    counted in ``documents_skipped``.

    Each copy of an id in the input is a document: all are skipped or all go on.
    """

    def __init__(self, earlier: Sequence[EarlierOutput]) -> None:
        super().__init__()
        if not earlier:
            raise ValueError("SkipEmbedded needs at least one earlier output.")
        self._earlier = tuple(earlier)

    def expand(self, documents: beam.PCollection[Document]) -> SkipEmbeddedResult:
        earlier = [documents.pipeline | f"ReadEarlier{index}" >> _ReadEarlierKeys(output, index)
                   for index, output in enumerate(self._earlier)]
        split = (
            {
                "documents": (documents
                              | "KeyById" >> beam.Map(_by_id).with_output_types(tuple[str, Document])),
                "complete": [keys.complete for keys in earlier] | "MergeComplete" >> beam.Flatten(),
                "failed": [keys.failed for keys in earlier] | "MergeFailed" >> beam.Flatten(),
            }
            | "JoinById" >> beam.CoGroupByKey()
            | "SplitSkipped" >> beam.ParDo(_SplitSkipped()).with_outputs(_SKIPPED_TAG, main="documents")
        )
        return SkipEmbeddedResult(split.documents, split[_SKIPPED_TAG])


def _by_id(document: Document) -> tuple[str, Document]:
    return document.id, document
