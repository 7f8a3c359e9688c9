"""Checks a Dataflow job before submission and adds the Dataflow options its workers need.

Options the user gives always win: an option bert-beam would add is added only where the
user set none (``--machine_type``, ``--disk_size_gb``, a ``worker_accelerator`` service
option); list options (``--experiments``, ``--dataflow_service_options``) are extended.
"""

from __future__ import annotations

import copy
import logging

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline.gpus import GpuRequest
from pipeline.options import BertBeamOptions, ConfigurationError

__all__ = ["WORKER_DISK_SIZE_GB", "check_dataflow_job", "dataflow_job_options", "is_dataflow",
           "submitted_message"]

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
    locations = [("temp_location", cloud.temp_location), ("staging_location", cloud.staging_location),
                 ("input", bert.input), ("output", bert.output), ("dead_letter", bert.dead_letter),
                 *(("skip_embedded_in", prefix) for prefix in (bert.skip_embedded_in or "").split(","))]
    for flag, value in locations:
        value = value.strip() if value else value
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
    if bert.wait_until_finish and cloud.template_location:
        raise ConfigurationError("--wait_until_finish cannot be used in a Flex Template launch: its "
                                 "launcher must exit once the job exists.")
    services = options.view_as(GoogleCloudOptions).dataflow_service_options or []
    if bert.right_fitting and any(s.startswith(_ACCELERATOR_OPTION) for s in services):
        raise ConfigurationError("--right_fitting and a worker_accelerator service option exclude each "
                                 "other: right fitting puts the GPU on the embedding step only.")


def dataflow_job_options(options: PipelineOptions, gpu: GpuRequest | None) -> PipelineOptions:
    """A copy of ``options`` with what a Dataflow job needs added: Runner v2, a boot disk with room
    for the worker image and, unless right fitting moves the GPU to the embedding step, GPU workers."""
    job = copy.deepcopy(options)
    debug, worker = job.view_as(DebugOptions), job.view_as(WorkerOptions)
    if RUNNER_V2 not in (debug.experiments or []):
        debug.add_experiment(RUNNER_V2)
    if worker.disk_size_gb is None:
        worker.disk_size_gb = WORKER_DISK_SIZE_GB
    if gpu is None or job.view_as(BertBeamOptions).right_fitting:
        return job
    cloud = job.view_as(GoogleCloudOptions)
    services = cloud.dataflow_service_options or []
    if not any(s.startswith(_ACCELERATOR_OPTION) for s in services):
        cloud.dataflow_service_options = [*services, f"{_ACCELERATOR_OPTION}={gpu.accelerator()}"]
    if worker.machine_type is None:
        worker.machine_type = gpu.machine_type
    return job


def submitted_message(result: PipelineResult | None, options: PipelineOptions) -> str:
    """Where to watch a submitted job: its id and its console page."""
    cloud = options.view_as(GoogleCloudOptions)
    if cloud.template_location:  # the Flex Template launcher: Beam wrote the job; the launcher submits it
        return f"bert-beam: wrote the Dataflow job to {cloud.template_location} for the template launcher."
    job_id = result.job_id()
    return (f"bert-beam: submitted Dataflow job {job_id}; watch it and its bert_beam counters at "
            f"https://console.cloud.google.com/dataflow/jobs/{cloud.region}/{job_id}?project={cloud.project}")
