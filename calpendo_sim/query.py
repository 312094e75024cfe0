"""The Calpendo query grammar: a recursive-descent parser and a predicate compiler.

Grammar (one token per URL path segment, each segment percent-decoded after splitting)::

    EXPR   := BOOLOP '/' EXPR ('/' EXPR)* ['/' 'CLOSE'] | PATH '/' RELATION '/' VALUE
    BOOLOP := AND | OR | NAND | NOR

A missing CLOSE closes at the end of the input, so ``AND/a/EQ/1/OR/b/EQ/2/b/EQ/3`` puts the
last condition inside the OR group. Evaluation follows SQL's three-valued logic, as the
database behind a real server would: a comparison with a null property is *unknown*, NOT of
unknown stays unknown, and only rows whose whole expression is *true* are returned.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union
from urllib.parse import unquote

from .errors import BadRequest
from .schema import BOOL, DATETIME, ENUM, INT, OBJECT, STRING, Field

BOOLOPS = ("AND", "OR", "NAND", "NOR")
CLOSE = "CLOSE"
NULL = "__NULL__"

ORDERING = {"EQ": operator.eq, "NE": operator.ne, "LT": operator.lt, "LE": operator.le,
            "GT": operator.gt, "GE": operator.ge}
TEXT_MATCHING = {
    "CONTAINS": lambda value, literal: literal in value,
    "DOES_NOT_CONTAIN": lambda value, literal: literal not in value,
    "STARTS_WITH": lambda value, literal: value.startswith(literal),
    "DOES_NOT_START_WITH": lambda value, literal: not value.startswith(literal),
    "ENDS_WITH": lambda value, literal: value.endswith(literal),
    "DOES_NOT_END_WITH": lambda value, literal: not value.endswith(literal),
}
# Relations on collection properties; bookings have none, so these always get a 400.
COLLECTION_RELATIONS = ("INCLUDES_ALL", "DOES_NOT_INCLUDE_ALL", "INCLUDES_ANY",
                        "DOES_NOT_INCLUDE_ANY", "MEMBER_OF", "NOT_MEMBER_OF",
                        "CONTAINS_MEMBER", "DOES_NOT_CONTAIN_MEMBER")
RELATIONS = (*ORDERING, *TEXT_MATCHING, *COLLECTION_RELATIONS)

Truth = Optional[bool]  # None = SQL's UNKNOWN
Predicate = Callable[[dict], Truth]


@dataclass(frozen=True)
class Condition:
    path: str
    relation: str
    value: str
    position: int  # 1-based index of the path segment, for error messages


@dataclass(frozen=True)
class Group:
    op: str
    operands: tuple["Node", ...]
    position: int


Node = Union[Condition, Group]


def split_segments(raw: str) -> list[str]:
    """Split a raw (still percent-encoded) URL path tail on '/' and decode each segment."""
    try:
        return [unquote(part, errors="strict") for part in raw.split("/")]
    except UnicodeDecodeError as exc:
        raise BadRequest(f"URL segment is not valid percent-encoded UTF-8: {exc}") from None


class _Parser:
    """Consumes the token list left to right; one method per grammar rule."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str) -> str:
        token = self._peek()
        if token is None:
            raise BadRequest(f"expression ends early: expected {expected} after segment "
                             f"{self.pos} ({self._context()})")
        self.pos += 1
        return token

    def _context(self) -> str:
        shown = "/".join(self.tokens[max(0, self.pos - 3): self.pos + 1])
        return f"near {shown!r}" if shown else "empty expression"

    def parse(self) -> Node:
        if not self.tokens or self.tokens == [""]:
            raise BadRequest("missing query expression after the type")
        node = self._expression()
        if self.pos < len(self.tokens):
            raise BadRequest(f"unexpected {self.tokens[self.pos]!r} at segment {self.pos + 1} "
                             "after a complete expression (several conditions need an "
                             "AND/OR group)")
        return node

    def _expression(self) -> Node:
        start = self.pos + 1
        token = self._take("a condition or AND/OR/NAND/NOR")
        if token in BOOLOPS:
            return self._group(token, start)
        if token == CLOSE:
            raise BadRequest(f"CLOSE at segment {start} does not close any group")
        if not token:
            raise BadRequest(f"empty property path at segment {start} ({self._context()})")
        return self._condition(token, start)

    def _group(self, op: str, start: int) -> Group:
        operands: list[Node] = []
        while self._peek() not in (None, CLOSE):
            operands.append(self._expression())
        if self._peek() == CLOSE:
            self.pos += 1
        if not operands:
            raise BadRequest(f"{op} at segment {start} has no operands")
        return Group(op, tuple(operands), start)

    def _condition(self, path: str, start: int) -> Condition:
        relation = self._take(f"a relation after {path!r}")
        if relation not in RELATIONS:
            raise BadRequest(f"unknown relation {relation!r} at segment {start + 1}; "
                             f"supported: {', '.join(RELATIONS)}")
        value = self._take(f"a value after {path}/{relation}")
        return Condition(path, relation, value, start)


def parse_expression(tokens: Sequence[str]) -> Node:
    """Parse decoded segments into an AST; BadRequest explains what is malformed and where."""
    return _Parser(tokens).parse()


