"""Dataflow: GPU options, pre-submission checks, right fitting, dry run, image, template and launch commands.

Nothing here reaches Google Cloud: jobs are resolved, checked and built, never submitted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    TestOptions,
    WorkerOptions,
)
from apache_beam.pipeline import PipelineVisitor
from helpers import write_jsonl
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline import plan as plan_module
from pipeline.dataflow import submitted_message
from pipeline.dry_run import dry_run_requested, graph_summary
from pipeline.gpus import GPU_TYPES
from pipeline.options import BertBeamOptions, ConfigurationError, parse_pipeline_options
from pipeline.plan import job_options, prepare_run
from pipeline.run import build_pipeline, main
from pipeline.workers import WorkerPlan, plan_workers
from transforms.devices import GpuUnavailableError, configure_gpus

REPO = Path(__file__).resolve().parent.parent
IMAGE = "us-central1-docker.pkg.dev/my-project/bert-beam/bert-beam:v1"
DATAFLOW = ["--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
            "--temp_location=gs://my-bucket/tmp", f"--sdk_container_image={IMAGE}",
            "--input=gs://my-bucket/docs/*.jsonl", "--output=gs://my-bucket/out/emb"]
ACCELERATOR_URN = "beam:resources:accelerator:v1"


def _flags() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    BertBeamOptions._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def _metadata() -> dict[str, dict]:
    spec = json.loads((REPO / "templates" / "metadata.json").read_text())
    return {parameter["name"]: parameter for parameter in spec["parameters"]}


def _readme_dataflow_section() -> str:
    return (REPO / "README.md").read_text().split("## Running on Google Cloud Dataflow", 1)[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


# --- Flex Template metadata ------------------------------------------------------------------------

# A template launch must exit once the job exists: the flag that waits for it is refused there.
NOT_TEMPLATE_PARAMETERS = {"wait_until_finish"}


def test_metadata_declares_exactly_the_cli_flags():
    parameters, flags = _metadata(), _flags()
    assert set(parameters) == set(flags) - NOT_TEMPLATE_PARAMETERS
    for name, parameter in parameters.items():
        assert parameter["label"] and parameter["helpText"] and parameter["regexes"], name
        assert parameter["isOptional"] is (name not in ("input", "output")), name


def _accepted_values(name: str, action: argparse.Action) -> set[str]:
    values = set(map(str, action.choices or ()))
    if action.default is not None:
        values.add(str(action.default).lower() if isinstance(action.default, bool) else str(action.default))
    if action.type is not None and action.type.__name__ == "parse_bool":
        values |= {"true", "false"}
    return values


def _readme_template_values() -> dict[str, set[str]]:
    """Every NAME=VALUE the README's Dataflow section passes as a flag or template parameter."""
    values: dict[str, set[str]] = {}
    for block in re.findall(r"```sh\n(.*?)```", _readme_dataflow_section(), re.S):
        tokens = shlex.split(block.replace("\\\n", " "))
        tokens += [t for token in tokens if token.startswith("ARGS=") for t in shlex.split(token[5:])]
        for token in tokens:
            match = re.fullmatch(r"--(?:parameters=(?:\^.\^)?)?([a-z_]+)=(.+)", token)
            if match:
                values.setdefault(match[1], set()).add(match[2])
    return values


def test_metadata_regexes_accept_defaults_choices_and_the_readme_values():
    parameters, flags = _metadata(), _flags()
    readme = _readme_template_values()
    assert {"input", "output", "gpu_type", "outputs"} <= set(readme)
    for name, action in flags.items():
        if name in NOT_TEMPLATE_PARAMETERS:
            continue
        values = _accepted_values(name, action) | readme.get(name, set())
        for value in values:
            for regex in parameters[name]["regexes"]:
                assert re.fullmatch(regex, value), f"{name}: {regex} rejects {value!r}"


def test_metadata_gpu_regexes_equal_the_gpu_catalogue():
    parameters = _metadata()
    def alternatives(name: str) -> list[str]:
        return re.fullmatch(r"\^\((.*)\)\$", parameters[name]["regexes"][0])[1].split("|")

    assert alternatives("gpu_type") == list(GPU_TYPES)
    assert set(alternatives("gpu_count")) == {str(n) for gpu in GPU_TYPES.values() for n in gpu.machine_types}


