"""Incremental runs: the launcher's check of earlier outputs, reading their ids back, and SkipEmbedded."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import FAILING_TOKEN
from helpers import dead_letters, run_pipeline, write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.incremental import (
    EarlierOutput,
    SkipEmbedded,
    check_earlier_output,
    check_earlier_outputs,
    embedded_earlier,
    failed_document_id,
    parse_prefixes,
)
from pipeline.manifest import (
    MANIFEST_SUFFIX,
    build_manifest,
    model_fingerprint,
    read_manifest,
    verify,
    write_manifest,
)
from pipeline.options import BertBeamOptions, ConfigurationError
from pipeline.outputs import example_wire as wire
from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.example_keys import example_key
from pipeline.outputs.sinks import (
    WriteDeadLetters,
    WriteEmbeddings,
    default_dead_letter_prefix,
    rejected_to_json,
)
from pipeline.reader import read_embeddings
from pipeline.schema import PARQUET, TFRECORD
from pipeline.summary import summarize
from transforms import counters
from transforms.records import STAGE_INFERENCE, STAGE_READ, Document, Embedding, Features, Rejected

HIDDEN = 8
OUTPUTS = ("pooled", "sequence")
FINGERPRINT = "f" * 64
BASE_ARGS = ["--input=docs.jsonl", "--model=tiny", "--outputs=pooled,sequence"]


def _options(output: str, *extra: str) -> dict:
    """Run options as a manifest records them."""
    return BertBeamOptions([*BASE_ARGS, f"--output={output}", *extra]).get_all_options(current_only=True)


def _embedding(doc_id: str, window: int) -> Embedding:
    tokens = 3 + window
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}#{window}".encode()))
    features = Features(doc_id, rng.integers(5, 100, tokens).astype(np.int32), np.zeros(tokens, np.int32),
                        window=window, token_offset=4 * window, source=f"docs.jsonl:{doc_id}")
    return Embedding(features, rng.standard_normal(HIDDEN).astype(np.float32),
                     rng.standard_normal((tokens, HIDDEN)).astype(np.float32))


def _counters(keys: list[tuple[str, int]], failed: list[Rejected]) -> dict[str, int]:
    """Counters of an earlier run that wrote ``keys`` and dead-lettered ``failed`` windows."""
    windows: dict[str, int] = {}
    for doc_id, window in keys + [(r.document_id, r.window) for r in failed]:
        windows[doc_id] = max(windows.get(doc_id, 0), window + 1)
    rejected = sum(1 for r in failed if r.rejects_document)
    return {counters.DOCUMENTS_READ: len(windows), counters.DOCUMENTS_EMBEDDED: len(windows) - rejected,
            counters.DOCUMENTS_REJECTED: rejected, counters.DOCUMENTS_SKIPPED: 0,
            counters.DOCUMENTS_WINDOWED: sum(1 for count in windows.values() if count > 1),
            counters.WINDOWS: len(keys) + len(failed), counters.WINDOWS_REJECTED: len(failed),
            counters.RECORDS_WRITTEN: len(keys)}


def write_output(prefix: str, keys: list[tuple[str, int]], failed: list[Rejected] = (),
                 compression: str = "none", output_format: str = TFRECORD) -> str:
    """An earlier output written by the project's own sinks, with its manifest."""
    failed = list(failed)
    with TestPipeline() as pipeline:
        _ = (pipeline | "Embeddings" >> beam.Create([_embedding(*key) for key in keys])
             | WriteEmbeddings(prefix, OUTPUTS, HIDDEN, compression, num_shards=2,
                               output_format=output_format))
        unreadable = Rejected("docs.jsonl:9", "x", "invalid JSON", STAGE_READ)
        _ = (pipeline | "Rejected" >> beam.Create([*failed, unreadable])
             | WriteDeadLetters(default_dead_letter_prefix(prefix)))
    write_manifest(prefix, build_manifest(prefix, _counters(keys, failed),
                                          {"handle": "tiny", "path": "", "fingerprint": FINGERPRINT},
                                          _options(prefix)))
    return prefix


