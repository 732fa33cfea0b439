"""What the worker writes into the database, made storable: a handler's result and details as jsonb,
its errors as text (both refuse a NUL, a lone surrogate; jsonb also NaN and Infinity), and a
RetryAfter's seconds within nack's range."""

from __future__ import annotations

import json
import math
import re
import traceback
from typing import Any

__all__ = ["describe", "error_details", "oneline", "retry_delay", "storable_text", "unstorable"]


def oneline(exc: BaseException) -> str:
    """An error as one line of a log message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# a NUL in JSON text: \u0000 after an even number of backslashes (an odd number escapes the backslash)
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def unstorable(value: Any) -> str | None:
    """Why the database would refuse ``value`` as jsonb (None when it stores it): not JSON, NaN or
    Infinity, a NUL character or a lone surrogate. Checked before a batched ack, which one refused
    value would fail for every job in it."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        return f"{type(exc).__name__}: {storable_text(str(exc))}"
    if _JSON_NUL.search(text):
        return "a string holds a NUL character (\\u0000), which PostgreSQL's jsonb refuses"
    return None


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL's text stores it: NUL and lone surrogates written as escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def retry_delay(seconds: float) -> float | None:
    """A handler's RetryAfter seconds for nack: NaN means the queue's backoff, a past time now (nack
    itself shortens a delay longer than it allows)."""
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def error_details(exc: BaseException) -> Any:
    """An exception's ``details`` attribute (Permanent, RetryAfter, the HTTP executor's errors), if the
    database can store it as jsonb."""
    details = getattr(exc, "details", None)
    return None if unstorable(details) is not None else details


def describe(exc: BaseException) -> str:
    """The error recorded for operators: the exception and the innermost frames of its traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/asyncio/" not in f.filename and "/concurrent/" not in f.filename][-3:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return storable_text(f"{message} ({where})" if where else message)
