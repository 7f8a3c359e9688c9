"""Corpus-fitted whitening (Su et al. 2021), as pure numpy: moments, the projection, the pre-run rule.

Sentence vectors of a BERT are anisotropic. Whitening maps them to ``(x - mean) @ projection``,
``projection = U[:, :K] / sqrt(eigenvalues[:K])`` with ``covariance = U diag(eigenvalues) U^T`` in
descending order: the corpus's own mean goes to 0 and its covariance to the K x K identity.
"Whitening Sentence Representations for Better Semantics and Faster Retrieval", arXiv:2103.15316.
``pipeline.whitening`` fits it with tf.Transform on Beam; this module is the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transforms.model_outputs import MEAN, OUTPUT_KEYS, POOLED

__all__ = ["DEFAULT_WHITENING_DIMS", "DEFAULT_WHITENING_SOURCE", "NULL_VARIANCE", "WHITENING_SOURCES",
           "Moments", "WhiteningFit", "fit_array", "fit_whitening", "whitening_error"]

WHITENING_SOURCES = (MEAN, POOLED)
DEFAULT_WHITENING_DIMS = 0  # off
DEFAULT_WHITENING_SOURCE = MEAN
# An eigenvalue below this fraction of the largest is float32 rounding, not variance: whitening it
# would scale noise up by 1e5 or more. (A LayerNorm'd BERT's mean_output has one such direction.)
NULL_VARIANCE = 1e-10


def whitening_error(dims: int, source: str, outputs: Sequence[str], hidden_size: int) -> str | None:
    """Why ``--whitening_dims dims --whitening_source source`` cannot run with these outputs, else None.

    K cannot exceed the hidden size; the whitened vector must be one the run writes, so that the
    raw vector stays beside its whitened form.
    """
    if dims == 0:
        return None
    if dims > hidden_size:
        return (f"--whitening_dims {dims} is more than the model's hidden size {hidden_size}: whitening "
                f"keeps at most as many dimensions as the vectors have.")
    if source not in outputs:
        return (f"--whitening_source {source} whitens {OUTPUT_KEYS[source]}, which --outputs "
                f"{','.join(outputs)} does not write; add {source} to --outputs.")
    return None


@dataclass(frozen=True)
class Moments:
    """Count, mean and scatter (sum of centred outer products) of vectors, in float64.

    Batches are centred on their own mean and merged with Chan et al.'s update, so a large
    common offset (BERT vectors have one) costs no precision, in any merge order.
    """

    count: int
    mean: np.ndarray  # [H] float64
    scatter: np.ndarray  # [H, H] float64

    @staticmethod
    def empty(hidden_size: int) -> Moments:
        return Moments(0, np.zeros(hidden_size), np.zeros((hidden_size, hidden_size)))

    @staticmethod
    def of(vectors: np.ndarray) -> Moments:
        """The moments of a [N, H] batch."""
        values = np.asarray(vectors, dtype=np.float64)
        if not len(values):
            return Moments.empty(values.shape[1])
        mean = values.mean(axis=0)
        centred = values - mean
        return Moments(len(values), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        weight = self.count * other.count / count
        return Moments(count, self.mean + delta * (other.count / count),
                       self.scatter + other.scatter + np.outer(delta, delta * weight))

    @property
    def covariance(self) -> np.ndarray:
        """The biased (1/N) covariance, as ``np.cov(x, rowvar=False, bias=True)``."""
        return self.scatter / self.count


@dataclass(frozen=True)
class WhiteningFit:
    """A fitted whitening: ``apply(x) = (x - mean) @ projection``, K columns, float64 arithmetic."""

    mean: np.ndarray  # [H]
    projection: np.ndarray  # [H, K]
    eigenvalues: np.ndarray  # [H], the covariance's, descending
    records: int  # vectors it was fitted on

    @property
    def dims(self) -> int:
        return int(self.projection.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """[N, H] vectors → [N, K] float32 whitened vectors."""
        return ((np.asarray(vectors, np.float64) - self.mean) @ self.projection).astype(np.float32)


def fit_whitening(moments: Moments, dims: int) -> WhiteningFit:
    """The whitening that keeps the ``dims`` directions of largest variance of ``moments``.

    Each eigenvector's sign puts its largest component positive, so that runs on the same
    records agree whatever order they summed them in. Raises ValueError when fewer than
    ``dims`` directions have variance: N records span at most N - 1.
    """
    if not moments.count:
        raise ValueError(f"--whitening_dims {dims} cannot be fitted: the run has no records to fit it on.")
    eigenvalues, eigenvectors = np.linalg.eigh(moments.covariance)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    rank = int(np.sum(eigenvalues > NULL_VARIANCE * max(eigenvalues[0], 0.0)))
    if rank < dims:
        raise ValueError(
            f"--whitening_dims {dims} needs {dims} directions of nonzero variance, but the "
            f"{moments.count} records of this run span only {rank} (N records span at most N - 1): "
            f"pass --whitening_dims {rank} or less, or embed more records.")
    kept = eigenvectors[:, :dims]
    signs = np.sign(kept[np.abs(kept).argmax(axis=0), np.arange(dims)])
    projection = kept * signs / np.sqrt(eigenvalues[:dims])
    return WhiteningFit(moments.mean, projection, eigenvalues, moments.count)


def fit_array(vectors: np.ndarray, dims: int) -> WhiteningFit:
    """The whitening of a [N, H] array of vectors, in memory (e.g. to compare with raw vectors)."""
    return fit_whitening(Moments.of(vectors), dims)
