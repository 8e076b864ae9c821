"""The datasets of a LLaMA-Factory run: which files, every row checked, and the registry written.

`trainset` is a plain data file (its `dataset_info.json` entry is inferred from its rows) or
a user's dataset_dir with a `dataset_info.json` from which `framework.dataset` names the
datasets to mix. Either way the run gets its own `native/dataset_info.json` with absolute
paths, so what the job reads is fixed at submission.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcft.data import Measure, RowCheck, iter_rows, scan_rows
from hpcft.errors import DataError
from hpcft.frameworks.llamafactory_data import (
    MEDIA,
    OPTIONAL_KEYS,
    DatasetEntry,
    Formatting,
    Stage,
    check_extension,
    data_files,
    infer_entry,
    parse_entry,
    read_registry,
    registered_entries,
)
from hpcft.frameworks.llamafactory_rows import row_check
from hpcft.jobs.spec import Conversation
from hpcft.once import file_state, once


@dataclass(frozen=True)
class TrainingData:
    """What the train job reads: the run's own `dataset_info.json` and the names in it."""

    registry: dict[str, Any]
    """name -> entry, with absolute file names; written to `native/dataset_info.json`."""
    media_dir: str | None
    """Where relative media paths resolve (the user's dataset_dir), when there are media."""
    rows: int
    """Rows checked over all datasets."""
    longest_tokens: int | None = None
    """At most this many tokens in any row once templated (`token_bound`), for the memory
    estimate; None when a dataset was not read (a hub dataset)."""
    total_tokens: int | None = None
    """`token_bound` summed over the rows (None as above): their mean says whether rows are
    much shorter than `cutoff_len`."""

    @property
    def dataset(self) -> str:
        return ",".join(self.registry)


STAGE_RANKING = {"pt": False, "sft": False, "rm": True, "dpo": True, "kto": False}


def _check_stage(e: DatasetEntry, stage: Stage, where: str) -> None:
    if e.ranking != STAGE_RANKING[stage]:
        need = "ranking: true (chosen/rejected)" if STAGE_RANKING[stage] else "no ranking"
        raise DataError(where, f"dataset {e.name!r} does not fit stage {stage}: it needs {need}")
    if stage == "kto" and not e.column("kto_tag"):
        raise DataError(where, f"dataset {e.name!r}: stage kto needs columns.kto_tag")
    if stage == "pt" and e.formatting != "alpaca":
        raise DataError(where, f"dataset {e.name!r}: stage pt reads alpaca-formatted text (columns.prompt)")


TEMPLATE_TOKENS_PER_ROW = 128
"""A chat template's tokens around a conversation, at most: BOS and a default system prompt
(Qwen's template adds ~20 tokens)."""
TEMPLATE_TOKENS_PER_TEXT = 8
"""Its tokens around each message or field (`<|im_start|>user\\n` ... `<|im_end|>\\n`: 5)."""


def _text_size(value: Any) -> tuple[int, int]:
    """(UTF-8 bytes, strings) of every string in a row's value, nested lists and objects included."""
    if isinstance(value, str):
        return len(value.encode()), 1
    parts = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    sizes = [_text_size(v) for v in parts]
    return sum(b for b, _ in sizes), sum(n for _, n in sizes)


def token_bound(e: DatasetEntry) -> Measure:
    """An upper bound of a row's tokens once templated, without its tokenizer (the login node
    has none): the UTF-8 bytes of the texts LLaMA-Factory reads (a byte-level BPE, as Qwen's
    and Llama 3's, or SentencePiece with byte fallback never makes more tokens than bytes), plus
    the template's. Short English rows are counted 3-4x long; the cutoff caps it."""
    keys = [key for role, key in e.used_columns().items() if role not in (*MEDIA, "kto_tag")]

    def measure(row: dict[str, Any]) -> tuple[int, ...]:
        size, texts = _text_size([row.get(k) for k in keys])
        return (size + texts * TEMPLATE_TOKENS_PER_TEXT + TEMPLATE_TOKENS_PER_ROW,)

    return measure


def check_entry(e: DatasetEntry, stage: Stage, media_dir: Path, where: str) -> tuple[int, int, int]:
    """Check every file of an entry; every column it names must exist in some row
    (LLaMA-Factory's converters index it and fail with a KeyError otherwise). (rows, the
    longest row's `token_bound`, their sum)."""
    _check_stage(e, stage, where)
    rows, seen, longest, total = 0, set[str](), 0, 0
    for path in data_files(e):
        report = scan_rows(path, row_check(e, stage, media_dir), (e.raw, stage, str(media_dir)), token_bound(e))
        rows, seen = rows + report.rows, seen | report.keys
        longest, total = max(longest, *report.longest), total + report.sums[0]
    for role, key in e.used_columns().items():
        if key not in seen:
            raise DataError(where, f"dataset {e.name!r}: columns.{role} is {key!r}, which no row of its file has")
    return rows, longest, total


def registry_training_data(dataset_dir: str, names: list[str], stage: Stage, offline: bool) -> TrainingData:
    """A user's `dataset_info.json` and the datasets named from it, each file checked."""
    where = str(Path(dataset_dir) / "dataset_info.json")
    registry, rows, longest, total = {}, 0, 0, 0
    unread = False
    for e in registered_entries(dataset_dir, names):
        _check_stage(e, stage, where)  # a hub entry's too: its `ranking` says what it holds
        if e.hub is not None:
            if offline:
                raise DataError(where, f"dataset {e.name!r} is on a hub ({e.hub}) and compute nodes are offline")
            registry[e.name], unread = json.loads(e.raw), True
            continue
        found, tokens, summed = check_entry(e, stage, Path(dataset_dir), where)
        rows, longest, total = rows + found, max(longest, tokens), total + summed
        registry[e.name] = {**json.loads(e.raw), "file_name": e.path}
    media = any(e.get("columns", {}).get(k) for e in registry.values() for k in MEDIA)
    folder = str(Path(dataset_dir).absolute()) if media else None
    return TrainingData(registry, folder, rows, None if unread else longest, None if unread else total)


