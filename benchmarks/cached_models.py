"""BERT models with random weights for the benchmarks, built by project code and cached.

Models land in ``.cache/bench/NAME-FORMAT-DIGEST``; the digest covers the config, the
vocabulary and the encoder and exporter sources, so a change to any of them rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pipeline.conversion.reference_encoder import BertConfig

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"
TF1_HUB = "tf1_hub"
TF2 = "tf2"

# Shapes of the models the benchmarks use (vocab_size is filled in from the vocabulary).
MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}
SMALL = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512}
MEDIUM = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}


def cache_dir(*parts: str) -> str:
    path = CACHE.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _digest(config: BertConfig, vocab_lines: Sequence[str], output_format: str, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(f"{config.to_json()}|{output_format}|{seed}".encode())
    digest.update("\n".join(vocab_lines).encode("utf-8"))
    for relative in ("pipeline/conversion/reference_encoder.py", "pipeline/conversion/export.py"):
        digest.update((REPO / relative).read_bytes())
    return digest.hexdigest()[:12]


def cached_model(
    name: str,
    config: BertConfig,
    vocab_lines: Sequence[str],
    output_format: str = TF2,
    do_lower_case: bool = True,
    seed: int = 0,
) -> str:
    """The path of a SavedModel of ``config`` with random weights, exported once."""
    from pipeline.conversion.export import export_tf1_hub_module, export_tf2_saved_model
    from pipeline.conversion.reference_encoder import random_weights

    target = CACHE / f"{name}-{output_format}-{_digest(config, vocab_lines, output_format, seed)}"
    if target.exists():
        return str(target)
    staging = CACHE / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    export = export_tf1_hub_module if output_format == TF1_HUB else export_tf2_saved_model
    print(f"building {target.name} (exported once, then cached) ...", flush=True)
    export(random_weights(config, seed=seed), config, vocab_lines, do_lower_case, str(staging))
    os.replace(staging, target)
    return str(target)


def bert_config(shape: dict[str, int], vocab_size: int, max_positions: int = 512) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=max_positions, **shape)
