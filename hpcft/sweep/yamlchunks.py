"""A sweep's YAML records without re-serialising the whole tree for every point.

Block-style YAML of a mapping is the concatenation of its entries' texts, and an entry of a
nested mapping is written the same way whatever its siblings are. So a tree is dumped once
as one text per entry a few levels deep (`framework:` then each of its keys), and a point
that changes a few values re-dumps only the entries that hold them. The texts are those of
`yaml_text` on the whole tree (tests/test_sweep_derive.py compares them).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

import yaml

from hpcft import yamltext
from hpcft.rundir import yaml_text

Path_ = tuple[str, ...]
"""A key path in the tree: ("framework", "learning_rate")."""


def _nest(path: Path_, value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


def _entry(path: Path_, value: Any) -> str:
    """The text of one entry as written inside its parents (their lines left out)."""
    return yaml_text(_nest(path, value)).split("\n", len(path) - 1)[-1]


def _entries(values: Mapping[Path_, Any]) -> dict[Path_, str]:
    """Each entry's text, as `_entry` gives it: written directly where `hpcft.yamltext` can,
    the others from one `dump_all` of them all (a dump's fixed cost is most of a small
    entry's): one document each, cut at the `---` lines PyYAML writes between documents (a
    `---` inside a document is written quoted or indented)."""
    direct = {path: text for path, value in values.items() if (text := _direct(path, value)) is not None}
    if len(values) - len(direct) < 2:
        return {path: direct[path] if path in direct else _entry(path, value) for path, value in values.items()}
    return {**direct, **_dumped({path: value for path, value in values.items() if path not in direct})}


def _direct(path: Path_, value: Any) -> str | None:
    text = yamltext.text(_nest(path, value))
    return None if text is None else text.split("\n", len(path) - 1)[-1]


def _dumped(values: Mapping[Path_, Any]) -> dict[Path_, str]:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    docs = [_nest(path, value) for path, value in values.items()]
    text: str = yaml.dump_all(docs, Dumper=dumper, sort_keys=False, allow_unicode=True)
    parts = re.split(r"(?m)^---\n", text)
    if len(parts) != len(docs):
        return {path: _entry(path, value) for path, value in values.items()}
    return {path: part.split("\n", len(path) - 1)[-1] for path, part in zip(values, parts, strict=True)}


def scalar_text(value: Any) -> str | None:
    """A number's, a bool's or None's YAML, as PyYAML's SafeRepresenter writes it; None for
    any other value (strings may need quotes: PyYAML writes them)."""
    return yamltext.number_text(value)


def rescalared(text: str, old: Any, new: Any) -> str | None:
    """An entry's one-line `text`, which ends in `old`'s scalar, with `new`'s instead (a swept
    number, without a dump); None where either is not such a scalar."""
    before, after = scalar_text(old), scalar_text(new)
    if before is None or after is None or text.count("\n") != 1 or not text.endswith(f" {before}\n"):
        return None
    return f"{text[: -len(before) - 1]}{after}\n"


def _header(path: Path_) -> str:
    """The line that opens a non-empty mapping entry (`key:`, quoted where YAML needs it)."""
    return yaml_text(_nest(path, {"k": 0})).split("\n")[len(path) - 1] + "\n"


def _with(value: Any, path: Path_, new: Any) -> Any:
    """`value` with `new` at `path` below it (copies along the path only; KeyError if absent)."""
    if not path:
        return new
    if not isinstance(value, dict) or path[0] not in value:
        raise KeyError(path[0])
    copy = dict(value)
    copy[path[0]] = _with(value[path[0]], path[1:], new)
    return copy


class ChunkedYaml:
    """The YAML of a plain tree (dicts, lists, scalars), dumped once in entries down to
    `depth` levels; `text` gives the YAML of the tree with some values replaced."""

    def __init__(self, tree: Mapping[str, Any], depth: int = 2) -> None:
        self.tree = dict(tree)
        """The base tree, as it was dumped."""
        self.chunks: dict[Path_, str] = {}
        """The text of each entry, in order: a mapping's header line, then its entries."""
        self.values: dict[Path_, Any] = {}
        """The value of each leaf entry (a scalar, a list, an empty mapping, or a mapping at `depth`)."""
        self.layouts: dict[frozenset[Path_], list[str | Path_]] = {}
        """`_layout`'s, once made."""
        self._split((), self.tree, depth)

    def _split(self, path: Path_, tree: Mapping[str, Any], depth: int) -> None:
        for key, value in tree.items():
            here = (*path, key)
            if isinstance(value, dict) and value and len(here) < depth:
                self.chunks[here] = _header(here)
                self._split(here, value, depth)
            else:
                self.chunks[here], self.values[here] = _entry(here, value), value

    def text(self, changes: Mapping[Path_, Any] | None = None) -> str:
        """The tree's YAML with each `changes` path set to its value. A path that is not in the
        tree, or that replaces a whole mapping of entries, dumps the whole tree."""
        redone: dict[Path_, Any] = {}
        try:
            for path, new in (changes or {}).items():
                entry = next(path[:n] for n in range(len(path), 0, -1) if path[:n] in self.values)
                redone[entry] = _with(redone.get(entry, self.values[entry]), path[len(entry) :], new)
        except (KeyError, StopIteration):
            tree: Any = self.tree
            for path, new in (changes or {}).items():
                tree = _set(tree, path, new)
            return yaml_text(tree)
        fast = {e: t for e, new in redone.items() if (t := rescalared(self.chunks[e], self.values[e], new)) is not None}
        texts = {**_entries({e: new for e, new in redone.items() if e not in fast}), **fast}
        return "".join(part if isinstance(part, str) else texts[part] for part in self._layout(frozenset(texts)))

    def _layout(self, redone: frozenset[Path_]) -> list[str | Path_]:
        """The text around the entries `redone`, joined once for each set of them (a sweep's
        points redo the same entries): each run of other entries' texts, and the paths."""
        if redone not in self.layouts:
            layout: list[str | Path_] = []
            kept: list[str] = []
            for key, text in self.chunks.items():
                if key in redone:
                    layout += ["".join(kept), key]
                    kept = []
                else:
                    kept.append(text)
            self.layouts[redone] = [*layout, "".join(kept)]
        return self.layouts[redone]