def test_metadata_regexes_reject_local_paths_workers_cannot_read():
    parameters = _metadata()
    for name, value in (("input", "docs/*.jsonl"), ("output", "out/emb"), ("model", "/models/bert")):
        assert not re.fullmatch(parameters[name]["regexes"][0], value)


# --- GPU options ------------------------------------------------------------------------------------

def _resolved(argv: list[str]) -> tuple[PipelineOptions, WorkerPlan]:
    """The job's Beam options and its workers' plan, as ``prepare_run`` decides them first."""
    options = parse_pipeline_options(argv)
    workers = plan_workers(options)
    return job_options(options, workers), workers


@pytest.mark.parametrize("gpu, count, machine", [
    ("nvidia-l4", None, "g2-standard-8"),
    ("nvidia-tesla-t4", None, "n1-highmem-8"),
    ("nvidia-tesla-a100", 2, "a2-highgpu-2g"),
    ("nvidia-h100-80gb", None, "a3-highgpu-1g"),
])
def test_a_gpu_job_expands_into_dataflow_options(gpu, count, machine):
    argv = [*DATAFLOW, f"--gpu_type={gpu}"] + ([f"--gpu_count={count}"] if count else [])
    options, workers = _resolved(argv)
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
        f"worker_accelerator=type:{gpu};count:{count or 1};install-nvidia-driver"]
    assert options.view_as(WorkerOptions).machine_type == machine
    assert options.view_as(WorkerOptions).sdk_container_image == IMAGE
    assert options.view_as(WorkerOptions).disk_size_gb == 50
    assert options.view_as(DebugOptions).experiments == ["use_runner_v2"]
    assert workers.large_model is True and workers.require_gpu is True
    assert workers.inference_hints == {}


def test_options_the_user_gives_win_and_lists_are_extended():
    options, workers = _resolved([
        *DATAFLOW, "--gpu_type=nvidia-l4", "--machine_type=g2-standard-16", "--disk_size_gb=100",
        "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver;use_nvidia_mps",
        "--dataflow_service_options=enable_prime", "--experiments=use_runner_v2,my_experiment",
        "--large_model=false", "--require_gpu=false",
    ])
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver;use_nvidia_mps", "enable_prime"]
    assert options.view_as(WorkerOptions).machine_type == "g2-standard-16"
    assert options.view_as(WorkerOptions).disk_size_gb == 100
    assert options.view_as(DebugOptions).experiments == ["use_runner_v2", "my_experiment"]
    assert workers.large_model is False and workers.require_gpu is False


def test_model_copies_replace_the_default_sharing():
    _, workers = _resolved([*DATAFLOW, "--gpu_type=nvidia-l4", "--model_copies=2"])
    assert workers.large_model is False and workers.model_copies == 2


def test_a_cpu_dataflow_job_gets_runner_v2_and_no_gpu():
    options, workers = _resolved(DATAFLOW)
    assert options.view_as(GoogleCloudOptions).dataflow_service_options is None
    assert options.view_as(WorkerOptions).machine_type is None
    assert options.view_as(DebugOptions).experiments == ["use_runner_v2"]
    assert workers.large_model is False


def test_a_local_run_is_left_as_given():
    argv = ["--input=docs.jsonl", "--output=out/emb", "--runner=DirectRunner"]
    assert _resolved(argv)[0].get_all_options(drop_default=True) == {
        "input": "docs.jsonl", "output": "out/emb", "runner": "DirectRunner"}


def test_right_fitting_moves_the_gpu_from_the_job_to_a_resource_hint():
    options, workers = _resolved([*DATAFLOW, "--gpu_type=nvidia-l4", "--right_fitting"])
    assert options.view_as(GoogleCloudOptions).dataflow_service_options is None
    assert options.view_as(WorkerOptions).machine_type is None
    assert options.view_as(DebugOptions).experiments == ["use_runner_v2"]
    assert workers.inference_hints == {
        "accelerator": "type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver",
        "min_ram": "32GB",
    }


