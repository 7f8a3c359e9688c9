"""Feature rules against google-research/bert's ``convert_single_example``, and window invariants.

Singles and pairs must give the original's padded ``input_ids``, ``input_mask`` and
``segment_ids`` exactly; windows (this project's extension) must cover every wordpiece of a long
document, start with the truncated document and overlap by ``capacity - stride``.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_bert import original_convert_single_example, original_full_tokenizer

from transforms.features import (
    TRUNCATE,
    WINDOW,
    FeatureConfig,
    build_input_ids,
    document_features,
    pad_batch,
    truncate_seq_pair,
    window_starts,
)
from transforms.records import Document, Features
from transforms.tokenization import FullTokenizer

EDGE_CASES_PATH = Path(__file__).parent / "data" / "tokenizer_edge_cases.txt"
_LETTERS = string.ascii_lowercase
# Every lowercase letter is one wordpiece, so a text of n spaced letters is n wordpieces.
_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    *_LETTERS, *("##" + letter for letter in _LETTERS), *string.digits, *".,!?'-()\"",
    "the", "dog", "is", "hairy", "this", "jack", "##son", "##ville", "no", "it", "not",
    "un", "##aff", "##able", "run", "##ning", "##ed", "##ing",
]
_HANDWRITTEN_TEXTS = [
    "",
    "the dog is hairy.",
    "is this jacksonville?",
    "no it is not.",
    "Unaffable running dogs!",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "Ünaffable Straße 你好",
    " ".join(["the dog is hairy"] * 40),
]
_EMPTY_TEXT_BS = ["", " ", "\t\n", "\u200b\x00\ufeff", "\ufffd"]


def _corpus_texts() -> list[str]:
    lines = EDGE_CASES_PATH.read_bytes().decode("utf-8").split("\n")
    return [line for line in lines if line and not line.startswith("# ")]


TEXTS = _HANDWRITTEN_TEXTS + _corpus_texts()


def _letters_text(num_tokens: int) -> str:
    return " ".join(_LETTERS[i % len(_LETTERS)] for i in range(num_tokens))


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feature_vocab") / "vocab.txt"
    path.write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizers(request, vocab_path):
    """``(project, original)`` tokenizers over the same vocab, in one casing mode."""
    project = FullTokenizer(_VOCAB, do_lower_case=request.param)
    original = original_full_tokenizer(str(vocab_path), do_lower_case=request.param)
    return project, original


@pytest.fixture(scope="module")
def tokenizer() -> FullTokenizer:
    return FullTokenizer(_VOCAB, do_lower_case=True)


def _features(
    tokenizer: FullTokenizer, text: str, text_b: str | None = None, **config_options
) -> list[Features]:
    document = Document(id="doc", text=text, source="test", text_b=text_b)
    return list(document_features(document, tokenizer, FeatureConfig(**config_options)))


def _project_padded(tokenizer: FullTokenizer, text_a: str, text_b: str | None, max_seq_length: int):
    [features] = _features(tokenizer, text_a, text_b, max_seq_length=max_seq_length)
    batch = pad_batch([features], max_seq_length)
    return {key: batch[key][0].tolist() for key in ("input_ids", "input_mask", "segment_ids")}


def _original_padded(tokenizer, text_a: str, text_b: str | None, max_seq_length: int):
    features = original_convert_single_example(tokenizer, text_a, text_b, max_seq_length)
    return {
        "input_ids": features.input_ids,
        "input_mask": features.input_mask,
        "segment_ids": features.segment_ids,
    }


def _assert_same_as_original(tokenizers, text_a: str, text_b: str | None, max_seq_length: int) -> None:
    project, original = tokenizers
    expected = _original_padded(original, text_a, text_b, max_seq_length)
    actual = _project_padded(project, text_a, text_b, max_seq_length)
    assert actual == expected, f"text_a={text_a!r} text_b={text_b!r} max_seq_length={max_seq_length}"


@pytest.mark.parametrize("max_seq_length", [3, 5, 16, 128])
def test_single_text_matches_original(tokenizers, max_seq_length):
    for text in TEXTS:
        _assert_same_as_original(tokenizers, text, None, max_seq_length)


@pytest.mark.parametrize("max_seq_length", [3, 5, 16, 64])
def test_text_pair_matches_original(tokenizers, max_seq_length):
    for text_a, text_b in zip(TEXTS, TEXTS[1:] + TEXTS[:1], strict=True):
        _assert_same_as_original(tokenizers, text_a, text_b, max_seq_length)


@pytest.mark.parametrize("max_seq_length", range(3, 13))
def test_pair_truncation_grid_matches_original(tokenizers, max_seq_length):
    """Every split of up to 7 + 7 wordpieces: exact fits, ties and pairs truncated to nothing."""
    for length_a in range(8):
        for length_b in range(8):
            _assert_same_as_original(
                tokenizers, _letters_text(length_a), _letters_text(length_b), max_seq_length
            )


@pytest.mark.parametrize("text_b", _EMPTY_TEXT_BS)
def test_text_b_without_wordpieces_gives_a_single_input(tokenizers, text_b):
    project, _ = tokenizers
    for max_seq_length in (3, 5, 16):
        single = _project_padded(project, "the dog is hairy.", None, max_seq_length)
        assert _project_padded(project, "the dog is hairy.", text_b, max_seq_length) == single
        _assert_same_as_original(tokenizers, "the dog is hairy.", text_b, max_seq_length)


@pytest.mark.parametrize("text_a", _EMPTY_TEXT_BS)
@pytest.mark.parametrize("max_seq_length", [3, 4, 5, 16])
def test_pair_whose_first_text_has_no_wordpieces_matches_original(tokenizers, text_a, max_seq_length):
    for text_b in ("the dog is hairy.", _letters_text(30), *_EMPTY_TEXT_BS):
        _assert_same_as_original(tokenizers, text_a, text_b, max_seq_length)


def test_pair_whose_first_text_has_no_wordpieces_is_cls_sep_b_sep(tokenizer):
    [features] = _features(tokenizer, "", "the dog", max_seq_length=16)
    assert features.input_ids.tolist() == tokenizer.convert_tokens_to_ids(
        ["[CLS]", "[SEP]", "the", "dog", "[SEP]"])
    assert features.segment_ids.tolist() == [0, 0, 1, 1, 1]
    assert not features.truncated
    [truncated] = _features(tokenizer, "\u200b", "a b c d", max_seq_length=5)
    assert truncated.input_ids.tolist() == tokenizer.convert_tokens_to_ids(
        ["[CLS]", "[SEP]", "a", "b", "[SEP]"])
    assert truncated.segment_ids.tolist() == [0, 0, 1, 1, 1] and truncated.truncated


def test_pair_without_wordpieces_in_either_text_is_cls_sep(tokenizer):
    for text_b in ("", " ", "\u200b\x00"):
        [features] = _features(tokenizer, " ", text_b, max_seq_length=16)
        assert features.input_ids.tolist() == [tokenizer.cls_id, tokenizer.sep_id]
        assert features.sequence_length == 2  # what the Tokenize step rejects


def test_pair_fitting_exactly_is_not_truncated(tokenizer):
    [features] = _features(tokenizer, "a b c", "a b", max_seq_length=8)
    expected = tokenizer.convert_tokens_to_ids(["[CLS]", "a", "b", "c", "[SEP]", "a", "b", "[SEP]"])
    assert features.input_ids.tolist() == expected
    assert features.segment_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert not features.truncated
    [one_more] = _features(tokenizer, "a b c", "a b c", max_seq_length=8)
    assert one_more.truncated


def test_single_text_fitting_exactly_is_not_truncated(tokenizer):
    [features] = _features(tokenizer, "a b c d e f", max_seq_length=8)
    assert features.sequence_length == 8
    assert not features.truncated
    [one_more] = _features(tokenizer, "a b c d e f g", max_seq_length=8)
    assert one_more.sequence_length == 8
    assert one_more.truncated


def test_truncate_seq_pair_drops_from_the_longer_and_from_b_on_ties():
    tokens_a, tokens_b = [1, 2, 3, 4, 5], [6]
    truncate_seq_pair(tokens_a, tokens_b, 3)
    assert (tokens_a, tokens_b) == ([1, 2], [6])
    tokens_a, tokens_b = [1, 2, 3], [4, 5, 6]
    truncate_seq_pair(tokens_a, tokens_b, 4)
    assert (tokens_a, tokens_b) == ([1, 2], [4, 5])
    tokens_a, tokens_b = [1], [2]
    truncate_seq_pair(tokens_a, tokens_b, 1)
    assert (tokens_a, tokens_b) == ([1], [])


def test_build_input_ids_layouts():
    input_ids, segment_ids = build_input_ids([7, 8], None, cls_id=2, sep_id=3)
    assert (input_ids.tolist(), segment_ids.tolist()) == ([2, 7, 8, 3], [0, 0, 0, 0])
    input_ids, segment_ids = build_input_ids([7], [8, 9], cls_id=2, sep_id=3)
    assert (input_ids.tolist(), segment_ids.tolist()) == ([2, 7, 3, 8, 9, 3], [0, 0, 0, 1, 1, 1])


def _window_bodies(windows: list[Features]) -> list[list[int]]:
    """Each window's wordpiece ids without [CLS] and [SEP]."""
    return [window.input_ids[1:-1].tolist() for window in windows]


