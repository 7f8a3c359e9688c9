"""The RunInference ModelHandler that applies a BERT SavedModel to batches of Features."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from transforms import counters
from transforms.batching import BatchingConfig
from transforms.call_conventions import INPUT_MASK, POOLED_OUTPUT, SEQUENCE_OUTPUT
from transforms.devices import configure_gpus, configure_threads
from transforms.features import pad_batch
from transforms.garbage import freeze_loaded_objects
from transforms.model_loading import LoadedBert, ModelConfig
from transforms.model_outputs import MEAN_OUTPUT, OutputRequest
from transforms.records import Embedding, Features
from transforms.shared_outputs import OutputBlock

__all__ = ["BertModelHandler"]

_LOG = logging.getLogger(__name__)


class BertModelHandler(ModelHandler[Features, Embedding, LoadedBert]):
    """Loads the model once per worker process and runs padded int32 batches through it.

    A batch is padded to the length bucket of its longest record (see
    ``transforms.batching``). Each record's ``Embedding`` holds numpy arrays for its real tokens
    only, as many of ``pooled_output`` [H], the mean [H] and ``sequence_output`` [T, H] as
    ``outputs`` asks for, reduced and cast in the model call. With
    ``large_model`` or ``model_copies`` the model lives in one process per machine, and outputs
    cross to the caller through shared memory.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        batching: BatchingConfig,
        *,
        outputs: OutputRequest | None = None,
        large_model: bool = False,
        model_copies: int | None = None,
        require_gpu: bool = False,
        tf_threads: int = 0,
    ) -> None:
        super().__init__(large_model=large_model, model_copies=model_copies)
        self._model_config = model_config
        self._batching = batching
        self._outputs = outputs or OutputRequest()
        self._output_block = OutputBlock()
        self._require_gpu = require_gpu
        self._tf_threads = tf_threads
        self._real_tokens = Metrics.counter(counters.NAMESPACE, counters.REAL_TOKENS)
        self._padded_tokens = Metrics.counter(counters.NAMESPACE, counters.PADDED_TOKENS)
        self._batches = Metrics.counter(counters.NAMESPACE, counters.BATCHES)
        self._batch_latency_ms = Metrics.distribution(counters.NAMESPACE, counters.BATCH_LATENCY_MS)

    def load_model(self) -> LoadedBert:
        # Thread pools and GPU memory growth must be set before TensorFlow starts in this process.
        configure_threads(self._tf_threads)
        device = configure_gpus(self._require_gpu)
        start = time.perf_counter()
        model = LoadedBert(self._model_config)
        freeze_loaded_objects()
        elapsed_ms = int((time.perf_counter() - start) * 1000)
        _LOG.info("Loaded %s on %s in %d ms.", model.describe(), device, elapsed_ms)
        return model

    def run_inference(
        self,
        batch: Sequence[Features],
        model: LoadedBert,
        inference_args: Mapping[str, Any] | None = None,
    ) -> list[Embedding]:
        length = self._batching.batch_padded_length(batch)
        arrays = pad_batch(batch, length, self._batching.batch_padded_rows(len(batch), length))
        start = time.perf_counter()
        if self.share_model_across_processes():
            # ``model`` is Beam's proxy of the one copy: outputs come back through shared memory.
            block = self._output_block
            outputs = block.read(model.call_into_shared_memory(
                block.put(arrays), self._outputs, *block.target()))
        else:
            outputs = model(arrays, self._outputs)
        self._batch_latency_ms.update(int((time.perf_counter() - start) * 1000))
        self._batches.inc()
        real = int(arrays[INPUT_MASK].sum())
        self._real_tokens.inc(real)
        self._padded_tokens.inc(arrays[INPUT_MASK].size - real)
        pooled, mean, sequence = (outputs.get(key) for key in (POOLED_OUTPUT, MEAN_OUTPUT, SEQUENCE_OUTPUT))
        return [
            Embedding(
                features=features,
                pooled_output=None if pooled is None else pooled[row],
                # A row's real tokens are contiguous in the batch: a view, not a copy.
                sequence_output=None if sequence is None else np.ascontiguousarray(
                    sequence[row, : features.sequence_length]),
                computed_mean=None if mean is None else mean[row],
            )
            for row, features in enumerate(batch)
        ]

    def get_num_bytes(self, batch: Sequence[Features]) -> int:
        return sum(f.input_ids.nbytes + f.segment_ids.nbytes for f in batch)

    def get_metrics_namespace(self) -> str:
        return counters.NAMESPACE