@pytest.mark.parametrize("drop, extra, message", [
    ("--project=my-project", (), "--project is required for the DataflowRunner"),
    ("--region=us-central1", (), "--region is required"),
    ("--temp_location=gs://my-bucket/tmp", (), "--temp_location is required"),
    ("--temp_location=gs://my-bucket/tmp", ("--temp_location=/tmp/x",),
     "--temp_location must be on Cloud Storage"),
    (None, ("--staging_location=/tmp/staging",), "--staging_location must be on Cloud Storage"),
    ("--input=gs://my-bucket/docs/*.jsonl", ("--input=docs/*.jsonl",), "--input must be on Cloud Storage"),
    ("--output=gs://my-bucket/out/emb", ("--output=out/emb",), "--output must be on Cloud Storage"),
    (f"--sdk_container_image={IMAGE}", (), "--sdk_container_image is required"),
    (None, ("--gpu_type=nvidia-k80",), "Unknown --gpu_type 'nvidia-k80'. Dataflow GPU types bert-beam knows: "
     "nvidia-l4, nvidia-tesla-t4"),
    (None, ("--gpu_type=nvidia-tesla-t4", "--gpu_count=8"),
     "--gpu_count 8 is not offered with nvidia-tesla-t4"),
    (None, ("--gpu_count=2",), "--gpu_count needs --gpu_type"),
    (None, ("--right_fitting",), "--right_fitting needs --gpu_type"),
    (None, ("--experiments=disable_runner_v2",), "turns off Runner v2"),
    (None, ("--gpu_type=nvidia-l4", "--right_fitting",
            "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"), "exclude each other"),
])
def test_a_dataflow_job_is_checked_before_submission(drop, extra, message):
    argv = [arg for arg in DATAFLOW if arg != drop] + list(extra)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _resolved(argv)


def test_waiting_for_a_dataflow_job_is_planned_and_refused_where_it_cannot_be(tf1_module, monkeypatch):
    # The input listing and the output probe would read gs://; everything else is planned as for real.
    monkeypatch.setattr(plan_module, "_match_input_files", lambda pattern, config: ["gs://b/1"])
    monkeypatch.setattr(plan_module, "_check_writable", lambda prefix: None)
    options = [*DATAFLOW, f"--model={tf1_module}", "--dry_run=true"]
    assert prepare_run(parse_pipeline_options(options)).waits is False
    assert prepare_run(parse_pipeline_options([*options, "--wait_until_finish"])).waits is True
    with pytest.raises(ConfigurationError, match="cannot be used in a Flex Template launch"):
        _resolved([*DATAFLOW, "--wait_until_finish", "--template_location=gs://my-bucket/launch/job.json"])
    with pytest.raises(ConfigurationError, match="--wait_until_finish is for the DataflowRunner"):
        _resolved(["--input=x", "--output=y", "--wait_until_finish"])


def test_a_waited_for_job_that_ends_cancelled_writes_no_manifest_and_exits_1(
        tmp_path, tf1_module, monkeypatch, capsys):
    from apache_beam.runners.runner import PipelineState

    class Cancelled:
        def wait_until_finish(self):
            return PipelineState.CANCELLED

    monkeypatch.setattr(beam.Pipeline, "run", lambda self, *args, **kwargs: Cancelled())
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "the dog"}])
    assert main([f"--input={docs}", f"--output={tmp_path}/out/emb", f"--model={tf1_module}"]) == 1
    assert "bert-beam: error: the job ended CANCELLED, not DONE" in capsys.readouterr().err
    assert not (tmp_path / "out" / "emb.manifest.json").exists()


def test_a_dataflow_job_skips_only_documents_of_outputs_on_cloud_storage():
    with pytest.raises(ConfigurationError, match="--skip_embedded_in must be on Cloud Storage .*'out/emb-1'"):
        _resolved([*DATAFLOW, "--skip_embedded_in=gs://my-bucket/out/emb-0, out/emb-1"])


def test_gpu_type_needs_dataflow_or_right_fitting():
    with pytest.raises(ConfigurationError, match="the runner is not the DataflowRunner"):
        _resolved(["--input=x", "--output=y", "--gpu_type=nvidia-l4"])
    _, local = _resolved(["--input=x", "--output=y", "--gpu_type=nvidia-l4", "--right_fitting"])
    assert local.require_gpu is True
    assert local.inference_hints["accelerator"].startswith("type:nvidia-l4;count:1;")


