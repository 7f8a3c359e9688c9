"""The device a worker's model runs on: GPU memory growth on, and a clear failure without a GPU."""

from __future__ import annotations

import logging
import os

__all__ = ["GpuUnavailableError", "configure_gpus", "configure_threads"]

_LOG = logging.getLogger(__name__)


class GpuUnavailableError(RuntimeError):
    """``--require_gpu`` is set but TensorFlow on this worker sees no GPU."""


def configure_threads(threads: int) -> None:
    """Caps TensorFlow's intra- and inter-op thread pools at ``threads`` (0 leaves TensorFlow's
    default: every core). Must run before TensorFlow starts in this process."""
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:  # TensorFlow already started in this process: pools are fixed
        _LOG.warning("Cannot set TensorFlow to %d thread(s): %s", threads, error)
        return
    _LOG.info("bert-beam: TensorFlow uses %d intra-op and %d inter-op thread(s).", threads, threads)


def configure_gpus(require_gpu: bool) -> str:
    """Enables memory growth on every visible GPU; returns the device inference runs on.

    Must run before the model loads: TensorFlow fixes its GPU settings when it first
    touches a GPU. Without memory growth the first process grabs nearly all GPU memory,
    and a second model copy or SDK process on the same GPU fails with out-of-memory.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        if require_gpu:
            raise GpuUnavailableError(_no_gpu_message(tf.test.is_built_with_cuda()))
        _LOG.info("bert-beam: inference runs on the CPU (no GPU visible).")
        return "CPU (no GPU visible)"
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:  # TensorFlow already initialised this GPU: settings are fixed
            _LOG.warning("Cannot enable memory growth on %s: %s", gpu.name, error)
    details = tf.config.experimental.get_device_details(gpus[0])
    name = details.get("device_name", "unknown GPU")
    capability = ".".join(map(str, details.get("compute_capability", ()))) or "unknown"
    device = f"/GPU:0 ({name}, compute capability {capability}) of {len(gpus)} visible"
    _LOG.info("bert-beam: inference runs on %s, memory growth on.", device)
    return device


def _no_gpu_message(built_with_cuda: bool) -> str:
    reasons = []
    if not built_with_cuda:
        reasons.append("this TensorFlow is built without CUDA (install tensorflow[and-cuda])")
    if not os.path.isdir("/usr/local/nvidia/lib64"):
        reasons.append("no NVIDIA driver is mounted at /usr/local/nvidia (on Dataflow: --gpu_type, "
                       "or worker_accelerator=...;install-nvidia-driver)")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        reasons.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    return ("bert-beam: --require_gpu is set but TensorFlow sees no GPU on this worker"
            + (f": {'; '.join(reasons)}." if reasons else ".")
            + " Pass --require_gpu=false to embed on the CPU instead.")
