"""What the tests take from docs/postgrest.md, so the page says exactly what was tested.

- ``marked_block(marker)``: the fenced block right after ``<!-- marker -->`` (the role SQL, the config).
- ``parse_config(text)``: a postgrest.conf of ``name = "string" | integer | true | false`` lines.
- ``curl_examples(text)``: every command of every ```sh block: ``curl ...`` or ``NAME=$(curl ...)``, each
  followed by a line ``# -> STATUS`` or ``# -> STATUS JSON`` (the answer's body, compared as JSON).

The curl reader is deliberately small and strict: it knows a subset of sh (words, '...', "..." with
``\\"`` ``\\\\`` ``\\$`` escapes, ``$NAME`` / ``${NAME}`` outside single quotes, ``\\`` line continuations)
and of curl (``-X``, ``-H``, ``-d``, ``-s``, ``-S``, ``-sS``, ``-i`` and one URL). Anything else is an
error, never a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "postgrest.md"

_FENCE = re.compile(r"^```(\S*)\s*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DocError(ValueError):
    """docs/postgrest.md holds something the tests cannot read."""


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Block:
    lang: str
    first_line: int  # 1-based line number of the block's first content line
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise DocError(f"line {i + 1}: a fenced block that is never closed")
        found.append(Block(opening.group(1), start + 1, tuple(lines[start:end])))
        i = end + 1
    return found


def marked_block(text: str, marker: str) -> Block:
    """The fenced block that follows the line ``<!-- marker -->`` (exactly one such marker)."""
    lines = text.splitlines()
    at = [n for n, line in enumerate(lines) if line.strip() == f"<!-- {marker} -->"]
    if len(at) != 1:
        raise DocError(f"expected one <!-- {marker} --> marker, found {len(at)}")
    for block in blocks(text):
        if block.first_line - 2 > at[0]:
            if "".join(lines[at[0] + 1:block.first_line - 2]).strip():
                raise DocError(f"<!-- {marker} --> must be followed directly by its fenced block")
            return block
    raise DocError(f"no fenced block after <!-- {marker} -->")


def parse_config(text: str) -> dict[str, str | int | bool]:
    settings: dict[str, str | int | bool] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-z][a-z0-9-]*)\s*=\s*("([^"\\]*)"|-?\d+|true|false)', line)
        if match is None:
            raise DocError(f"config line {n} is not name = \"string\" | integer | true | false: {raw!r}")
        name, value, string = match.group(1), match.group(2), match.group(3)
        if name in settings:
            raise DocError(f"config line {n}: {name} is set twice")
        settings[name] = string if string is not None else (value == "true" if value in ("true", "false") else int(value))
    return settings


# -- sh words ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    name: str


Word = tuple[str | Var, ...]


def sh_words(command: str) -> list[Word]:
    """Split one sh command line into words, keeping $NAME references for later expansion."""
    words: list[Word] = []
    parts: list[str | Var] = []
    in_word = False
    i = 0

    def literal(ch: str) -> None:
        if parts and isinstance(parts[-1], str):
            parts[-1] += ch
        else:
            parts.append(ch)

    def variable(at: int) -> int:
        if command.startswith("${", at):
            close = command.find("}", at)
            name = command[at + 2:close] if close > 0 else ""
            if not _NAME.fullmatch(name):
                raise DocError(f"unsupported ${{...}} in: {command}")
            parts.append(Var(name))
            return close + 1
        match = _NAME.match(command, at + 1)
        if match is None:
            raise DocError(f"a $ that is not $NAME or ${{NAME}} in: {command}")
        parts.append(Var(match.group(0)))
        return match.end()

    while i < len(command):
        ch = command[i]
        if ch in " \t":
            if in_word:
                words.append(tuple(parts))
                parts, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == "'":
            close = command.find("'", i + 1)
            if close < 0:
                raise DocError(f"unclosed ' in: {command}")
            if close > i + 1:
                literal(command[i + 1:close])
            elif not parts:
                parts.append("")  # '' is an empty word
            i = close + 1
        elif ch == '"':
            i += 1
            if not parts:
                parts.append("")
            while True:
                if i >= len(command):
                    raise DocError(f'unclosed " in: {command}')
                ch = command[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < len(command) and command[i + 1] in '"\\$`':
                    literal(command[i + 1])
                    i += 2
                elif ch == "$":
                    i = variable(i)
                elif ch == "`":
                    raise DocError(f"backquotes are not supported: {command}")
                else:
                    literal(ch)
                    i += 1
        elif ch == "$":
            i = variable(i)
        elif ch == "\\":
            if i + 1 >= len(command):
                raise DocError(f"a trailing backslash in: {command}")
            literal(command[i + 1])
            i += 2
        elif ch in "|&;<>()`*?[]{}~#":
            raise DocError(f"unsupported shell syntax {ch!r} outside quotes in: {command}")
        else:
            literal(ch)
            i += 1
    if in_word:
        words.append(tuple(parts))
    return words


def expand(word: Word, env: dict[str, str]) -> str:
    out = []
    for part in word:
        if isinstance(part, Var):
            if part.name not in env:
                raise DocError(f"${part.name} is not set")
            out.append(env[part.name])
        else:
            out.append(part)
    return "".join(out)


# -- curl -------------------------------------------------------------------------------------------

_MISSING = object()
_FLAGS = {"-s", "-S", "-sS", "-Ss", "--silent", "--show-error", "-i", "--include"}
_EXPECT = re.compile(r"#\s*->\s*(\d{3})(?:\s+(.+?))?\s*")
_CAPTURE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=\$\((curl\s.*)\)")


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    data: str | None

    def target(self, base_url: str) -> str:
        if not self.url.startswith(base_url + "/"):
            raise DocError(f"{self.url} does not start with $PGRST/")
        return self.url[len(base_url):]


@dataclass(frozen=True)
class CurlExample:
    line: int
    source: str
    words: tuple[Word, ...]
    capture: str | None
    expected_status: int
    expected_body: Any = field(default=_MISSING)

    @property
    def has_expected_body(self) -> bool:
        return self.expected_body is not _MISSING

    def variables(self) -> set[str]:
        return {p.name for w in self.words for p in w if isinstance(p, Var)}

    def request(self, env: dict[str, str]) -> Request:
        args = [expand(w, env) for w in self.words]
        if args[0] != "curl":
            raise DocError(f"line {self.line}: not a curl command: {self.source}")
        method, url, data = None, None, None
        headers: list[tuple[str, str]] = []
        i = 1
        while i < len(args):
            arg = args[i]
            if arg in ("-X", "--request", "-H", "--header", "-d", "--data", "--data-raw"):
                if i + 1 >= len(args):
                    raise DocError(f"line {self.line}: {arg} without a value")
                value = args[i + 1]
                if arg in ("-X", "--request"):
                    if method is not None or not re.fullmatch(r"[A-Z]+", value):
                        raise DocError(f"line {self.line}: -X {value!r}")
                    method = value
                elif arg in ("-H", "--header"):
                    name, colon, header_value = value.partition(":")
                    if not colon or not re.fullmatch(r"[A-Za-z0-9-]+", name):
                        raise DocError(f"line {self.line}: a header that is not 'Name: value': {value!r}")
                    headers.append((name, header_value.strip()))
                else:
                    if data is not None:
                        raise DocError(f"line {self.line}: more than one -d")
                    if value.startswith("@"):
                        raise DocError(f"line {self.line}: -d @file is not supported")
                    data = value
                i += 2
            elif arg in _FLAGS:
                i += 1
            elif arg.startswith("-"):
                raise DocError(f"line {self.line}: the curl option {arg!r} is not supported")
            else:
                if url is not None:
                    raise DocError(f"line {self.line}: more than one URL")
                url = arg
                i += 1
        if url is None:
            raise DocError(f"line {self.line}: no URL")
        if data is not None and not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))  # what curl -d sends
        return Request(method or ("POST" if data is not None else "GET"), url, tuple(headers), data)


def curl_examples(text: str, known: set[str]) -> list[CurlExample]:
    """Every command of every ```sh block, in order. ``known``: variables set before the first one."""
    examples: list[CurlExample] = []
    defined = set(known)
    for block in blocks(text):
        if block.lang != "sh":
            continue
        pending: tuple[int, str] | None = None
        lines = list(block.lines)
        n = 0
        while n < len(lines):
            line_no = block.first_line + n
            line = lines[n].strip()
            n += 1
            if not line:
                if pending:
                    raise DocError(f"line {pending[0]}: a command without its '# -> STATUS' line")
                continue
            if line.startswith("#"):
                expect = _EXPECT.fullmatch(line)
                if expect is None:
                    if pending:
                        raise DocError(f"line {pending[0]}: a command without its '# -> STATUS' line")
                    continue  # a comment
                if pending is None:
                    raise DocError(f"line {line_no}: '# -> ...' without a command before it")
                start, source = pending
                pending = None
                body: Any = _MISSING
                if expect.group(2) is not None:
                    try:
                        body = json.loads(expect.group(2))
                    except ValueError as e:
                        raise DocError(f"line {line_no}: the expected body is not JSON: {expect.group(2)}") from e
                capture = None
                command = source
                captured = _CAPTURE.fullmatch(source)
                if captured:
                    capture, command = captured.group(1), captured.group(2)
                words = tuple(sh_words(command))
                if not words or words[0] != ("curl",):
                    raise DocError(f"line {start}: an sh block may hold only curl commands: {source}")
                example = CurlExample(start, source, words, capture, int(expect.group(1)), body)
                undefined = example.variables() - defined
                if undefined:
                    raise DocError(f"line {start}: ${', $'.join(sorted(undefined))} not set before: {source}")
                if capture:
                    defined.add(capture)
                examples.append(example)
                continue
            if pending:
                raise DocError(f"line {pending[0]}: a command without its '# -> STATUS' line")
            # a command, with its \ continuations
            start, source = line_no, line
            while source.endswith("\\"):
                if n >= len(lines):
                    raise DocError(f"line {start}: a continuation at the end of the block")
                source = source[:-1].rstrip() + " " + lines[n].strip()
                n += 1
            pending = (start, source)
        if pending:
            raise DocError(f"line {pending[0]}: a command without its '# -> STATUS' line")
    return examples
