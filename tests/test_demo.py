"""make demo: the packaged MiniLM, converted and run through the pipeline, clusters the sample corpus."""

from __future__ import annotations

import re

import pytest

from examples import demo
from pipeline.run import main


@pytest.mark.real_weights
def test_demo_embeds_the_corpus_and_neighbours_share_a_source(tmp_path, capsys):
    cache = demo.REPO / ".cache" / "demo"
    status = demo.main(["--output_dir", str(tmp_path / "demo"), "--cache_dir", str(cache)])
    out = capsys.readouterr().out
    assert status == 0
    assert "read 300, embedded 300" in out and "rejected 0" in out
    rate = int(re.search(r"(\d+)% of the 300 documents have a nearest neighbour", out).group(1))
    assert rate >= 80
    whitened = r"With the corpus-fitted whitening \(--whitening_dims 32, mean output\): \d+% "
    assert re.search(whitened, out), "the demo reports the topic agreement of the whitened vectors"
    assert "nearest whitened document:" in out and "Other --whitening_dims on the same vectors" in out
    assert (tmp_path / "demo" / "embedding_map.png").stat().st_size > 10_000
    for query in demo.QUERIES:
        assert f"query: {query}" in out


def test_bert_beam_convert_is_the_convert_command(capsys):
    assert main(["convert", "/nonexistent-folder", "/tmp/x", "--format", "tf2"]) == 1
    assert "Cannot convert /nonexistent-folder" in capsys.readouterr().err
