"""Session fixtures: tiny BERT models built by project code, cached under .cache/."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from model_variants import build_failing_on_token

from pipeline.conversion.reference_encoder import BertConfig, random_weights

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "test_models"

# A small uncased vocabulary: specials, single characters, whole words and continuations.
_WORDS = (
    "the a an and or of to in is are was be it this that with for on as by at from dog dogs cat "
    "hairy run running fast slow quick brown fox jumps over lazy text document model bert beam "
    "embedding pipeline token tokens word words sentence pair long short hello world data"
).split()
_PIECES = ("##s", "##ing", "##ed", "##er", "##ly", "##y", "##es", "##n", "##t", "##e", "##a", "##o")


def tiny_vocab() -> tuple[str, ...]:
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-:;()\"")
    continuation = ["##" + c for c in chars[:36]]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return tuple(dict.fromkeys(specials + chars + continuation + _WORDS + list(_PIECES)))


def tiny_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def _source_digest() -> str:
    """Changes whenever the encoder or the exporters change, so cached models are rebuilt."""
    digest = hashlib.sha256()
    for relative in ("pipeline/conversion/reference_encoder.py", "pipeline/conversion/export.py",
                     "tests/conftest.py", "tests/model_variants.py"):
        digest.update((REPO / relative).read_bytes())
    return digest.hexdigest()[:16]


def cached_model(kind: str, build) -> str:
    """The model ``build(path)`` writes, built once per source digest and shared by test workers."""
    target = CACHE / f"{kind}-{_source_digest()}"
    if not target.exists():
        staging = CACHE / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        build(str(staging))
        try:
            os.replace(staging, target)
        except OSError:  # another test worker finished the same model first
            if not target.exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


@pytest.fixture(scope="session")
def vocab_lines() -> tuple[str, ...]:
    return tiny_vocab()


@pytest.fixture(scope="session")
def model_config(vocab_lines) -> BertConfig:
    return tiny_config(len(vocab_lines))


@pytest.fixture(scope="session")
def model_weights(model_config):
    return random_weights(model_config, seed=7)


@pytest.fixture(scope="session")
def tf1_module(vocab_lines, model_config, model_weights) -> str:
    """A TF1 Hub format module as TF Hub's exporter writes it (tokens + tokenization_info
    signatures, vocab asset behind the SAVEDMODEL-ASSET placeholder, train graph with dropout)."""
    from pipeline.conversion.export import export_tf1_hub_module

    return cached_model("tf1hub", lambda path: export_tf1_hub_module(
        model_weights, model_config, vocab_lines, True, path))


@pytest.fixture(scope="session")
def tf1_module_baked_path(vocab_lines, model_config, model_weights) -> str:
    """The same module with the exporter's vocab path left in its constant (no asset records)."""
    from pipeline.conversion.export import BAKED_PATH_LAYOUT, export_tf1_hub_module

    return cached_model("tf1hub-baked", lambda path: export_tf1_hub_module(
        model_weights, model_config, vocab_lines, True, path, asset_layout=BAKED_PATH_LAYOUT))


@pytest.fixture(scope="session")
def tf2_model(vocab_lines, model_config, model_weights) -> str:
    """A TF2 SavedModel callable like TF Hub's BERT encoders."""
    from pipeline.conversion.export import export_tf2_saved_model

    return cached_model("tf2", lambda path: export_tf2_saved_model(
        model_weights, model_config, vocab_lines, True, path))


FAILING_TOKEN = "fox"


@pytest.fixture(scope="session")
def failing_model(vocab_lines, model_config, model_weights) -> str:
    """A TF2 encoder that fails on every batch holding the wordpiece ``FAILING_TOKEN``."""
    token_id = vocab_lines.index(FAILING_TOKEN)
    return cached_model("failing-on-token", lambda path: build_failing_on_token(
        model_weights, model_config, vocab_lines, path, token_id))