def write_pyarrow_output(prefix: str, keys: list[tuple[str, int]]) -> str:
    """An earlier output in Parquet written by pyarrow alone, and a manifest listing its shard."""
    path = f"{prefix}-00000-of-00001.parquet"
    embeddings = [_embedding(*key) for key in keys]
    pq.write_table(pa.table({
        "id": pa.array([doc_id for doc_id, _ in keys], pa.string()),
        "window": pa.array([window for _, window in keys], pa.int64()),
        "pooled_output": [e.pooled_output.tolist() for e in embeddings],
    }), path)
    with open(path, "rb") as handle:
        data = handle.read()
    write_manifest(prefix, {
        "counters": _counters(keys, []), "records": len(keys),
        "shards": [{"name": os.path.basename(path), "records": len(keys), "bytes": len(data),
                    "crc32c": f"{zlib.crc32(data):08x}"}],
        "model": {"handle": "tiny", "fingerprint": FINGERPRINT}, "options": _options(prefix),
    })
    return prefix


def _inference_failure(doc_id: str, window: int) -> Rejected:
    return Rejected(f"docs.jsonl:{doc_id}", f"{doc_id}#{window} (9 tokens)", "inference failed: boom",
                    STAGE_INFERENCE, window, doc_id)


def _document(doc_id: str) -> Document:
    return Document(doc_id, f"text of {doc_id}", f"new.jsonl:{doc_id}")


def _skip(earlier: tuple[EarlierOutput, ...], documents: list[str], to_embed: list[str], skipped: list[str]):
    """Runs SkipEmbedded over documents with these ids, asserts which go on and which are skipped,
    and returns the run's summary."""
    pipeline = TestPipeline()
    result = pipeline | beam.Create([_document(doc_id) for doc_id in documents]) | SkipEmbedded(earlier)
    assert_that(result.documents | "ToEmbedIds" >> beam.Map(lambda d: d.id), equal_to(to_embed),
                label="CheckToEmbed")
    assert_that(result.skipped | "SkippedIds" >> beam.Map(lambda d: d.id), equal_to(skipped),
                label="CheckSkipped")
    run = pipeline.run()
    run.wait_until_finish()
    return summarize(run, "o", "d")


# --- reading ids back: the wire parser against TensorFlow's own parse ---------------------------


def _tf_key(serialized: bytes) -> tuple[str, int]:
    example = tf.train.Example.FromString(serialized)
    return (example.features.feature["id"].bytes_list.value[0].decode("utf-8"),
            example.features.feature["window"].int64_list.value[0])


@settings(max_examples=60, deadline=None)
@given(doc_id=st.text(min_size=0, max_size=40), window=st.integers(0, 2**40),
       tokens=st.integers(1, 300), outputs=st.sampled_from([("pooled",), ("sequence",), ("pooled", "mean")]))
def test_example_key_reads_what_tensorflow_parses_from_our_records(doc_id, window, tokens, outputs):
    features = Features(doc_id, np.arange(tokens, dtype=np.int32), np.zeros(tokens, np.int32), window=window)
    embedding = Embedding(features, np.ones(HIDDEN, np.float32), np.ones((tokens, HIDDEN), np.float32))
    (serialized,) = ExampleEncoder(outputs).encode([embedding])
    assert example_key(serialized) == _tf_key(serialized) == (doc_id, window)


def test_example_key_reads_examples_tensorflow_wrote_in_any_feature_order():
    feature = tf.train.Feature
    example = tf.train.Example(features=tf.train.Features(feature={
        "sequence_output": feature(float_list=tf.train.FloatList(value=np.arange(500, dtype=np.float32))),
        "window": feature(int64_list=tf.train.Int64List(value=[3])),
        "token_offset": feature(int64_list=tf.train.Int64List(value=[300])),
        "id": feature(bytes_list=tf.train.BytesList(value=["doc ü".encode()])),
    }))
    serialized = example.SerializeToString()
    assert example_key(serialized) == _tf_key(serialized) == ("doc ü", 3)


def test_example_key_reads_an_unpacked_int64_list_as_protobuf_allows():
    unpacked = wire.varint(0x08) + wire.varint(41)  # Int64List.value as one varint field, not packed
    serialized = wire.example([("id", wire.bytes_feature([b"doc"])),
                               ("window", [wire.varint(0x1A) + wire.varint(len(unpacked)), unpacked])])
    assert example_key(serialized) == _tf_key(serialized) == ("doc", 41)


def test_a_record_without_id_or_window_is_an_error_not_a_guess():
    example = tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
    with pytest.raises(ValueError, match="lacks its id or window"):
        example_key(example.SerializeToString())


