"""LLaMA-Factory's data model, as its `data/README.md` defines it and its loader enforces it.

A dataset is an entry of a `dataset_info.json` registry: a file (or a folder of files) with
a `formatting` (alpaca, sharegpt, openai), optional `ranking`, and `columns`/`tags` that map
the file's keys onto LLaMA-Factory's roles, with LLaMA-Factory's defaults where unset
(`DatasetAttr` in `llamafactory/data/parser.py`).

Rows are checked the way LLaMA-Factory's converters and processors treat them
(`llamafactory/data/converter.py`, `processor/*.py`): a row it would skip ("Invalid role
tag", "Dropped invalid example") or crash on is refused here with its `file:line`, so no
row is trained away silently. A plain `trainset` file gets its entry inferred from its own
keys; the entry is never assumed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from hpcft.data import Row
from hpcft.errors import DataError, unknown_name

Stage = Literal["pt", "sft", "rm", "dpo", "kto"]
Formatting = Literal["alpaca", "sharegpt", "openai"]
FORMATTINGS: tuple[Formatting, ...] = ("alpaca", "sharegpt", "openai")
COLUMN_DEFAULTS: dict[str, str | None] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
    "system": None,
    "tools": None,
    "images": None,
    "videos": None,
    "audios": None,
    "chosen": None,
    "rejected": None,
    "kto_tag": None,
}
TAG_DEFAULTS: dict[str, str | None] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
OPENAI_TAGS = {
    **TAG_DEFAULTS,
    **{"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
}
"""The tags of sharegpt data written with OpenAI-style `role`/`content` messages (tool turns
keep LLaMA-Factory's `function_call` / `observation` roles)."""
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
ENTRY_KEYS: tuple[str, ...] = ("file_name", *HUB_KEYS, "formatting", "ranking", "subset", "split", "folder")
ENTRY_KEYS += ("num_samples", "columns", "tags")
MEDIA = ("images", "videos", "audios")
MEDIA_TOKENS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    """One registered dataset, with LLaMA-Factory's defaults filled in."""

    name: str
    """Its key in `dataset_info.json`."""
    raw: str
    """The entry as the user wrote it (JSON), written unchanged into the run's registry."""
    path: str | None
    """The local file or folder (absolute); None for hub-only entries."""
    hub: str | None
    """The hub id of a hub-only entry."""
    formatting: Formatting
    ranking: bool
    columns: tuple[tuple[str, str | None], ...]
    tags: tuple[tuple[str, str | None], ...]

    @cached_property
    def _columns(self) -> dict[str, str | None]:
        return dict(self.columns)

    @cached_property
    def _tags(self) -> dict[str, str | None]:
        return dict(self.tags)

    @cached_property
    def media_columns(self) -> tuple[tuple[str, str], ...]:
        """(kind, file key) of the media columns the entry names."""
        return tuple((kind, key) for kind in MEDIA if (key := self._columns[kind]))

    def column(self, role: str) -> str | None:
        return self._columns[role]

    def tag(self, name: str) -> str | None:
        return self._tags[name]

    def used_columns(self) -> dict[str, str]:
        """Role -> file key of every column LLaMA-Factory reads for this formatting."""
        roles = ["system", "tools", *MEDIA, "kto_tag"]
        roles += ["prompt", "query", "response", "history"] if self.formatting == "alpaca" else ["messages"]
        if self.ranking:
            roles += ["chosen", "rejected"]
        return {role: key for role in roles if (key := self.column(role))}


def _mapping(where: str, value: Any, defaults: Mapping[str, str | None]) -> dict[str, str | None]:
    """Column or tag names as LLaMA-Factory resolves them: its defaults when the entry has no
    `columns` (`tags`) at all, else exactly what the entry lists, every other one unset."""
    if value is None:
        return dict(defaults)
    if not isinstance(value, dict):
        raise DataError(where, "must be an object")
    for key, name in value.items():
        if key not in defaults:
            raise DataError(where, unknown_name("key", key, defaults))
        if name is not None and not isinstance(name, str):
            raise DataError(where, f"{key} must be a string or null")
    return {key: value.get(key) for key in defaults}


def parse_entry(name: str, raw: Any, base_dir: Path, where: str) -> DatasetEntry:
    """A registry entry as LLaMA-Factory's `get_dataset_list` reads it; `where` names it in errors."""
    if not isinstance(raw, dict):
        raise DataError(where, f"dataset {name!r} must be an object")
    for key in raw:
        if key not in ENTRY_KEYS:
            raise DataError(where, f"dataset {name!r}: " + unknown_name("key", key, ENTRY_KEYS))
    formatting = raw.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(where, f"dataset {name!r}: formatting must be one of {', '.join(FORMATTINGS)}")
    hub = next((raw[k] for k in HUB_KEYS if k in raw), None)
    if hub is None and not isinstance(raw.get("file_name"), str):
        raise DataError(where, f"dataset {name!r} needs file_name (or a hub url)")
    columns = _mapping(f"{where}: dataset {name!r} columns", raw.get("columns"), COLUMN_DEFAULTS)
    tags = _mapping(f"{where}: dataset {name!r} tags", raw.get("tags"), TAG_DEFAULTS)
    return DatasetEntry(
        name=name,
        raw=json.dumps(raw, ensure_ascii=False),
        path=None if hub is not None else str((base_dir / raw["file_name"]).absolute()),
        hub=hub,
        formatting=formatting,
        ranking=bool(raw.get("ranking", False)),
        columns=tuple(columns.items()),
        tags=tuple(tags.items()),
    )


def read_registry(dataset_dir: str) -> dict[str, Any]:
    """`<dataset_dir>/dataset_info.json`, parsed strictly (`file:line` on a syntax error)."""
    path = Path(dataset_dir) / "dataset_info.json"
    if not path.is_file():
        raise DataError(str(path), "no dataset_info.json in the dataset_dir")
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"invalid JSON: {e.msg}", e.lineno) from None
    except RecursionError:
        raise DataError(str(path), "invalid JSON: nested too deeply to read") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(str(path), f"cannot be read: {e}") from None
    if not isinstance(registry, dict):
        raise DataError(str(path), "must be an object of dataset name -> entry")
    return registry


