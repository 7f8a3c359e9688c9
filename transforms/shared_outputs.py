"""Numpy arrays handed from a shared model's process to its caller through shared memory.

Beam's ``multi_process_shared`` proxy pickles every result through a manager process (about
200 MB/s measured here), which would cap a shared BERT-Large's ``sequence_output``. Instead each
calling thread keeps one shared memory block (an ``OutputBlock``); the model's process writes a
batch's outputs into it and returns only their layout, and the caller copies them out. The block
is reused from batch to batch: a fresh block's pages cost more to fault in than the copies
(``benchmarks/shared_transfer.py``). A batch larger than the block goes into a one-off block, and
the caller's block grows for the next one. A caller frees its blocks when its handler is
collected or its process exits; one killed outright leaves them in /dev/shm (``bert_beam_*``).

The batch's inputs travel the same way, through the caller's block, once it has one: a call whose
pickled arguments exceed 16 KiB goes out as two socket writes, and Nagle's algorithm holds the
second until the server's delayed acknowledgement, about 40 ms a call on Linux.
"""

from __future__ import annotations

import mmap
import os
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ATTACHED_BLOCKS", "NAME_PREFIX", "OutputBlock", "SharedArrays", "put_arrays", "take_arrays"]

NAME_PREFIX = "bert_beam_"  # so that a block left by a killed caller can be told apart in /dev/shm
_ALIGNMENT = 64
_ATTACHED_LIMIT = 32  # blocks the model's process keeps mapped, most recently used first
_GROWTH = 1.25


@dataclass(frozen=True)
class SharedArrays:
    """Where arrays lie in a shared memory block: ``(key, shape, dtype, offset)`` each.

    ``one_off`` blocks were made for this batch alone, and the reader frees them.
    """

    block: str
    layout: tuple[tuple[str, tuple[int, ...], np.dtype, int], ...]
    one_off: bool = True


