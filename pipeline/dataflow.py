"""Turns bert-beam's GPU flags into Dataflow options and checks a Dataflow job before submission.

Options the user gives always win: a flag bert-beam would add is added only where the
user set none (``--machine_type``, ``--large_model``, a ``worker_accelerator`` service
option); list options (``--experiments``, ``--dataflow_service_options``) are extended.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline.gpus import BERT_LARGE_GPU_GB, GpuRequest, gpu_request
from pipeline.options import BertBeamOptions, ConfigurationError, parse_pipeline_options

_LOG = logging.getLogger(__name__)

_DATAFLOW_RUNNERS = ("dataflowrunner", "dataflow", "testdataflowrunner")
RUNNER_V2 = "use_runner_v2"
_NO_RUNNER_V2 = ("disable_runner_v2", "disable_portable_runner", "disable_prime_runner_v2")
_ACCELERATOR_OPTION = "worker_accelerator"
# The worker image holds TensorFlow with CUDA (about 10 GB unpacked); Dataflow's 25 GB default boot
# disk for batch jobs leaves too little room for it beside the shuffle and temporary files.
WORKER_DISK_SIZE_GB = 50


def is_dataflow(options: PipelineOptions) -> bool:
    """True for ``--runner=DataflowRunner`` in any of its spellings."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return bool(runner) and name.rsplit(".", 1)[-1].lower() in _DATAFLOW_RUNNERS


def resolve_dataflow_options(argv: Sequence[str]) -> PipelineOptions:
    """Parses ``argv``, checks it, and adds what its (GPU) Dataflow job needs.

    Raises ConfigurationError before anything is loaded or submitted.
    """
    argv = list(argv)
    options = parse_pipeline_options(argv)
    bert = options.view_as(BertBeamOptions)
    gpu = _checked_gpu_request(options)
    extra = _gpu_flags(argv, bert, gpu)
    if is_dataflow(options):
        check_dataflow_job(options)
        extra += _dataflow_flags(options, bert, gpu)
    return parse_pipeline_options(argv + extra) if extra else options


def inference_resource_hints(options: PipelineOptions) -> dict[str, str]:
    """The resource hints of the embedding step: a GPU worker with --right_fitting, else none."""
    if not options.view_as(BertBeamOptions).right_fitting:
        return {}
    gpu = _checked_gpu_request(options)
    return {"accelerator": gpu.accelerator(with_machine_type=True), "min_ram": gpu.gpu.ram}


def check_dataflow_job(options: PipelineOptions) -> None:
    """What Dataflow would reject, or fail on hours later, as one sentence now."""
    cloud = options.view_as(GoogleCloudOptions)
    bert = options.view_as(BertBeamOptions)
    if not cloud.project:
        raise ConfigurationError("--project is required for the DataflowRunner: the Google Cloud "
                                 "project that runs and pays for the job.")
    if not cloud.region:
        raise ConfigurationError("--region is required for the DataflowRunner, e.g. --region=us-central1 "
                                 "(pick one that offers your GPU type).")
    if not cloud.temp_location:
        raise ConfigurationError("--temp_location is required for the DataflowRunner, e.g. "
                                 "--temp_location=gs://BUCKET/tmp.")
    locations = {"temp_location": cloud.temp_location, "staging_location": cloud.staging_location,
                 "input": bert.input, "output": bert.output, "dead_letter": bert.dead_letter}
    for flag, value in locations.items():
        if value and not value.startswith("gs://"):
            raise ConfigurationError(f"--{flag} must be on Cloud Storage (gs://...) for the DataflowRunner; "
                                     f"its workers cannot reach {value!r}.")
    for flag in ("model", "vocab_file"):
        value = getattr(bert, flag)
        if value and "://" not in value:
            # Legitimate only for a model baked into the worker image, which is also the template launcher.
            _LOG.warning("--%s %s is a local path: Dataflow workers read it from the same path in the "
                         "worker image. Use a gs:// path or a tfhub.dev/Kaggle URL otherwise.", flag, value)
    if not options.view_as(WorkerOptions).sdk_container_image:
        raise ConfigurationError("--sdk_container_image is required for the DataflowRunner: its workers "
                                 "need TensorFlow, TF Hub and bert-beam. Build the image with "
                                 "`make image` and pass its URI.")
    disabled = [e for e in options.view_as(DebugOptions).experiments or [] if e in _NO_RUNNER_V2]
    if disabled:
        raise ConfigurationError(f"--experiments={disabled[0]} turns off Runner v2, which custom "
                                 "containers, GPUs and right fitting need.")
    services = options.view_as(GoogleCloudOptions).dataflow_service_options or []
    if bert.right_fitting and any(s.startswith(_ACCELERATOR_OPTION) for s in services):
        raise ConfigurationError("--right_fitting and a worker_accelerator service option exclude each "
                                 "other: right fitting puts the GPU on the embedding step only.")


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


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(arg == f"--{flag}" or arg.startswith(f"--{flag}=") for arg in argv)


