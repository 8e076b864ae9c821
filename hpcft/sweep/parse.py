"""Override lines parsed as Hydra's grammar parses them, each line once in a command.

A sweep's command line holds its swept values (`framework.learning_rate=1e-6,2e-6,...`): 4,096
values take Hydra's ANTLR grammar ~0.2 s to parse, and the same lines recur in every point.
A number or a plain list of numbers (the usual sweep) is read here without the grammar, into
the `Override` the grammar gives (tests/test_sweep_derive.py compares them); any other line
goes through the grammar, once per `LineParser`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override, OverrideType, ValueType

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*")
_INT = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][+-]?[0-9]+)?")


def _number(text: str) -> int | float | None:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return None


def number_override(line: str) -> Override | None:
    """`key=<number>` or `key=<number>,<number>,...` as Hydra's grammar parses it, without the
    grammar; None for any other line."""
    key, eq, text = line.partition("=")
    if not eq or not _KEY.fullmatch(key):
        return None
    values = [_number(item) for item in text.split(",")]
    if not values or any(v is None for v in values):
        return None
    value: Any = values[0]
    value_type = ValueType.ELEMENT
    if len(values) > 1:
        value_type, value = ValueType.SIMPLE_CHOICE_SWEEP, ChoiceSweep(list=list(values), simple_form=True)
    return Override(type=OverrideType.CHANGE, key_or_group=key, value_type=value_type, _value=value, input_line=line)


class LineParser:
    """Parses override lines, each distinct line once (numbers without the grammar)."""

    def __init__(self) -> None:
        self.grammar = OverridesParser.create()
        self.known: dict[str, Override] = {}
        """Each line parsed so far."""

    def parse(self, lines: Sequence[str]) -> list[Override]:
        """The lines' overrides; Hydra's exception for a line its grammar refuses."""
        out = []
        for line in lines:
            override = self.known.get(line)
            if override is None:
                override = number_override(line)
                if override is None:
                    (override,) = self.grammar.parse_overrides([line])
                self.known[line] = override
            out.append(override)
        return out
