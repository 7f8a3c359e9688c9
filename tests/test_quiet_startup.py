"""TensorFlow's C++ start-up chatter stays out of stderr, in the launcher and in worker processes,
unless TF_CPP_MIN_LOG_LEVEL=0 asks for it; the report and the summary line are unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import write_jsonl

from transforms.quiet_tensorflow import hidden

REPO = Path(__file__).resolve().parent.parent
CHATTER = ("All log messages before absl::InitializeLog()", "failed call to cuInit",
           "Could not find cuda drivers", "oneDNN custom operations", "cpu_feature_guard")
PRE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
CUINIT = (b"E0000 00:00:1796164204.955061    2984 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
          b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")


def _python(*args: str, **settings: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository, with TF_CPP_MIN_LOG_LEVEL only as ``settings`` give it."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env={**env, **settings},
                          capture_output=True, text=True, timeout=600)


def _chatter(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(text in line for text in CHATTER)]


def test_the_level_applies_to_the_lines_tensorflow_prints_before_absl_is_initialised():
    info = b"I0000 00:00:1796164200.650470    2984 cudart_stub.cc:31] Could not find cuda drivers\n"
    warning = b"W0000 00:00:1796164200.650470    2984 x.cc:1] a warning\n"
    error = b"E0000 00:00:1796164200.650470    2984 x.cc:1] an error\n"
    assert [hidden(line, 2, gpu_present=False) for line in (PRE_INIT, info, warning, error)] == [
        True, True, True, False]
    assert [hidden(line, 1, gpu_present=False) for line in (info, warning)] == [True, False]
    assert not any(hidden(line, 0, gpu_present=False) for line in (PRE_INIT, info, CUINIT))
    assert hidden(error, 3, gpu_present=False)
    assert not hidden(b"Traceback (most recent call last):\n", 3, gpu_present=False)
    # cuInit failing is news on a machine with a GPU, and none on one without.
    assert hidden(CUINIT, 2, gpu_present=False) and not hidden(CUINIT, 2, gpu_present=True)


def test_importing_tensorflow_is_quiet_unless_the_user_asks_for_its_logs():
    probe = ("import os, transforms, tensorflow as tf; tf.constant(1.0) + 1; "
             "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    quiet = _python("-c", probe)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.split() == ["2"] and _chatter(quiet.stderr) == []
    chatty = _python("-c", probe, TF_CPP_MIN_LOG_LEVEL="0")
    assert chatty.returncode == 0, chatty.stderr[-3000:]
    assert chatty.stdout.split() == ["0"]  # the user's level is kept
    assert "All log messages before absl::InitializeLog() is called" in chatty.stderr


def test_a_run_in_two_worker_processes_prints_no_tensorflow_start_up_lines(tmp_path, tf1_module):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": str(i), "text": "the fox"} for i in range(6)])
    completed = _python("-m", "pipeline.run", f"--input={docs}", f"--output={tmp_path}/out/emb",
                        f"--model={tf1_module}", "--max_seq_length=16", "--direct_num_workers=2",
                        "--direct_running_mode=multi_processing")
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = "bert-beam: read 6, embedded 6 (6 records, 0 truncated, 0 windowed), rejected 0"
    assert summary in completed.stdout
    assert _chatter(completed.stderr) == []
