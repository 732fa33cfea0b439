"""What the commands print: one-line error text, JSON for scripts, tables and fields for people.

Nothing a database holds reaches the terminal as it is: ``_one_line`` escapes every character a
terminal would act on, and table cells are plain text, never rich markup.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models import UnreadableJson

# Characters that must not reach the terminal as they are: controls (line breaks, escape sequences),
# format characters (bidirectional overrides), lone surrogates, and line and paragraph separators.
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _one_line(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape (``\\n``, ``\\x1b``,
    ``\\u202e``): an error quoting a hostile value stays one line and shows what the value holds."""
    if text.isprintable() and text.isascii():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in _UNPRINTABLE_CATEGORIES
        else char
        for char in text
    )


def _jsonable(value: Any, raw: list[str]) -> Any:
    """Models and rows as JSON values: times in ISO 8601, intervals in seconds. A stored value Python
    cannot read (UnreadableJson) becomes a placeholder holding its index in ``raw``, where its text goes."""
    if isinstance(value, UnreadableJson):
        raw.append(value.text)
        return f"\x00{len(raw) - 1}\x00"  # no stored string holds NUL: jsonb and text refuse it
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), raw) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, raw) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, raw) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    return value


_RAW_PLACEHOLDER = re.compile(r'"\\u0000(\d+)\\u0000"')


def _json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON text; a stored value Python cannot read is written as the database's text of it."""
    raw: list[str] = []
    text = json.dumps(_jsonable(value, raw), indent=indent)
    return _RAW_PLACEHOLDER.sub(lambda m: raw[int(m.group(1))], text) if raw else text


def _echo_json(value: Any) -> None:
    click.echo(_json_text(value, indent=2))


def _console(stderr: bool = False) -> Console:
    """A console on click's stream: live views, colour and box drawing only on a terminal; elsewhere
    plain text wide enough that rows are not folded (scripts and grep read it)."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal or os.environ.get("COLUMNS") else 200
    return Console(file=stream, force_terminal=terminal, width=width, highlight=False, soft_wrap=False)


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in _NUMERIC else "left", overflow="fold")
    return table


def _add_row(table: Table, *cells: str | Text) -> None:
    """Cells as plain text: an error message like "[error] ..." is never read as rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


_NUMERIC = {"id", "pending", "scheduled", "leased", "succeeded", "dead", "cancelled", "ok/min", "ok/h", "dead/h",
            "attempt", "priority", "pid", "failures", "concurrency", "max attempts", "lease s", "keep ok d",
            "keep dead d", "oldest due"}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _duration(value: timedelta) -> str:
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _short(text: str | None, limit: int = 60) -> str:
    if text is None:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _echo_fields(value: Any) -> None:
    """A model as ``name: value`` lines (JSON values compact)."""
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        is_json = f.name in ("payload", "result", "details") and item is not None
        shown = _json_text(item) if is_json else _cell(item)
        click.echo(f"{f.name}: {shown}".rstrip())
