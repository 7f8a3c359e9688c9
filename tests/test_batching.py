"""Length-aware batching: buckets, batch bounds, and every record in exactly one batch."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from transforms.batching import BatchByLength, BatchingConfig
from transforms.features import bucket_length, parse_bucket_boundaries
from transforms.records import Features


def test_bucket_length_is_the_smallest_boundary_that_holds_the_sequence():
    assert bucket_length(5, (32, 64), 128) == 32
    assert bucket_length(32, (32, 64), 128) == 32
    assert bucket_length(33, (32, 64), 128) == 64
    assert bucket_length(65, (32, 64), 128) == 128
    assert bucket_length(10, (), 128) == 128
    assert bucket_length(10, (32, 512), 64) == 32
    assert bucket_length(40, (32, 512), 64) == 64  # a boundary over max_seq_length is never used


def test_parse_bucket_boundaries():
    assert parse_bucket_boundaries("128,32, 64") == (32, 64, 128)
    assert parse_bucket_boundaries("none") == ()
    with pytest.raises(ValueError, match="integers"):
        parse_bucket_boundaries("32,big")
    with pytest.raises(ValueError, match="at least 3"):
        parse_bucket_boundaries("2,32")


def test_partial_batches_are_rounded_to_a_power_of_two_rows_within_the_full_batch():
    config = BatchingConfig(512, (32, 128, 512), max_batch_size=12, max_batch_tokens=2048,
                            round_batch_rows=True)
    assert [config.full_batch_rows(n) for n in (32, 128, 512)] == [12, 12, 4]
    assert [config.batch_padded_rows(rows, 32) for rows in range(1, 13)] == [1, 2, 4, 4, 8, 8, 8, 8, 12, 12,
                                                                              12, 12]
    assert [config.batch_padded_rows(rows, 512) for rows in range(1, 5)] == [1, 2, 4, 4]
    unrounded = BatchingConfig(512, (32,), max_batch_size=12, round_batch_rows=False)
    assert [unrounded.batch_padded_rows(rows, 32) for rows in (1, 3, 5, 9)] == [1, 3, 5, 9]


def _records(lengths):
    return [Features(f"d{i}", np.full(n, 5, np.int32), np.zeros(n, np.int32)) for i, n in enumerate(lengths)]


def test_batches_hold_one_bucket_within_size_and_token_limits():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 129, size=300).tolist()
    config = BatchingConfig(128, (16, 32, 64, 128), max_batch_size=8, max_batch_tokens=512)

    def check(batches):
        keys = [f.key for batch in batches for f in batch]
        assert sorted(keys) == sorted(f"d{i}#0" for i in range(len(lengths)))
        for batch in batches:
            buckets = {config.padded_length(f.sequence_length) for f in batch}
            assert len(buckets) == 1
            assert 1 <= len(batch) <= 8
            assert len(batch) * buckets.pop() <= 512

    with TestPipeline() as pipeline:
        batches = pipeline | beam.Create(_records(lengths)) | BatchByLength(config)
        assert_that(batches, check)


def test_the_log_names_the_batches_a_run_forms():
    assert BatchingConfig(max_seq_length=100).describe() == (
        "batches of at most 32 records and 16384 padded tokens, "
        "padded to length buckets 16,32,48,64,80,96,100")
    rounded = BatchingConfig(max_seq_length=512, max_batch_size=8, round_batch_rows=True).describe()
    assert rounded.startswith("batches of at most 8 records") and rounded.endswith(
        "368,512, rows rounded to powers of two")
