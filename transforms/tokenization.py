"""WordPiece tokenization, token for token identical to google-research/bert.

The rules follow the original ``tokenization.py`` (``BasicTokenizer``,
``WordpieceTokenizer``, ``FullTokenizer``) exactly, including its Unicode
character classes; the tests compare against that code. The only additions are
speed: a per-word cache of wordpiece splits and vocabulary lookups done once.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence

UNKNOWN_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MAX_INPUT_CHARS_PER_WORD = 200
_WORD_CACHE_LIMIT = 200_000


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


@functools.cache
def _cleaning_table() -> dict[int, str | None]:
    """``str.translate`` table of BasicTokenizer's character rules, for every code point.

    NUL, U+FFFD and control characters are dropped, whitespace becomes a space, CJK
    ideographs get a space on each side; every other character is kept as it is.
    Built once per process from the predicates below (about a second).
    """
    table: dict[int, str | None] = {}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if code == 0 or code == 0xFFFD or _is_control(char):
            table[code] = None
        elif _is_whitespace(char):
            table[code] = " "
        elif _is_chinese_char(code):
            table[code] = f" {char} "
    return table


class BasicTokenizer:
    """Cleans text, splits on whitespace and punctuation, isolates CJK characters."""

    def __init__(self, do_lower_case: bool = True) -> None:
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str) -> list[str]:
        """Splits cleaned text into words and punctuation marks."""
        if text.isascii():
            return self._tokenize_ascii(text)
        words: list[str] = []
        for token in self.clean(text).split():
            words.extend(self.split_token(token))
        return words

    @staticmethod
    def clean(text: str) -> str:
        """Drops NUL, U+FFFD and control characters, maps whitespace to a space and surrounds
        every CJK ideograph with spaces, in one ``str.translate`` over a table of those rules."""
        return text.translate(_cleaning_table())

    def split_token(self, token: str) -> list[str]:
        """One whitespace-free token to words: lower-cased and accent-stripped when uncased,
        then split at punctuation. The rules are per token, so results can be cached by token."""
        if self.do_lower_case:
            token = self._strip_accents(token.lower())
        return " ".join(self._split_on_punctuation(token)).split()

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

    @staticmethod
    def _strip_accents(text: str) -> str:
        """NFD-normalises and drops combining marks (category Mn)."""
        return "".join(
            char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn"
        )

    @staticmethod
    def _split_on_punctuation(text: str) -> list[str]:
        """Makes every punctuation character a token of its own."""
        pieces: list[list[str]] = []
        start_new_word = True
        for char in text:
            if _is_punctuation(char):
                pieces.append([char])
                start_new_word = True
            else:
                if start_new_word:
                    pieces.append([])
                start_new_word = False
                pieces[-1].append(char)
        return ["".join(piece) for piece in pieces]


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

    def tokenize_word(self, word: str) -> list[str]:
        """Splits one whitespace-free word; a word that cannot be split is [UNK]."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                candidate = word[start:end]
                if start > 0:
                    candidate = "##" + candidate
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

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
        tokens = basic.tokenize(text) if ascii_text else basic.clean(text).split()
        ids: list[int] = []
        cache = self._word_cache
        for token in tokens:
            token_ids = cache.get(token)
            if token_ids is None:
                # ASCII fast-path tokens are already final words; others still need split_token.
                words = (token,) if ascii_text else basic.split_token(token)
                token_ids = tuple(
                    self.vocab[piece]
                    for word in words
                    for piece in self.wordpiece_tokenizer.tokenize_word(word)
                )
                if len(cache) >= _WORD_CACHE_LIMIT:
                    cache.clear()
                cache[token] = token_ids
            ids.extend(token_ids)
        return ids

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[token] for token in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.inv_vocab[index] for index in ids]