def _layout(arrays: Mapping[str, np.ndarray]) -> tuple[tuple, int]:
    layout, offset = [], 0
    for key, array in arrays.items():
        layout.append((key, tuple(array.shape), array.dtype, offset))  # bfloat16 has no .str of its own
        offset += -(-array.nbytes // _ALIGNMENT) * _ALIGNMENT
    return tuple(layout), offset


class _Block:
    """A POSIX shared memory object mapped into this process.

    Not ``multiprocessing.shared_memory``: its resource tracker (shared by a process tree, or one
    per process) would unlink a block when a process that merely mapped it exits, or complain
    when another process frees it. Here the caller alone frees its blocks.
    """

    def __init__(self, name: str, create: bool = False, size: int = 0) -> None:
        import _posixshmem  # what multiprocessing.shared_memory itself calls on POSIX

        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        descriptor = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(descriptor, size)
            self.size = os.fstat(descriptor).st_size
            self._map = mmap.mmap(descriptor, self.size)
        finally:
            os.close(descriptor)
        self.name = name
        self.buf = memoryview(self._map)

    def close(self) -> None:
        self.buf.release()
        self._map.close()

    def unlink(self) -> None:
        import _posixshmem

        _posixshmem.shm_unlink("/" + self.name)


def _new_name() -> str:
    return f"{NAME_PREFIX}{os.getpid()}_{threading.get_ident()}_{uuid.uuid4().hex[:12]}"


def _copy_in(block: _Block, layout: tuple, arrays: Mapping[str, np.ndarray]) -> None:
    for (_, shape, dtype, start), array in zip(layout, arrays.values(), strict=True):
        np.ndarray(shape, dtype, buffer=block.buf, offset=start)[...] = array


def _copy_out(block: _Block, layout: tuple) -> dict[str, np.ndarray]:
    return {key: np.ndarray(shape, dtype, buffer=block.buf, offset=start).copy()
            for key, shape, dtype, start in layout}


def put_arrays(arrays: Mapping[str, np.ndarray]) -> SharedArrays:
    """Copies ``arrays`` into a new shared memory block that ``take_arrays`` will free."""
    layout, size = _layout(arrays)
    block = _Block(_new_name(), create=True, size=max(size, 1))
    try:
        _copy_in(block, layout, arrays)
    finally:
        block.close()
    return SharedArrays(block.name, layout)


def take_arrays(shared: SharedArrays) -> dict[str, np.ndarray]:
    """Copies the arrays out of their one-off shared memory block and frees it."""
    block = _Block(shared.block)
    try:
        return _copy_out(block, shared.layout)
    finally:
        block.close()
        block.unlink()


class _AttachedBlocks:
    """The callers' blocks that the model's process has mapped, by name (bounded, LRU)."""

    def __init__(self) -> None:
        self._blocks: OrderedDict[str, _Block] = OrderedDict()
        self._lock = threading.Lock()

    def write(self, name: str, capacity: int, arrays: Mapping[str, np.ndarray]) -> SharedArrays:
        layout, size = _layout(arrays)
        if size > capacity:
            return put_arrays(arrays)
        _copy_in(self._attach(name), layout, arrays)
        return SharedArrays(name, layout, one_off=False)

    def read(self, shared: SharedArrays) -> dict[str, np.ndarray]:
        """Copies of the arrays a caller put in its block (``OutputBlock.put``)."""
        return _copy_out(self._attach(shared.block), shared.layout)

    def _attach(self, name: str) -> _Block:
        with self._lock:
            block = self._blocks.pop(name, None)
            if block is None:
                block = _Block(name)
                # A caller's new block replaces its old one: let go of that mapping (and its pages).
                stem = name.rsplit("_", 1)[0]
                for old in [old for old in self._blocks if old.rsplit("_", 1)[0] == stem]:
                    self._blocks.pop(old).close()
            self._blocks[name] = block
            while len(self._blocks) > _ATTACHED_LIMIT:
                self._blocks.popitem(last=False)[1].close()
            return block


ATTACHED_BLOCKS = _AttachedBlocks()


class OutputBlock:
    """The calling side: one reusable block per thread, freed with this object (or at exit).

    Pickled (with the model handler, to each worker) it starts empty in its new process.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._made: list[_Block] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _free_all, self._made, self._lock)

    def __reduce__(self):
        return OutputBlock, ()

    def target(self) -> tuple[str, int]:
        """This thread's block (made on first use): its name and capacity."""
        block = getattr(self._local, "block", None)
        if block is None:
            return "", 0
        return block.name, block.size

    def put(self, arrays: Mapping[str, np.ndarray]) -> SharedArrays | Mapping[str, np.ndarray]:
        """The batch's inputs placed in this thread's block for the model's process, or the arrays
        themselves (to be pickled) while the block is missing or too small."""
        layout, size = _layout(arrays)
        self._local.input_size = size
        block = getattr(self._local, "block", None)
        if block is None or size > block.size:
            return arrays
        _copy_in(block, layout, arrays)
        return SharedArrays(block.name, layout, one_off=False)

    def read(self, shared: SharedArrays) -> dict[str, np.ndarray]:
        """The arrays the model's process wrote; a one-off batch grows this thread's block."""
        if shared.one_off:
            arrays = take_arrays(shared)
            output_size = sum(array.nbytes + _ALIGNMENT for array in arrays.values())
            self._grow(max(output_size, getattr(self._local, "input_size", 0)))
            return arrays
        return _copy_out(self._local.block, shared.layout)

    def _grow(self, size: int) -> None:
        block = _Block(_new_name(), create=True, size=int(size * _GROWTH))
        old = getattr(self._local, "block", None)
        self._local.block = block
        with self._lock:
            self._made.append(block)
            if old is not None:
                self._made.remove(old)
                _free(old)


def _free_all(blocks: list[_Block], lock: threading.Lock) -> None:
    with lock:
        for block in blocks:
            _free(block)
        blocks.clear()


def _free(block: _Block) -> None:
    try:
        block.close()
        block.unlink()
    except (FileNotFoundError, BufferError):  # already freed, or still read by a late view
        pass
