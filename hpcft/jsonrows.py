"""One streaming reader for the project's row files: JSON arrays and JSONL (JSON Lines).

Linear in the file and bounded in memory by one read chunk plus one row. Line numbers are
counted as the reader goes, so the first bad row fails at once with `file:line`, without
reading the rest. The login-node check, sweeps, the eval job and the Python API all read
rows through `iter_rows`.

Parsing is the standard library's C scanner (`JSONDecoder.raw_decode`), the same code as
`json.load`: it parses one array element in place, so no second scanner is needed to find
where rows end, and it runs at `json.load`'s speed (orjson was measured too: faster on
whole files, but it cannot parse one value out of a buffer, and finding element boundaries
in Python first made it 4x slower than this). It is made as strict as the JSON standard:
NaN and Infinity are refused, and so are trailing commas, missing commas and text after `]`.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple, NoReturn

from hpcft.errors import DataError

Row = dict[str, Any]
CHUNK = 4 << 20
"""Bytes read at a time; a row longer than this grows the buffer to hold it."""

_SPACE = re.compile(r"[ \t\r\n]*")
_NEXT_ROW = re.compile(r"[ \t\r\n]*,[ \t\r\n]*\{")
_BOM = b"\xef\xbb\xbf"


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not valid JSON (use null or a number)")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
TOO_DEEP = "invalid JSON: arrays or objects nested too deeply to read (no data set nests a thousand levels)"


class SourceRow(NamedTuple):
    """A row and where it starts (a tuple: one is made per row, and tuples are cheapest)."""

    line: int
    """1-based line of the file the row starts on."""
    row: Row


def _object(path: Path, value: Any, line: int) -> Row:
    if not isinstance(value, dict):
        raise DataError(str(path), f"each row must be a JSON object, got {type(value).__name__}", line)
    return value


def _jsonl_rows(path: Path, stream: IO[bytes]) -> Iterator[SourceRow]:
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(str(path), f"not UTF-8 (byte {e.start} of the line)", number) from None
        if not text.strip():
            continue
        try:
            value, end = _DECODER.raw_decode(text, _SPACE.match(text).end())  # type: ignore[union-attr]
        except json.JSONDecodeError as e:
            raise DataError(str(path), f"invalid JSON: {e.msg} (column {e.colno})", number) from None
        except _NotJson as e:
            raise DataError(str(path), str(e), number) from None
        except RecursionError:
            raise DataError(str(path), TOO_DEEP, number) from None
        if text[end:].strip():
            raise DataError(str(path), "invalid JSON: more than one value on the line", number)
        yield SourceRow(number, _object(path, value, number))


class _ArrayReader:
    """The elements of a top-level JSON array, decoded chunk by chunk."""

    def __init__(self, path: Path, stream: IO[bytes]) -> None:
        self.path, self.stream = path, stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.eof, self.read_bytes = "", False, 0
        self.line, self.counted = 1, 0  # `line` is the line number at offset `counted` of text

    def more(self, keep_from: int) -> int:
        """Drop the text before `keep_from` and read the next chunk; return how much was dropped."""
        self.line += self.text.count("\n", self.counted, keep_from)
        chunk = self.stream.read(CHUNK)
        self.eof = not chunk
        try:
            new = self.decoder.decode(chunk, final=self.eof)
        except UnicodeDecodeError as e:
            raise self.fail(f"not UTF-8 (byte {self.read_bytes + e.start})", len(self.text)) from None
        self.read_bytes += len(chunk)
        self.text = self.text[keep_from:] + new
        self.counted = 0
        return keep_from

    def line_at(self, offset: int) -> int:
        self.line += self.text.count("\n", self.counted, offset)
        self.counted = offset
        return self.line

    def fail(self, message: str, offset: int) -> DataError:
        return DataError(str(self.path), message, self.line_at(offset))

    def skip_space(self, i: int) -> int:
        """Offset of the next non-space character (reading on as needed); len(text) only at EOF."""
        while True:
            i = _SPACE.match(self.text, i).end()  # type: ignore[union-attr]
            if i < len(self.text) or self.eof:
                return i
            i -= self.more(i)

    def decode(self, start: int) -> tuple[int, Any, int]:
        """(start, value, end) of the value at `start`; reads on while the buffer cuts it."""
        last: tuple[str, int] | None = None
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, start)
                return start, value, end
            except _NotJson as e:
                raise self.fail(str(e), start) from None
            except RecursionError:
                raise self.fail(TOO_DEEP, start) from None
            except json.JSONDecodeError as e:
                # Cut by the end of the buffer: more text moves the error (or removes it). A
                # real error stays where it is; an unterminated string may just be long.
                here = (e.msg, e.pos - start)
                if self.eof or (here == last and not e.msg.startswith("Unterminated string")):
                    line = self.line_at(start) + self.text.count("\n", start, e.pos)
                    raise DataError(str(self.path), f"invalid JSON in this row: {e.msg}", line) from None
                last = here
                start -= self.more(start)

    def rows(self) -> Iterator[SourceRow]:
        self.more(0)
        i = self.skip_space(0) + 1  # past the `[`
        i = self.skip_space(i)
        if self.at(i, "]"):
            self.check_rest(i + 1)
            return
        while True:
            if i >= len(self.text):
                raise self.fail("invalid JSON: the array is not closed", i)
            if self.at(i, ","):
                raise self.fail("invalid JSON: an extra comma", i)
            start, value, end = self.decode(i)
            line = self.line_at(start)
            yield SourceRow(line, _object(self.path, value, line))
            # The usual case in one regex call: a comma, then the next row's `{` in the buffer.
            between = _NEXT_ROW.match(self.text, end)
            if between is not None:
                i = between.end() - 1
                continue
            i = self.skip_space(end)
            if self.at(i, "]"):
                self.check_rest(i + 1)
                return
            if not self.at(i, ","):
                what = "a missing comma between rows" if i < len(self.text) else "the array is not closed"
                raise self.fail(f"invalid JSON: {what}", i)
            i = self.skip_space(i + 1)
            if self.at(i, "]"):
                raise self.fail("invalid JSON: a trailing comma before ']'", i)

    def at(self, i: int, char: str) -> bool:
        return i < len(self.text) and self.text[i] == char

    def check_rest(self, i: int) -> None:
        i = self.skip_space(i)
        if i < len(self.text):
            raise self.fail("invalid JSON: text after the closing ']'", i)


def _open(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise DataError(str(path), "no such file" if not path.exists() else "not a file (a JSON or JSONL file)")
    try:
        return path.open("rb")
    except OSError as e:
        raise DataError(str(path), f"cannot be read: {e.strerror}") from None


def _text_rows(path: Path, stream: IO[bytes]) -> Iterator[SourceRow]:
    """A `.txt` file as Hugging Face's `text` loader (LLaMA-Factory's for `.txt`) reads it:
    each line a row `{"text": line}`, split as `str.splitlines` splits, strict UTF-8; empty
    lines are not rows (LLaMA-Factory's converters keep no prompt from them)."""
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            raise DataError(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})", number) from None
        yield from (SourceRow(number, {"text": line}) for line in text.splitlines() if line)


def iter_rows(path: str | Path) -> Iterator[SourceRow]:
    """Every row of a JSON array or JSONL file (or of a `.txt` file: a row a line), in order;
    raises DataError at the first bad one. An empty file is refused, and so is a byte-order mark."""
    path = Path(path)
    with _open(path) as stream:
        head = stream.read(64)
        if head.startswith(_BOM):
            raise DataError(str(path), "starts with a UTF-8 byte-order mark (BOM); save it without one", 1)
        while head and not head.strip():  # leading blank space longer than 64 bytes
            head = stream.read(64)
        if not head.strip():
            raise DataError(str(path), "the file is empty")
        stream.seek(0)
        if path.suffix == ".txt":
            yield from _text_rows(path, stream)
        elif head.lstrip().startswith(b"["):
            yield from _ArrayReader(path, stream).rows()
        else:
            yield from _jsonl_rows(path, stream)


def read_rows(path: str | Path) -> list[SourceRow]:
    """All rows of a file (for small files such as eval sets); at least one."""
    rows = list(iter_rows(path))
    if not rows:
        raise DataError(str(path), "no rows")
    return rows
