"""Numpy arrays handed from a shared model's process to its caller through shared memory.

Beam's ``multi_process_shared`` proxy pickles every result through a manager process (about
200 MB/s measured here), which would cap a shared BERT-Large's ``sequence_output``. Instead the
model's process writes a batch's outputs into one ``SharedMemory`` block and returns only its
name and layout; the caller copies them out and unlinks the block.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

NAME_PREFIX = "bert_beam_"  # so that a block left by a killed caller can be told apart in /dev/shm
_ALIGNMENT = 64


@dataclass(frozen=True)
class SharedArrays:
    """Where arrays lie in a shared memory block: ``(key, shape, dtype, offset)`` each."""

    block: str
    layout: tuple[tuple[str, tuple[int, ...], np.dtype, int], ...]


def put_arrays(arrays: Mapping[str, np.ndarray]) -> SharedArrays:
    """Copies ``arrays`` into a new shared memory block that ``take_arrays`` will free."""
    layout = []
    offset = 0
    for key, array in arrays.items():
        layout.append((key, tuple(array.shape), array.dtype, offset))  # bfloat16 has no .str of its own
        offset += -(-array.nbytes // _ALIGNMENT) * _ALIGNMENT
    block = shared_memory.SharedMemory(name=f"{NAME_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}",
                                       create=True, size=max(offset, 1))
    # The caller unlinks it; this process's resource tracker must not unlink it again at exit.
    resource_tracker.unregister(block._name, "shared_memory")
    try:
        for (_, shape, dtype, start), array in zip(layout, arrays.values(), strict=True):
            np.ndarray(shape, dtype, buffer=block.buf, offset=start)[...] = array
    finally:
        block.close()
    return SharedArrays(block.name, tuple(layout))


def take_arrays(shared: SharedArrays) -> dict[str, np.ndarray]:
    """Copies the arrays out of their shared memory block and frees it."""
    block = shared_memory.SharedMemory(name=shared.block)
    try:
        return {key: np.ndarray(shape, dtype, buffer=block.buf, offset=start).copy()
                for key, shape, dtype, start in shared.layout}
    finally:
        block.close()
        block.unlink()
