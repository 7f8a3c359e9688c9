"""How the model runs on each worker: its GPU, how worker processes share it, TensorFlow's threads
and the embedding step's resource hints, decided once from the options."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.dataflow import is_dataflow
from pipeline.gpus import BERT_LARGE_GPU_GB, GpuRequest, gpu_request
from pipeline.options import BertBeamOptions, ConfigurationError

__all__ = ["WorkerPlan", "plan_workers"]

_LOG = logging.getLogger(__name__)
_LOCAL_RUNNERS = ("DirectRunner", "PrismRunner")


@dataclass(frozen=True)
class WorkerPlan:
    """The model's place on a worker, resolved: every field is the value the job runs with."""

    gpu: GpuRequest | None = None
    require_gpu: bool = False
    large_model: bool = False
    model_copies: int | None = None
    tf_threads: int = 0
    inference_hints: Mapping[str, str] = field(default_factory=dict)

    def describe_sharing(self) -> str:
        if self.model_copies is not None:
            return f"{self.model_copies} model copies per machine, shared by its worker processes"
        if self.large_model:
            return "one model copy per machine, shared by its worker processes (--large_model)"
        return "a model copy per worker process"


def plan_workers(options: PipelineOptions) -> WorkerPlan:
    """The GPU request and its defaults, the model sharing, TensorFlow's threads and the hints.

    A GPU job checks for its GPU and shares one model copy across a worker's SDK processes:
    Dataflow starts one Python SDK process per vCPU, and without sharing each would load its own
    BERT-Large onto the one GPU (8 copies on a g2-standard-8). ``large_model`` serves one copy per
    worker from a separate process instead, while tokenizing stays parallel across all processes
    (``no_use_multiple_sdk_containers`` would put everything behind one GIL). Flags the user gives win.
    """
    bert = options.view_as(BertBeamOptions)
    gpu = _checked_gpu_request(options)
    if gpu is not None:
        _warn_about_gpu_memory(gpu, bert.model_copies)
    large_model = bert.large_model
    if large_model is None:
        large_model = gpu is not None and bert.model_copies is None
    require_gpu = bert.require_gpu if bert.require_gpu is not None else gpu is not None
    hints = ({"accelerator": gpu.accelerator(with_machine_type=True), "min_ram": gpu.gpu.ram}
             if bert.right_fitting else {})
    shared = large_model or bert.model_copies is not None
    return WorkerPlan(gpu=gpu, require_gpu=require_gpu, large_model=large_model,
                      model_copies=bert.model_copies, tf_threads=_tf_threads(options, shared),
                      inference_hints=hints)


def _checked_gpu_request(options: PipelineOptions) -> GpuRequest | None:
    bert = options.view_as(BertBeamOptions)
    gpu = gpu_request(bert.gpu_type, bert.gpu_count)
    if bert.right_fitting and gpu is None:
        raise ConfigurationError("--right_fitting needs --gpu_type: it asks for GPU workers for the "
                                 "embedding step only.")
    if gpu is not None and not bert.right_fitting and not is_dataflow(options):
        raise ConfigurationError(
            "--gpu_type asks Dataflow for GPU workers, but the runner is not the DataflowRunner. "
            "Add --right_fitting to pass the GPU to your runner as a resource hint, or use "
            "--require_gpu to check this machine's GPU."
        )
    return gpu


def _warn_about_gpu_memory(gpu: GpuRequest, model_copies: int | None) -> None:
    copies = model_copies or 1
    if copies * BERT_LARGE_GPU_GB > gpu.gpu.memory_gb:
        _LOG.warning("--model_copies %d may not fit %s (%d GB): a BERT-Large copy needs about %d GB.",
                     copies, gpu.gpu.name, gpu.gpu.memory_gb, BERT_LARGE_GPU_GB)
    if gpu.count > 1:
        _LOG.warning("TensorFlow places every model copy on a worker's first GPU; %d GPUs per worker "
                     "cost more than they add. Prefer --gpu_count=1 and more workers.", gpu.count)


def _tf_threads(options: PipelineOptions, shared: bool) -> int:
    """``--tf_threads``, or by default the machine's cores split between the DirectRunner's worker
    processes when each holds a model copy (several processes each using every core slow each
    other down), else 0 (every core)."""
    bert = options.view_as(BertBeamOptions)
    if bert.tf_threads is not None:
        return bert.tf_threads
    direct = options.view_as(DirectOptions)
    runner = options.view_as(StandardOptions).runner
    processes = direct.direct_num_workers or 1
    local = runner is None or str(runner).split(".")[-1] in _LOCAL_RUNNERS
    if local and direct.direct_running_mode == "multi_processing" and processes > 1 and not shared:
        return max(1, (os.cpu_count() or 1) // processes)
    return 0