def test_a_misconfigured_dataflow_job_exits_2_before_loading_anything(capsys):
    assert main([arg for arg in DATAFLOW if not arg.startswith("--region")] + ["--model=/nonexistent"]) == 2
    assert "bert-beam: error: --region is required" in capsys.readouterr().err


def test_beams_own_option_checks_are_configuration_errors(capsys):
    argv = [arg.replace("my-project", "My Project!") if arg.startswith("--project") else arg
            for arg in DATAFLOW]
    assert main([*argv, "--dry_run=true", "--model=/nonexistent"]) == 2
    assert "bert-beam: error: Pipeline has validations errors" in capsys.readouterr().err


def test_dry_run_is_beams_flag_typed():
    for text, expected in (("true", True), ("false", False), ("False", False)):
        options = parse_pipeline_options(["--input=x", "--output=y", f"--dry_run={text}"])
        assert dry_run_requested(options) is expected
        assert options.view_as(TestOptions).dry_run is expected  # the DataflowRunner reads this
    with pytest.raises(ConfigurationError, match="--dry_run: expected true or false"):
        dry_run_requested(parse_pipeline_options(["--input=x", "--output=y", "--dry_run=maybe"]))


def test_a_bare_dry_run_means_true_as_bert_beams_own_booleans_do():
    for flags, expected in ((["--dry_run"], True), (["--dry_run", "--num_shards=2"], True),
                            (["--dry_run", "true"], True), (["--dry_run", "false"], False)):
        options = parse_pipeline_options(["--input=x", "--output=y", *flags])
        assert dry_run_requested(options) is expected, flags
        assert options.view_as(TestOptions).dry_run is expected, flags


@pytest.mark.parametrize("flags", [["--dry_run"], ["--dry_run", "--max_seq_length=16"]],
                         ids=["last", "before-another-flag"])
def test_a_bare_dry_run_runs_nothing_and_exits_0(flags, tmp_path, tf1_module, monkeypatch, capsys):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "the dog"}])
    monkeypatch.setattr(beam.Pipeline, "run", lambda self, *a, **k: pytest.fail("a dry run ran the pipeline"))
    status = main([f"--input={docs}", f"--output={tmp_path}/out/emb", f"--model={tf1_module}", *flags])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("bert-beam: dry run; validated, nothing was run or submitted.\n")
    assert "  --dry_run=True\n" in out
    assert ("  --max_seq_length=16\n" in out) is ("--max_seq_length=16" in flags)
    assert not list((tmp_path / "out").glob("emb*"))


def test_the_launcher_reports_where_the_job_went():
    class Result:
        def job_id(self):
            return "2026-11-26_01_02_03-123"

    direct, _ = _resolved(DATAFLOW)
    assert submitted_message(Result(), direct) == (
        "bert-beam: submitted Dataflow job 2026-11-26_01_02_03-123; watch it and its bert_beam counters at "
        "https://console.cloud.google.com/dataflow/jobs/us-central1/2026-11-26_01_02_03-123?project=my-project")
    template, _ = _resolved([*DATAFLOW, "--template_location=gs://my-bucket/launch/job.json"])
    assert "wrote the Dataflow job to gs://my-bucket/launch/job.json" in submitted_message(None, template)


# --- the job graph ----------------------------------------------------------------------------------

@pytest.fixture()
def local_plan(tmp_path, tf1_module):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "the dog"}])
    return prepare_run(BertBeamOptions([f"--input={docs}", f"--output={tmp_path}/out/emb",
                                        f"--model={tf1_module}"]))


def _leaf_hints(pipeline: beam.Pipeline) -> dict[str, dict[str, bytes]]:
    leaves: dict[str, dict[str, bytes]] = {}

    class Leaves(PipelineVisitor):
        def visit_transform(self, node):
            leaves[node.full_label] = dict(node.resource_hints)

    pipeline.visit(Leaves())
    return leaves


