"""What the worker sends the database from a handler: results, error texts and details it would refuse
are caught in Python, so one job's bad value never fails a batched ack or a nack."""

from __future__ import annotations

import math

import pytest

import pgrelay
from pgrelay.worker import _details, _retry_delay, _storable_text, _unstorable


@pytest.mark.parametrize("value", [math.nan, {"r": math.inf}, "a\x00b", ["\udcff"], {1, 2}, object()],
                         ids=["nan", "infinity", "nul", "surrogate", "set", "object"])
def test_values_jsonb_refuses_are_named(value):
    assert _unstorable(value)


@pytest.mark.parametrize("value", [None, {}, "plain", "a backslash then u0000: \\u0000", 10 ** 400, "\u202e😀"],
                         ids=["none", "empty", "text", "escaped-backslash", "big-int", "unicode"])
def test_values_jsonb_stores_pass(value):
    assert _unstorable(value) is None


def test_error_text_is_made_storable_and_keeps_what_it_says():
    assert _storable_text("bad \x00 byte \udcff") == "bad \\x00 byte \\udcff"
    assert _storable_text("fine é") == "fine é"


def test_details_the_database_would_refuse_are_dropped_and_others_kept():
    assert _details(pgrelay.Permanent("x", details={"ratio": math.nan})) is None
    assert _details(pgrelay.Permanent("x", details={"status": 503})) == {"status": 503}


@pytest.mark.parametrize(("seconds", "delay"), [(-1, 0.0), (5, 5.0), (1e12, 1e12), (math.inf, math.inf), (math.nan, None)])
def test_a_retry_after_in_the_past_is_now_and_a_long_one_is_left_to_nack(seconds, delay):
    assert _retry_delay(seconds) == delay
