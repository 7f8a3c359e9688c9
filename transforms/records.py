"""The typed records that flow between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EXCERPT_CHARS", "REJECTED_TAG", "STAGE_INFERENCE", "STAGE_READ", "STAGE_TOKENIZE", "Document",
           "Embedding", "Features", "Rejected", "excerpt"]

REJECTED_TAG = "rejected"
EXCERPT_CHARS = 1000
# Where a Rejected left the pipeline: the ``stage`` of its dead letter.
STAGE_READ = "read"
STAGE_TOKENIZE = "tokenize"
STAGE_INFERENCE = "inference"


def excerpt(raw: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A bounded, printable excerpt of a raw record for dead letters and logs."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


@dataclass(frozen=True)
class Document:
    """One validated input text (or text pair) with its id and source location."""

    id: str
    text: str
    source: str
    text_b: str | None = None


@dataclass(frozen=True)
class Features:
    """Model inputs for one document window, unpadded: real tokens only.

    ``input_ids`` and ``segment_ids`` hold ``[CLS] ... [SEP]`` exactly as
    google-research/bert builds them; padding to the batch length happens when
    the batch is assembled. ``token_offset`` is the position of the window's
    first wordpiece in the document's full wordpiece list.
    """

    id: str
    input_ids: np.ndarray
    segment_ids: np.ndarray
    window: int = 0
    token_offset: int = 0
    truncated: bool = False
    source: str = ""

    @property
    def sequence_length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def key(self) -> str:
        """Unique per record: the document id and window index."""
        return f"{self.id}#{self.window}"


@dataclass(frozen=True)
class Embedding:
    """The model outputs for one document window, real tokens only; None where not computed.

    ``computed_mean`` is the mean that the model call reduced (``--outputs mean``);
    ``whitened_output`` its or ``pooled_output``'s whitened form (``--whitening_dims``).
    """

    features: Features
    pooled_output: np.ndarray | None
    sequence_output: np.ndarray | None
    computed_mean: np.ndarray | None = None
    whitened_output: np.ndarray | None = None

    @property
    def mean_output(self) -> np.ndarray:
        """Mean of the real tokens' sequence output, as sentence-transformers pools."""
        if self.computed_mean is not None:
            return self.computed_mean
        return self.sequence_output.mean(axis=0, dtype=np.float32)

    @property
    def hidden_size(self) -> int:
        """The width of the outputs."""
        present = next(o for o in (self.pooled_output, self.computed_mean, self.sequence_output)
                       if o is not None)
        return int(present.shape[-1])


@dataclass(frozen=True)
class Rejected:
    """A record that could not be processed, and why; ``stage`` is one of the ``STAGE_*`` names.

    ``window`` is the index of a document window that failed at inference, None for a record
    rejected whole before windowing: only a failed window 0 rejects its document. ``document_id``
    names that window's document, so that a later incremental run knows it lacks a window.
    """

    source: str
    raw: str
    reason: str
    stage: str
    window: int | None = None
    document_id: str | None = None

    @property
    def rejects_document(self) -> bool:
        """False for a failed window after 0: window 0 alone decides whether its document is embedded."""
        return self.window is None or self.window == 0