# --------------------------------------------------------------------------- literals

_DATE_LITERAL = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2}))?")


def parse_date_literal(text: str) -> dt.datetime:
    """``20210906`` (midnight) or ``20140526T1200`` as a naive site-local datetime."""
    match = _DATE_LITERAL.fullmatch(text)
    if not match:
        raise BadRequest(f"{text!r} is not a date literal (YYYYMMDD or YYYYMMDDTHHMM)")
    try:
        return dt.datetime(*(int(part or 0) for part in match.groups()))
    except ValueError as exc:
        raise BadRequest(f"{text!r} is not a valid date: {exc}") from None


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise BadRequest(f"{text!r} is not an integer")
    return int(text)


def _parse_bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise BadRequest(f"{text!r} is not a boolean (true or false)")
    return text == "true"


def _literal(spec: Field, text: str, where: str) -> object:
    """Convert a value segment to the property's type, or explain why it cannot be."""
    try:
        if spec.kind == INT:
            return _parse_int(text)
        if spec.kind == DATETIME:
            return parse_date_literal(text)
        if spec.kind == BOOL:
            return _parse_bool(text)
        if spec.kind == ENUM and text not in spec.choices:
            raise BadRequest(f"{text!r} is not one of {', '.join(spec.choices)}")
        return text
    except BadRequest as exc:
        raise BadRequest(f"{where}: {exc.message}") from None


# --------------------------------------------------------------------------- compilation

Resolver = Callable[[str], Field]


def _getter(path: str) -> Callable[[dict], object]:
    """Read a dotted path from typed properties; a null object on the way yields null."""
    segments = tuple(path.split("."))
    if len(segments) == 1:
        return lambda props: props.get(segments[0])

    def get(props: dict) -> object:
        value: object = props
        for segment in segments:
            if value is None:
                return None
            value = value.get(segment)  # type: ignore[union-attr]
        return value
    return get


def _test(spec: Field, cond: Condition) -> Callable[[object], Truth]:
    """A function from a property value to true/false/unknown for one condition."""
    where = f"condition {cond.path}/{cond.relation}/{cond.value} at segment {cond.position}"
    relation = cond.relation
    if relation in COLLECTION_RELATIONS:
        raise BadRequest(f"{where}: {relation} applies to collection properties and "
                         f"{cond.path!r} is a single {spec.kind}")
    if cond.value == NULL:
        if relation not in ("EQ", "NE"):
            raise BadRequest(f"{where}: only EQ and NE can compare with {NULL}")
        return (lambda v: v is None) if relation == "EQ" else (lambda v: v is not None)
    if spec.kind == OBJECT:
        raise BadRequest(f"{where}: {cond.path!r} is an object; compare one of its properties "
                         f"({', '.join(f'{cond.path}.{c}' for c in spec.children)}) "
                         f"or test it against {NULL}")
    allowed = _relations_for(spec)
    if relation not in allowed:
        raise BadRequest(f"{where}: {relation} does not apply to the {spec.kind} property "
                         f"{cond.path!r}; use one of {', '.join(allowed)}")
    literal = _literal(spec, cond.value, where)
    compare = ORDERING.get(relation) or TEXT_MATCHING[relation]
    return lambda v: None if v is None else compare(v, literal)


def _relations_for(spec: Field) -> tuple[str, ...]:
    if spec.kind == STRING:
        return (*ORDERING, *TEXT_MATCHING)
    if spec.kind in (INT, DATETIME):
        return tuple(ORDERING)
    return ("EQ", "NE")  # bool, enum


def _fold(operands: tuple[Predicate, ...], props: dict, decisive: bool) -> Truth:
    """SQL-style three-valued AND (decisive False) or OR (decisive True): one
    decisive operand settles it; otherwise any unknown makes the result unknown."""
    result: Truth = not decisive
    for operand in operands:
        value = operand(props)
        if value is decisive:
            return decisive
        if value is None:
            result = None
    return result


def _negate(value: Truth) -> Truth:
    return None if value is None else not value


def compile_predicate(node: Node, resolve: Resolver) -> Predicate:
    """Turn an AST into a predicate over typed booking properties.

    ``resolve`` maps a dotted path to its Field for the queried type and raises BadRequest
    for paths that type does not have, so every error surfaces before any row is read.
    """
    if isinstance(node, Condition):
        get, test = _getter(node.path), _test(resolve(node.path), node)
        return lambda props: test(get(props))
    operands = tuple(compile_predicate(child, resolve) for child in node.operands)
    decisive = node.op in ("OR", "NOR")  # AND/NAND are settled by a False
    if node.op in ("NAND", "NOR"):
        return lambda props: _negate(_fold(operands, props, decisive))
    return lambda props: _fold(operands, props, decisive)


def parse_paths(raw: str) -> list[str]:
    """The ``paths=`` parameter: comma-separated dotted paths, none of them empty."""
    paths = raw.split(",")
    if any(not path for path in paths):
        raise BadRequest(f"paths={raw!r} contains an empty path")
    return list(dict.fromkeys(paths))