def _dataflow_graph(local_plan, *extra: str) -> beam.Pipeline:
    """The local plan's graph as the Dataflow job with ``extra`` flags would wire it."""
    # --dry_run=true also keeps Beam's own option checks from looking at the bucket.
    options, workers = _resolved([*DATAFLOW, "--dry_run=true", *extra])
    plan = dataclasses.replace(local_plan, pipeline_options=options,
                               embedding=dataclasses.replace(local_plan.embedding, workers=workers))
    return build_pipeline(plan, beam.Pipeline(options=options))


def test_right_fitting_puts_the_gpu_hint_on_the_inference_step_only(local_plan):
    pipeline = _dataflow_graph(local_plan, "--gpu_type=nvidia-l4", "--right_fitting")
    leaves = _leaf_hints(pipeline)
    accelerator = b"type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver"
    inference = [label for label in leaves if label.startswith("EmbedDocuments/RunInference/")]
    assert inference and all(leaves[label][ACCELERATOR_URN] == accelerator for label in inference)
    # Reading, tokenizing, batching and writing stay on the job's CPU workers.
    assert not any(hints for label, hints in leaves.items()
                   if not label.startswith("EmbedDocuments/RunInference/"))
    # What Dataflow receives: the RunInference ParDo's environment carries the hint.
    proto = pipeline.to_runner_api()
    environments = {proto.components.transforms[t].environment_id for t in proto.components.transforms
                    if proto.components.transforms[t].unique_name.startswith("EmbedDocuments/RunInference/")}
    assert any(proto.components.environments[e].resource_hints.get(ACCELERATOR_URN) == accelerator
               for e in environments if e)


def test_without_right_fitting_no_transform_has_hints(local_plan):
    pipeline = _dataflow_graph(local_plan, "--gpu_type=nvidia-l4")
    assert not any(_leaf_hints(pipeline).values())
    assert "EmbedDocuments/RunInference" in graph_summary(pipeline)


