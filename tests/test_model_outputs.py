"""Outputs computed in the model call (only those written, mean and 16-bit casts there), and
outputs of a shared model crossing through shared memory."""

from __future__ import annotations

import gc
import glob
import os

import ml_dtypes
import numpy as np
import pytest
from helpers import run_pipeline, write_jsonl

from pipeline.reader import read_embeddings
from transforms.batching import BatchingConfig
from transforms.features import pad_batch
from transforms.model_handler import BertModelHandler
from transforms.model_loading import LoadedBert, ModelConfig
from transforms.model_outputs import OutputRequest
from transforms.records import Features
from transforms.shared_outputs import NAME_PREFIX, put_arrays, take_arrays

HALF = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _batch() -> list[Features]:
    return [Features(f"d{n}", np.array([2] + [40 + n] * n + [3], np.int32), np.zeros(n + 2, np.int32))
            for n in (1, 5, 9)]


@pytest.mark.parametrize("kinds", [("mean",), ("pooled",), ("sequence",), ("pooled", "mean", "sequence")])
@pytest.mark.parametrize("shared", [False, True], ids=["own copy", "shared memory"])
def test_the_handler_returns_only_the_requested_outputs_equal_to_the_plain_call(tf1_module, kinds, shared):
    model = LoadedBert(ModelConfig(tf1_module))
    batch = _batch()
    plain = model(pad_batch(batch, 16))
    handler = BertModelHandler(ModelConfig(tf1_module), BatchingConfig(16, bucket_boundaries=()),
                               outputs=OutputRequest(kinds), large_model=shared)
    for row, result in enumerate(handler.run_inference(batch, model)):
        n = batch[row].sequence_length
        want = {"pooled": ("pooled_output", plain["pooled_output"][row]),
                "mean": ("computed_mean", plain["sequence_output"][row, :n].mean(axis=0)),
                "sequence": ("sequence_output", plain["sequence_output"][row, :n])}
        assert result.features is batch[row]
        computed = {name for name in ("pooled_output", "computed_mean", "sequence_output")
                    if getattr(result, name) is not None}
        assert computed == {want[kind][0] for kind in kinds}
        for kind in kinds:
            name, value = want[kind]
            assert getattr(result, name).dtype == np.float32
            np.testing.assert_allclose(getattr(result, name), value, atol=1e-6)


@pytest.mark.parametrize("sequence_dtype", sorted(HALF))
def test_16_bit_sequence_output_is_cast_in_the_model_call_and_only_cast(tf1_module, sequence_dtype):
    model = LoadedBert(ModelConfig(tf1_module))
    arrays = pad_batch(_batch(), 16)
    half = model(arrays, OutputRequest(("sequence",), sequence_dtype))["sequence_output"]
    assert half.dtype == np.dtype(HALF[sequence_dtype])
    # Round to nearest even, as numpy and ml_dtypes cast: the same bits.
    expected = model(arrays)["sequence_output"].astype(HALF[sequence_dtype])
    np.testing.assert_array_equal(half.view(np.uint16), expected.view(np.uint16))


def test_a_callers_block_grows_once_then_is_reused_and_freed_with_it():
    from transforms.shared_outputs import ATTACHED_BLOCKS, OutputBlock

    block = OutputBlock()
    batches = [{"s": np.full((rows, 8, 16), rows, np.float32)} for rows in (2, 4, 3, 4, 1)]
    names = []
    for arrays in batches:
        shared = ATTACHED_BLOCKS.write(*block.target(), arrays)
        names.append((shared.block, shared.one_off))
        np.testing.assert_array_equal(block.read(shared)["s"], arrays["s"])
    # One-off for the first batch and the first larger one; the caller's own block otherwise.
    assert [one_off for _, one_off in names] == [True, True, False, False, False]
    own = names[2][0]
    assert {name for name, _ in names[2:]} == {own} and glob.glob(f"/dev/shm/{own}")
    del block
    gc.collect()
    assert not glob.glob(f"/dev/shm/{own}")


