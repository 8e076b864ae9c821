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

from hpcft.data import Row, RowCheck
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


# ---- rows -----------------------------------------------------------------------------------


def _text(row: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None and not required:
        return None
    if key not in row:
        return f"missing field {key!r}"
    if not isinstance(value, str) or (required and not value.strip()):
        return f"field {key!r} must be a {'non-empty ' if required else ''}string"
    return None


def tools_problem(value: Any, formatting: Formatting) -> str | None:
    """LLaMA-Factory's tool formatter reads `tools` as a JSON string of a list of functions."""
    if value is None or value == "":
        return None
    if isinstance(value, list | dict) and formatting == "openai":
        return None
    if not isinstance(value, str):
        return "field 'tools' must be a JSON string (a list of function definitions)"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return "field 'tools' is not valid JSON"
    except RecursionError:
        return "field 'tools' is JSON nested too deeply to read"
    if not isinstance(parsed, list | dict):
        return "field 'tools' must encode a list of function definitions"
    return None


def _common_check(e: DatasetEntry, stage: Stage) -> RowCheck:
    """The checks every formatting shares: `system`, `tools`, the KTO tag."""
    system, tools, kto = e.column("system"), e.column("tools"), e.column("kto_tag") if stage == "kto" else None

    def check(row: dict[str, Any]) -> str | None:
        if system and (value := row.get(system)) is not None and not isinstance(value, str):
            return f"field {system!r} must be a string"
        if tools and (problem := tools_problem(row.get(tools), e.formatting)):
            return problem
        if stage == "kto" and not isinstance(row.get(kto or ""), bool):
            return f"field {kto!r} (the KTO tag) must be true or false"
        return None

    return check


def _filled(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def alpaca_check(e: DatasetEntry, stage: Stage) -> RowCheck:
    """Why LLaMA-Factory's alpaca converter would drop or break on a row (None: it trains).
    The keys are looked up once here, not per row: this runs on every row of a big file."""
    prompt, query, history = e.column("prompt"), e.column("query"), e.column("history")
    answers = (e.column("chosen"), e.column("rejected")) if e.ranking else (e.column("response"),)
    common = _common_check(e, stage)

    def check(row: dict[str, Any]) -> str | None:
        if stage == "pt":
            return _text(row, prompt or "text")
        asked, extra = row.get(prompt or ""), row.get(query) if query else None
        if (
            not (_filled(asked) or _filled(extra))
            or not isinstance(asked or "", str)
            or not isinstance(extra or "", str)
        ):
            bad = next(
                (k for k in (prompt, query) if k and row.get(k) is not None and not isinstance(row[k], str)), None
            )
            return f"field {bad!r} must be a string" if bad else f"field {prompt!r} must be a non-empty string"
        if history and row.get(history) is not None and (problem := _history_problem(history, row[history])):
            return problem
        for key in answers:
            if not _filled(row.get(key or "")):
                return _text(row, key or "output")
        return common(row)

    return check


def _history_problem(key: str, pairs: Any) -> str | None:
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs
    ):
        return f"field {key!r} must be a list of [instruction, answer] string pairs"
    return None


Turn = tuple[str | None, Any, bool]
"""(role tag, content, whether the message carries OpenAI `tool_calls`)."""


def _turns(e: DatasetEntry, row: dict[str, Any]) -> tuple[list[Turn], str | None]:
    """The turns of a row; a problem when its messages are not a list of turns."""
    key = e.column("messages") or "conversations"
    messages = row.get(key)
    role, content = e.tag("role_tag") or "", e.tag("content_tag") or ""
    if not isinstance(messages, list) or not messages:
        return [], f"field {key!r} must be a non-empty list of {{{role!r}, {content!r}}} turns"
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or role not in m or content not in m:
            return [], f"{key}[{i}] must have {role!r} and {content!r}"
        turns.append((m[role], m[content], bool(m.get("tool_calls"))))
    return turns, None


def _openai_merge(e: DatasetEntry, turns: list[Turn]) -> list[Turn]:
    """The openai converter: assistant tool calls become function turns, consecutive tool
    results one observation turn."""
    merged: list[Turn] = []
    for tag, content, calls in turns:
        if tag in (e.tag("assistant_tag"), e.tag("function_tag")) and calls:
            tag, content = e.tag("function_tag"), "tool calls"
        if tag == e.tag("observation_tag") and merged and merged[-1][0] == tag:
            continue
        merged.append((tag, content, calls))
    return merged


def sharegpt_check(e: DatasetEntry, stage: Stage) -> RowCheck:
    """Why LLaMA-Factory's sharegpt/openai converter would skip a row (None: it trains)."""
    common = _common_check(e, stage)
    return lambda row: sharegpt_problem(e, row, stage) or common(row)


def sharegpt_problem(e: DatasetEntry, row: dict[str, Any], stage: Stage) -> str | None:
    """The turns of a sharegpt/openai row against LLaMA-Factory's rules."""
    turns, problem = _turns(e, row)
    if problem:
        return problem
    key = e.column("messages")
    if turns[0][0] == e.tag("system_tag"):
        turns = turns[1:]
    if e.formatting == "openai":
        turns = _openai_merge(e, turns)
    odd, even = (e.tag("user_tag"), e.tag("observation_tag")), (e.tag("assistant_tag"), e.tag("function_tag"))
    for i, (tag, content, _) in enumerate(turns):
        if tag not in (odd, even)[i % 2]:
            expected = " or ".join(repr(t) for t in (odd, even)[i % 2] if t)
            return f"{key}: turn {i + 1} is {tag!r} where LLaMA-Factory expects {expected} (it skips the row)"
        if not isinstance(content, str):
            return f"{key}: turn {i + 1} has no text content"
    if len(turns) % 2 != (1 if e.ranking else 0) or not turns:
        want = "end with a user turn (the chosen/rejected answers follow)" if e.ranking else "end with an answer"
        return f"{key}: {len(turns)} turns after the system turn; they must alternate and {want}"
    if e.ranking:
        for col in (e.column("chosen"), e.column("rejected")):
            answer = row.get(col or "")
            if not isinstance(answer, dict) or answer.get(e.tag("role_tag") or "") not in even:
                return f"field {col!r} must be an answer turn ({e.tag('assistant_tag')!r})"
    return None


def media_problem(e: DatasetEntry, row: dict[str, Any], media_dir: Path) -> str | None:
    """Media files exist (relative to the dataset_dir) and match the `<image>`-style tokens."""
    text = json.dumps(row, ensure_ascii=False)
    for kind, key in e.media_columns:
        files = row.get(key)
        files = [files] if isinstance(files, str) else files or []
        for f in files:
            if not isinstance(f, str) or not (media_dir / f).is_file():
                return f"field {key!r}: no such file {f!r} (paths are relative to the dataset_dir)"
        if (count := text.count(MEDIA_TOKENS[kind])) != len(files):
            return f"{count} {MEDIA_TOKENS[kind]} tokens but {len(files)} {kind}"
    return None


def row_check(e: DatasetEntry, stage: Stage, media_dir: Path) -> RowCheck:
    """The check of one row of this entry: why LLaMA-Factory would skip it, or None."""
    check = alpaca_check(e, stage) if e.formatting == "alpaca" else sharegpt_check(e, stage)
    media = [key for _, key in e.media_columns]

    def problem(row: dict[str, Any]) -> str | None:
        found = check(row)
        if found is None:
            for key in media:
                if row.get(key):
                    return media_problem(e, row, media_dir)
        return found

    return problem


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