def registered_entries(dataset_dir: str, names: list[str]) -> list[DatasetEntry]:
    registry = read_registry(dataset_dir)
    where = str(Path(dataset_dir) / "dataset_info.json")
    entries = []
    for name in names:
        if name not in registry:
            raise DataError(where, unknown_name("dataset", name, registry))
        entries.append(parse_entry(name, registry[name], Path(dataset_dir), where))
    return entries


def data_files(entry: DatasetEntry) -> list[Path]:
    """The files LLaMA-Factory loads for an entry: the file, or every file of the folder."""
    assert entry.path is not None
    path = Path(entry.path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        kinds = {p.suffix for p in files}
        if not files or (kinds - {".json", ".jsonl"} and kinds != {".txt"}):
            raise DataError(str(path), "a dataset folder must hold .json / .jsonl files, or .txt files, only")
        return files
    if not path.exists():
        raise DataError(str(path), f"no such file (dataset {entry.name!r})")
    check_extension(str(path), text=True)
    return [path]


def check_extension(path: str, *, text: bool = False) -> None:
    """LLaMA-Factory picks a file's loader by the text after its last dot, case-sensitively
    (`FILEEXT2TYPE`), and refuses any other at job start; hpcft reads JSON rows, and (`text`:
    a registry entry's file, whose columns say it reads `text`) `.txt` lines."""
    if Path(path).suffix not in (".json", ".jsonl", *([".txt"] if text else [])):
        raise DataError(
            path,
            "LLaMA-Factory picks its loader by the extension, case-sensitively, and would refuse this file at job"
            " start: name it .json (a JSON array) or .jsonl (one row a line)",
        )


# ---- an entry for a plain file -------------------------------------------------------------------

OPTIONAL_KEYS = frozenset({"input", "system", "history", "tools", *MEDIA})
"""Columns a plain file may have in some rows; its entry names those present in any row."""


def infer_entry(path: str, formatting: Formatting, stage: Stage, first: Row, keys: frozenset[str]) -> dict[str, Any]:
    """The registry entry of a user's plain `trainset` file, from its keys (`keys`: those seen
    in any row) and its first row's turn layout."""
    entry: dict[str, Any] = {"file_name": str(Path(path).absolute()), "formatting": formatting}
    columns: dict[str, str | None] = {k: k for k in ("system", "tools", *MEDIA) if k in keys}
    if stage == "pt":
        columns.update(prompt="text")
    elif formatting == "alpaca":
        columns.update(prompt="instruction", query="input" if "input" in keys else None)
        columns.update({"response": "output"} if stage in ("sft", "kto") else {})
        columns.update({"history": "history"} if "history" in keys else {})
    else:
        key = "messages" if "messages" in first else "conversations"
        turns = first.get(key)
        columns["messages"] = key
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
            # OpenAI messages carry tool results as role `tool`.
            entry["tags"] = {**OPENAI_TAGS, **({"observation_tag": "tool"} if formatting == "openai" else {})}
    if stage in ("rm", "dpo"):  # both learn from preference pairs
        entry["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    if stage == "kto":
        columns["kto_tag"] = "kto_tag" if "kto_tag" in keys else "label"
    entry["columns"] = columns
    return entry
