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
    average at the start and the end, and the CPU that other processes used during the run
    (the machine's busy time from /proc/stat less this process tree's own CPU time).
    """

    def __init__(self, name: str, quick: bool) -> None:
        self.name = name
        self.quick = quick
        self.start_load = load_average()
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
            f"during the run",
        ]
        text = "\n".join(header + self.lines) + "\n\n"
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(text)
        print(f"appended to {RESULTS}")


def save_json(name: str, data: dict) -> str:
    """Writes ``data`` to .cache/bench/NAME.json for other scripts (plot.py) to read."""
    path = os.path.join(cache_dir(), f"{name}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    return path


def load_json(name: str) -> dict | None:
    path = os.path.join(cache_dir(), f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
