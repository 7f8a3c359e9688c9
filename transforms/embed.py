"""Documents → Embeddings: tokenize, batch, RunInference; failures become Rejected."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from transforms import counters
from transforms.batching import BatchByLength, BatchingConfig
from transforms.features import FeatureConfig, document_features
from transforms.garbage import freeze_loaded_objects
from transforms.model_handler import BertModelHandler
from transforms.records import (
    REJECTED_TAG,
    STAGE_INFERENCE,
    STAGE_TOKENIZE,
    Document,
    Embedding,
    Features,
    Rejected,
    excerpt,
)
from transforms.tokenization import FullTokenizer

__all__ = ["EmbedDocuments", "EmbedDocumentsResult", "TokenizerConfig"]


@dataclass(frozen=True)
class TokenizerConfig:
    """The vocabulary (as lines) and casing, resolved from the model before the run."""

    vocab_lines: tuple[str, ...]
    do_lower_case: bool


class _TokenizeDocument(beam.DoFn):
    """Document → Features (one per window); a document without wordpieces in either text is rejected."""

    def __init__(self, tokenizer: TokenizerConfig, features: FeatureConfig) -> None:
        self._tokenizer_config = tokenizer
        self._feature_config = features
        self._tokenizer: FullTokenizer | None = None
        self._truncated = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_TRUNCATED)
        self._windowed = Metrics.counter(counters.NAMESPACE, counters.DOCUMENTS_WINDOWED)
        self._windows = Metrics.counter(counters.NAMESPACE, counters.WINDOWS)

    def setup(self) -> None:
        self._tokenizer = FullTokenizer(
            self._tokenizer_config.vocab_lines, self._tokenizer_config.do_lower_case
        )
        freeze_loaded_objects()

    def process(self, document: Document) -> Iterator[Features | beam.pvalue.TaggedOutput]:
        try:
            features = list(document_features(document, self._tokenizer, self._feature_config))
        except (ValueError, KeyError, RecursionError) as error:
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(
                document.source, excerpt(document.text), f"tokenization failed: {error}", STAGE_TOKENIZE))
            return
        if features[0].sequence_length == 2:
            subject = "text and text_b have" if document.text_b else "text has"
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(
                document.source, excerpt(document.text or document.text_b or ""),
                f"{subject} no wordpieces after BERT's cleaning (only control or whitespace characters)",
                STAGE_TOKENIZE))
            return
        if features[0].truncated:
            self._truncated.inc()
        if len(features) > 1:
            self._windowed.inc()
        self._windows.inc(len(features))
        yield from features


# What Beam's exception handling passes for a failed batch: the exception's type, repr and
# formatted traceback lines, not the exception itself.
_FailureInfo = tuple[type, str, Sequence[str]]


def _failure_message(error: _FailureInfo) -> str:
    """``Type: message`` of a batch's failure, the message from the traceback's line naming the type
    (a TensorFlow error's repr holds none: ``InvalidArgumentError()``)."""
    kind, text, lines = error
    qualified = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else (
        f"{kind.__module__}.{kind.__qualname__}")
    named = [line for line in lines if line.startswith(qualified + ": ")]
    message = named[-1][len(qualified) + 2 :].strip() if named else text
    return f"{kind.__name__}: {message[:500]}"


def _failed_batch_to_rejected(
    failure: tuple[Sequence[Features], _FailureInfo],
) -> Iterator[Rejected]:
    batch, error = failure
    reason = f"inference failed: {_failure_message(error)}"
    for features in batch:
        yield Rejected(features.source, f"{features.key} ({features.sequence_length} tokens)", reason,
                       STAGE_INFERENCE, features.window, features.id)


class EmbedDocumentsResult(NamedTuple):
    """What ``EmbedDocuments`` returns, as Beam's ``RunInference`` returns ``RunInferenceDLQ``."""

    embeddings: beam.PCollection[Embedding]
    rejected: beam.PCollection[Rejected]  # tokenizing and inference failures


class EmbedDocuments(beam.PTransform[beam.PCollection[Document], EmbedDocumentsResult]):
    """Documents → ``EmbedDocumentsResult``: Embeddings and Rejected.

    Tokenizes with the model's own WordPiece vocabulary, builds google-research/bert
    features, batches them by length and runs the model with Beam RunInference.
    ``inference_hints`` (Beam resource hints) apply to the RunInference step only, so
    right fitting puts just the model on accelerator workers.
    """

    def __init__(
        self,
        tokenizer: TokenizerConfig,
        features: FeatureConfig,
        batching: BatchingConfig,
        model_handler: BertModelHandler,
        inference_hints: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self._inference_hints = dict(inference_hints or {})
        self._tokenizer = tokenizer
        self._features = features
        self._batching = batching
        self._model_handler = model_handler

    def expand(self, documents: beam.PCollection[Document]) -> EmbedDocumentsResult:
        tokenized = documents | "Tokenize" >> beam.ParDo(
            _TokenizeDocument(self._tokenizer, self._features)
        ).with_outputs(REJECTED_TAG, main="features")
        batches = tokenized.features | "BatchByLength" >> BatchByLength(self._batching)
        embeddings, failures = batches | "RunInference" >> RunInference(
            self._model_handler.with_no_batching()
        ).with_exception_handling().with_resource_hints(**self._inference_hints)
        failed = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch_to_rejected)
        rejected = (tokenized[REJECTED_TAG], failed) | "MergeRejected" >> beam.Flatten()
        return EmbedDocumentsResult(embeddings, rejected)