@settings(max_examples=200, deadline=None)
@given(
    num_tokens=st.integers(0, 300),
    max_seq_length=st.integers(3, 40),
    stride_fraction=st.floats(0, 1),
)
def test_windows_cover_every_wordpiece(tokenizer, num_tokens, max_seq_length, stride_fraction):
    capacity = max_seq_length - 2
    stride = 1 + round(stride_fraction * (capacity - 1))
    text = _letters_text(num_tokens)
    all_ids = tokenizer.tokenize_to_ids(text)
    windows = _features(
        tokenizer, text, max_seq_length=max_seq_length, long_document=WINDOW, doc_stride=stride
    )

    rebuilt: list[int | None] = [None] * num_tokens
    for window, body in zip(windows, _window_bodies(windows), strict=True):
        assert window.input_ids[0] == tokenizer.cls_id and window.input_ids[-1] == tokenizer.sep_id
        assert not window.segment_ids.any()
        for position, token_id in enumerate(body, start=window.token_offset):
            assert rebuilt[position] in (None, token_id)
            rebuilt[position] = token_id
    assert rebuilt == all_ids

    assert [window.window for window in windows] == list(range(len(windows)))
    offsets = [window.token_offset for window in windows]
    assert offsets == [index * stride for index in range(len(windows))]
    assert all(len(body) == capacity for body in _window_bodies(windows)[:-1])
    assert len(windows) == 1 or offsets[-2] + capacity < num_tokens, "no window is redundant"

    [truncated] = _features(tokenizer, text, max_seq_length=max_seq_length, long_document=TRUNCATE)
    assert windows[0].input_ids.tolist() == truncated.input_ids.tolist()
    assert windows[0].segment_ids.tolist() == truncated.segment_ids.tolist()


