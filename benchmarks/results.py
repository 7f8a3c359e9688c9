"""Reporting for the benchmarks: machine details, the exact command, RESULTS.md and JSON files."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from datetime import UTC, datetime

from cached_models import cache_dir

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, /proc/stat)."""
    with open("/proc/stat", encoding="utf-8") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and of its finished children (pipeline workers, probes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def matmul_gflops(seconds: float = 1.5) -> float:
    """Best float32 GFLOP/s of a 1024² TensorFlow matmul: how fast the machine is right now.

    This virtual machine's speed drifts with its host's load (clock boost, steal) even when
    nothing else runs inside it, so each report states it at its start and its end.
    """
    import tensorflow as tf

    a = tf.random.normal((1024, 1024))
    tf.matmul(a, a).numpy()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        tf.matmul(a, a).numpy()
        best = max(best, 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
    return best


def machine_line() -> str:
    import tensorflow as tf

    return (f"- machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def command_line() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(os.path.dirname(RESULTS)))
    return shlex.join([".venv/bin/python", script, *sys.argv[1:]])


class Report:
    """Collects a benchmark's figures; prints each as it comes and appends them all to RESULTS.md.

    A ``--quick`` smoke run prints but does not append: its figures are not measurements.

    Other work on the machine shows next to the figures it may have disturbed: the load
    average at the start and the end, the CPU that other processes used during the run
    (the machine's busy time from /proc/stat less this process tree's own CPU time), and a
    matmul rate at the start and the end (the host's load changes this VM's speed too).
    """

    def __init__(self, name: str, quick: bool) -> None:
        self.name = name
        self.quick = quick
        self.start_load = load_average()
        self.start_gflops = matmul_gflops()
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def other_cores(self) -> float:
        """Cores other processes kept busy, on average, since this report started."""
        wall, busy, own = self._start
        elapsed = time.perf_counter() - wall
        return max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own)) / elapsed

    def write(self) -> None:
        if self.quick:
            print("(--quick: a smoke run, not appended to RESULTS.md)")
            return
        header = [
            f"## {self.name} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            machine_line(),
            f"- command: `{command_line()}`",
            f"- load average (1, 5, 15 min) at start: {self.start_load}; at end: {load_average()}; "
            f"{self.other_cores():.2f} of {os.cpu_count()} cores used by other processes on average "
            f"during the run; machine speed (TensorFlow matmul) {self.start_gflops:.0f} GFLOP/s at start, "
            f"{matmul_gflops():.0f} at end",
        ]
        text = "\n".join(header + self.lines) + "\n\n"
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(text)
        print(f"appended to {RESULTS}")


def save_json(name: str, data: dict, quick: bool = False) -> str:
    """Writes ``data`` to .cache/bench/NAME.json (NAME-quick.json for a smoke run) for plot.py."""
    path = os.path.join(cache_dir(), f"{name}{'-quick' if quick else ''}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    return path


def load_json(name: str) -> dict | None:
    """The data of the last full run, else of the last smoke run, else None."""
    for suffix in ("", "-quick"):
        path = os.path.join(cache_dir(), f"{name}{suffix}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
    return None
