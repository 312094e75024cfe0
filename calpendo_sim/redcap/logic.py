"""The subset of REDCap logic a sync's ``filterLogic`` uses: parse once, evaluate per row.

    logic      := and_group ("or" and_group)*
    and_group  := term ("and" term)*
    term       := "(" logic ")" | operand OPERATOR operand
    operand    := [field] | [event][field] | 'text' | "text" | number
    OPERATOR   := = | == | <> | != | < | <= | > | >=

``and``/``or`` are case-insensitive (``&&``/``||`` too). Comparisons follow PHP's, which
REDCap's generated code runs: two numbers compare as numbers, anything else as text,
so a blank value equals only ``''`` and sorts before every date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Union

OPERATORS = ("<=", ">=", "<>", "!=", "==", "=", "<", ">")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<ref>\[[A-Za-z0-9_]+\](?:\[[A-Za-z0-9_]+\])?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op><=|>=|<>|!=|==|=|<|>)
  | (?P<word>(?i:and|or)\b|&&|\|\|)
  | (?P<paren>[()])
""", re.VERBOSE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class LogicError(ValueError):
    """The logic is not valid; the message says where."""


@dataclass(frozen=True)
class Ref:
    field: str
    event: str | None = None


@dataclass(frozen=True)
class Compare:
    left: "Ref | str"
    op: str
    right: "Ref | str"


@dataclass(frozen=True)
class AllOf:
    terms: tuple["Node", ...]


@dataclass(frozen=True)
class AnyOf:
    terms: tuple["Node", ...]


Node = Union[Compare, AllOf, AnyOf]
Lookup = Callable[[Ref], str]


def tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) of each token, whitespace left out."""
    found, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise LogicError(f"unexpected character {text[position]!r} at position {position}")
        if match.lastgroup != "space":
            found.append((match.lastgroup or "", match.group(), position))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokens(text)
        self.index = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise LogicError("the logic ends too early")
        self.index += 1
        return token

    def word(self, *words: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].lower() in words:
            self.index += 1
            return True
        return False

    def logic(self) -> Node:
        groups = [self.and_group()]
        while self.word("or", "||"):
            groups.append(self.and_group())
        return groups[0] if len(groups) == 1 else AnyOf(tuple(groups))

    def and_group(self) -> Node:
        terms = [self.term()]
        while self.word("and", "&&"):
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else AllOf(tuple(terms))

    def term(self) -> Node:
        token = self.peek()
        if token is not None and token[1] == "(":
            self.take()
            inner = self.logic()
            closing = self.take()
            if closing[1] != ")":
                raise LogicError(f"expected ')' at position {closing[2]}")
            return inner
        left = self.operand()
        kind, op, position = self.take()
        if kind != "op":
            raise LogicError(f"expected a comparison operator at position {position}")
        return Compare(left, op, self.operand())

    def operand(self) -> Ref | str:
        kind, text, position = self.take()
        if kind == "ref":
            names = text[1:-1].split("][")
            return Ref(names[-1], names[0] if len(names) == 2 else None)
        if kind == "string":
            return text[1:-1]
        if kind == "number":
            return text
        raise LogicError(f"expected a [field], a quoted value or a number at position {position}")


def parse(text: str) -> Node:
    """The logic as a tree; LogicError for anything outside the subset."""
    parser = _Parser(text)
    if parser.peek() is None:
        raise LogicError("the logic is empty")
    tree = parser.logic()
    rest = parser.peek()
    if rest is not None:
        raise LogicError(f"unexpected {rest[1]!r} at position {rest[2]}")
    return tree


def references(node: Node) -> Iterator[Ref]:
    """Every [field] and [event][field] the logic reads."""
    if isinstance(node, Compare):
        yield from (side for side in (node.left, node.right) if isinstance(side, Ref))
    else:
        for term in node.terms:
            yield from references(term)


def _compare(left: str, op: str, right: str) -> bool:
    a: float | str = left
    b: float | str = right
    if _NUMBER.fullmatch(left.strip()) and _NUMBER.fullmatch(right.strip()):
        a, b = float(left), float(right)
    if op in ("=", "=="):
        return a == b
    if op in ("<>", "!="):
        return a != b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]


def evaluate(node: Node, lookup: Lookup) -> bool:
    """The logic's value on one row; ``lookup`` gives a referenced field's value there."""
    if isinstance(node, AllOf):
        return all(evaluate(term, lookup) for term in node.terms)
    if isinstance(node, AnyOf):
        return any(evaluate(term, lookup) for term in node.terms)
    left, right = (lookup(side) if isinstance(side, Ref) else side
                   for side in (node.left, node.right))
    return _compare(left, node.op, right)