def test_dry_run_prints_the_resolved_job_and_exits_0(tf1_module, monkeypatch, capsys):
    # The input listing and the output probe would read gs://; everything else runs as for real.
    monkeypatch.setattr(plan_module, "_match_input_files", lambda pattern, config: ["gs://b/1"] * 3)
    monkeypatch.setattr(plan_module, "_check_writable", lambda prefix: None)
    monkeypatch.setattr(beam.Pipeline, "run", lambda self, *a, **k: pytest.fail("a dry run ran the pipeline"))
    status = main([*DATAFLOW, f"--model={tf1_module}", "--gpu_type=nvidia-l4", "--right_fitting",
                   "--machine_type=n1-standard-4", "--dry_run=true"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("bert-beam: dry run; validated, nothing was run or submitted.\n")
    for line in ("  --experiments=use_runner_v2", f"  --sdk_container_image={IMAGE}",
                 "  --machine_type=n1-standard-4", "  --large_model=True", "  --require_gpu=True",
                 "  --disk_size_gb=50", "  --runner=DataflowRunner", "  ReadDocuments", "  WriteEmbeddings",
                 "  EmbedDocuments/RunInference [accelerator=type:nvidia-l4;count:1;"
                 "machine_type:g2-standard-8;install-nvidia-driver; min_ram_bytes=32000000000]"):
        assert line + "\n" in out, line
    assert "dataflow_service_options" not in out  # right fitting: no job-wide GPU

    status = main([*DATAFLOW, f"--model={tf1_module}", "--gpu_type=nvidia-tesla-t4", "--dry_run=true"])
    out = capsys.readouterr().out
    assert status == 0
    accelerator = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    assert f"  --dataflow_service_options={accelerator}\n" in out
    assert "  --machine_type=n1-highmem-8\n" in out


# --- the Flex Template entry point --------------------------------------------------------------------

def test_the_template_entry_point_runs_locally_with_launcher_style_parameters(tmp_path, tf1_module):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "the quick brown fox"}, {"id": "2"}])
    parameters = {"input": str(docs), "output": f"{tmp_path}/out/emb", "model": tf1_module,
                  "max_seq_length": "16", "outputs": "pooled,sequence", "require_gpu": "false",
                  "runner": "DirectRunner"}
    completed = subprocess.run(
        [sys.executable, str(REPO / "templates" / "main.py"), *(f"--{k}={v}" for k, v in parameters.items())],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = "bert-beam: read 2, embedded 1 (1 records, 0 truncated, 0 windowed), rejected 1"
    assert summary in completed.stdout
    assert list((tmp_path / "out").glob("emb-*-of-*.tfrecord"))


# --- the worker image -------------------------------------------------------------------------------

def test_the_dockerfile_pins_equal_the_lock():
    dockerfile = (REPO / "templates" / "Dockerfile").read_text()
    lock = _lock()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert bases == ["gcr.io/dataflow-templates-base/python311-template-launcher-base:20240812-rc01",
                     f"apache/beam_python3.11_sdk:{lock['apache-beam']}"]
    assert all(re.fullmatch(r"[^:]+:[\w.-]+", base) and not base.endswith(":latest") for base in bases)
    setup_python = re.search(r'python_requires=">=(\d+\.\d+)', (REPO / "setup.py").read_text())[1]
    assert setup_python == "3.11"
    assert re.findall(r'"tensorflow\[and-cuda\]==([\w.]+)"', dockerfile) == [lock["tensorflow"]]
    assert "--constraint requirements.lock" in dockerfile and "pip check" in dockerfile
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher" in dockerfile
    assert "WORKDIR /template\nCOPY templates/main.py main.py\n" in dockerfile
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py\n" in dockerfile
    assert dockerfile.rstrip().endswith('ENTRYPOINT ["/opt/apache/beam/boot"]')


def _runtime_closure() -> dict[str, str]:
    """What pip installs for bert-beam without extras: its requirements, recursively, as installed here."""
    seen: dict[str, str] = {}
    pending = [Requirement(r) for r in metadata.requires("bert-beam") or []
               if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen[name] = metadata.version(requirement.name)
        extras = requirement.extras or {""}
        for line in metadata.requires(requirement.name) or []:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                pending.append(child)
    return seen


def test_the_image_installs_a_runtime_subset_of_the_lock():
    lock, closure = _lock(), _runtime_closure()
    assert {"apache-beam", "tensorflow", "tensorflow-hub", "tensorflow-metadata"} <= set(closure)
    assert {name: version for name, version in closure.items() if lock.get(name) != version} == {}
    assert not {"pytest", "hypothesis", "ruff", "bert-tensorflow", "torch", "transformers"} & set(closure)
    assert {"tensorflow-transform", "tfx-bsl", "pyarrow"} <= set(closure)  # --whitening_dims, Parquet


# --- make image / template / dataflow-run -------------------------------------------------------------

SETTINGS = {"PROJECT": "my-project", "REGION": "us-central1", "BUCKET": "gs://my-bucket", "TAG": "v1",
            "DRY_RUN": "1"}


def _script(command: str, **settings: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "dataflow.py"), command], cwd=REPO,
                          env={**env, **SETTINGS, **settings}, capture_output=True, text=True, timeout=60)


