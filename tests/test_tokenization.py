"""The project's WordPiece tokenizer against google-research/bert's own, token for token.

Every case runs in both cased and uncased mode: the edge-case corpus in
``data/tokenizer_edge_cases.txt``, hostile texts generated here (NUL, U+FFFD, control
characters, surrogates, random code points from chosen blocks) and arbitrary text from hypothesis.
"""

from __future__ import annotations

import random
import re
import string
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_bert import original_full_tokenizer

from transforms import tokenization
from transforms.tokenization import FullTokenizer, read_vocab_file

EDGE_CASES_PATH = Path(__file__).parent / "data" / "tokenizer_edge_cases.txt"
_SPECIAL_TOKENS = ["[PAD]", *(f"[unused{i}]" for i in range(10)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_COMMON_PIECES = [
    "un", "##aff", "##able", "run", "##ning", "##ner", "##s", "##ed", "##ing", "##ly", "##er", "##es",
    "##tion", "##ment", "##ness", "##ize", "##ization", "token", "word", "##piece", "##pieces",
]
_MAX_VOCAB_WORD_CHARS = 20


def _read_edge_cases() -> list[tuple[str, str]]:
    """``(group, text)`` for every case line of the corpus.

    Split on "\\n" only: cases contain U+2028, U+2029 and U+0085, which ``str.splitlines`` would
    also break on.
    """
    cases = []
    group = ""
    for line in EDGE_CASES_PATH.read_bytes().decode("utf-8").split("\n"):
        if line.startswith("# "):
            group = line[2:]
        elif line:
            cases.append((group, line))
    return cases


_CONTROL_CODE_POINTS = [*range(0x01, 0x20), 0x7F, *range(0x80, 0xA0)]
_RANDOM_BLOCKS = {
    "latin-1 supplement": (0x00A0, 0x00FF),
    "latin extended": (0x0100, 0x024F),
    "combining diacritics": (0x0300, 0x036F),
    "greek": (0x0370, 0x03FF),
    "cyrillic": (0x0400, 0x04FF),
    "arabic": (0x0600, 0x06FF),
    "devanagari": (0x0900, 0x097F),
    "thai": (0x0E00, 0x0E7F),
    "hangul jamo": (0x1100, 0x11FF),
    "general punctuation": (0x2000, 0x206F),
    "cjk symbols": (0x3000, 0x303F),
    "kana": (0x3040, 0x30FF),
    "cjk unified": (0x4E00, 0x9FFF),
    "hangul syllables": (0xAC00, 0xD7A3),
    "cjk compatibility": (0xF900, 0xFAFF),
    "half and fullwidth": (0xFF00, 0xFFEF),
    "specials": (0xFFF0, 0xFFFF),
    "emoji": (0x1F300, 0x1FAFF),
    "cjk extension b": (0x20000, 0x2A6DF),
    "tags": (0xE0000, 0xE007F),
    "controls": (0x0000, 0x009F),
}
_RANDOM_STRINGS_PER_BLOCK = 8


def _random_block_text(rng: random.Random, first: int, last: int) -> str:
    """Characters of one block mixed with ASCII letters and spaces, so words form around them."""
    chars = []
    for _ in range(rng.randint(1, 30)):
        roll = rng.random()
        if roll < 0.6:
            chars.append(chr(rng.randint(first, last)))
        elif roll < 0.85:
            chars.append(rng.choice(string.ascii_letters))
        else:
            chars.append(" ")
    return "".join(chars)


def _generated_cases() -> list[tuple[str, str]]:
    """``(name, text)`` for hostile texts that are better built in code than stored in a file."""
    cases = [
        ("empty", ""),
        ("one space", " "),
        ("nul", "\x00"),
        ("nul inside a word", "a\x00b"),
        ("nul run", "\x00" * 10 + "word"),
        ("nul between words", "one\x00 two \x00three"),
        ("replacement char", "\ufffd"),
        ("replacement char inside a word", "caf\ufffd au lait"),
        ("replacement chars and nul", "\ufffd\x00\ufffd abc"),
        ("tab", "a\tb"),
        ("newline", "a\nb"),
        ("crlf", "a\r\nb"),
        ("only tabs and newlines", "\t\n\r\n\t"),
        ("blank lines", "line one\n\n\nline two\n"),
        ("vertical tab and form feed", "a\x0bb c\x0cd"),
        ("python-only whitespace", "a\x1cb\x1dc\x1ed\x1ff"),
        ("lone high surrogate", "\ud800"),
        ("lone low surrogate inside a word", "a\udfffb"),
        ("surrogate pair as two code units", "\ud83d\ude00"),
        ("noncharacters", "\ufffe \uffff \U0001fffe \U0010ffff"),
        ("unassigned code points", "\u0378 \u0530 a\U0002ffffb \U000e0080"),
        ("tag characters alone", "\U000e0001\U000e0041\U000e007f"),
        ("variation selectors", "\ufe0f a\ufe0e \U000e0100b"),
        ("lone combining marks", "\u0301 \u0301\u0301\u0301"),
        ("lone zero width joiner", "\u200d"),
        ("capital dotted i alone", "\u0130"),
        ("capital sharp s alone", "\u1e9e"),
        ("whole corpus as one text", "\n".join(text for _, text in _read_edge_cases())),
    ]
    for code_point in _CONTROL_CODE_POINTS:
        cases.append((f"control U+{code_point:04X} inside a word", f"left{chr(code_point)}right"))
        cases.append((f"control U+{code_point:04X} alone", chr(code_point)))
    for block, (first, last) in _RANDOM_BLOCKS.items():
        rng = random.Random(block)
        for index in range(_RANDOM_STRINGS_PER_BLOCK):
            cases.append((f"random {block} {index}", _random_block_text(rng, first, last)))
    return cases


EDGE_CASES = _read_edge_cases()
GENERATED_CASES = _generated_cases()
ALL_TEXTS = [text for _, text in EDGE_CASES] + [text for _, text in GENERATED_CASES]


def _case_id(name: str, index: int) -> str:
    return f"{index}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _uncased(text: str) -> str:
    return "".join(
        char for char in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(char) != "Mn"
    )


def _words(text: str) -> list[str]:
    return [word for word in re.findall(r"\w+", text) if len(word) <= _MAX_VOCAB_WORD_CHARS]


def build_vocab(corpus_text: str) -> list[str]:
    """A BERT-like WordPiece vocab derived from the corpus, so that every tokenizer path runs.

    Specials; every printable ASCII character, with letters and digits also as ``##``
    continuations; every second non-ASCII character of the corpus (so others are [UNK]); the 400
    most frequent words, cased and uncased; and for every second longer word its first four
    characters and a ``##`` continuation of its last three, so unseen words split greedily.
    """
    uncased = _uncased(corpus_text)
    non_ascii = sorted({char for char in corpus_text + uncased if not char.isascii() and char.isprintable()})
    sampled = non_ascii[::2]
    counts = Counter(_words(corpus_text) + _words(uncased))
    frequent = [word for word, _ in counts.most_common(400) if len(word) > 1]
    long_words = sorted(word for word in counts if len(word) >= 6)[::2]
    tokens = [
        *_SPECIAL_TOKENS,
        *(chr(code) for code in range(33, 127)),
        *("##" + char for char in string.ascii_letters + string.digits),
        *sampled,
        *("##" + char for char in sampled[::3]),
        *_COMMON_PIECES,
        *frequent,
        *(piece for word in long_words for piece in (word[:4], "##" + word[-3:])),
    ]
    return list(dict.fromkeys(token for token in tokens if token and token == token.strip()))


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edge_case_vocab") / "vocab.txt"
    corpus_text = "\n".join(text for _, text in EDGE_CASES)
    path.write_text("\n".join(build_vocab(corpus_text)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizers(request, vocab_path):
    """``(project, original)`` tokenizers over the same vocab file, in one casing mode."""
    do_lower_case = request.param
    project = FullTokenizer(read_vocab_file(str(vocab_path)), do_lower_case=do_lower_case)
    original = original_full_tokenizer(str(vocab_path), do_lower_case=do_lower_case)
    return project, original


def _assert_same_tokens(tokenizers, text: str) -> None:
    project, original = tokenizers
    assert project.tokenize(text) == original.tokenize(text), f"text={text!r}"


def test_vocab_ids_equal_the_originals(tokenizers):
    project, original = tokenizers
    assert project.vocab == dict(original.vocab)


@pytest.mark.parametrize(
    "text", [pytest.param(text, id=_case_id(group, i)) for i, (group, text) in enumerate(EDGE_CASES)]
)
def test_edge_case_corpus_matches_original(tokenizers, text):
    _assert_same_tokens(tokenizers, text)


@pytest.mark.parametrize(
    "text", [pytest.param(text, id=_case_id(name, i)) for i, (name, text) in enumerate(GENERATED_CASES)]
)
def test_generated_case_matches_original(tokenizers, text):
    _assert_same_tokens(tokenizers, text)


# Characters hypothesis rarely draws by itself but where BERT's rules branch.
_INTERESTING_CHARS = (
    "aZ9 \t\n\x00\ufffd\u0301\u0130\u0131\u00df\u00ad\u200b\u200d\ufeff\u00a0\u3000\u2028.^$`#\u4e00"
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters() | st.sampled_from(_INTERESTING_CHARS), max_size=40))
def test_arbitrary_text_matches_original(tokenizers, text):
    _assert_same_tokens(tokenizers, text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(max_codepoint=0x7F), max_size=60))
def test_arbitrary_ascii_text_matches_original(tokenizers, text):
    """ASCII text takes a specialised fast path; it must agree with the original too."""
    assert text.isascii()
    _assert_same_tokens(tokenizers, text)


def test_ids_equal_original_convert_tokens_to_ids(tokenizers):
    project, original = tokenizers
    for text in ALL_TEXTS:
        expected = original.convert_tokens_to_ids(original.tokenize(text))
        assert project.tokenize_to_ids(text) == expected, f"text={text!r}"


def test_corpus_exercises_splitting_unknowns_and_non_ascii(tokenizers):
    project, _ = tokenizers
    tokens = [token for _, text in EDGE_CASES for token in project.tokenize(text)]
    assert "[UNK]" in tokens
    assert any(token.startswith("##") for token in tokens)
    assert any(not token.isascii() for token in tokens)


@pytest.mark.parametrize("cache_limit", [tokenization._WORD_CACHE_LIMIT, 3])
def test_reused_tokenizer_matches_fresh_tokenizers(vocab_path, monkeypatch, cache_limit):
    monkeypatch.setattr(tokenization, "_WORD_CACHE_LIMIT", cache_limit)
    lines = read_vocab_file(str(vocab_path))
    texts = [text for _, text in EDGE_CASES]
    for do_lower_case in (True, False):
        expected = [FullTokenizer(lines, do_lower_case).tokenize(text) for text in texts]
        reused = FullTokenizer(lines, do_lower_case)
        assert [reused.tokenize(text) for text in texts] == expected
        assert [reused.tokenize(text) for text in reversed(texts)] == expected[::-1]


def test_edge_case_corpus_is_well_formed():
    groups = Counter(group for group, _ in EDGE_CASES)
    assert len(groups) >= 25
    assert "" not in groups, "every case must follow a '# group' line"


_MINIMAL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"]


@pytest.mark.parametrize("duplicate", ["a", " a ", "[UNK]"])
def test_duplicated_vocab_token_raises(duplicate):
    with pytest.raises(ValueError, match="repeats"):
        FullTokenizer([*_MINIMAL_VOCAB, duplicate], do_lower_case=True)


@pytest.mark.parametrize("missing", ["[CLS]", "[SEP]", "[UNK]"])
def test_vocab_missing_special_token_raises(missing):
    with pytest.raises(ValueError, match=re.escape(missing)):
        FullTokenizer([token for token in _MINIMAL_VOCAB if token != missing], do_lower_case=True)


def _original_module():
    from reference_bert import _original_modules

    return _original_modules()[0]


def test_bert_whitespace_is_whitespace_to_str_split():
    """The project leaves out the original's whitespace-to-space mapping, which relies on this."""
    unsplit = [code for code in range(sys.maxunicode + 1)
               if tokenization._is_whitespace(chr(code)) and not chr(code).isspace()]
    assert unsplit == []


_ASTRAL_LETTER = "\U00010000"


def _assigned_code_points() -> list[str]:
    """Every assigned, non-private code point; the others are checked by class below."""
    return [chr(code) for code in range(sys.maxunicode + 1)
            if unicodedata.category(chr(code)) not in ("Cn", "Co")]


def _code_point_texts() -> list[str]:
    """Those code points, 256 to a text: in place, each between two letters, and each between two
    astral letters, which makes a BMP character take the full forms of the compiled rules rather
    than their BMP-only forms. CJK ideographs, isolated before any other rule, skip the last two."""
    chars = _assigned_code_points()
    in_context = [char for char in chars if not tokenization._is_chinese_char(ord(char))]

    def blocks(chars: list[str]) -> list[str]:
        return ["".join(chars[start:start + 256]) for start in range(0, len(chars), 256)]

    return [
        *blocks(chars),
        *("a" + "a".join(block) + "a" for block in blocks(in_context)),
        *(_ASTRAL_LETTER + _ASTRAL_LETTER.join(block) + _ASTRAL_LETTER
          for block in blocks(in_context) if not tokenization._ASTRAL.search(block)),
    ]


@pytest.mark.parametrize("do_lower_case", [True, False], ids=["uncased", "cased"])
def test_basic_tokenizer_matches_original_on_every_assigned_code_point(do_lower_case):
    original = _original_module().BasicTokenizer(do_lower_case=do_lower_case)
    project = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    for text in _code_point_texts():
        assert project.tokenize(text) == original.tokenize(text), f"block {text[:3]!r}"


def test_compiled_rules_classify_every_code_point_as_the_predicates_do():
    rules = tokenization._character_rules()
    chars = [chr(code) for code in range(sys.maxunicode + 1)]
    rule_sets = {
        "dropped": (rules.dropped, lambda char: char in "\x00\ufffd" or tokenization._is_control(char)),
        "chinese": (rules.chinese, lambda char: tokenization._is_chinese_char(ord(char))),
        "combining_marks": (rules.combining_marks, lambda char: unicodedata.category(char) == "Mn"),
    }
    for name, ((full, bmp), predicate) in rule_sets.items():
        outside = "".join(char for char in chars if not predicate(char))
        assert full.sub("", "".join(chars)) == outside, name
        assert bmp.sub("", "".join(chars[:0x10000])) == outside[:outside.index(_ASTRAL_LETTER)], name
    # Each character doubled, pairs space-separated: a punctuation mark stays single, a word
    # character forms a two-character word, whitespace vanishes.
    expected = []
    for char in chars:
        if tokenization._is_punctuation(char):
            expected += [char, char]
        elif not char.isspace():
            expected.append(char + char)
    full, bmp = rules.word_or_punctuation
    assert full.findall(" ".join(char + char for char in chars)) == expected
    bmp_words = bmp.findall(" ".join(char + char for char in chars[:0x10000]))
    assert bmp_words == expected[:len(bmp_words)] and bmp_words[-1] == "\uffff\uffff"


def test_unassigned_and_private_code_points_have_no_case_or_decomposition():
    """Why the original-against-project comparison above may leave them out."""
    chars = "".join(chr(code) for code in range(sys.maxunicode + 1)
                    if unicodedata.category(chr(code)) in ("Cn", "Co"))
    assert chars.lower() == chars
    assert unicodedata.normalize("NFD", chars) == chars


# Pieces sharing prefixes, "#"-words and "##"-pieces of "#"s, accented and astral characters: the
# greedy search's shortcuts (longest piece by first two characters) meet every kind of entry.
_WORDPIECE_VOCAB = [
    "[UNK]", "a", "ab", "abc", "abcab", "b", "#", "#a", "##", "###", "####a", "##a", "##b", "##bc",
    "##cab", "##abcabc", "##ab", "é", "##é", "e\u0301", "##\u0301", "\U0001f600", "##\U0001f600a",
]


@settings(max_examples=300, deadline=None)
@given(word=st.text(st.sampled_from("abc#e\u0301é\U0001f600"), max_size=12))
def test_wordpiece_split_matches_original(word):
    vocab = {token: index for index, token in enumerate(_WORDPIECE_VOCAB)}
    original = _original_module().WordpieceTokenizer(vocab=vocab, max_input_chars_per_word=10)
    project = tokenization.WordpieceTokenizer(vocab, max_input_chars_per_word=10)
    expected = original.tokenize(word)
    assert project.tokenize_word(word) == expected
    assert project.word_ids(word) == [vocab[piece] for piece in expected]


# Texts where a cut in the wrong place would change the wordpieces before it: runs of CJK,
# punctuation and combining marks, every whitespace kind, control characters, and a final sigma
# before a full stop (str.lower looks across punctuation).
_PREFIX_PIECES = (
    "the", "running", "unaffable", "東京大学中文", "。、", "!!!...???", "e\u0301\u0301", "\u0301",
    "ΟΔΟΣ.Α", "ΑΣ", " ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\u200b", "\x00", "\x1f",
    "\ufffd", "ǅ", "ß", "İ", "a" * 250, "x-y_z",
)


def _prefix_cases() -> list[str]:
    rng = random.Random(14)
    corpus = " ".join(text for _, text in EDGE_CASES + GENERATED_CASES)
    generated = ["".join(rng.choice(_PREFIX_PIECES) for _ in range(rng.randint(50, 400))) for _ in range(30)]
    return [corpus, *generated]


def _assert_prefix_exact(project, original, text: str, limit: int) -> None:
    want = original.convert_tokens_to_ids(original.tokenize(text))
    got = project.tokenize_prefix_to_ids(text, limit)
    assert got == want[: len(got)], f"limit={limit} text={text[:80]!r}"
    assert (len(got) > limit) == (len(want) > limit), f"limit={limit}"
    if len(want) <= limit:
        assert got == want


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 5, 8, 13, 40, 126, 510, 5000])
def test_prefix_tokenization_is_a_prefix_of_the_originals_and_knows_it_truncated(tokenizers, limit):
    project, original = tokenizers
    for text in _prefix_cases():
        _assert_prefix_exact(project, original, text, limit)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PREFIX_PIECES) | st.text(max_size=5), max_size=120),
       limit=st.integers(0, 60))