def test_dead_letters_name_the_document_of_a_failed_window_and_only_those_are_read():
    failed = _inference_failure("doc#7", 2)
    letter = json.loads(rejected_to_json(failed, excerpt_chars=0))
    assert letter == {"source": "docs.jsonl:doc#7", "stage": STAGE_INFERENCE,
                      "reason": "inference failed: boom", "raw": "", "window": 2, "id": "doc#7"}
    assert failed_document_id(rejected_to_json(failed)) == "doc#7"
    unreadable = Rejected("docs.jsonl:3", "{", "invalid JSON", STAGE_READ)
    assert failed_document_id(rejected_to_json(unreadable)) is None
    old = {k: v for k, v in letter.items() if k != "id"}  # a dead letter written before ids were
    assert failed_document_id(json.dumps(old)) is None


def test_a_document_is_embedded_earlier_when_one_output_holds_it_whole():
    assert embedded_earlier([0], [])
    assert not embedded_earlier([], [])
    assert not embedded_earlier([0], [0])  # window 0 written, a later window failed
    assert not embedded_earlier([], [0])  # window 0 failed
    assert embedded_earlier([0, 1], [0])  # failed in one output, whole in another
    assert embedded_earlier([1, 1], [])  # a duplicate id written twice


def test_prefixes_are_split_and_deduplicated():
    assert parse_prefixes(" out/a, gs://b/c ,out/a,,") == ("out/a", "gs://b/c")


# --- the launcher's check -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def earlier_tfrecord(tmp_path_factory) -> str:
    return write_output(str(tmp_path_factory.mktemp("earlier") / "emb"),
                                 [("a", 0), ("b", 0), ("b", 1)])


@pytest.fixture()
def earlier_copy(earlier_tfrecord, tmp_path) -> str:
    """A copy of the earlier output (its folder, dead letters included) a test may damage."""
    folder = tmp_path / "copy"
    shutil.copytree(os.path.dirname(earlier_tfrecord), folder)
    return str(folder / "emb")


def _shards(prefix: str) -> list[Path]:
    return sorted(Path(prefix).parent.glob(Path(prefix).name + "-*-of-*.tfrecord"))


def test_a_complete_earlier_output_gives_its_shard_pattern_and_no_dead_letters(earlier_copy, tmp_path):
    (earlier,) = check_earlier_outputs([earlier_copy], _options(str(tmp_path / "new")), FINGERPRINT)
    assert earlier == EarlierOutput(earlier_copy, ((TFRECORD, earlier_copy + "-?????-of-?????.tfrecord"),))


def test_an_output_without_manifest_is_refused(earlier_copy, tmp_path):
    os.remove(earlier_copy + MANIFEST_SUFFIX)
    with pytest.raises(ConfigurationError, match="has no manifest .*did not complete"):
        check_earlier_output(earlier_copy, _options(str(tmp_path / "new")))


def test_a_missing_shard_is_refused(earlier_copy, tmp_path):
    missing = _shards(earlier_copy)[0]
    missing.unlink()
    with pytest.raises(ConfigurationError,
                       match=f"not those its manifest lists \\(missing shard {missing.name}\\)"):
        check_earlier_output(earlier_copy, _options(str(tmp_path / "new")))


def test_a_changed_shard_is_refused_by_its_size(earlier_copy, tmp_path):
    changed = _shards(earlier_copy)[1]
    size = changed.stat().st_size
    with open(changed, "ab") as handle:
        handle.write(b"\0" * 12)
    with pytest.raises(ConfigurationError,
                       match=f"{changed.name} is {size + 12} bytes, the manifest says {size}"):
        check_earlier_output(earlier_copy, _options(str(tmp_path / "new")))


def test_an_unexpected_shard_is_refused(earlier_copy, tmp_path):
    extra = Path(earlier_copy + "-00007-of-00009.tfrecord.gz")
    extra.write_bytes(b"")
    with pytest.raises(ConfigurationError, match=f"unexpected shard {extra.name}"):
        check_earlier_output(earlier_copy, _options(str(tmp_path / "new")))


def test_another_model_or_other_record_options_are_refused(earlier_copy, tmp_path):
    new = str(tmp_path / "new")
    with pytest.raises(ConfigurationError, match="embedded by another model"):
        check_earlier_output(earlier_copy, _options(new), "0" * 64)
    with pytest.raises(ConfigurationError, match="--max_seq_length 128 \\(this run: 256\\)"):
        check_earlier_output(earlier_copy, _options(new, "--max_seq_length=256"))
    # The same outputs in another order are the same records.
    assert check_earlier_output(earlier_copy, _options(new, "--outputs=sequence,pooled"), FINGERPRINT)


