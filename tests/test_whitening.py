"""Corpus-fitted whitening: moments and fit against numpy and Su et al.'s own recipe, the tf.Transform
stage on Beam in one and two processes, the saved transform, the output contract, and the records
and runs that cannot be whitened."""

from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from helpers import dead_letters

from pipeline import schema
from pipeline.outputs.encoding import ExampleEncoder
from pipeline.outputs.sinks import WriteDeadLetters
from pipeline.reader import feature_spec, load_layout, load_whitening, read_embeddings
from pipeline.whitening import (
    WhitenEmbeddings,
    fit_failure,
    whitening_dir,
    whitening_manifest,
)
from pipeline.whitening_math import NULL_VARIANCE, Moments, fit_array, whitening_error
from transforms import counters
from transforms.records import STAGE_INFERENCE, Document, Embedding, Features

HIDDEN = 24
DIMS = 8
TWO_PROCESSES = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def _anisotropic(rng: np.random.Generator, count: int, hidden: int = HIDDEN) -> np.ndarray:
    """Vectors with a common offset, unequal variances and correlated dimensions, as BERT's are."""
    rotation, _ = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    scales = np.linspace(3.0, 0.3, hidden)
    offset = 4.0 + rng.standard_normal(hidden)
    return ((rng.standard_normal((count, hidden)) * scales) @ rotation + offset).astype(np.float32)


def _embeddings(mean: np.ndarray, pooled: np.ndarray, windows: list[int]) -> list[Embedding]:
    """Records of documents ``d0, d1, ...``, document i with ``windows[i]`` windows, one vector row each."""
    records, row = [], 0
    for doc, count in enumerate(windows):
        for window in range(count):
            features = Features(f"d{doc}", np.array([2, 7, 3], np.int32), np.zeros(3, np.int32),
                                window=window, token_offset=window * 5, source=f"docs.jsonl:{doc + 1}")
            records.append(Embedding(features, pooled[row], None, mean[row]))
            row += 1
    return records


def _corpus(seed: int, documents: int) -> list[Embedding]:
    rng = np.random.default_rng(seed)
    windows = [int(w) for w in rng.integers(1, 4, documents)]
    total = sum(windows)
    return _embeddings(_anisotropic(rng, total), _anisotropic(rng, total), windows)


class _Run:
    """What a WhitenEmbeddings run wrote: its records (raw and whitened vectors by key), dead letters
    and counters."""

    def __init__(self, prefix: str, result) -> None:
        self.prefix = prefix
        self.records = {}
        for name in glob.glob(prefix + "-records-*"):
            with open(name, encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    self.records[record["key"]] = (np.array(record["raw"], np.float32),
                                                   np.array(record["whitened"], np.float32))
        self.dead_letters = dead_letters(prefix + "-dead")
        query = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE))
        self.counters = {c.key.metric.name: c.committed for c in query["counters"]}

    def arrays(self, keys) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([self.records[k][0] for k in keys]), np.stack([self.records[k][1] for k in keys]))


def _run(embeddings: list[Embedding], prefix: str, dims: int, source: str, *flags: str) -> _Run:
    key = {"mean": "mean_output", "pooled": "pooled_output"}[source]
    pipeline = TestPipeline(options=PipelineOptions(["--runner=DirectRunner", *flags]))
    whitened = (pipeline | beam.Create(embeddings)
                | WhitenEmbeddings(prefix, dims, source, embeddings[0].hidden_size))
    _ = (whitened.embeddings
         | "ToJson" >> beam.Map(lambda e: json.dumps({"key": e.features.key, "raw": getattr(e, key).tolist(),
                                                      "whitened": e.whitened_output.tolist()}))
         | "WriteRecords" >> beam.io.WriteToText(prefix + "-records"))
    _ = whitened.rejected | WriteDeadLetters(prefix + "-dead")
    result = pipeline.run()
    result.wait_until_finish()
    return _Run(prefix, result)


# --- the arithmetic, against numpy ---