def test_prefix_tokenization_of_arbitrary_runs_is_exact(tokenizers, pieces, limit):
    project, original = tokenizers
    _assert_prefix_exact(project, original, "".join(pieces), limit)


def test_prefix_tokenization_reads_only_about_what_it_keeps(vocab_path, monkeypatch):
    project = FullTokenizer(read_vocab_file(str(vocab_path)), do_lower_case=True)
    seen: list[int] = []
    whole = project.tokenize_to_ids
    monkeypatch.setattr(project, "tokenize_to_ids", lambda text: seen.append(len(text)) or whole(text))
    text = "the running dog " * 50_000
    ids = project.tokenize_prefix_to_ids(text, 126)
    assert len(ids) > 126 and max(seen) < 20_000


@pytest.mark.parametrize("do_lower_case", [True, False], ids=["uncased", "cased"])
def test_prefix_tokenization_never_cuts_where_lower_casing_looks_across(tmp_path, do_lower_case):
    """'ΑΣ.Α'.lower() is 'ασ.α' but 'ΑΣ'.lower() is 'ας': a cut at the full stop would change a word."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "ασ", "ας", "α", ".", "ΑΣ", "Α", "x"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    project = FullTokenizer(vocab, do_lower_case=do_lower_case)
    original = original_full_tokenizer(str(path), do_lower_case=do_lower_case)
    for text in ("ΑΣ.Α" * 40, "x " * 30 + "ΑΣ.Α" * 40, "ΑΣ" + "." * 300 + "Α"):
        for limit in range(0, 12):
            _assert_prefix_exact(project, original, text, limit)