def test_inputs_cross_through_the_callers_block_once_it_has_one_big_enough():
    from transforms.shared_outputs import ATTACHED_BLOCKS, OutputBlock, SharedArrays

    block = OutputBlock()
    inputs = {"input_ids": np.arange(96, dtype=np.int32).reshape(4, 24),
              "input_mask": np.ones((4, 24), np.int32)}
    assert block.put(inputs) is inputs  # no block yet: the arrays themselves are pickled
    block.read(ATTACHED_BLOCKS.write(*block.target(), {"pooled": np.ones((4, 2), np.float32)}))
    placed = block.put(inputs)  # the block grew to hold the inputs as well as the outputs
    assert isinstance(placed, SharedArrays) and placed.block == block.target()[0] and not placed.one_off
    served = ATTACHED_BLOCKS.read(placed)
    for key, value in inputs.items():
        np.testing.assert_array_equal(served[key], value)
    # The model's process writes the outputs over the inputs it has copied out.
    outputs = {"pooled": np.full((4, 2), 7, np.float32)}
    np.testing.assert_array_equal(block.read(ATTACHED_BLOCKS.write(*block.target(), outputs))["pooled"], 7)
    np.testing.assert_array_equal(served["input_ids"], inputs["input_ids"])
    assert block.put({"input_ids": np.zeros((64, 512), np.int32)})["input_ids"].shape == (64, 512)


def test_shared_arrays_round_trip_and_leave_no_block_behind():
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4),
              "b": np.ones((2, 5, 3), ml_dtypes.bfloat16), "c": np.zeros((0, 7), np.float32)}
    shared = put_arrays(arrays)
    assert glob.glob(f"/dev/shm/{shared.block}")
    back = take_arrays(shared)
    assert not glob.glob(f"/dev/shm/{shared.block}")
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)


def _orphaned_blocks() -> set[str]:
    """bert-beam's shared memory blocks whose creating process no longer exists."""
    orphaned = set()
    for path in glob.glob(f"/dev/shm/{NAME_PREFIX}*"):
        pid = int(os.path.basename(path).removeprefix(NAME_PREFIX).split("_")[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            orphaned.add(path)
    return orphaned


DOCS = [{"id": f"doc-{i}", "text": " ".join(["the dog running fast"] * (1 + i % 9)) + f" {i}"}
        for i in range(24)]


@pytest.mark.parametrize("extra", [
    ("--large_model",),
    ("--large_model", "--direct_num_workers=2", "--direct_running_mode=multi_processing"),
], ids=["in process", "2 worker processes"])
def test_a_shared_model_writes_the_records_of_a_model_per_process(tf1_module, tmp_path, extra):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    flags = ("--outputs=pooled,mean,sequence", "--sequence_dtype=bfloat16", "--max_seq_length=24")
    run_pipeline(str(docs), str(tmp_path / "own" / "emb"), tf1_module, *flags)
    leftovers = _orphaned_blocks()
    summary = run_pipeline(str(docs), str(tmp_path / "shared" / "emb"), tf1_module, *flags, *extra)
    assert summary.counters["documents_embedded"] == len(DOCS)
    own = {r.id: r for r in read_embeddings(str(tmp_path / "own" / "emb"))}
    shared = {r.id: r for r in read_embeddings(str(tmp_path / "shared" / "emb"))}
    assert set(own) == set(shared) == {doc["id"] for doc in DOCS}
    for key, record in own.items():
        np.testing.assert_array_equal(shared[key].sequence_output, record.sequence_output)
        np.testing.assert_allclose(shared[key].pooled_output, record.pooled_output, atol=1e-6)
        np.testing.assert_allclose(shared[key].mean_output, record.mean_output, atol=1e-6)
    # Live processes (this one, other test workers) may hold blocks they still read from; a
    # process that has exited, such as the run's workers, must have freed its own.
    assert _orphaned_blocks() <= leftovers