def test_make_image_and_template_print_their_commands():
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    make = ["make", "--silent", "image", "template", *(f"{k}={v}" for k, v in SETTINGS.items())]
    printed = subprocess.run(make, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [
        "gcloud builds submit --project=my-project --config=templates/cloudbuild.yaml "
        f"--substitutions=_IMAGE={IMAGE} .",
        "gcloud dataflow flex-template build gs://my-bucket/templates/bert-beam.json --project=my-project "
        f"--image={IMAGE} --sdk-language=PYTHON --metadata-file=templates/metadata.json",
    ]


def test_a_template_launch_passes_each_value_whole():
    args = ("--input='gs://my-bucket/my docs/*.jsonl' --output=gs://my-bucket/out/emb --gpu_type=nvidia-l4 "
            "--outputs=pooled,sequence --signature_tensors=input_ids=ids,input_mask=mask --right_fitting")
    printed = _script("run", JOB_NAME="job-1", MAX_WORKERS="4", ARGS=args)
    assert printed.returncode == 0, printed.stderr
    assert shlex.split(printed.stdout) == [
        "gcloud", "dataflow", "flex-template", "run", "job-1", "--project=my-project", "--region=us-central1",
        "--template-file-gcs-location=gs://my-bucket/templates/bert-beam.json",
        "--temp-location=gs://my-bucket/tmp", "--staging-location=gs://my-bucket/staging",
        "--launcher-machine-type=n1-standard-4", "--max-workers=4",
        f"--parameters=sdk_container_image={IMAGE}", "--parameters=input=gs://my-bucket/my docs/*.jsonl",
        "--parameters=output=gs://my-bucket/out/emb", "--parameters=gpu_type=nvidia-l4",
        "--parameters=^~^outputs=pooled,sequence",
        "--parameters=^~^signature_tensors=input_ids=ids,input_mask=mask",
        "--parameters=right_fitting=true",
    ]


def test_a_direct_launch_submits_from_here():
    printed = _script("run", LAUNCH="direct", JOB_NAME="job-1", MAX_WORKERS="4", REPOSITORY="repo",
                      ARGS="--input=gs://my-bucket/docs/*.jsonl --output=gs://my-bucket/out/emb "
                      "--gpu_type=nvidia-l4")
    assert printed.returncode == 0, printed.stderr
    assert shlex.split(printed.stdout) == [
        sys.executable, "-m", "pipeline.run", "--runner=DataflowRunner", "--project=my-project",
        "--region=us-central1", "--temp_location=gs://my-bucket/tmp", "--staging_location=gs://my-bucket/staging",
        "--sdk_container_image=us-central1-docker.pkg.dev/my-project/repo/bert-beam:v1", "--job_name=job-1",
        "--max_num_workers=4", "--input=gs://my-bucket/docs/*.jsonl", "--output=gs://my-bucket/out/emb",
        "--gpu_type=nvidia-l4",
    ]


def test_the_readme_shows_the_command_make_runs():
    section = _readme_dataflow_section()
    block = re.search(r"```sh\n(gcloud dataflow flex-template run .*?)```", section, re.S)[1]
    make = re.search(r"(make dataflow-run PROJECT=.*?)\n```", section, re.S)[1]
    settings = dict(word.split("=", 1) for word in shlex.split(make.replace("\\\n", " "))[2:])
    printed = _script("run", JOB_NAME="bert-beam-20261126-120000", **settings)
    assert shlex.split(printed.stdout) == shlex.split(block.replace("\\\n", " "))


@pytest.mark.parametrize("command, unset, message", [
    ("image", "PROJECT", "PROJECT is required"),
    ("template", "BUCKET", "BUCKET is required"),
    ("run", "REGION", "REGION is required"),
])
def test_missing_settings_are_named(command, unset, message):
    printed = _script(command, **{unset: ""})
    assert printed.returncode == 2 and message in printed.stderr and not printed.stdout


def test_template_args_must_be_flags():
    printed = _script("run", ARGS="--input=gs://my-bucket/x stray")
    assert printed.returncode == 2 and "ARGS takes --name=value flags; got 'stray'" in printed.stderr


# --- the worker's device ------------------------------------------------------------------------------

def test_without_a_gpu_the_worker_embeds_on_cpu_or_fails_clearly():
    assert configure_gpus(require_gpu=False) == "CPU (no GPU visible)"
    with pytest.raises(GpuUnavailableError, match="--require_gpu is set but TensorFlow sees no GPU"):
        configure_gpus(require_gpu=True)


def test_every_visible_gpu_gets_memory_growth(monkeypatch):
    import tensorflow as tf

    gpus = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
            tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU")]
    grown = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                        lambda gpu, on: grown.append((gpu.name, on)))
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda gpu: {"device_name": "NVIDIA L4", "compute_capability": (8, 9)})
    assert configure_gpus(require_gpu=True) == "/GPU:0 (NVIDIA L4, compute capability 8.9) of 2 visible"
    assert grown == [("/physical_device:GPU:0", True), ("/physical_device:GPU:1", True)]


@pytest.mark.parametrize("command", ["image", "template", "run"])
def test_launch_commands_never_print_credentials_or_the_environment(command):
    secrets = {"GOOGLE_APPLICATION_CREDENTIALS": "/home/me/secret-key.json",
               "CLOUDSDK_AUTH_ACCESS_TOKEN": "ya29.secret-token", "API_TOKEN": "s3cr3t-value"}
    finished = _script(command, **secrets, ARGS="--input=gs://my-bucket/docs/*.jsonl")
    assert finished.returncode == 0, finished.stderr
    printed = finished.stdout + finished.stderr
    for name, value in secrets.items():
        assert value not in printed and name not in printed
