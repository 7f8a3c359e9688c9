"""The same input gives the same records whatever the batching, buckets, workers or shards."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_pipeline, write_jsonl

from pipeline.reader import read_embeddings

VARIANTS = {
    "baseline": ("--batch_size=32", "--num_shards=1"),
    "tiny batches, no buckets": ("--batch_size=1", "--bucket_boundaries=none", "--num_shards=3"),
    "other buckets and token budget": ("--bucket_boundaries=8,16", "--max_batch_tokens=64"),
    "two worker processes": ("--direct_num_workers=2", "--direct_running_mode=multi_processing",
                             "--num_shards=2"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(11)
    words = "the dog cat fox runs quick brown lazy data model text word pair long short".split()
    records = [{"id": f"d{i}", "text": " ".join(rng.choice(words, size=int(rng.integers(1, 60))))}
               for i in range(60)]
    return write_jsonl(tmp_path_factory.mktemp("det") / "docs.jsonl", records)


def _records(prefix):
    return {(r.id, r.window): r for r in read_embeddings(prefix)}


@pytest.fixture(scope="module")
def outputs(corpus, tf1_module, tmp_path_factory):
    results = {}
    for name, flags in VARIANTS.items():
        prefix = str(tmp_path_factory.mktemp("det-out") / "emb")
        run_pipeline(str(corpus), prefix, tf1_module, "--max_seq_length=32", "--long_document=window",
                     "--doc_stride=10", *flags)
        results[name] = _records(prefix)
    return results


@pytest.mark.parametrize("variant", [name for name in VARIANTS if name != "baseline"])
def test_records_do_not_depend_on_how_the_run_was_shaped(outputs, variant):
    baseline, other = outputs["baseline"], outputs[variant]
    assert sorted(other) == sorted(baseline)
    assert any(window > 0 for _, window in baseline)
    for key, want in baseline.items():
        got = other[key]
        np.testing.assert_array_equal(got.input_ids, want.input_ids)
        np.testing.assert_array_equal(got.segment_ids, want.segment_ids)
        assert got.token_offset == want.token_offset
        np.testing.assert_allclose(got.pooled_output, want.pooled_output, atol=1e-5)
        np.testing.assert_allclose(got.sequence_output, want.sequence_output, atol=1e-5)