def test_options_are_compared_as_given_and_the_text_columns_count(earlier_copy, tmp_path):
    new = str(tmp_path / "new")
    with pytest.raises(ConfigurationError, match="--text_field 'text' \\(this run: 'body'\\)"):
        check_earlier_output(earlier_copy, _options(new, "--text_field=body"))
    with pytest.raises(ConfigurationError, match="--text_b_field None \\(this run: 'title'\\)"):
        check_earlier_output(earlier_copy, _options(new, "--text_b_field=title"))
    with pytest.raises(ConfigurationError, match="--vocab_file None"):
        check_earlier_output(earlier_copy, _options(new, "--vocab_file=gs://b/vocab.txt"))


def test_resolved_options_are_compared_as_resolved_where_both_runs_recorded_them(earlier_copy, tmp_path):
    new = str(tmp_path / "new")
    explicit = _options(new, "--do_lower_case=true")
    # The earlier manifest has no resolved values (written before they were recorded): as given.
    with pytest.raises(ConfigurationError, match="--do_lower_case None \\(this run: True\\)"):
        check_earlier_output(earlier_copy, explicit, FINGERPRINT, {"do_lower_case": True})
    manifest = read_manifest(earlier_copy)
    manifest["resolved"] = {"do_lower_case": True}
    write_manifest(earlier_copy, manifest)
    # Unset earlier, the model's own value given now: the same casing.
    assert check_earlier_output(earlier_copy, explicit, FINGERPRINT, {"do_lower_case": True})
    with pytest.raises(ConfigurationError, match="--do_lower_case True \\(this run: False\\)"):
        check_earlier_output(earlier_copy, _options(new, "--do_lower_case=false"), FINGERPRINT,
                             {"do_lower_case": False})
    # Before the model loads, nothing is resolved yet: the casing waits for the second check.
    assert check_earlier_output(earlier_copy, _options(new, "--do_lower_case=false"))


def test_an_earlier_output_with_its_own_whitening_is_refused(earlier_copy, tmp_path):
    manifest = read_manifest(earlier_copy)
    manifest["options"]["whitening_dims"] = 8
    write_manifest(earlier_copy, manifest)
    with pytest.raises(ConfigurationError, match="whitening fitted on its own records only"):
        check_earlier_output(earlier_copy, _options(str(tmp_path / "new")))


def test_whitening_an_incremental_run_is_refused_before_the_model_loads(earlier_copy, tmp_path, monkeypatch):
    from pipeline import plan

    monkeypatch.setattr(plan, "_inspect_model", lambda *args: pytest.fail("the model was loaded"))
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "the dog"}])
    argv = [f"--input={docs}", f"--output={tmp_path}/new/emb", "--outputs=mean"]
    with pytest.raises(ConfigurationError, match="with --skip_embedded_in it would see only the new"):
        plan.prepare_run(BertBeamOptions([*argv, "--whitening_dims=4", f"--skip_embedded_in={earlier_copy}"]))
    os.remove(earlier_copy + MANIFEST_SUFFIX)
    with pytest.raises(ConfigurationError, match="has no manifest"):  # listed before the model loads
        plan.prepare_run(BertBeamOptions([*argv, f"--skip_embedded_in={earlier_copy}"]))


def test_this_runs_own_output_is_refused(earlier_copy):
    with pytest.raises(ConfigurationError, match="is this run's --output"):
        check_earlier_output(earlier_copy, _options(earlier_copy))


# --- SkipEmbedded over hand-written earlier outputs ------------------------------------------------

# Output A (TFRecord): c and d are windowed; d's window 2 and e's window 0 failed at inference.
EARLIER_A = [("a", 0), ("b", 0), ("c", 0), ("c", 1), ("c", 2), ("d", 0), ("d", 1), ("e", 1)]
FAILED_A = [_inference_failure("d", 2), _inference_failure("e", 0)]
# Output B (Parquet) holds d whole, and f without its window 0.
EARLIER_B = [("p", 0), ("d", 0), ("d", 1), ("d", 2), ("f", 1)]


