"""How fast a shared model's outputs reach the calling process: Beam's proxy against shared memory.

With ``--large_model`` one model copy serves every SDK process of a worker through Beam's
``multi_process_shared`` proxy. This measures only the crossing: a served object holds a batch's
outputs ready and hands them over either as the proxy's return value (pickled through the manager
process) or as a shared memory block (``transforms.shared_outputs``), for BERT-Large-sized batches.
Medians of several transfers, side by side in one run; the arrays are made once, before the clock.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import uuid

import ml_dtypes
import numpy as np
from results import Report

from transforms.shared_outputs import ATTACHED_BLOCKS, OutputBlock, put_arrays, take_arrays

HIDDEN = 1024
# (rows, tokens per row, sequence dtype): batches a BERT-Large run hands back.
BATCHES = ((32, 128, np.float32), (32, 512, np.float32), (32, 512, ml_dtypes.bfloat16))
TARGET_GB_PER_S = 1.5


class ServedOutputs:
    """Stands for a shared model: holds one batch's outputs and hands them over on request."""

    def __init__(self) -> None:
        self._outputs: dict[str, np.ndarray] = {}

    def prepare(self, rows: int, tokens: int, dtype_name: str) -> int:
        rng = np.random.default_rng(0)
        self._outputs = {
            "pooled_output": rng.standard_normal((rows, HIDDEN), np.float32),
            "sequence_output": rng.standard_normal((rows, tokens, HIDDEN), np.float32).astype(
                np.dtype(dtype_name)),
        }
        return sum(array.nbytes for array in self._outputs.values())

    def outputs(self) -> dict[str, np.ndarray]:
        return self._outputs

    def outputs_in_shared_memory(self, block: str, capacity: int):
        """As ``LoadedBert.call_into_shared_memory`` hands them over (a one-off block without one)."""
        return ATTACHED_BLOCKS.write(block, capacity, self._outputs) if block else put_arrays(self._outputs)


def _through_block(served, block: OutputBlock) -> dict[str, np.ndarray]:
    """What the model handler does with a shared model: into its thread's block, and out."""
    return block.read(served.outputs_in_shared_memory(*block.target()))


def _median_seconds(transfer, repeats: int) -> float:
    transfer()  # the first transfer of a shape warms the manager's buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        transfer()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from apache_beam.utils.multi_process_shared import MultiProcessShared

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer repeats, not recorded.")
    parser.add_argument("--repeats", type=int, default=None,
                        help="Transfers per figure (default 15; 3 quick).")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 15)
    report = Report("shared_transfer", args.quick)
    served = MultiProcessShared(ServedOutputs, tag=f"bench-{uuid.uuid4().hex}", always_proxy=True).acquire()
    report.add(f"- a served object in Beam's multi_process_shared manager process; medians of {repeats} "
               "transfers of one batch's pooled_output [B, 1024] float32 and sequence_output [B, T, 1024]")
    for rows, tokens, dtype in BATCHES:
        size = served.prepare(rows, tokens, np.dtype(dtype).name)
        proxy = _median_seconds(served.outputs, repeats)
        one_off = _median_seconds(lambda: take_arrays(served.outputs_in_shared_memory("", 0)), repeats)
        shared = _median_seconds(functools.partial(_through_block, served, OutputBlock()), repeats)
        gigabytes = size / 1e9
        verdict = "met" if gigabytes / shared >= TARGET_GB_PER_S else "MISSED"
        line = (f"- {rows}×{tokens}×{HIDDEN} {np.dtype(dtype).name} ({size / 1e6:.0f} MB): proxy (pickle) "
                f"{proxy * 1000:.0f} ms, **{gigabytes / proxy:.2f} GB/s**; a new shared memory block per "
                f"batch {one_off * 1000:.0f} ms, {gigabytes / one_off:.2f} GB/s; the caller's reused block "
                f"(bert-beam) {shared * 1000:.0f} ms, **{gigabytes / shared:.2f} GB/s** (target ≥ "
                f"{TARGET_GB_PER_S}: {verdict}), {proxy / shared:.1f}× the proxy")
        report.add(line)
    report.write()


if __name__ == "__main__":
    main()
