"""WhitenEmbeddings: fits the corpus whitening with tf.Transform on Beam and adds ``whitened_output``.

One analysis pass (tf.Transform's ``AnalyzeDataset``) sums every record's vector into float64
moments, a ``Moments`` of H x H per worker, never N x H; the fit (``pipeline.whitening_math``)
becomes the constants of tf.Transform's ``transform_fn``, which ``WriteTransformFn`` saves as
``PREFIX.whitening/transform_fn``, beside the arrays in ``PREFIX.whitening/whitening.npz``. Every
record is then mapped through that saved graph, the one a query embedded later goes through.
"""

from __future__ import annotations

import io
import posixpath
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline import schema
from pipeline.whitening_math import Moments, WhiteningFit, fit_whitening
from transforms import counters
from transforms.model_outputs import OUTPUT_KEYS
from transforms.records import REJECTED_TAG, STAGE_INFERENCE, Embedding, Rejected

__all__ = ["ARRAYS_FILE", "TRANSFORM_FN_DIR", "FitWhitening", "SavedWhitening", "TransformGraph",
           "WhitenEmbeddings", "WhitenEmbeddingsResult", "default_temp_dir", "fit_failure", "read_arrays",
           "whitening_dir", "whitening_manifest", "write_arrays"]

ARRAYS_FILE = "whitening.npz"
TRANSFORM_FN_DIR = "transform_fn"  # tf.Transform's name, tft.TFTransformOutput.TRANSFORM_FN_DIR
_VECTOR = "vector"  # the transform_fn's input: [N, H] float32
_WHITENED = "whitened"  # its output: [N, K] float32
_BATCH = 256  # records per analysis batch and per call of the saved transform
# fit_whitening's sentences in a failed job's error (in its traceback's text, from worker processes).
_FIT_FAILURE = re.compile(r"--whitening_dims \d+ (?:needs|cannot be fitted).*?\.(?= \[while running|\n|$)")


def whitening_dir(prefix: str) -> str:
    """``PREFIX.whitening``: the saved transform and its arrays."""
    return prefix + schema.WHITENING_SUFFIX


def default_temp_dir(prefix: str) -> str:
    """A fresh folder for tf.Transform's temporary files, ``DIR/beam-temp-NAME-whitening-ID`` beside the
    output: on its file system (gs:// too), and matched by the pattern a rerun clears after a killed run."""
    directory, name = posixpath.split(prefix)
    return posixpath.join(directory, f"beam-temp-{name}-whitening-{uuid.uuid4().hex}")


def fit_failure(error: BaseException) -> str | None:
    """The sentence of a job that failed because its whitening could not be fitted, else None."""
    found = _FIT_FAILURE.search(str(error))
    return found.group(0) if found else None


def _open(path: str, mode: str = "rb"):
    from apache_beam.io.filesystems import FileSystems

    if mode == "wb":
        return FileSystems.create(path)
    return FileSystems.open(path, compression_type="uncompressed")


def write_arrays(fit: WhiteningFit, source: str, directory: str) -> None:
    """Writes ``directory/whitening.npz``: mean, projection, eigenvalues, records and source."""
    buffer = io.BytesIO()
    np.savez(buffer, mean=fit.mean, projection=fit.projection, eigenvalues=fit.eigenvalues,
             records=np.int64(fit.records), source=np.str_(source))
    with _open(posixpath.join(directory, ARRAYS_FILE), "wb") as handle:
        handle.write(buffer.getvalue())


def read_arrays(directory: str) -> tuple[WhiteningFit, str]:
    """The fit that ``write_arrays`` wrote to ``directory``, and its source."""
    with _open(posixpath.join(directory, ARRAYS_FILE)) as handle:
        arrays = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    fit = WhiteningFit(arrays["mean"], arrays["projection"], arrays["eigenvalues"], int(arrays["records"]))
    return fit, str(arrays["source"])


def whitening_manifest(prefix: str) -> dict:
    """What a run's manifest records of its whitening: where, of what, how wide, on how many records,
    and the share of the corpus's variance that the kept directions hold."""
    fit, source = read_arrays(whitening_dir(prefix))
    return {"path": whitening_dir(prefix), "source": source, "dims": fit.dims,
            "hidden_size": int(fit.mean.shape[0]), "records": fit.records,
            "variance_kept": float(fit.eigenvalues[:fit.dims].sum() / fit.eigenvalues.sum())}


class TransformGraph:
    """The saved tf.Transform graph of a whitening (``transform_fn``): [N, H] float32 → [N, K] float32."""

    def __init__(self, directory: str) -> None:
        import tensorflow as tf

        self._module = tf.saved_model.load(posixpath.join(directory, TRANSFORM_FN_DIR))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        inputs = {_VECTOR: tf.constant(np.asarray(vectors, np.float32))}
        return self._module.transform_fn(inputs)[_WHITENED].numpy()