@pytest.fixture(scope="module")
def earlier_outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("earlier_two")
    first = write_output(str(folder / "a"), EARLIER_A, FAILED_A, compression="gzip")
    second = write_pyarrow_output(str(folder / "b"), EARLIER_B)
    return check_earlier_outputs([first, second], _options(str(folder / "new")), FINGERPRINT)


def test_windows_failed_earlier_need_that_runs_dead_letters(earlier_outputs):
    first, second = earlier_outputs
    assert first.shard_patterns == ((TFRECORD, first.prefix + "-?????-of-?????.tfrecord.gz"),)
    assert first.dead_letter_pattern == default_dead_letter_prefix(first.prefix) + "-?????-of-?????.jsonl"
    assert second == EarlierOutput(second.prefix, ((PARQUET, second.prefix + "-?????-of-?????.parquet"),))


def test_documents_embedded_whole_earlier_are_skipped_and_counted_each_copy(earlier_outputs):
    # a, b, c (all windows), p: whole in one output; d: a window failed in A, but B holds it whole.
    skipped = ["a", "a", "b", "c", "d", "p"]
    # e: its window 0 failed; f: no window 0 in B; the rest were never embedded.
    to_embed = ["e", "f", "new", "new", "other"]
    summary = _skip(earlier_outputs, skipped + to_embed, to_embed, skipped)
    assert summary[counters.DOCUMENTS_SKIPPED] == len(skipped)


def test_without_the_other_output_a_document_missing_a_window_is_embedded_again(earlier_outputs):
    summary = _skip(earlier_outputs[:1], ["c", "d", "e", "x"], ["d", "e", "x"], ["c"])
    assert summary[counters.DOCUMENTS_SKIPPED] == 1


def test_ids_are_read_from_the_projects_own_parquet_shards(tmp_path):
    prefix = write_output(str(tmp_path / "emb"), EARLIER_A, FAILED_A, output_format=PARQUET)
    earlier = check_earlier_outputs([prefix], _options(str(tmp_path / "new")), FINGERPRINT)
    assert earlier[0].shard_patterns == ((PARQUET, prefix + "-?????-of-?????.parquet"),)
    summary = _skip(earlier, ["a", "b", "c", "d", "e", "x"], ["d", "e", "x"], ["a", "b", "c"])
    assert summary[counters.DOCUMENTS_SKIPPED] == 3


def test_an_earlier_run_that_embedded_nothing_skips_nothing(tmp_path):
    prefix = str(tmp_path / "empty")
    write_manifest(prefix, {"counters": _counters([], []), "records": 0, "shards": [],
                            "model": {"fingerprint": FINGERPRINT}, "options": _options(prefix)})
    earlier = check_earlier_outputs([prefix], _options(str(tmp_path / "new")), FINGERPRINT)
    assert earlier == (EarlierOutput(prefix, ()),)
    assert _skip(earlier, ["a", "b"], ["a", "b"], [])[counters.DOCUMENTS_SKIPPED] == 0


def test_a_pre_id_run_with_windows_failed_is_refused_unless_nothing_was_windowed(tmp_path):
    prefix = write_output(str(tmp_path / "old"), EARLIER_A, FAILED_A)
    manifest = read_manifest(prefix)
    del manifest["counters"][counters.DOCUMENTS_SKIPPED]  # as written before dead letters named documents
    write_manifest(prefix, manifest)
    with pytest.raises(ConfigurationError, match="cannot tell which windowed documents lack a window"):
        check_earlier_output(prefix, _options(str(tmp_path / "new")))
    manifest["counters"][counters.DOCUMENTS_WINDOWED] = 0  # every failure was then a window 0
    write_manifest(prefix, manifest)
    assert check_earlier_output(prefix, _options(str(tmp_path / "new"))).dead_letter_pattern is None


def test_needed_dead_letters_that_are_gone_are_refused(tmp_path):
    prefix = write_output(str(tmp_path / "emb"), EARLIER_A, FAILED_A)
    shutil.rmtree(tmp_path / "dead_letter")
    with pytest.raises(ConfigurationError, match="no dead letters match"):
        check_earlier_output(prefix, _options(str(tmp_path / "new")))


# --- real runs ------------------------------------------------------------------------------------

CLEAN, FAILING = "the dog running fast the dog", f"{FAILING_TOKEN} is a lazy dog {FAILING_TOKEN}"
WINDOW_ARGS = ("--batch_size=1", "--outputs=pooled", "--max_seq_length=8", "--long_document=window",
               "--doc_stride=6")


