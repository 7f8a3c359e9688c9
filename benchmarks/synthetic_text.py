"""Seeded synthetic text for the benchmarks: a BERT-like vocabulary and corpora drawn from it.

Words are pronounceable pseudo-words ranked by a Zipf law, so frequent words are whole
vocabulary entries and rare ones split into several wordpieces, as real text does with a
real vocabulary. Sentences have capitals, commas, numbers and end marks; documents have
a lognormal word count, which gives the long tail that real collections have. The
mixed-Unicode variant adds accented Latin, Greek, Cyrillic, CJK, kana, emoji and the odd
zero-width or no-break space.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

import numpy as np

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FUNCTION_WORDS = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there had one all we their been has if more when will would "
    "who so no"
).split()
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
           "st", "tr", "pl", "gr", "br", "ch", "sh", "th", "cl", "pr", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y")
_CODAS = ("", "", "n", "r", "s", "t", "l", "m", "nd", "st", "rt", "ng")
_SUFFIXES = ("s", "ed", "ing", "ly", "er", "tion", "ment", "ness", "able", "al")
_ACCENTED = dict(zip("aeiounc", ("àáâä", "èéêë", "ìíîï", "òóôö", "ùúûü", "ñ", "ç"), strict=True))
_GREEK = [chr(c) for c in range(0x3B1, 0x3CA)]
_CYRILLIC = [chr(c) for c in range(0x430, 0x450)]
_KANA = [chr(c) for c in range(0x3041, 0x3097)]
_CJK = [chr(0x4E00 + i) for i in range(1500)]
_EMOJI = [chr(c) for c in range(0x1F600, 0x1F640)]
_ODD_SPACES = ("\u00a0", "\u200b", "\u3000")
VOCAB_SIZE = 30522
WORD_POOL = 60_000


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


@functools.cache
def word_list(size: int = WORD_POOL, seed: int = 0) -> tuple[str, ...]:
    """``size`` distinct lowercase words, most frequent first: function words, then short ones."""
    rng = random.Random(seed)
    words = dict.fromkeys(FUNCTION_WORDS)
    while len(words) < size:
        syllables = rng.choices((1, 2, 3, 4), weights=(55, 25, 12, 8))[0]
        word = "".join(_syllable(rng) for _ in range(syllables))
        if rng.random() < 0.15:
            word += rng.choice(_SUFFIXES)
        if len(word) > 1:
            words.setdefault(word)
    rest = list(words)[len(FUNCTION_WORDS):size]
    # Frequent words are short (Zipf's law of abbreviation); a little noise keeps it loose.
    keys = [len(w) + rng.gauss(0, 1.5) for w in rest]
    return tuple(FUNCTION_WORDS + [w for _, w in sorted(zip(keys, rest, strict=True))])


def _unicode_chars() -> list[str]:
    accented = sorted({c for group in _ACCENTED.values() for c in group})
    return accented + _GREEK + _CYRILLIC + _KANA + _CJK


@functools.cache
def vocabulary(size: int = VOCAB_SIZE, seed: int = 0) -> tuple[str, ...]:
    """A BERT-style vocab.txt as lines: specials, characters, ``##`` pieces, then whole words.

    Holds lowercase words and capitalised forms of the most frequent ones, so it serves cased
    and uncased tokenization; words outside it split into syllable pieces or characters.
    """
    ascii_chars = [chr(c) for c in range(33, 127)]
    chars = ascii_chars + _unicode_chars()
    pieces = ["##" + c for c in chars if c.isalnum()]
    rng = random.Random(seed + 1)
    syllables = sorted({_syllable(rng) for _ in range(20_000)})
    pieces += ["##" + s for s in syllables] + ["##" + s for s in _SUFFIXES]
    words = word_list(seed=seed)
    capitalised = [w.capitalize() for w in words[:3000]]
    lines = dict.fromkeys([*SPECIALS, *chars, *pieces, *capitalised])
    for word in words:
        if len(lines) >= size:
            break
        lines.setdefault(word)
    return tuple(lines)


class SentenceWriter:
    """Draws Zipf-distributed words into sentences; ``mixed_unicode`` adds non-ASCII words."""

    def __init__(self, seed: int = 0, mixed_unicode: bool = False) -> None:
        self._rng = np.random.default_rng(seed)
        self._words = word_list()
        ranks = np.arange(len(self._words), dtype=np.float64)
        weights = 1.0 / (ranks + 2.7) ** 1.07
        self._cdf = np.cumsum(weights / weights.sum())
        self._mixed_unicode = mixed_unicode

    def _word(self, rank: int, draws: np.ndarray) -> str:
        word = self._words[rank]
        if self._mixed_unicode and draws[0] < 0.15:
            return self._unicode_word(word)
        if draws[1] < 0.03:
            return str(int(draws[2] * 10_000)) if draws[3] < 0.7 else f"{draws[2] * 100:.1f}"
        if draws[1] < 0.08:
            return word.capitalize()
        return word

    def _unicode_word(self, word: str) -> str:
        rng = self._rng
        kind = rng.integers(6)
        if kind == 0:
            return "".join(
                _ACCENTED[c][rng.integers(len(_ACCENTED[c]))] if c in _ACCENTED and rng.random() < 0.4 else c
                for c in word
            )
        pool = (_GREEK, _CYRILLIC, _CJK, _KANA, _EMOJI)[kind - 1]
        length = int(rng.integers(1, 4)) if pool in (_CJK, _EMOJI) else int(rng.integers(3, 9))
        text = "".join(pool[rng.integers(len(pool))] for _ in range(length))
        if rng.random() < 0.1:
            text = text[:1] + _ODD_SPACES[rng.integers(len(_ODD_SPACES))] + text[1:]
        return text

    def document(self, num_words: int) -> str:
        """Sentences of 6-30 words until the document has ``num_words`` words."""
        rng = self._rng
        sentences: list[str] = []
        remaining = max(1, num_words)
        while remaining > 0:
            length = min(remaining, int(rng.integers(6, 31)))
            remaining -= length
            ranks = np.minimum(np.searchsorted(self._cdf, rng.random(length)), len(self._words) - 1)
            draws = rng.random((length, 4))
            words = [self._word(int(r), d) for r, d in zip(ranks, draws, strict=True)]
            words[0] = words[0][:1].upper() + words[0][1:]
            text = " ".join(w + ("," if rng.random() < 0.07 else "") for w in words).rstrip(",")
            sentences.append(text + ".?!"[min(int(rng.geometric(0.85)) - 1, 2)])
        return " ".join(sentences)


def word_counts(n: int, median_words: float, sigma: float, seed: int, cap: int = 2000) -> np.ndarray:
    """Lognormal document lengths in words (a long right tail), at least 1, at most ``cap``."""
    rng = np.random.default_rng(seed)
    counts = np.exp(rng.normal(np.log(median_words), sigma, n))
    return np.clip(np.rint(counts), 1, cap).astype(int)


def documents(n: int, median_words: float = 30, sigma: float = 0.6, seed: int = 0,
              mixed_unicode: bool = False) -> Iterator[str]:
    """``n`` one-line documents with lognormal word counts."""
    writer = SentenceWriter(seed=seed, mixed_unicode=mixed_unicode)
    for count in word_counts(n, median_words, sigma, seed + 1):
        yield writer.document(int(count))


def write_corpus(path: str, texts: list[str]) -> str:
    """One document per line, UTF-8 (the pipeline's plain-text input format)."""
    with open(path, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(text.replace("\n", " ") + "\n")
    return path