class SavedWhitening:
    """A run's ``PREFIX.whitening/``: the fitted arrays as numpy and ``apply`` through the saved graph.

    ``source`` names the output it whitens (``mean`` or ``pooled``); ``output_key`` its feature.
    """

    def __init__(self, fit: WhiteningFit, source: str, transform: TransformGraph) -> None:
        self.fit = fit
        self.source = source
        self._transform = transform

    @classmethod
    def load(cls, directory: str) -> SavedWhitening:
        return cls(*read_arrays(directory), TransformGraph(directory))

    @property
    def output_key(self) -> str:
        return OUTPUT_KEYS[self.source]

    @property
    def mean(self) -> np.ndarray:
        return self.fit.mean

    @property
    def projection(self) -> np.ndarray:
        return self.fit.projection

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.fit.eigenvalues

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """[N, H] raw vectors (a query's ``mean_output``, say) → [N, K], as the run mapped its records."""
        return self._transform(vectors)


class _SumMoments(beam.CombineFn):
    """Batches of vectors → their ``Moments`` (float64)."""

    def __init__(self, hidden_size: int) -> None:
        self._hidden_size = hidden_size

    def create_accumulator(self) -> Moments:
        return Moments.empty(self._hidden_size)

    def add_input(self, moments: Moments, batch: tuple[np.ndarray, ...]) -> Moments:
        return moments.merge(Moments.of(batch[0]))

    def merge_accumulators(self, accumulators: Iterable[Moments]) -> Moments:
        merged = self.create_accumulator()
        for moments in accumulators:
            merged = merged.merge(moments)
        return merged

    def extract_output(self, moments: Moments) -> Moments:
        return moments


class _WhiteningAnalyzer(beam.PTransform):
    """tf.Transform analyzer: batches of vectors → the fit's mean and projection, and the fit's
    arrays written to ``directory``.

    A fit that cannot be made (fewer directions of variance than ``dims``) fails the run with
    ``fit_whitening``'s sentence.
    """

    def __init__(self, hidden_size: int, dims: int, source: str, directory: str) -> None:
        super().__init__()
        self._hidden_size = hidden_size
        self._dims = dims
        self._source = source
        self._directory = directory

    def expand(self, batches):
        fit = (
            batches
            | "SumMoments" >> beam.CombineGlobally(_SumMoments(self._hidden_size))
            | "Fit" >> beam.Map(fit_whitening, self._dims)
        )
        _ = fit | "WriteArrays" >> beam.Map(write_arrays, self._source, self._directory)
        return (fit | "Mean" >> beam.Map(lambda whitening: whitening.mean),
                fit | "Projection" >> beam.Map(lambda whitening: whitening.projection))


class _CheckVector(beam.DoFn):
    """Passes an embedding whose vector is finite; one with NaN or infinity (it would spoil every
    record's fit) becomes a Rejected."""

    def __init__(self, source: str) -> None:
        self._key = OUTPUT_KEYS[source]

    def process(self, embedding: Embedding) -> Iterator[Embedding | beam.pvalue.TaggedOutput]:
        if np.isfinite(getattr(embedding, self._key)).all():
            yield embedding
            return
        features = embedding.features
        yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(
            features.source, f"{features.key} ({features.sequence_length} tokens)",
            f"the model's {self._key} holds NaN or infinity, which cannot be whitened", STAGE_INFERENCE,
            features.window, features.id))


def _record_batch(embeddings: Sequence[Embedding], key: str, hidden_size: int):
    """The vectors of ``embeddings`` as an Arrow batch of one list column, tf.Transform's input."""
    import pyarrow as pa

    values = np.stack([getattr(e, key) for e in embeddings]).astype(np.float32, copy=False)
    offsets = np.arange(0, values.size + 1, hidden_size, dtype=np.int64)
    return pa.RecordBatch.from_arrays(
        [pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))], [_VECTOR])


def _tensor_adapter_config(hidden_size: int):
    """How tf.Transform reads ``_record_batch``'s column: a dense [N, H] float32 tensor."""
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    representation = schema_pb2.TensorRepresentation()
    representation.dense_tensor.column_name = _VECTOR
    representation.dense_tensor.shape.dim.add(size=hidden_size)
    arrow_schema = pa.schema([pa.field(_VECTOR, pa.large_list(pa.float32()))])
    return tensor_adapter.TensorAdapterConfig(arrow_schema, {_VECTOR: representation})


