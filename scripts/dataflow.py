"""Builds the worker image and the Flex Template, and launches jobs: `make image|template|dataflow-run`.

Settings come from the environment (make passes its command-line variables there):

  PROJECT, REGION       the Google Cloud project and Dataflow region (all commands)
  BUCKET                gs://BUCKET for the template, temp and staging files (template, run)
  REPOSITORY            Artifact Registry Docker repository in REGION (default bert-beam)
  TAG                   image tag (default: the git commit); IMAGE overrides the whole image URI
  TEMPLATE              template spec path (default gs://BUCKET/templates/bert-beam.json)
  JOB_NAME              Dataflow job name (default bert-beam-YYYYMMDD-HHMMSS, UTC)
  LAUNCH                template (default: gcloud dataflow flex-template run) or direct (submit from here)
  MAX_WORKERS           the job's worker limit (optional)
  ARGS                  bert-beam flags for the job, e.g. '--input=gs://B/docs/*.jsonl --gpu_type=nvidia-l4'
  DRY_RUN=1             print the commands instead of running them

Every value reaches gcloud or Python as one argv item: no shell ever parses it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_MACHINE_TYPE = "n1-standard-4"  # the launcher loads the model to check it: BERT-Large needs >4 GB


class SettingsError(ValueError):
    """A required setting is missing or malformed."""


def _setting(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip() or default
    if not value:
        raise SettingsError(f"{name} is required, e.g. make ... {name}=...")
    return value


def _bucket(env: Mapping[str, str]) -> str:
    bucket = _setting(env, "BUCKET").removesuffix("/")
    return bucket if bucket.startswith("gs://") else f"gs://{bucket}"


def _git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    return result.stdout.strip()


def image_uri(env: Mapping[str, str]) -> str:
    """REGION-docker.pkg.dev/PROJECT/REPOSITORY/bert-beam:TAG, unless IMAGE names one."""
    if env.get("IMAGE"):
        return env["IMAGE"]
    tag = env.get("TAG") or _git_commit()
    if not tag:
        raise SettingsError("TAG is required outside a git checkout, e.g. make image TAG=v1")
    return (f"{_setting(env, 'REGION')}-docker.pkg.dev/{_setting(env, 'PROJECT')}/"
            f"{_setting(env, 'REPOSITORY', 'bert-beam')}/bert-beam:{tag}")


def _template(env: Mapping[str, str]) -> str:
    return env.get("TEMPLATE") or f"{_bucket(env)}/templates/bert-beam.json"


def image_commands(env: Mapping[str, str]) -> list[list[str]]:
    """Cloud Build builds templates/Dockerfile from the repository root and pushes the image."""
    return [["gcloud", "builds", "submit", f"--project={_setting(env, 'PROJECT')}",
             "--config=templates/cloudbuild.yaml", f"--substitutions=_IMAGE={image_uri(env)}", "."]]


def template_commands(env: Mapping[str, str]) -> list[list[str]]:
    """The Flex Template spec: the image (which is also the launcher) and metadata.json."""
    return [["gcloud", "dataflow", "flex-template", "build", _template(env),
             f"--project={_setting(env, 'PROJECT')}", f"--image={image_uri(env)}", "--sdk-language=PYTHON",
             "--metadata-file=templates/metadata.json"]]


def run_commands(env: Mapping[str, str], python: str = sys.executable) -> list[list[str]]:
    """One job, launched from the template (LAUNCH=template) or submitted from here (LAUNCH=direct)."""
    project, region, bucket = _setting(env, "PROJECT"), _setting(env, "REGION"), _bucket(env)
    job_name = env.get("JOB_NAME") or datetime.now(UTC).strftime("bert-beam-%Y%m%d-%H%M%S")
    flags = shlex.split(env.get("ARGS", ""))
    launch = env.get("LAUNCH", "template")
    if launch == "direct":
        command = [python, "-m", "pipeline.run", "--runner=DataflowRunner", f"--project={project}",
                   f"--region={region}", f"--temp_location={bucket}/tmp",
                   f"--staging_location={bucket}/staging", f"--sdk_container_image={image_uri(env)}",
                   f"--job_name={job_name}"]
        if env.get("MAX_WORKERS"):
            command.append(f"--max_num_workers={env['MAX_WORKERS']}")
        return [command + flags]
    if launch != "template":
        raise SettingsError(f"LAUNCH must be template or direct, not {launch!r}")
    command = ["gcloud", "dataflow", "flex-template", "run", job_name, f"--project={project}",
               f"--region={region}", f"--template-file-gcs-location={_template(env)}",
               f"--temp-location={bucket}/tmp", f"--staging-location={bucket}/staging",
               f"--launcher-machine-type={LAUNCHER_MACHINE_TYPE}"]
    if env.get("MAX_WORKERS"):
        command.append(f"--max-workers={env['MAX_WORKERS']}")
    parameters = [("sdk_container_image", image_uri(env)), *template_parameters(flags)]
    return [command + [parameter_flag(name, value) for name, value in parameters]]


def template_parameters(flags: Sequence[str]) -> list[tuple[str, str]]:
    """``--name=value`` (or a bare ``--name``, meaning true) → (name, value) template parameters."""
    parameters = []
    for flag in flags:
        if not flag.startswith("--") or len(flag) == 2:
            raise SettingsError(f"ARGS takes --name=value flags; got {flag!r}")
        name, separator, value = flag[2:].partition("=")
        parameters.append((name, value if separator else "true"))
    return parameters


def parameter_flag(name: str, value: str) -> str:
    """One ``--parameters`` flag; a value with commas gets gcloud's ``^DELIM^`` escape so it stays whole."""
    pair = f"{name}={value}"
    if "," not in pair:
        return f"--parameters={pair}"
    delimiter = next(d for d in "~|#@!%" if d not in pair)
    return f"--parameters=^{delimiter}^{pair}"


COMMANDS = {"image": image_commands, "template": template_commands, "run": run_commands}


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(f"usage: scripts/dataflow.py {{{'|'.join(COMMANDS)}}}  (settings: see the docstring)",
              file=sys.stderr)
        return 2
    try:
        commands = COMMANDS[argv[0]](env)
    except SettingsError as error:
        print(f"dataflow.py: error: {error}", file=sys.stderr)
        return 2
    for command in commands:
        print(shlex.join(command), flush=True)
        if env.get("DRY_RUN") not in (None, "", "0"):
            continue
        completed = subprocess.run(command, cwd=REPO, check=False)
        if completed.returncode:
            return completed.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
