"""Quiet TensorFlow start-up: the C++ notices TensorFlow prints while it loads follow TF_CPP_MIN_LOG_LEVEL.

TensorFlow's libraries log through absl before ``absl::InitializeLog()`` is called, and such
messages ignore TF_CPP_MIN_LOG_LEVEL: every process that imports TensorFlow prints absl's
"All log messages before absl::InitializeLog() ..." notice, oneDNN's and the CUDA stub's INFO
lines (twice, once per library), and on a machine without a GPU ``failed call to cuInit``.
bert-beam defaults TF_CPP_MIN_LOG_LEVEL to 2 (a level the user set is kept) and applies it itself
to what file descriptor 2 receives while TensorFlow loads and finds its devices.
TF_CPP_MIN_LOG_LEVEL=0 shows everything.

The ``transforms`` and ``pipeline`` packages install this on import, so every process that runs
bert-beam code (the launcher, DirectRunner worker processes, Dataflow workers unpickling our DoFns)
is covered before it first imports TensorFlow, which bert-beam's modules import lazily.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["DEFAULT_LOG_LEVEL", "LOG_LEVEL_VARIABLE", "hidden", "install", "tensorflow_log_level"]

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "2"
# absl's and glog's prefix: severity letter, then a date (0000 before absl::InitializeLog()).
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} ")
_SEVERITIES = b"IWEF"
_PRE_INIT_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CUINIT_FAILURE = b"failed call to cuInit"


def tensorflow_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it: 0 (everything) unless it names 1, 2 or 3."""
    try:
        return max(0, int(os.environ.get(LOG_LEVEL_VARIABLE, "0")))
    except ValueError:
        return 0


def install() -> None:
    """Defaults TF_CPP_MIN_LOG_LEVEL to 2 and, unless it is 0, quiets this process's first
    ``import tensorflow`` and the Python notices that come with loading models."""
    os.environ.setdefault(LOG_LEVEL_VARIABLE, DEFAULT_LOG_LEVEL)
    level = tensorflow_log_level()
    if level == 0:
        return
    # Python's share of the chatter: tensorflow_hub's import-time notice (requirements.in pins
    # setuptools below the removal) and the SavedModel loader's "Fingerprint not found" INFO lines.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    logging.getLogger("absl").setLevel(logging.WARNING)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder(level))


def hidden(line: bytes, level: int, gpu_present: bool) -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL ``level`` hides a start-up line: absl lines below it, absl's
    pre-init notice, and the cuInit failure on a machine without a GPU (kept where one exists)."""
    if level == 0:
        return False
    if line.rstrip() == _PRE_INIT_NOTICE:
        return True
    match = _ABSL_LINE.match(line)
    if match is None:
        return False
    if _CUINIT_FAILURE in line and not gpu_present:
        return True
    return _SEVERITIES.index(match[1]) < level


def _gpu_present() -> bool:
    """An NVIDIA device node exists (as on Dataflow's GPU workers)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


@contextlib.contextmanager
def _stderr_filtered(level: int) -> Iterator[None]:
    """Collects what file descriptor 2 receives, then writes back the lines ``level`` keeps
    (every line if the block raises)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    complete = False
    with tempfile.TemporaryFile() as capture:
        _flush_stderr()
        os.dup2(capture.fileno(), 2)
        try:
            yield
            complete = True
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().splitlines(keepends=True)
            if complete:
                gpu_present = _gpu_present()
                lines = [line for line in lines if not hidden(line, level, gpu_present)]
            os.write(2, b"".join(lines))


def _flush_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and has ``_QuietLoader`` load it. Once it is
    imported, Python finds it in ``sys.modules`` and asks no finder again."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._finding = False

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname != "tensorflow" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self._level)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's ``__init__`` and its first device lookup (where cuInit runs) under the filter."""

    def __init__(self, loader: importlib.abc.Loader, level: int) -> None:
        self._loader = loader
        self._level = level

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader
        with _stderr_filtered(self._level):
            self._loader.exec_module(module)
            module.config.list_physical_devices()