@pytest.mark.parametrize(("max_seq_length", "stride"), [(8, 4), (8, 1), (8, 6), (10, 3)])
def test_consecutive_windows_overlap_by_capacity_minus_stride(tokenizer, max_seq_length, stride):
    capacity = max_seq_length - 2
    overlap = capacity - stride
    windows = _features(
        tokenizer, _letters_text(40), max_seq_length=max_seq_length, long_document=WINDOW, doc_stride=stride
    )
    bodies = _window_bodies(windows)
    for body, next_body in zip(bodies, bodies[1:], strict=False):
        assert len(body) == capacity
        assert body[stride:] == next_body[:overlap]
    assert [window.token_offset for window in windows] == [index * stride for index in range(len(windows))]


@pytest.mark.parametrize(
    ("num_tokens", "max_seq_length", "doc_stride", "expected_offsets"),
    [
        (10, 6, 2, [0, 2, 4, 6]),
        (10, 6, None, [0, 2, 4, 6]),
        (10, 6, 4, [0, 4, 8]),
        (11, 6, 4, [0, 4, 8]),
        (13, 6, 4, [0, 4, 8, 12]),
        (5, 6, 1, [0, 1]),
        (20, 12, None, [0, 5, 10]),
    ],
)
def test_token_offsets(tokenizer, num_tokens, max_seq_length, doc_stride, expected_offsets):
    windows = _features(
        tokenizer,
        _letters_text(num_tokens),
        max_seq_length=max_seq_length,
        long_document=WINDOW,
        doc_stride=doc_stride,
    )
    assert [window.token_offset for window in windows] == expected_offsets
    assert len({window.key for window in windows}) == len(windows)


