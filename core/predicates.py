"""The segment predicate language: small, typed, checked when the program loads.

A predicate is comparisons of a member's figures with constants, combined with ``and``,
``or``, ``not`` and parentheses::

    days_since_last_sale >= 30
    sales_30d >= 3 and morning_share_30d >= 0.6
    favourite_fuel == 'diesel' or tier in ['silver', 'gold']

Comparisons: ``==  !=  <  <=  >  >=`` and ``in [...]``. Constants: numbers, quoted text
('...' or "..."), ``true`` and ``false``. Every field name is one of :data:`FIELDS` and
has a type: numbers compare with numbers (all operators), text with text (``==``, ``!=``,
``in``), yes/no fields with ``true``/``false`` (``==``, ``!=``). A figure without a value
(``days_since_last_sale`` before the first sale) makes every comparison on it false.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

NUMBER, TEXT, YES_NO = "number", "text", "yes/no"

FIELDS: dict[str, str] = {
    **{
        name: NUMBER
        for name in (
            "liters_7d",
            "liters_30d",
            "liters_90d",
            "amount_7d",
            "amount_30d",
            "amount_90d",
            "sales_30d",
            "sales_90d",
            "days_since_last_sale",
            "avg_liters_per_fill",
            "morning_share_30d",
            "midday_share_30d",
            "evening_share_30d",
            "night_share_30d",
            "lifetime_points",
            "lifetime_liters",
            "lifetime_amount",
            "lifetime_sales",
            "balance",
            "rfm_recency",
            "rfm_frequency",
            "rfm_monetary",
        )
    },
    "favourite_fuel": TEXT,
    "favourite_station": TEXT,
    "tier": TEXT,
    "locale": TEXT,
    "marketing_consent": YES_NO,
}
"""Every field a predicate can name, with its type."""

Predicate = Callable[[Mapping[str, Any]], bool]

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?)|(?P<text>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>==|!=|<=|>=|<|>)|(?P<punct>[()\[\],])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)


class PredicateError(ValueError):
    """A predicate that does not parse or does not type-check."""


def compile_predicate(text: str) -> Predicate:
    """Parse and type-check ``text``; the result tells whether a member's figures match."""
    parser = _Parser(_tokens(text))
    predicate = parser.expression()
    if parser.peek() is not None:
        raise PredicateError(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return predicate


def fields_of(text: str) -> set[str]:
    """The field names a (valid) predicate reads."""
    return {value for kind, value in _tokens(text) if kind == "word" and value in FIELDS}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise PredicateError(f"cannot read {text[position:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    if not tokens:
        raise PredicateError("is empty")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise PredicateError("ends too early")
        self.position += 1
        return token

    def accept(self, value: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == value:
            self.position += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            token = self.peek()
            found = "the end" if token is None else repr(token[1])
            raise PredicateError(f"expected {value!r}, found {found}")

    def expression(self) -> Predicate:
        terms = [self.conjunction()]
        while self.accept("or"):
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        return lambda figures: any(term(figures) for term in terms)

    def conjunction(self) -> Predicate:
        factors = [self.negation()]
        while self.accept("and"):
            factors.append(self.negation())
        if len(factors) == 1:
            return factors[0]
        return lambda figures: all(factor(figures) for factor in factors)

    def negation(self) -> Predicate:
        if self.accept("not"):
            inner = self.negation()
            return lambda figures: not inner(figures)
        if self.accept("("):
            inner = self.expression()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        kind, name = self.take()
        if kind != "word" or name in ("and", "or", "not", "in", "true", "false"):
            raise PredicateError(f"expected a field name, found {name!r}")
        field_type = FIELDS.get(name)
        if field_type is None:
            raise PredicateError(f"unknown field {name!r}")
        if self.accept("in"):
            if field_type != TEXT:
                raise PredicateError(f"'in' needs a text field; {name!r} is a {field_type}")
            self.expect("[")
            options = {self.constant(name, field_type)}
            while self.accept(","):
                options.add(self.constant(name, field_type))
            self.expect("]")
            return lambda figures: figures[name] in options
        kind, symbol = self.take()
        if kind != "op":
            raise PredicateError(f"expected a comparison after {name!r}, found {symbol!r}")
        if field_type != NUMBER and symbol not in ("==", "!="):
            raise PredicateError(f"{name!r} is a {field_type}: only == and != apply")
        compare = _OPERATORS[symbol]
        constant = self.constant(name, field_type)

        def matches(figures: Mapping[str, Any]) -> bool:
            value = figures[name]
            return value is not None and compare(value, constant)

        return matches

    def constant(self, name: str, field_type: str) -> Any:
        kind, text = self.take()
        if field_type == NUMBER and kind == "number":
            return float(text)
        if field_type == TEXT and kind == "text":
            return text[1:-1]
        if field_type == YES_NO and text in ("true", "false"):
            return text == "true"
        raise PredicateError(f"{name!r} is a {field_type}; {text!r} is not")
