"""Architecture strings <-> derivation trees.

Sentences are whitespace-separated words, so instead of Lark's regex lexer we split on
whitespace and look each word up: that is faster, rejects glued words ("reluelu"), and
lets errors name the word's position. Parsing is Lark's LALR, which also proves the
generated grammar unambiguous.
"""

from __future__ import annotations

import re
from functools import lru_cache

import lark
from lark import Lark, Token, Tree
from lark.lexer import Lexer

from hnas.errors import GrammarError, InvalidArchitecture

_WORD = re.compile(r"\S+")


class WordLexer(Lexer):
    """Maps each whitespace-separated word to a (shared, pre-built) token of its terminal.

    Tokens are shared between parses because building them dominated parse time; the
    word position an error needs is recovered by :func:`_locate_error` on the slow path.
    """

    def __init__(self, lexer_conf):
        self.token_of = {
            term.pattern.value: Token(term.name, term.pattern.value)
            for term in lexer_conf.terminals if term.pattern.type == "str"
        }

    def lex(self, text):
        token_of = self.token_of
        for index, word in enumerate(text.split()):
            token = token_of.get(word)
            if token is None:
                raise _unknown_word(word, index, text, sorted(token_of))
            yield token


def _unknown_word(word: str, index: int, text: str, known: list[str]) -> InvalidArchitecture:
    return InvalidArchitecture(
        f"unknown word {word!r} at position {index} (character {_char_offset(text, index)}); "
        f"expected one of the grammar's words: {', '.join(known)}",
        token=word, position=index, expected=tuple(known))


def _char_offset(text: str, index: int) -> int:
    matches = list(_WORD.finditer(text))
    return matches[index].start() if index < len(matches) else len(text)


@lru_cache(maxsize=32)
def load_grammar(grammar: str) -> Lark:
    """Build (and cache) the LALR parser of a grammar text."""
    try:
        return Lark(grammar, start="architecture", parser="lalr", lexer=WordLexer,
                    keep_all_tokens=True, propagate_positions=False, maybe_placeholders=False)
    except lark.exceptions.LarkError as exc:  # syntax errors and LALR conflicts alike
        raise GrammarError(f"grammar does not build with Lark's LALR parser: {exc}") from exc


def terminal_words(grammar: str) -> dict[str, str]:
    """Terminal name -> the word it stands for."""
    parser = load_grammar(grammar)
    return {t.name: t.pattern.value for t in parser.terminals if t.pattern.type == "str"}


def parse(grammar: str, text: str) -> Tree:
    """Derivation tree of ``text``; raises InvalidArchitecture naming the offending word."""
    if not isinstance(text, str):
        raise InvalidArchitecture(f"an architecture must be a string, got {type(text).__name__} {text!r}")
    parser = load_grammar(grammar)
    try:
        return parser.parse(text)
    except InvalidArchitecture:
        raise
    except lark.exceptions.UnexpectedToken as exc:
        raise _unexpected(grammar, text, exc) from None
    except lark.exceptions.UnexpectedInput as exc:  # pragma: no cover - lexer errors are ours
        raise InvalidArchitecture(f"invalid architecture {text!r}: {exc}") from None


def _unexpected(grammar: str, text: str, exc: lark.exceptions.UnexpectedToken) -> InvalidArchitecture:
    words = terminal_words(grammar)
    expected = tuple(sorted(words.get(name, name) for name in exc.expected if name != "$END"))
    if "$END" in exc.expected:
        expected += ("<end>",)
    n_words = len(text.split())
    if exc.token.type == "$END":
        return InvalidArchitecture(
            f"architecture ends too early after {n_words} words; expected one of: {', '.join(expected)}",
            token=None, position=n_words, expected=expected)
    position = _locate_error(grammar, text)
    return InvalidArchitecture(
        f"unexpected word {exc.token.value!r} at position {position} (character {_char_offset(text, position)}); "
        f"expected one of: {', '.join(expected)}",
        token=str(exc.token.value), position=position, expected=expected)


def _locate_error(grammar: str, text: str) -> int:
    """Index of the first word the LALR parser rejects (feeds words one by one)."""
    interactive = load_grammar(grammar).parse_interactive("")
    words = text.split()
    names = {word: name for name, word in terminal_words(grammar).items()}
    for index, word in enumerate(words):
        try:
            interactive.feed_token(Token(names[word], word))
        except lark.exceptions.UnexpectedToken:
            return index
    return len(words)


def unparse(tree: Tree) -> str:
    """Canonical string of a derivation: its words joined by single spaces."""
    words: list[str] = []
    _collect_words(tree, words)
    return " ".join(words)


def _collect_words(tree: Tree, words: list[str]) -> None:
    # A plain recursion: 2-3x faster than Tree.scan_values, and unparse is on mutation's path.
    for child in tree.children:
        if isinstance(child, Tree):
            _collect_words(child, words)
        else:
            words.append(str(child))