class _ApplyWhitening(beam.DoFn):
    """Batches of embeddings → each with ``whitened_output``, through the saved ``transform_fn``.

    The graph loads at the first batch, once per worker: the side input ``published`` makes the
    batches wait until WriteTransformFn has put it in place, after ``setup`` has run.
    """

    def __init__(self, directory: str, source: str) -> None:
        self._directory = directory
        self._key = OUTPUT_KEYS[source]
        self._transform: TransformGraph | None = None
        self._whitened = Metrics.counter(counters.NAMESPACE, counters.RECORDS_WHITENED)

    def process(self, batch: Sequence[Embedding], published: object) -> Iterator[Embedding]:
        if self._transform is None:
            self._transform = TransformGraph(self._directory)
        whitened = self._transform(np.stack([getattr(e, self._key) for e in batch]))
        self._whitened.inc(len(batch))
        for embedding, vector in zip(batch, whitened, strict=True):
            yield replace(embedding, whitened_output=vector)


def _remove_folder(unused: object, folder: str) -> None:
    """Deletes ``folder`` and all under it, through tf.io.gfile as tf.Transform writes its files."""
    import tensorflow as tf

    if tf.io.gfile.exists(folder):
        tf.io.gfile.rmtree(folder)


class FitWhitening(beam.PTransform[beam.PCollection[Embedding], beam.PCollection[None]]):
    """Embeddings → the whitening of their ``source`` vectors, fitted and saved in ``directory``: one
    element once ``transform_fn`` is in place there.

    tf.Transform's temporary files go to ``temp_dir``, removed once the transform is saved.
    """

    def __init__(self, directory: str, dims: int, source: str, hidden_size: int, temp_dir: str) -> None:
        super().__init__()
        self._directory = directory
        self._dims = dims
        self._source = source
        self._hidden_size = hidden_size
        self._temp_dir = temp_dir

    def _preprocessing_fn(self, inputs: dict) -> dict:
        import tensorflow as tf
        import tensorflow_transform as tft

        vectors = tf.cast(inputs[_VECTOR], tf.float64)
        mean, projection = tft.experimental.ptransform_analyzer(
            [vectors], _WhiteningAnalyzer(self._hidden_size, self._dims, self._source, self._directory),
            [tf.float64, tf.float64], [[self._hidden_size], [self._hidden_size, self._dims]],
            name="FitWhitening")
        return {_WHITENED: tf.cast(tf.matmul(vectors - mean, projection), tf.float32)}

    def expand(self, embeddings):
        import tensorflow_transform.beam as tft_beam

        batches = (
            embeddings
            | "Batch" >> beam.BatchElements(min_batch_size=_BATCH, max_batch_size=_BATCH)
            | "ToArrow" >> beam.Map(_record_batch, OUTPUT_KEYS[self._source], self._hidden_size)
        )
        with tft_beam.Context(temp_dir=self._temp_dir):
            transform_fn = (batches, _tensor_adapter_config(self._hidden_size)) | "Analyze" >> (
                tft_beam.AnalyzeDataset(self._preprocessing_fn))
        published = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self._directory)
        _ = published | "RemoveTempDir" >> beam.Map(_remove_folder, self._temp_dir)
        return published


class WhitenEmbeddingsResult(NamedTuple):
    """What ``WhitenEmbeddings`` returns."""

    embeddings: beam.PCollection[Embedding]  # each with whitened_output
    rejected: beam.PCollection[Rejected]  # records whose vector is not finite


class WhitenEmbeddings(beam.PTransform[beam.PCollection[Embedding], WhitenEmbeddingsResult]):
    """Embeddings → the same with ``whitened_output``: the ``source`` output (``mean`` or ``pooled``)
    whitened to ``dims`` values by a whitening fitted on every record of the run.

    Writes ``PREFIX.whitening/`` (``transform_fn``, ``transformed_metadata``, ``whitening.npz``);
    tf.Transform's temporary files go to ``temp_dir`` (default: ``default_temp_dir(prefix)``).
    Every record is read twice, by the fit and by the transform after it, so a runner keeps the
    whole PCollection until the fit is done.
    """

    def __init__(
        self, prefix: str, dims: int, source: str, hidden_size: int, temp_dir: str | None = None
    ) -> None:
        super().__init__()
        self._directory = whitening_dir(prefix)
        self._dims = dims
        self._source = source
        self._hidden_size = hidden_size
        self._temp_dir = temp_dir or default_temp_dir(prefix)

    def expand(self, embeddings) -> WhitenEmbeddingsResult:
        checked = embeddings | "CheckVectors" >> beam.ParDo(_CheckVector(self._source)).with_outputs(
            REJECTED_TAG, main="embeddings")
        published = checked.embeddings | "FitWhitening" >> FitWhitening(
            self._directory, self._dims, self._source, self._hidden_size, self._temp_dir)
        whitened = (
            checked.embeddings
            | "BatchForTransform" >> beam.BatchElements(min_batch_size=_BATCH, max_batch_size=_BATCH)
            | "ApplyTransformFn" >> beam.ParDo(_ApplyWhitening(self._directory, self._source),
                                               published=beam.pvalue.AsSingleton(published))
        )
        return WhitenEmbeddingsResult(whitened, checked[REJECTED_TAG])