def file_training_data(path: str, formatting: Formatting, stage: Stage, name: str) -> TrainingData:
    """A plain data file: its entry inferred from its rows, every row checked."""
    check_extension(path)
    first = next(iter_rows(path), None)
    if first is None:
        raise DataError(path, "no rows")
    widest = infer_entry(path, formatting, stage, first.row, OPTIONAL_KEYS | first.row.keys())
    e = parse_entry(name, widest, Path(path).parent, path)
    _check_stage(e, stage, path)
    report = scan_rows(path, row_check(e, stage, Path(path).parent), (e.raw, stage), token_bound(e))
    entry = infer_entry(path, formatting, stage, first.row, report.keys)
    media = any(k in report.keys for k in MEDIA)
    folder = str(Path(path).parent.absolute()) if media else None
    return TrainingData({name: entry}, folder, report.rows, report.longest[0], report.sums[0])


def eval_entry(path: str) -> DatasetEntry:
    """The entry of an eval set, read as a training file of its layout would be: alpaca rows,
    or sharegpt / OpenAI-message turns (a first row with `conversations` or `messages`). Read
    once per file state: validation and every sweep point's eval job ask for it."""
    state = file_state(path)
    return _eval_entry(path) if state is None else once(("llamafactory eval entry", state), lambda: _eval_entry(path))


def _eval_entry(path: str) -> DatasetEntry:
    first = next(iter_rows(path), None)
    if first is None:
        raise DataError(path, "no rows")
    formatting: Formatting = "sharegpt" if {"conversations", "messages"} & first.row.keys() else "alpaca"
    entry = infer_entry(path, formatting, "sft", first.row, OPTIONAL_KEYS)
    return parse_entry("eval", entry, Path(path).parent, path)


def eval_rows_check(path: str) -> int:
    """Every eval row as LLaMA-Factory reads an sft row, in text only: the eval sends no tool
    definitions, tool turns or media."""
    e = eval_entry(path)
    check, text = row_check(e, "sft", Path(path).parent), _text_only(e)
    return scan_rows(path, lambda row: check(row) or text(row), (e.raw, "eval")).rows


def _text_only(e: DatasetEntry) -> RowCheck:
    extras = [key for role in ("tools", *MEDIA) if (key := e.column(role))]
    tool_tags = {e.tag("function_tag"), e.tag("observation_tag")}
    turns, role = e.column("messages") if e.formatting != "alpaca" else None, e.tag("role_tag") or ""

    def check(row: dict[str, Any]) -> str | None:
        if key := next((k for k in extras if row.get(k)), None):
            return f"field {key!r}: the eval sends text only (no tool definitions, images, videos or audios)"
        for i, turn in enumerate((row.get(turns) or []) if turns else []):
            if turn.get(role) in tool_tags:
                return f"{turns}: turn {i + 1} is {turn[role]!r}: the eval sends text turns only"
        return None

    return check


def eval_conversation(path: str) -> Conversation:
    """Where the eval set's rows keep their conversation, as LLaMA-Factory's converter reads them."""
    e = eval_entry(path)
    if e.formatting == "alpaca":
        prompt = tuple(k for k in (e.column("prompt"), e.column("query")) if k)
        return Conversation(prompt=prompt, answer=e.column("response") or "", history=e.column("history"),
                            system=e.column("system"))  # fmt: skip
    role, content, user, assistant, system = (
        e.tag(name) or "" for name in ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag")
    )
    return Conversation(turns=e.column("messages"), system=e.column("system"), role_tag=role, content_tag=content,
                        user_tag=user, assistant_tag=assistant, system_tag=system)  # fmt: skip


def training_data(
    trainset: str, dataset: list[str], formatting: Formatting, stage: Stage, offline: bool
) -> TrainingData:
    """The run's training data: `trainset` is a data file, or a dataset_dir (or its
    `dataset_info.json`) from which `dataset` names one or more registered datasets."""
    path = Path(trainset)
    # Once per arguments and file state in a command: validation, notes and the native files
    # of every sweep point ask for it, and re-reading even the first rows cost ~30 ms a point.
    state = file_state(path / "dataset_info.json" if path.is_dir() else path)
    if state is None:
        return _training_data(trainset, dataset, formatting, stage, offline)  # it raises, naming the file
    key = ("llamafactory training data", str(path.absolute()), tuple(dataset), formatting, stage, offline, state)
    return once(key, lambda: _training_data(trainset, dataset, formatting, stage, offline))


def _training_data(
    trainset: str, dataset: list[str], formatting: Formatting, stage: Stage, offline: bool
) -> TrainingData:
    path = Path(trainset)
    dataset_dir = path.parent if path.name == "dataset_info.json" else path if path.is_dir() else None
    if dataset_dir is None:
        if dataset:
            raise DataError(trainset, "framework.dataset names registered datasets: set trainset to their dataset_dir")
        return file_training_data(trainset, formatting, stage, "hpcft_train")
    names = list(dataset)
    if not names:
        registry = read_registry(str(dataset_dir))
        if len(registry) != 1:
            where = str(dataset_dir / "dataset_info.json")
            raise DataError(where, f"name the datasets to train on: framework.dataset=[{','.join(sorted(registry))}]")
        names = list(registry)
    return registry_training_data(str(dataset_dir), names, stage, offline)