def test_a_real_run_with_failed_windows_skips_only_its_documents_embedded_whole(tmp_path, failing_model):
    records = [
        {"id": "tail", "text": f"{CLEAN} {CLEAN} {FAILING} the {FAILING_TOKEN}"},  # windows 2, 3 fail
        {"id": "head", "text": f"{FAILING} {CLEAN}"},  # window 0 fails, window 1 is written
        {"id": "long", "text": f"{CLEAN} {CLEAN} {CLEAN}"},  # three windows, all written
        {"id": "dog", "text": "The dog is hairy."},
        "not json",
    ]
    prefix = str(tmp_path / "earlier" / "emb")
    earlier_summary = run_pipeline(str(write_jsonl(tmp_path / "docs.jsonl", records)), prefix, failing_model,
                                   *WINDOW_ARGS)
    assert earlier_summary[counters.WINDOWS_REJECTED] == 3 and earlier_summary.accounted
    letters = dead_letters(default_dead_letter_prefix(prefix))
    failed = sorted((letter["id"], letter["window"])
                    for letter in letters if letter["stage"] == STAGE_INFERENCE)
    assert failed == [("head", 0), ("tail", 2), ("tail", 3)]
    written = {(r.id, r.window) for r in read_embeddings(prefix)}
    assert {"tail", "head", "long", "dog"} == {doc_id for doc_id, _ in written}

    run_options = _options(str(tmp_path / "new"), f"--model={failing_model}", *WINDOW_ARGS)
    fingerprint = model_fingerprint(read_manifest(prefix)["model"]["path"])
    earlier = check_earlier_outputs([prefix], run_options, fingerprint)
    assert earlier[0].dead_letter_pattern is not None
    summary = _skip(earlier, ["tail", "head", "long", "dog", "new"], ["tail", "head", "new"], ["long", "dog"])
    assert summary[counters.DOCUMENTS_SKIPPED] == 2

    manifest = read_manifest(prefix)
    del manifest["counters"][counters.DOCUMENTS_SKIPPED]
    write_manifest(prefix, manifest)
    with pytest.raises(ConfigurationError, match="drop it from --skip_embedded_in"):
        check_earlier_output(prefix, run_options)


def _grown_corpus() -> list[dict]:
    words = CLEAN.split()
    return [{"id": f"doc-{i}", "text": " ".join(words[: 2 + i % 5] * (1 + i % 4))} for i in range(14)]


@pytest.mark.parametrize("output_format", ["tfrecord", "parquet"])
def test_an_incremental_run_embeds_exactly_the_new_documents_and_both_equal_one_full_run(
        tmp_path, tf2_model, output_format):
    corpus = _grown_corpus()
    earlier_count = 9
    args = ("--outputs=pooled", "--max_seq_length=8", "--long_document=window", "--doc_stride=4",
            f"--output_format={output_format}")
    first = write_jsonl(tmp_path / "first.jsonl", corpus[:earlier_count])
    grown = write_jsonl(tmp_path / "grown.jsonl", corpus + ["not json"])
    earlier, later, full = (str(tmp_path / name / "emb") for name in ("earlier", "later", "full"))
    run_pipeline(str(first), earlier, tf2_model, *args)
    summary = run_pipeline(str(grown), later, tf2_model, *args, "--skip_embedded_in", earlier)
    run_pipeline(str(grown), full, tf2_model, *args)

    new_ids = sorted(doc["id"] for doc in corpus[earlier_count:])
    assert sorted({r.id for r in read_embeddings(later)}) == new_ids
    assert summary[counters.DOCUMENTS_SKIPPED] == earlier_count
    assert summary[counters.DOCUMENTS_EMBEDDED] == len(new_ids)
    assert summary[counters.DOCUMENTS_READ] == len(corpus) + 1 and summary.accounted
    assert f"skipped {earlier_count} " in summary.line() and "DO NOT ADD UP" not in summary.line()
    assert verify(later) == []  # the manifest's counters add up with the skipped documents
    combined = {(r.id, r.window): r for prefix in (earlier, later) for r in read_embeddings(prefix)}
    reference = {(r.id, r.window): r for r in read_embeddings(full)}
    assert sorted(combined) == sorted(reference)
    for key, record in reference.items():
        np.testing.assert_array_equal(combined[key].input_ids, record.input_ids)
        np.testing.assert_allclose(combined[key].pooled_output, record.pooled_output, atol=1e-5)