def _gpu_flags(argv: Sequence[str], bert: BertBeamOptions, gpu: GpuRequest | None) -> list[str]:
    """GPU workers check for their GPU and share one model copy across their SDK processes.

    Dataflow starts one Python SDK process per vCPU. Without sharing, each would load its own
    BERT-Large onto the one GPU (8 copies on a g2-standard-8). ``large_model`` serves one copy
    per worker from a separate process instead, while tokenizing stays parallel across all
    processes (``no_use_multiple_sdk_containers`` would put everything behind one GIL).
    """
    if gpu is None:
        return []
    flags = []
    if bert.require_gpu is None:
        flags.append("--require_gpu=true")
    if not _given(argv, "large_model") and bert.model_copies is None:
        flags.append("--large_model=true")
    copies = bert.model_copies or 1
    if copies * BERT_LARGE_GPU_GB > gpu.gpu.memory_gb:
        _LOG.warning("--model_copies %d may not fit %s (%d GB): a BERT-Large copy needs about %d GB.",
                     copies, gpu.gpu.name, gpu.gpu.memory_gb, BERT_LARGE_GPU_GB)
    if gpu.count > 1:
        _LOG.warning("TensorFlow places every model copy on a worker's first GPU; %d GPUs per worker "
                     "cost more than they add. Prefer --gpu_count=1 and more workers.", gpu.count)
    return flags


def _dataflow_flags(options: PipelineOptions, bert: BertBeamOptions, gpu: GpuRequest | None) -> list[str]:
    flags = []
    if RUNNER_V2 not in (options.view_as(DebugOptions).experiments or []):
        flags.append(f"--experiments={RUNNER_V2}")
    worker = options.view_as(WorkerOptions)
    if worker.disk_size_gb is None:
        flags.append(f"--disk_size_gb={WORKER_DISK_SIZE_GB}")
    if gpu is None or bert.right_fitting:
        return flags
    services = options.view_as(GoogleCloudOptions).dataflow_service_options or []
    if not any(s.startswith(_ACCELERATOR_OPTION) for s in services):
        flags.append(f"--dataflow_service_options={_ACCELERATOR_OPTION}={gpu.accelerator()}")
    if worker.machine_type is None:
        flags.append(f"--machine_type={gpu.machine_type}")
    return flags


def submitted_message(result: PipelineResult | None, options: PipelineOptions) -> str:
    """Where to watch a submitted job: its id and its console page."""
    cloud = options.view_as(GoogleCloudOptions)
    if cloud.template_location:  # the Flex Template launcher: Beam wrote the job; the launcher submits it
        return f"bert-beam: wrote the Dataflow job to {cloud.template_location} for the template launcher."
    job_id = result.job_id()
    return (f"bert-beam: submitted Dataflow job {job_id}; watch it and its bert_beam counters at "
            f"https://console.cloud.google.com/dataflow/jobs/{cloud.region}/{job_id}?project={cloud.project}")