def test_moments_summed_in_any_split_and_order_equal_numpys_mean_and_covariance():
    rng = np.random.default_rng(1)
    vectors = _anisotropic(rng, 1000) + np.float32(300.0)  # a large offset: the centred merge keeps precision
    reference = vectors.astype(np.float64)
    for _ in range(4):
        cuts = np.sort(rng.choice(np.arange(1, 1000), size=int(rng.integers(1, 12)), replace=False))
        parts = [Moments.of(part) for part in np.split(vectors, cuts)] + [Moments.of(vectors[:0])]
        rng.shuffle(parts)
        total = Moments.empty(HIDDEN)
        for part in parts:
            total = part.merge(total) if rng.random() < 0.5 else total.merge(part)
        assert total.count == 1000
        np.testing.assert_allclose(total.mean, reference.mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(total.covariance, np.cov(reference, rowvar=False, bias=True),
                                   rtol=1e-9, atol=1e-12)


def test_a_fit_whitens_its_corpus_to_zero_mean_and_identity_covariance():
    vectors = _anisotropic(np.random.default_rng(2), 500)
    fit = fit_array(vectors, DIMS)
    whitened = fit.apply(vectors).astype(np.float64)
    assert whitened.shape == (500, DIMS) and fit.records == 500
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False, bias=True), np.eye(DIMS), atol=1e-5)
    covariance = np.cov(vectors.astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(fit.eigenvalues, np.linalg.eigvalsh(covariance)[::-1], rtol=1e-10)


def test_a_fit_equals_su_et_als_kernel_up_to_each_directions_sign():
    """bert-whitening's ``compute_kernel_bias``: SVD of the covariance, W = U diag(1/sqrt(s)), kept K
    columns (with the paper's 1/N covariance; the code's np.cov divides by N - 1)."""
    vectors = _anisotropic(np.random.default_rng(3), 400).astype(np.float64)
    u, s, _ = np.linalg.svd(np.cov(vectors.T, bias=True))
    kernel = (u @ np.diag(1 / np.sqrt(s)))[:, :DIMS]
    fit = fit_array(vectors, DIMS)
    signs = np.sign(np.sum(kernel * fit.projection, axis=0))
    np.testing.assert_allclose(fit.projection, kernel * signs, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(fit.mean, vectors.mean(axis=0), rtol=1e-13)


@pytest.mark.parametrize("records", [0, 1, DIMS])
def test_fewer_directions_of_variance_than_dims_fail_with_a_sentence(records):
    vectors = _anisotropic(np.random.default_rng(4), records)
    expected = (r"no records to fit" if records == 0 else
                rf"needs {DIMS} directions of nonzero variance, but the {records} records of this run span "
                rf"only {max(records - 1, 0)} ")
    with pytest.raises(ValueError, match=expected):
        fit_array(vectors, DIMS)


def test_a_constant_direction_is_not_whitened():
    vectors = _anisotropic(np.random.default_rng(5), 300)
    vectors[:, 3] = 1.5  # no variance: as a LayerNorm'd BERT's mean_output has one such direction
    assert fit_array(vectors, HIDDEN - 1).dims == HIDDEN - 1
    with pytest.raises(ValueError, match=f"span only {HIDDEN - 1} "):
        fit_array(vectors, HIDDEN)


@pytest.mark.parametrize("dims, source, outputs, hidden, error", [
    (0, "mean", ("pooled",), 32, None),
    (32, "mean", ("mean", "sequence"), 32, None),
    (8, "pooled", ("pooled",), 32, None),
    (33, "mean", ("mean",), 32, "--whitening_dims 33 is more than the model's hidden size 32"),
    (8, "mean", ("pooled", "sequence"), 32, "--whitening_source mean whitens mean_output, which --outputs "
                                            "pooled,sequence does not write; add mean to --outputs."),
])
def test_the_pre_run_check(dims, source, outputs, hidden, error):
    message = whitening_error(dims, source, outputs, hidden)
    assert message == error if error is None else message.startswith(error)


# --- the output contract ---

def test_whitened_output_is_in_the_schema_the_encoder_and_the_reader_only_when_asked(tmp_path):
    import tensorflow as tf

    assert schema.WHITENED_OUTPUT not in [f.key for f in schema.written_features(("mean",))]
    assert [f.key for f in schema.written_features(("mean",), whitening_dims=5)][-1] == schema.WHITENED_OUTPUT
    rng = np.random.default_rng(6)
    embeddings = [Embedding(Features(f"d{i}", np.array([2, 9, 3], np.int32), np.zeros(3, np.int32)),
                            None, None, rng.standard_normal(HIDDEN).astype(np.float32),
                            rng.standard_normal(5).astype(np.float32)) for i in range(3)]
    spec = feature_spec(("mean",), HIDDEN, whitening_dims=5)
    encoded = ExampleEncoder(("mean",), whitening_dims=5).encode(embeddings)
    for embedding, serialized in zip(embeddings, encoded, strict=True):
        parsed = tf.io.parse_single_example(serialized, spec)
        np.testing.assert_array_equal(parsed[schema.WHITENED_OUTPUT].numpy(), embedding.whitened_output)
        reference = tf.train.Example.FromString(serialized).features.feature[schema.WHITENED_OUTPUT]
        np.testing.assert_array_equal(np.array(reference.float_list.value, np.float32),
                                      embedding.whitened_output)
    prefix = str(tmp_path / "emb")
    with open(prefix + schema.SCHEMA_SUFFIX, "w", encoding="utf-8") as handle:
        handle.write(schema.schema_text(("mean",), HIDDEN, whitening_dims=5))
    with tf.io.TFRecordWriter(prefix + "-00000-of-00001" + schema.SHARD_SUFFIX) as writer:
        for serialized in encoded:
            writer.write(serialized)
    assert load_layout(prefix).whitening_dims == 5
    for embedding, record in zip(embeddings, read_embeddings(prefix), strict=True):
        np.testing.assert_array_equal(record.whitened_output, embedding.whitened_output)
    (entry,) = [f for f in schema.build_schema(("mean",), HIDDEN, whitening_dims=5).feature
                if f.name == schema.WHITENED_OUTPUT]
    assert [d.size for d in entry.shape.dim] == [5]


# --- the Beam stage ---

@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """A run in this process, K=8 of the mean output, with two records that cannot be whitened."""
    corpus = _corpus(seed=7, documents=150)
    bad = [Embedding(Features("nan-doc", np.array([2, 3], np.int32), np.zeros(2, np.int32), window=0,
                              source="docs.jsonl:900"), None, None, np.full(HIDDEN, np.nan, np.float32)),
           Embedding(Features("d0", np.array([2, 3], np.int32), np.zeros(2, np.int32), window=7,
                              source="docs.jsonl:1"), None, None,
                     np.where(np.arange(HIDDEN) == 2, np.inf, 1.0).astype(np.float32))]
    folder = tmp_path_factory.mktemp("one")
    return corpus, bad, folder, _run(corpus + bad, str(folder / "emb"), DIMS, "mean")


def test_each_record_is_whitened_as_numpy_whitens_the_corpus(one_process):
    corpus, _, _, run = one_process
    keys = [e.features.key for e in corpus]
    assert sorted(run.records) == sorted(keys)
    assert any(e.features.window > 0 for e in corpus)  # each window of a document is a record of its own
    raw, whitened = run.arrays(keys)
    np.testing.assert_array_equal(raw, np.stack([e.mean_output for e in corpus]))
    np.testing.assert_allclose(whitened, fit_array(raw, DIMS).apply(raw), atol=1e-5)
    np.testing.assert_allclose(whitened.astype(np.float64).mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.cov(whitened.astype(np.float64), rowvar=False, bias=True), np.eye(DIMS),
                               atol=1e-5)


def test_the_saved_fit_holds_numpys_mean_covariance_and_eigenvalues(one_process):
    corpus, _, _, run = one_process
    raw = np.stack([e.mean_output for e in corpus]).astype(np.float64)
    covariance = np.cov(raw, rowvar=False, bias=True)
    saved = load_whitening(run.prefix)
    assert saved.source == "mean" and saved.output_key == "mean_output" and saved.fit.records == len(corpus)
    np.testing.assert_allclose(saved.mean, raw.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(saved.eigenvalues, np.linalg.eigvalsh(covariance)[::-1], rtol=1e-9)
    np.testing.assert_allclose(saved.projection.T @ covariance @ saved.projection, np.eye(DIMS), atol=1e-9)
    eigenvalues = np.linalg.eigvalsh(covariance)[::-1]
    assert whitening_manifest(run.prefix) == pytest.approx({
        "path": run.prefix + ".whitening", "source": "mean", "dims": DIMS, "hidden_size": HIDDEN,
        "records": len(corpus), "variance_kept": eigenvalues[:DIMS].sum() / eigenvalues.sum()})


def test_the_saved_transform_maps_a_raw_vector_to_its_records_whitened_output(one_process):
    _, _, folder, run = one_process
    keys = sorted(run.records)
    raw, whitened = run.arrays(keys)
    saved = load_whitening(run.prefix)
    np.testing.assert_allclose(saved.apply(raw), whitened, atol=1e-5)
    np.testing.assert_allclose(saved.apply(raw[:1]), whitened[:1], atol=1e-5)  # a single query
    assert sorted(os.listdir(whitening_dir(run.prefix))) == ["transform_fn", "transformed_metadata",
                                                             "whitening.npz"]
    assert not glob.glob(str(folder / "beam-temp-*")), "tf.Transform's temporary folder is left"


def test_a_record_whose_vector_is_not_finite_is_dead_lettered_and_every_record_is_counted(one_process):
    corpus, bad, _, run = one_process
    reason = "the model's mean_output holds NaN or infinity, which cannot be whitened"
    assert sorted(run.dead_letters, key=lambda letter: letter["source"]) == [
        {"source": "docs.jsonl:1", "stage": STAGE_INFERENCE, "window": 7, "id": "d0",
         "raw": "d0#7 (2 tokens)", "reason": reason},
        {"source": "docs.jsonl:900", "stage": STAGE_INFERENCE, "window": 0, "id": "nan-doc",
         "raw": "nan-doc#0 (2 tokens)", "reason": reason},
    ]
    assert run.counters[counters.RECORDS_WHITENED] == len(corpus)
    assert run.counters[counters.WINDOWS_REJECTED] == len(bad)
    assert run.counters[counters.DOCUMENTS_REJECTED] == 1  # only a window 0 rejects its document
    whitened, rejected = run.counters[counters.RECORDS_WHITENED], run.counters[counters.WINDOWS_REJECTED]
    assert whitened + rejected == len(corpus) + len(bad)


def test_two_worker_processes_fit_every_dimension_of_the_pooled_output(tmp_path):
    corpus = _corpus(seed=8, documents=120)
    run = _run(corpus, str(tmp_path / "emb"), HIDDEN, "pooled", *TWO_PROCESSES)
    keys = [e.features.key for e in corpus]
    raw, whitened = run.arrays(keys)
    np.testing.assert_array_equal(raw, np.stack([e.pooled_output for e in corpus]))
    np.testing.assert_allclose(np.cov(whitened.astype(np.float64), rowvar=False, bias=True), np.eye(HIDDEN),
                               atol=1e-4)
    saved = load_whitening(run.prefix)
    assert saved.source == "pooled"
    # With K = H the projection P = U diag(eigenvalues)^-1/2 gives back the whole covariance: (P P^T)^-1.
    np.testing.assert_allclose(np.linalg.inv(saved.projection @ saved.projection.T),
                               np.cov(raw.astype(np.float64), rowvar=False, bias=True), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(whitened, fit_array(raw, HIDDEN).apply(raw), atol=1e-5)
    np.testing.assert_allclose(saved.apply(raw), whitened, atol=1e-5)
    assert run.counters[counters.RECORDS_WHITENED] == len(corpus)


@pytest.mark.parametrize("flags", [(), TWO_PROCESSES], ids=["one process", "two processes"])
def test_a_run_with_fewer_records_than_dims_fails_with_a_sentence(tmp_path, flags):
    corpus = _corpus(seed=9, documents=DIMS)[:DIMS]
    with pytest.raises(Exception) as failed:
        _run(corpus, str(tmp_path / "emb"), DIMS, "mean", *flags)
    assert fit_failure(failed.value) == (
        f"--whitening_dims {DIMS} needs {DIMS} directions of nonzero variance, but the {DIMS} records of "
        f"this run span only {DIMS - 1} (N records span at most N - 1): pass --whitening_dims {DIMS - 1} or "
        "less, or embed more records.")
    assert fit_failure(ValueError("another failure")) is None


def test_embedded_documents_are_whitened_written_and_read_back(tmp_path, tf2_model, vocab_lines):
    """A tiny BERT's windows through EmbedDocuments and WhitenEmbeddings, written as tf.Examples with the
    schema and read back with ``pipeline.reader``."""
    from transforms.batching import BatchingConfig
    from transforms.embed import EmbedDocuments, TokenizerConfig
    from transforms.features import FeatureConfig
    from transforms.model_handler import BertModelHandler
    from transforms.model_loading import ModelConfig
    from transforms.model_outputs import MEAN, OutputRequest

    words = "the dog cat fox runs quick brown lazy data model text word pair long short".split()
    rng = np.random.default_rng(10)
    documents = [Document(f"doc{i}", " ".join(rng.choice(words, size=int(rng.integers(1, 30)))), f"d.txt:{i}")
                 for i in range(40)]
    dims, prefix = 4, str(tmp_path / "emb")
    batching = BatchingConfig(max_seq_length=16)
    encoder = ExampleEncoder((MEAN,), whitening_dims=dims)
    with TestPipeline() as pipeline:
        embedded = pipeline | beam.Create(documents) | EmbedDocuments(
            TokenizerConfig(vocab_lines, True), FeatureConfig(16, "window", 6), batching,
            BertModelHandler(ModelConfig(tf2_model), batching, outputs=OutputRequest((MEAN,))))
        whitened = embedded.embeddings | WhitenEmbeddings(prefix, dims, MEAN, 32)
        _ = (whitened.embeddings | beam.BatchElements(min_batch_size=8, max_batch_size=8)
             | beam.FlatMap(encoder.encode)
             | beam.io.WriteToTFRecord(prefix, file_name_suffix=schema.SHARD_SUFFIX, num_shards=1))
    with open(prefix + schema.SCHEMA_SUFFIX, "w", encoding="utf-8") as handle:
        handle.write(schema.schema_text((MEAN,), 32, whitening_dims=dims))
    records = list(read_embeddings(prefix))
    assert len({r.id for r in records}) == len(documents) and any(r.window > 0 for r in records)
    raw = np.stack([r.mean_output for r in records])
    whitened_outputs = np.stack([r.whitened_output for r in records])
    assert whitened_outputs.shape == (len(records), dims)
    np.testing.assert_allclose(whitened_outputs, fit_array(raw, dims).apply(raw), atol=1e-5)
    np.testing.assert_allclose(load_whitening(prefix).apply(raw), whitened_outputs, atol=1e-5)
    np.testing.assert_allclose(np.cov(whitened_outputs.astype(np.float64), rowvar=False, bias=True),
                               np.eye(dims), atol=1e-5)
    # The encoder's last LayerNorm leaves mean_output one direction without variance, as the README says.
    eigenvalues = load_whitening(prefix).eigenvalues
    assert len(records) > 32 and eigenvalues[-1] < NULL_VARIANCE * eigenvalues[0] < eigenvalues[-2]
