"""The outputs a run writes, computed in the model call: only those, pooled and cast there.

Whatever the model does not need to hand back is never copied out of TensorFlow, and
never crosses to another process when a model is shared: ``mean_output`` is reduced
and ``sequence_output`` cast to 16 bits inside the call, on the model's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from transforms.call_conventions import MEAN_OUTPUT, POOLED_OUTPUT, SEQUENCE_OUTPUT

__all__ = ["FLOAT32", "MEAN", "OUTPUT_KEYS", "OUTPUT_KINDS", "POOLED", "SEQUENCE", "SEQUENCE_DTYPES",
           "OutputRequest", "select_outputs"]

POOLED = "pooled"
MEAN = "mean"
SEQUENCE = "sequence"
OUTPUT_KINDS = (POOLED, MEAN, SEQUENCE)
OUTPUT_KEYS = {POOLED: POOLED_OUTPUT, MEAN: MEAN_OUTPUT, SEQUENCE: SEQUENCE_OUTPUT}

FLOAT32 = "float32"
SEQUENCE_DTYPES = (FLOAT32, "float16", "bfloat16")


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs the model call returns, and the dtype of ``sequence_output``."""

    kinds: tuple[str, ...] = (POOLED, SEQUENCE)
    sequence_dtype: str = FLOAT32

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in OUTPUT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"outputs must be one or more of {OUTPUT_KINDS}, got {self.kinds}.")
        if self.sequence_dtype not in SEQUENCE_DTYPES:
            raise ValueError(f"sequence_dtype must be one of {SEQUENCE_DTYPES}, got {self.sequence_dtype!r}.")

    @property
    def keys(self) -> tuple[str, ...]:
        """The result keys: ``pooled_output``, ``mean_output``, ``sequence_output``."""
        return tuple(OUTPUT_KEYS[kind] for kind in self.kinds)


def select_outputs(outputs: Mapping, input_mask, request: OutputRequest) -> dict:
    """The requested outputs as TensorFlow ops on the model's own outputs.

    ``mean_output`` is the mean of the real tokens' (mask 1) ``sequence_output``, in float32;
    ``sequence_output`` is cast to ``request.sequence_dtype``; ``pooled_output`` is float32.
    """
    import tensorflow as tf

    selected = {}
    if POOLED in request.kinds:
        selected[POOLED_OUTPUT] = tf.cast(outputs[POOLED_OUTPUT], tf.float32)
    sequence = outputs[SEQUENCE_OUTPUT]
    if MEAN in request.kinds:
        mask = tf.cast(input_mask, tf.float32)
        total = tf.reduce_sum(tf.cast(sequence, tf.float32) * mask[:, :, tf.newaxis], axis=1)
        selected[MEAN_OUTPUT] = total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)[:, tf.newaxis]
    if SEQUENCE in request.kinds:
        selected[SEQUENCE_OUTPUT] = tf.cast(sequence, tf.as_dtype(request.sequence_dtype))
    return selected