def _set(tree: Any, path: Path_, new: Any) -> Any:
    """`tree` with `new` at `path`, the keys on the way added where missing."""
    if not path:
        return new
    copy = dict(tree) if isinstance(tree, dict) else {}
    copy[path[0]] = _set(copy.get(path[0]), path[1:], new)
    return copy


def plain(value: Any) -> Any:
    """What `dataclasses.asdict` then enum values and lists make of a typed value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class TypedYaml:
    """`config.yaml` of typed configs that share most of their objects (points derived from
    one base): an entry is dumped again only when its value is not the one dumped before."""

    def __init__(self) -> None:
        self.seen: dict[Path_, tuple[Any, str]] = {}
        """Entry -> (the value dumped, its text)."""
        self.sections: dict[str, tuple[Any, str]] = {}
        """Top-level field -> (the dataclass last written, its text): the points' configs share
        the objects of the parts their values leave alone."""

    def text(self, cfg: Any) -> str:
        """What `yaml_text(plain(cfg))` gives."""
        parts = []
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if dataclasses.is_dataclass(value) and dataclasses.fields(value):
                parts.append(self._section(f.name, value))
            else:
                parts.append(self._chunk((f.name,), value))
        return "".join(parts)

    def _section(self, name: str, value: Any) -> str:
        """A dataclass field's text: its header and each of its fields' entries."""
        last = self.sections.get(name)
        if last is not None and last[0] is value:
            return last[1]
        parts = [self._chunk((name,), None, header=True)]
        parts += [self._chunk((name, s.name), getattr(value, s.name)) for s in dataclasses.fields(value)]
        text = "".join(parts)
        self.sections[name] = (value, text)
        return text

    def _chunk(self, path: Path_, value: Any, *, header: bool = False) -> str:
        """An entry's text, dumped again only for another value."""
        key = (*path, "") if header else path  # a field's header and the field as one entry differ
        seen = self.seen.get(key)
        if seen is not None and (seen[0] is value or _same_scalar(seen[0], value)):
            return seen[1]
        fast = None if seen is None or header else rescalared(seen[1], seen[0], value)
        text = fast or (_header(path) if header else _entry(path, plain(value)))
        self.seen[key] = (value, text)
        return text


def _same_scalar(a: Any, b: Any) -> bool:
    """Equal scalars of one type write the same text (1 == 1.0 and nested values do not)."""
    return type(a) is type(b) and isinstance(a, str | int | float | Enum) and a == b
