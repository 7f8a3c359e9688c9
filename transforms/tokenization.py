"""WordPiece tokenization, token for token identical to google-research/bert.

The rules follow the original ``tokenization.py`` (``BasicTokenizer``,
``WordpieceTokenizer``, ``FullTokenizer``) exactly, including its Unicode
character classes; the tests compare against that code, on every code point. The
only additions are speed: the character predicates compiled once into regular
expressions, a per-word cache of wordpiece splits with vocabulary lookups done
once, and a greedy WordPiece search that skips candidates no vocabulary entry is
long enough to match.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

__all__ = ["CLS_TOKEN", "MAX_INPUT_CHARS_PER_WORD", "SEP_TOKEN", "UNKNOWN_TOKEN", "BasicTokenizer",
           "FullTokenizer", "WordpieceTokenizer", "load_vocab_lines", "read_vocab_file"]

UNKNOWN_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MAX_INPUT_CHARS_PER_WORD = 200
_WORD_CACHE_LIMIT = 200_000
# The first guess of how much text holds a given number of wordpieces; a miss doubles it.
_PREFIX_CHARS_PER_WORDPIECE = 8


def load_vocab_lines(lines: Iterable[str]) -> dict[str, int]:
    """Maps each vocabulary line, stripped as the original does, to its line index.

    A vocabulary that repeats a token is refused: google-research/bert releases
    disagree on which index such a token gets, so its ids would be ambiguous.
    """
    vocab: dict[str, int] = {}
    duplicates: list[str] = []
    for index, line in enumerate(lines):
        token = line.strip()
        if token in vocab:
            duplicates.append(token)
        vocab[token] = index
    if duplicates:
        shown = ", ".join(repr(token) for token in duplicates[:5])
        raise ValueError(f"The vocabulary repeats {len(duplicates)} token(s): {shown}.")
    return vocab


def read_vocab_file(path: str) -> tuple[str, ...]:
    """Reads a vocab.txt (local or any Beam/TF filesystem path) as a tuple of lines."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as handle:
        text = handle.read().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(line.rstrip("\r") for line in lines)


_ASCII_CLEANING = {code: None for code in [*range(0x20), 0x7F]} | {ord("\t"): " ", ord("\n"): " ",
                                                                  ord("\r"): " "}
_ASCII_WORD_OR_PUNCTUATION = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")