@pytest.mark.parametrize("doc_stride", [0, -1, 7, 100])
def test_doc_stride_outside_one_to_capacity_is_refused(doc_stride):
    with pytest.raises(ValueError, match="doc_stride"):
        FeatureConfig(max_seq_length=8, long_document=WINDOW, doc_stride=doc_stride)


@pytest.mark.parametrize("doc_stride", [1, 6])
def test_doc_stride_from_one_to_capacity_is_accepted(doc_stride):
    assert FeatureConfig(max_seq_length=8, long_document=WINDOW, doc_stride=doc_stride).stride == doc_stride


@pytest.mark.parametrize("num_tokens", [0, 1, 5, 6])
def test_short_document_gives_one_window(tokenizer, num_tokens):
    text = _letters_text(num_tokens)
    [window] = _features(tokenizer, text, max_seq_length=8, long_document=WINDOW, doc_stride=2)
    [truncated] = _features(tokenizer, text, max_seq_length=8, long_document=TRUNCATE)
    assert (window.window, window.token_offset, window.truncated) == (0, 0, False)
    assert window.input_ids.tolist() == truncated.input_ids.tolist()


def test_empty_document_has_one_window():
    assert window_starts(0, capacity=4, stride=2) == [0]


def test_pairs_in_window_mode_are_truncated_like_the_original(tokenizers):
    project, original = tokenizers
    text_a, text_b = _letters_text(30), _letters_text(20)
    [features] = _features(project, text_a, text_b, max_seq_length=16, long_document=WINDOW, doc_stride=4)
    assert features.truncated
    padded = pad_batch([features], 16)
    expected = original_convert_single_example(original, text_a, text_b, 16)
    assert padded["input_ids"][0].tolist() == expected.input_ids
    assert padded["segment_ids"][0].tolist() == expected.segment_ids


@pytest.mark.parametrize("max_seq_length", [8, 16, 64])
def test_long_texts_tokenized_by_prefix_give_the_originals_features(tokenizers, max_seq_length):
    """Texts far longer than a record: only their prefix is tokenized, the features stay the original's."""
    project, original = tokenizers
    corpus = _corpus_texts()
    long_texts = [" ".join(corpus), "".join(corpus), " ".join(corpus[::-1]) * 3]
    config = FeatureConfig(max_seq_length=max_seq_length, long_document=TRUNCATE)
    for text_a, text_b in [(t, None) for t in long_texts] + [(long_texts[0], long_texts[1]),
                                                             ("short one", long_texts[2])]:
        (features,) = document_features(Document("d", text_a, "d", text_b), project, config)
        want = original_convert_single_example(original, text_a, text_b, max_seq_length)
        n = features.sequence_length
        assert list(features.input_ids) == want.input_ids[:n] and want.input_mask[n:] == [0] * (
            max_seq_length - n)
        assert list(features.segment_ids) == want.segment_ids[:n]
        full_a = len(project.tokenize_to_ids(text_a))
        full_b = len(project.tokenize_to_ids(text_b)) if text_b else 0
        capacity = max_seq_length - (3 if text_b else 2)
        assert features.truncated == (full_a + full_b > capacity)