def _is_whitespace(char: str) -> bool:
    """Space, tab, newline, carriage return and Unicode category Zs are whitespace.

    \\t, \\n and \\r are technically control characters but BERT treats them as
    whitespace.
    """
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    """Unicode categories Cc and Cf are control characters, except \\t \\n \\r."""
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    """All non-alphanumeric ASCII and Unicode category P* count as punctuation.

    Characters such as "^", "$" and "`" are not Unicode punctuation but BERT
    treats them as such for consistency.
    """
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(code: int) -> bool:
    """The CJK Unified Ideographs blocks, as the original defines them.

    Hiragana, Katakana and Hangul are deliberately not included.
    """
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def _character_class(codes: Iterable[int]) -> str:
    """A regex character class (without brackets) matching exactly ``codes``, as sorted ranges."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(f"\\U{first:08x}" if first == last else f"\\U{first:08x}-\\U{last:08x}"
                   for first, last in ranges)


class _CharacterRules(NamedTuple):
    """BasicTokenizer's character predicates compiled into regular expressions.

    Every expression comes in two forms: ``full`` for any text and ``bmp`` built from the Basic
    Multilingual Plane only, valid for text without astral characters. ``re`` matches a BMP class
    with one bitmap lookup but tries an astral class range by range, several times slower.
    """

    dropped: tuple[re.Pattern[str], re.Pattern[str]]
    printable_dropped: str
    chinese: tuple[re.Pattern[str], re.Pattern[str]]
    combining_marks: tuple[re.Pattern[str], re.Pattern[str]]
    word_or_punctuation: tuple[re.Pattern[str], re.Pattern[str]]


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@functools.cache
def _character_rules() -> _CharacterRules:
    """Evaluates the predicates above on every code point, once per process (one to two seconds).

    NUL, U+FFFD and control characters are dropped; CJK ideographs are isolated; combining marks
    (Mn) are what accent stripping drops; punctuation splits words, and so does every character
    ``str.split`` splits on, as the original's final ``whitespace_tokenize`` does. The original
    also maps its whitespace to a space before splitting with ``str.split``; that mapping is left
    out because every such character is already ``str.isspace`` (a test checks every code point),
    so it cannot change the split.
    """
    codes = range(sys.maxunicode + 1)
    chars = list(map(chr, codes))

    def where(predicate: Callable[[str], bool]) -> list[int]:
        return list(itertools.compress(codes, map(predicate, chars)))

    dropped = where(lambda char: char in ("\x00", "\ufffd") or _is_control(char))
    chinese = list(itertools.compress(codes, map(_is_chinese_char, codes)))
    marks = list(itertools.compress(codes, map("Mn".__eq__, map(unicodedata.category, chars))))
    punctuation = where(_is_punctuation)
    spaces = where(str.isspace)

    def both(pattern: Callable[[Callable[[int], bool]], str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
        return re.compile(pattern(lambda code: True)), re.compile(pattern(lambda code: code < 0x10000))

    def word_or_punctuation(keep: Callable[[int], bool]) -> str:
        return (f"[{_character_class(filter(keep, punctuation))}]"
                f"|[^{_character_class(filter(keep, punctuation + spaces))}]+")

    return _CharacterRules(
        dropped=both(lambda keep: f"[{_character_class(filter(keep, dropped))}]"),
        printable_dropped="".join(chr(code) for code in dropped if chr(code).isprintable()),
        chinese=both(lambda keep: f"([{_character_class(filter(keep, chinese))}])"),
        combining_marks=both(lambda keep: f"[{_character_class(filter(keep, marks))}]"),
        word_or_punctuation=both(word_or_punctuation),
    )


def _pick(patterns: tuple[re.Pattern[str], re.Pattern[str]], text: str) -> re.Pattern[str]:
    """The BMP-only form of a rule where ``text`` has no astral character, else the full one."""
    full, bmp = patterns
    return full if _ASTRAL.search(text) else bmp


@functools.cache
def _word_boundary() -> re.Pattern[str]:
    """Characters before which the original always starts a new whitespace token.

    BERT whitespace (converted to a space by ``_clean_text``) and CJK ideographs (spaced by
    ``_tokenize_chinese_chars``). Everything else the original does acts per character or
    per whitespace token, so text cut before one of these tokenizes to a prefix of the
    whole text's wordpieces. Punctuation is not such a place: ``str.lower`` looks across it
    (a final sigma before a full stop), so a cut there could change the word before it.
    """
    whitespace = [code for code in range(0x3001) if _is_whitespace(chr(code))]
    chinese = [code for code in range(sys.maxunicode + 1) if _is_chinese_char(code)]
    return re.compile(f"[{_character_class(sorted(whitespace + chinese))}]")


class BasicTokenizer:
    """Cleans text, splits on whitespace and punctuation, isolates CJK characters."""

    def __init__(self, do_lower_case: bool = True) -> None:
        self.do_lower_case = do_lower_case
        self._rules = _character_rules()

    def tokenize(self, text: str) -> list[str]:
        """Splits cleaned text into words and punctuation marks."""
        if text.isascii():
            return self._tokenize_ascii(text)
        words: list[str] = []
        for token in self.whitespace_tokens(text):
            words.extend(self.split_token(token))
        return words

    def whitespace_tokens(self, text: str) -> list[str]:
        """Drops NUL, U+FFFD and control characters, isolates CJK ideographs and splits at whitespace.

        The original's ``_clean_text``, ``_tokenize_chinese_chars`` and ``whitespace_tokenize``.
        ``str.isprintable`` is false for every dropped character but a few, so most text skips
        the search for them.
        """
        rules = self._rules
        if not text.isprintable() or any(char in text for char in rules.printable_dropped):
            text = _pick(rules.dropped, text).sub("", text)
        chinese = _pick(rules.chinese, text)
        if chinese.search(text):
            text = " ".join(chinese.split(text))
        return text.split()

    def split_token(self, token: str) -> list[str]:
        """One cleaned whitespace-free token to words: lower-cased and accent-stripped when uncased,
        then split at punctuation. The rules are per token, so results can be cached by token."""
        if self.do_lower_case:
            token = token.lower()
            if not token.isascii():
                decomposed = unicodedata.normalize("NFD", token)
                token = _pick(self._rules.combining_marks, decomposed).sub("", decomposed)
        if token.isascii():
            # A cleaned token holds no ASCII control character, so the ASCII rule is the whole rule.
            return _ASCII_WORD_OR_PUNCTUATION.findall(token)
        return _pick(self._rules.word_or_punctuation, token).findall(token)

    def _tokenize_ascii(self, text: str) -> list[str]:
        """The same rules, specialised to ASCII text and run by C code (str.translate, re).

        In ASCII, BERT's control characters are 0x00-0x1F and 0x7F (dropped, except
        tab, newline and carriage return, which become spaces), there are no accents
        or CJK characters, and every printable non-alphanumeric character is punctuation.
        """
        text = text.translate(_ASCII_CLEANING)
        if self.do_lower_case:
            text = text.lower()
        return _ASCII_WORD_OR_PUNCTUATION.findall(text)


class WordpieceTokenizer:
    """Greedy longest-match-first split of a word into vocabulary pieces."""

    def __init__(
        self,
        vocab: dict[str, int],
        unk_token: str = UNKNOWN_TOKEN,
        max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD,
    ) -> None:
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        self._pieces = {index: token for token, index in vocab.items()}
        # "##" pieces without their "##", so that a candidate needs no concatenation.
        self._continuations = {token[2:]: index for token, index in vocab.items() if token.startswith("##")}
        # A candidate longer than the longest piece that starts with its first two characters
        # cannot match, so none is tried; with no such piece only one character can. A word's
        # first piece is looked up in the whole vocabulary, "##" entries included, as the original does.
        self._longest_start = self._longest_by_first_two(vocab)
        self._longest_continuation = self._longest_by_first_two(self._continuations)

    @staticmethod
    def _longest_by_first_two(pieces: Iterable[str]) -> dict[str, int]:
        longest: dict[str, int] = {}
        for piece in pieces:
            if len(piece) >= 2:
                longest[piece[:2]] = max(longest.get(piece[:2], 0), len(piece))
        return longest

    def tokenize_word(self, word: str) -> list[str]:
        """Splits one whitespace-free word; a word that cannot be split is [UNK]."""
        ids = self._longest_matches(word)
        return [self.unk_token] if ids is None else [self._pieces[index] for index in ids]

    def word_ids(self, word: str) -> list[int]:
        """``tokenize_word`` as vocabulary ids."""
        ids = self._longest_matches(word)
        return [self.vocab[self.unk_token]] if ids is None else ids

    def _longest_matches(self, word: str) -> list[int] | None:
        """The ids of the greedy split of ``word``, or None where it has none ([UNK])."""
        length = len(word)
        if length > self.max_input_chars_per_word:
            return None
        if not word:
            return []
        vocab = self.vocab
        end = min(length, self._longest_start.get(word[:2], 1))
        while True:
            index = vocab.get(word[:end])
            if index is not None:
                break
            end -= 1
            if end == 0:
                return None
        ids = [index]
        continuations = self._continuations
        longest = self._longest_continuation
        while end < length:
            start = end
            end = min(length, start + longest.get(word[start:start + 2], 1))
            while True:
                index = continuations.get(word[start:end])
                if index is not None:
                    break
                end -= 1
                if end == start:
                    return None
            ids.append(index)
        return ids

    def tokenize(self, text: str) -> list[str]:
        """Splits whitespace-separated text into wordpieces."""
        pieces: list[str] = []
        for word in text.split():
            pieces.extend(self.tokenize_word(word))
        return pieces


class FullTokenizer:
    """Basic then WordPiece tokenization, with ids, as google-research/bert does."""

    def __init__(self, vocab_lines: Sequence[str], do_lower_case: bool) -> None:
        self.vocab = load_vocab_lines(vocab_lines)
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)
        self._word_cache: dict[str, tuple[int, ...]] = {}
        for special in (CLS_TOKEN, SEP_TOKEN, UNKNOWN_TOKEN):
            if special not in self.vocab:
                raise ValueError(f"The vocabulary has no {special} token.")
        self.cls_id = self.vocab[CLS_TOKEN]
        self.sep_id = self.vocab[SEP_TOKEN]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """Text to wordpiece strings."""
        return [self.inv_vocab[index] for index in self.tokenize_to_ids(text)]

    def tokenize_to_ids(self, text: str) -> list[int]:
        """Text to wordpiece ids; each distinct token is split once and its ids cached.

        ASCII text is split into words by the ASCII fast path; other text into
        whitespace tokens after cleaning, each then split by ``split_token``. Both kinds
        of key map to the same ids for the same string, so they share one cache.
        """
        basic = self.basic_tokenizer
        ascii_text = text.isascii()
        tokens = basic.tokenize(text) if ascii_text else basic.whitespace_tokens(text)
        ids: list[int] = []
        extend = ids.extend
        cache = self._word_cache
        for token in tokens:
            token_ids = cache.get(token)
            if token_ids is None:
                # ASCII fast-path tokens are already final words; others still need split_token.
                words = (token,) if ascii_text else basic.split_token(token)
                word_ids = self.wordpiece_tokenizer.word_ids
                token_ids = tuple(index for word in words for index in word_ids(word))
                if len(cache) >= _WORD_CACHE_LIMIT:
                    cache.clear()
                cache[token] = token_ids
            extend(token_ids)
        return ids

    def tokenize_prefix_to_ids(self, text: str, limit: int) -> list[int]:
        """The first wordpiece ids of ``text``, tokenizing only about as much text as needed.

        All of them when the text has at most ``limit``; otherwise more than ``limit``, which
        are the first ids of the whole text's (so the caller knows it truncates). The text is
        cut only where the original starts a new whitespace token (``_word_boundary``).
        """
        chars = (limit + 1) * _PREFIX_CHARS_PER_WORDPIECE
        boundary = _word_boundary()
        while chars < len(text):
            found = boundary.search(text, chars)
            if found is None:
                break
            ids = self.tokenize_to_ids(text[: found.start()])
            if len(ids) > limit:
                return ids
            chars = 2 * found.start() + 1
        return self.tokenize_to_ids(text)

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[token] for token in tokens]
