"""pgrelay._cron_error, _cron_next and _cron_prev: the cron arithmetic schedules stand on.

The reference is croniter (the Python library): thousands of random expressions and instants must
give croniter's next and previous tick. Where a daylight-saving change skips or repeats a wall-clock
time the two differ on purpose (croniter moves a skipped time to the end of the gap, and may run a
repeated time twice); those cases are recognised, counted, and checked instead against a model of
the rule written here with croniter on naive wall-clock times and zoneinfo: a tick is a matching wall
time at the first instant the clocks show it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago"]


def cron_error(db, cron: str | None, zone: str | None = "UTC") -> str | None:
    return db.execute("SELECT pgrelay._cron_error(%s, %s)", [cron, zone]).fetchone()[0]


def in_utc(instant: datetime | None) -> datetime | None:
    # an aware datetime at a repeated wall time never equals one in another zone (PEP 495): compare in UTC
    return instant and instant.astimezone(UTC)


def next_tick(db, cron: str, after: datetime, zone: str = "UTC") -> datetime | None:
    return in_utc(db.execute("SELECT pgrelay._cron_next(%s, %s, %s)", [cron, after, zone]).fetchone()[0])


def prev_tick(db, cron: str, at: datetime, zone: str = "UTC") -> datetime | None:
    return in_utc(db.execute("SELECT pgrelay._cron_prev(%s, %s, %s)", [cron, at, zone]).fetchone()[0])


def ticks(db, cron: str, after: datetime, zone: str, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        after = next_tick(db, cron, after, zone)
        found.append(after)
    return found


def utc(text: str) -> datetime:
    """An instant written in UTC: ``utc("2024-10-27 00:30")``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, zone: str, fold: int = 0) -> datetime:
    """The instant of a wall-clock time in a zone (fold=1: the second of a repeated wall time), in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def valid(db, cases: list[tuple[str, datetime, str]]) -> list[tuple[str, datetime, str]]:
    """The cases whose expression and zone _cron_error accepts (one round trip)."""
    errors = db.execute("SELECT pgrelay._cron_error(u.e, u.z) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(e, z, n) "
                        "ORDER BY u.n", [[c[0] for c in cases], [c[2] for c in cases]]).fetchall()
    return [case for case, (error,) in zip(cases, errors) if error is None]


def batch(db, cases: list[tuple[str, datetime, str]]) -> list[tuple[datetime | None, datetime | None]]:
    """_cron_next and _cron_prev of many (expression, instant, zone) in one round trip."""
    return [(in_utc(n), in_utc(p)) for n, p in db.execute(
        """SELECT pgrelay._cron_next(u.e, u.t, u.z), pgrelay._cron_prev(u.e, u.t, u.z)
           FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) WITH ORDINALITY AS u(e, t, z, n) ORDER BY u.n""",
        [[c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases]],
    ).fetchall()]


# ---------------------------------------------------------------------------------------------
# The rule, modelled on wall-clock time: croniter on naive datetimes, placed in the zone by zoneinfo
# ---------------------------------------------------------------------------------------------


def wall(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def instants_of(wall_time: datetime, zone: str) -> list[datetime]:
    """The instants at which the zone's clocks show wall_time: none (skipped), one, or two (repeated)."""
    found = set()
    for fold in (0, 1):
        instant = wall_time.replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)
        if wall(instant, zone) == wall_time:
            found.add(instant)
    return sorted(found)


def model_next(cron: str, after: datetime, zone: str) -> datetime:
    ahead = croniter(cron, wall(after, zone))
    for _ in range(10_000):
        shown = instants_of(ahead.get_next(datetime), zone)
        if shown and shown[0] > after:
            return shown[0]
    raise AssertionError(f"model_next found nothing for {cron!r} after {after} in {zone}")


def model_prev(cron: str, at: datetime, zone: str) -> datetime:
    # wall times up to an hour or two ahead of the one at `at` may have had their tick already, when
    # the clocks went back in the last hours
    z = ZoneInfo(zone)
    back = max(timedelta(0), (at - timedelta(hours=3)).astimezone(z).utcoffset() - at.astimezone(z).utcoffset())
    behind = croniter(cron, wall(at, zone) + back + timedelta(minutes=1))
    for _ in range(10_000):
        shown = instants_of(behind.get_prev(datetime), zone)
        if shown and shown[0] <= at:
            return shown[0]
    raise AssertionError(f"model_prev found nothing for {cron!r} at {at} in {zone}")


def touches_a_clock_change(cron: str, zone: str, *instants: datetime | None) -> bool:
    """Whether any of these instants shows a repeated wall time, or a wall time the expression
    matches between the earliest and the latest of them is skipped or repeated."""
    walls = [wall(i, zone) for i in instants if i is not None]
    if any(len(instants_of(w, zone)) != 1 for w in walls):
        return True
    matches = croniter(cron, min(walls) - timedelta(microseconds=1))
    for _ in range(200):
        w = matches.get_next(datetime)
        if w > max(walls):
            return False
        if len(instants_of(w, zone)) != 1:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Random expressions: every form, names in any case, restricted and unrestricted day fields
# ---------------------------------------------------------------------------------------------

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]   # minute, hour, day of month, month, day of week
MACROS = ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually", "@HOURLY", "@Daily"]


def random_value(rnd: random.Random, field: int, value: int) -> str:
    names = {3: MONTHS, 4: DAYS}.get(field)
    if names and rnd.random() < 0.35 and value - (field == 3) < len(names):
        name = names[value - (field == 3)]
        return rnd.choice([name, name.upper(), name.title()])
    return str(value)


def random_item(rnd: random.Random, field: int) -> str:
    low, high = BOUNDS[field]
    end = 6 if field == 4 else high          # where * and a/s end
    step = rnd.randint(1, end - low + 1)
    kind = rnd.random()
    if kind < 0.35:
        return random_value(rnd, field, rnd.randint(low, high))
    if kind < 0.6:
        # a-b with a < b: croniter reads an equal range (5-5) as the whole field, pgrelay as one value
        a, b = sorted(rnd.sample(range(low, high + 1), 2))
        text = f"{random_value(rnd, field, a)}-{random_value(rnd, field, b)}"
        return text + f"/{step}" if rnd.random() < 0.3 else text
    if kind < 0.8:
        return f"*/{step}"
    return f"{random_value(rnd, field, rnd.randint(low, high))}/{step}"


def random_field(rnd: random.Random, field: int) -> str:
    if rnd.random() < [0.15, 0.3, 0.55, 0.6, 0.55][field]:
        return "*"
    return ",".join(random_item(rnd, field) for _ in range(rnd.choice([1, 1, 1, 2, 3])))


def random_expression(rnd: random.Random) -> str:
    if rnd.random() < 0.04:
        return rnd.choice(MACROS)
    gaps = [" ", " ", "  ", "\t", " \t "]
    text = "".join(random_field(rnd, f) + rnd.choice(gaps) for f in range(5)).rstrip(" \t")
    return rnd.choice(gaps) + text + rnd.choice(gaps) if rnd.random() < 0.1 else text


def random_instant(rnd: random.Random, first: int = 1970, last: int = 2100) -> datetime:
    instant = datetime.fromtimestamp(rnd.uniform(datetime(first, 1, 1, tzinfo=UTC).timestamp(),
                                                 datetime(last, 1, 1, tzinfo=UTC).timestamp()), UTC)
    shape = rnd.random()
    if shape < 0.3:
        return instant.replace(second=0, microsecond=0)
    if shape < 0.6:
        return instant.replace(microsecond=0)
    return instant


def clock_changes(zone: str, first: int, last: int) -> Iterator[datetime]:
    """The instants at which the zone's UTC offset changed, in years first to last (to the second)."""
    z = ZoneInfo(zone)
    t = datetime(first, 1, 1, tzinfo=UTC)
    offset = t.astimezone(z).utcoffset()
    while t.year <= last:
        later = t + timedelta(hours=12)
        if later.astimezone(z).utcoffset() != offset:
            low, high = t, later
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                low, high = (low, mid) if mid.astimezone(z).utcoffset() != offset else (mid, high)
            yield high
            offset = later.astimezone(z).utcoffset()
        t = later


# ---------------------------------------------------------------------------------------------
# Against croniter, and the model where the clocks change
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ZONES)
def test_next_and_prev_agree_with_croniter_on_random_expressions(db, zone):
    rnd = random.Random(f"cron-{zone}")
    expressions = [random_expression(rnd) for _ in range(900)]
    errors = db.execute("SELECT pgrelay._cron_error(e, %s) FROM unnest(%s::text[]) WITH ORDINALITY AS u(e, n) ORDER BY n",
                        [zone, expressions]).fetchall()
    # the generator writes valid expressions; the only ones refused never run (day 30 or 31 in
    # months without it), and croniter finds no tick for those either
    refused = [(cron, error) for cron, (error,) in zip(expressions, errors) if error is not None]
    for cron, error in refused:
        assert "never runs" in error, (cron, error)
        with pytest.raises(CroniterBadDateError):
            croniter(cron, datetime(2024, 1, 1, tzinfo=UTC)).get_next(datetime)
    assert len(refused) < len(expressions) / 50
    cases = []
    for cron in (cron for cron, (error,) in zip(expressions, errors) if error is None):
        at = random_instant(rnd)
        if rnd.random() < 0.25:   # exactly on a tick
            at = croniter(cron, at.astimezone(ZoneInfo(zone))).get_next(datetime).astimezone(UTC)
        cases.append((cron, at, zone))

    clock_changed = 0
    for (cron, at, _), (ours_next, ours_prev) in zip(cases, batch(db, cases)):
        start = at.astimezone(ZoneInfo(zone))
        expect_next = croniter(cron, start).get_next(datetime).astimezone(UTC)
        before = croniter(cron, start).get_prev(datetime)                   # strictly before
        on_tick = croniter(cron, before).get_next(datetime).astimezone(UTC) == at
        expect_prev = at if on_tick else before.astimezone(UTC)
        if (ours_next, ours_prev) == (expect_next, expect_prev):
            continue
        where = f"cron={cron!r} zone={zone} at={at.isoformat()} ({start.isoformat()})"
        assert touches_a_clock_change(cron, zone, at, ours_next, ours_prev, expect_next, expect_prev), (
            f"{where}: next {ours_next} (croniter {expect_next}), prev {ours_prev} (croniter {expect_prev})")
        clock_changed += 1
        assert ours_next == model_next(cron, at, zone), where
        assert ours_prev == model_prev(cron, at, zone), where
    assert clock_changed <= len(cases) / 100, f"{clock_changed} of {len(cases)} cases differ around a clock change"


@pytest.mark.parametrize("zone", [z for z in ZONES if z not in ("UTC",)])
def test_ticks_around_clock_changes_are_matching_wall_times_at_their_first_instant(db, zone):
    rnd = random.Random(f"clock-changes-{zone}")
    changes = list(clock_changes(zone, 1970, 2100))
    assert changes, f"no clock changes found in {zone}"
    # expressions whose ticks fall in the hours around a change
    forms = ["* * * * *", "*/5 * * * *", "*/15 * * * *", "0,30 * * * *", "45 * * * *", "15,45 0-3 * * *",
             "30 2 * * *", "45 1 * * *", "0 0 * * *", "10-50/20 * * * *", "*/7 22-23,0-4 * * *", "0 * * * *"]
    cases = []
    for _ in range(700):
        change = rnd.choice(changes)
        at = change + timedelta(seconds=rnd.randint(-3 * 3600, 3 * 3600))
        if rnd.random() < 0.5:
            at = at.replace(second=0)
        cases.append((rnd.choice(forms) if rnd.random() < 0.7 else random_expression(rnd), at, zone))
    cases = valid(db, cases)
    for (cron, at, _), (ours_next, ours_prev) in zip(cases, batch(db, cases)):
        where = f"cron={cron!r} zone={zone} at={at.isoformat()}"
        assert ours_next == model_next(cron, at, zone), where
        assert ours_prev == model_prev(cron, at, zone), where


@pytest.mark.parametrize("zone", ZONES)
def test_prev_and_next_agree_with_each_other_at_every_instant(db, zone):
    rnd = random.Random(f"agree-{zone}")
    changes = list(clock_changes(zone, 2000, 2040)) or [utc("2024-01-01 00:00")]
    cases = []
    for _ in range(500):
        at = rnd.choice(changes) + timedelta(seconds=rnd.uniform(-7200, 7200)) if rnd.random() < 0.6 else random_instant(rnd)
        cron = random_expression(rnd) if rnd.random() < 0.5 else rnd.choice(["*/15 * * * *", "30 * * * *", "* * * * *"])
        cases.append((cron, at, zone))
    cases = valid(db, cases)
    bad = db.execute(
        """SELECT u.e, u.t, p.prev, n.next
           FROM unnest(%s::text[], %s::timestamptz[]) AS u(e, t)
           CROSS JOIN LATERAL (SELECT pgrelay._cron_prev(u.e, u.t, %s) AS prev) p
           CROSS JOIN LATERAL (SELECT pgrelay._cron_next(u.e, u.t, %s) AS next) n
           WHERE NOT (p.prev <= u.t AND n.next > u.t
                      AND pgrelay._cron_next(u.e, p.prev, %s) = n.next
                      AND pgrelay._cron_prev(u.e, n.next, %s) = n.next)
              OR p.prev IS NULL OR n.next IS NULL""",
        [[c[0] for c in cases], [c[1] for c in cases], zone, zone, zone, zone],
    ).fetchall()
    assert bad == []


# ---------------------------------------------------------------------------------------------
# Daylight saving time, pinned
# ---------------------------------------------------------------------------------------------


def test_a_wall_time_skipped_by_the_clocks_has_no_tick_that_day(db):
    # Berlin, 2024-03-31: 02:00 CET became 03:00 CEST; New York, 2024-03-10: 02:00 EST became 03:00 EDT
    assert next_tick(db, "30 2 * * *", utc("2024-03-30 12:00"), "Europe/Berlin") == local("2024-04-01 02:30", "Europe/Berlin")
    assert prev_tick(db, "30 2 * * *", utc("2024-03-31 12:00"), "Europe/Berlin") == local("2024-03-30 02:30", "Europe/Berlin")
    new_york = "America/New_York"
    assert next_tick(db, "30 2 * * *", utc("2024-03-09 12:00"), new_york) == local("2024-03-11 02:30", new_york)
    assert prev_tick(db, "30 2 * * *", utc("2024-03-10 12:00"), new_york) == local("2024-03-09 02:30", new_york)


def test_ticks_go_on_across_the_gap_when_the_clocks_jump_forward(db):
    assert ticks(db, "*/15 * * * *", utc("2024-03-31 00:20"), "Europe/Berlin", 4) == [
        utc("2024-03-31 00:30"), utc("2024-03-31 00:45"),    # 01:30, 01:45 CET
        utc("2024-03-31 01:00"), utc("2024-03-31 01:15"),    # 03:00, 03:15 CEST
    ]
    # midnight in Santiago: 1997-10-12 24:00 -04 became 01:00 -03, so that day had no midnight
    assert next_tick(db, "@daily", utc("1997-10-11 12:00"), "America/Santiago") == local("1997-10-13 00:00", "America/Santiago")


def test_a_repeated_wall_time_runs_once_at_its_first_occurrence(db):
    # Berlin, 2024-10-27: 03:00 CEST became 02:00 CET, so 02:30 came at 00:30 and at 01:30 UTC
    berlin = "Europe/Berlin"
    assert next_tick(db, "30 2 * * *", utc("2024-10-26 12:00"), berlin) == utc("2024-10-27 00:30")
    assert next_tick(db, "30 2 * * *", utc("2024-10-27 00:30"), berlin) == utc("2024-10-28 01:30")
    assert next_tick(db, "30 2 * * *", utc("2024-10-27 01:10"), berlin) == utc("2024-10-28 01:30")
    assert prev_tick(db, "30 2 * * *", utc("2024-10-27 01:45"), berlin) == utc("2024-10-27 00:30")
    assert prev_tick(db, "30 2 * * *", utc("2024-10-27 00:29"), berlin) == utc("2024-10-26 00:30")
    # New York, 2024-11-03: 02:00 EDT became 01:00 EST
    new_york = "America/New_York"
    assert next_tick(db, "30 1 * * *", utc("2024-11-03 00:00"), new_york) == local("2024-11-03 01:30", new_york, fold=0)
    assert next_tick(db, "30 1 * * *", utc("2024-11-03 00:00"), new_york) == utc("2024-11-03 05:30")   # EDT, not 06:30


def test_every_quarter_hour_through_the_repeated_hour_runs_no_instant_and_no_wall_time_twice(db):
    berlin = "Europe/Berlin"
    found = ticks(db, "*/15 * * * *", utc("2024-10-26 23:50"), berlin, 6)
    assert found == [utc("2024-10-27 00:00"), utc("2024-10-27 00:15"), utc("2024-10-27 00:30"),
                     utc("2024-10-27 00:45"), utc("2024-10-27 02:00"), utc("2024-10-27 02:15")]
    assert [wall(t, berlin).strftime("%H:%M") for t in found] == ["02:00", "02:15", "02:30", "02:45", "03:00", "03:15"]
    # from any instant of the repeated hour, the next tick is 03:00 CET and the last one 02:45 CEST
    for minutes in range(0, 60, 5):
        at = utc("2024-10-27 01:00") + timedelta(minutes=minutes, seconds=30)
        assert next_tick(db, "*/15 * * * *", at, berlin) == utc("2024-10-27 02:00")
        assert prev_tick(db, "*/15 * * * *", at, berlin) == utc("2024-10-27 00:45")


def test_lord_howe_half_hour_changes_skip_and_repeat_half_an_hour(db):
    lord_howe = "Australia/Lord_Howe"
    # 2024-04-07: 02:00 +11 became 01:30 +10:30, so 01:30-01:59 came twice
    assert next_tick(db, "45 1 * * *", utc("2024-04-06 12:00"), lord_howe) == utc("2024-04-06 14:45")   # 01:45 +11
    assert next_tick(db, "45 1 * * *", utc("2024-04-06 15:05"), lord_howe) == utc("2024-04-07 15:15")   # next day, +10:30
    assert prev_tick(db, "45 1 * * *", utc("2024-04-06 15:20"), lord_howe) == utc("2024-04-06 14:45")
    # 2024-10-06: 02:00 +10:30 became 02:30 +11, so 02:00-02:29 never came
    assert next_tick(db, "15 2 * * *", utc("2024-10-05 12:00"), lord_howe) == local("2024-10-07 02:15", lord_howe)
    assert ticks(db, "*/10 * * * *", utc("2024-10-05 15:15"), lord_howe, 3) == [
        utc("2024-10-05 15:20"), utc("2024-10-05 15:30"), utc("2024-10-05 15:40")]   # 01:50 +10:30, 02:30 +11, 02:40


def test_kathmandu_runs_on_its_quarter_hour_offset(db):
    assert next_tick(db, "0 9 * * *", utc("2024-05-01 00:00"), "Asia/Kathmandu") == utc("2024-05-01 03:15")
    # on 1986-01-01 its clocks went from +05:30 to +05:45: 00:00-00:14 never came, nor did that year's @yearly
    assert next_tick(db, "@yearly", utc("1985-06-01 00:00"), "Asia/Kathmandu") == local("1987-01-01 00:00", "Asia/Kathmandu")
    assert ticks(db, "*/5 * * * *", utc("1985-12-31 18:20"), "Asia/Kathmandu", 2) == [
        utc("1985-12-31 18:25"), utc("1985-12-31 18:30")]   # 23:55 +05:30, then 00:15 +05:45


def test_ticks_do_not_depend_on_the_sessions_time_zone(db):
    expected = [(next_tick(db, "*/20 1-3 * * *", utc("2024-10-26 23:30"), z),
                 prev_tick(db, "*/20 1-3 * * *", utc("2024-10-27 01:30"), z)) for z in ZONES]
    db.execute("SET TimeZone = 'Pacific/Chatham'")
    assert [(next_tick(db, "*/20 1-3 * * *", utc("2024-10-26 23:30"), z),
             prev_tick(db, "*/20 1-3 * * *", utc("2024-10-27 01:30"), z)) for z in ZONES] == expected


# ---------------------------------------------------------------------------------------------
# Instants exactly on a tick, long gaps
# ---------------------------------------------------------------------------------------------


def test_next_is_strictly_after_and_prev_is_at_or_before(db):
    on = utc("2024-05-10 10:00")
    assert next_tick(db, "0 * * * *", on) == utc("2024-05-10 11:00")
    assert prev_tick(db, "0 * * * *", on) == on
    assert next_tick(db, "0 * * * *", on - timedelta(microseconds=1)) == on
    assert prev_tick(db, "0 * * * *", on - timedelta(microseconds=1)) == utc("2024-05-10 09:00")
    assert prev_tick(db, "0 * * * *", on + timedelta(microseconds=1)) == on
    assert next_tick(db, "* * * * *", on + timedelta(seconds=59)) == on + timedelta(minutes=1)


def test_yearly_and_leap_day_expressions_cross_decades_in_one_step(db):
    assert prev_tick(db, "0 0 1 1 *", utc("2046-06-01 00:00")) == utc("2046-01-01 00:00")
    assert prev_tick(db, "@yearly", utc("2087-03-04 05:06"), "Europe/Berlin") == local("2087-01-01 00:00", "Europe/Berlin")
    assert next_tick(db, "@annually", utc("1975-01-01 00:00")) == utc("1976-01-01 00:00")
    assert next_tick(db, "0 12 29 2 *", utc("2024-03-01 00:00")) == utc("2028-02-29 12:00")
    # 2100 is no leap year: from 2096 the next Feb 29 is eight years away
    assert next_tick(db, "0 0 29 2 *", utc("2096-02-29 00:00")) == utc("2104-02-29 00:00")
    assert prev_tick(db, "0 0 29 2 *", utc("2104-02-28 23:59")) == utc("2096-02-29 00:00")
    new_york = "America/New_York"
    assert prev_tick(db, "0 0 29 feb *", utc("2103-01-01 00:00"), new_york) == local("2096-02-29 00:00", new_york)
    assert next_tick(db, "59 23 31 12 *", utc("2030-01-01 00:00")) == utc("2030-12-31 23:59")


# ---------------------------------------------------------------------------------------------
# What an expression may say
# ---------------------------------------------------------------------------------------------


FORMS = [   # (expression, after, its next tick; all UTC)
    ("@hourly", "2024-05-10 10:20", "2024-05-10 11:00"),
    ("@HOURLY", "2024-05-10 10:20", "2024-05-10 11:00"),
    ("@daily", "2024-05-10 10:20", "2024-05-11 00:00"),
    ("@midnight", "2024-05-10 10:20", "2024-05-11 00:00"),
    ("@weekly", "2024-05-10 10:20", "2024-05-12 00:00"),         # Sunday
    ("@monthly", "2024-05-10 10:20", "2024-06-01 00:00"),
    ("@yearly", "2024-05-10 10:20", "2025-01-01 00:00"),
    ("@annually", "2024-05-10 10:20", "2025-01-01 00:00"),
    ("0 9 * * MON-FRI", "2024-05-10 10:20", "2024-05-13 09:00"),  # Friday -> Monday
    ("0 9 * * 7", "2024-05-10 10:20", "2024-05-12 09:00"),        # 7 = Sunday
    ("0 9 * * 0", "2024-05-10 10:20", "2024-05-12 09:00"),
    ("0 9 * * sun", "2024-05-10 10:20", "2024-05-12 09:00"),
    ("0 9 * * Fri-7", "2024-05-11 10:20", "2024-05-12 09:00"),
    ("0 0 1 jan,JUL *", "2024-05-10 10:20", "2024-07-01 00:00"),
    ("0 0 1 Mar-may/2 *", "2024-03-10 10:20", "2024-05-01 00:00"),
    ("*/15 * * * *", "2024-05-10 10:20", "2024-05-10 10:30"),
    ("5-20/5 * * * *", "2024-05-10 10:20", "2024-05-10 11:05"),
    ("10/20 * * * *", "2024-05-10 10:20", "2024-05-10 10:30"),     # 10, 30, 50
    ("0 0 1-31/10 * *", "2024-05-10 10:20", "2024-05-11 00:00"),   # 1, 11, 21, 31
    ("0 0 * * sun/2", "2024-05-12 10:20", "2024-05-14 00:00"),     # Sunday, Tuesday, Thursday, Saturday
    ("0 22 * * 1-5", "2024-05-10 22:00", "2024-05-13 22:00"),
    ("07 08 09 10 *", "2024-05-10 10:20", "2024-10-09 08:07"),
    ("30 12 1,15 * *", "2024-05-10 10:20", "2024-05-15 12:30"),
    ("  \t0  12 * *\t*  ", "2024-05-10 10:20", "2024-05-10 12:00"),
]


def test_every_documented_form_is_accepted_and_runs_when_it_says(db):
    found = db.execute(
        "SELECT pgrelay._cron_error(u.e), pgrelay._cron_next(u.e, u.t, 'UTC') "
        "FROM unnest(%s::text[], %s::timestamptz[]) WITH ORDINALITY AS u(e, t, n) ORDER BY u.n",
        [[f[0] for f in FORMS], [utc(f[1]) for f in FORMS]]).fetchall()
    assert [(cron, error, tick) for (cron, _, _), (error, tick) in zip(FORMS, found)] \
        == [(cron, None, utc(expected)) for cron, _, expected in FORMS]
    assert [croniter(cron, utc(after)).get_next(datetime) for cron, after, _ in FORMS] \
        == [utc(expected) for _, _, expected in FORMS]


DAY_RULE = [   # (expression, after, the days of its next five ticks)
    # both day fields restricted: a day matches by either
    ("0 0 13 * 5", "2024-09-01", [6, 13, 20, 27, 4]),            # Fridays and the 13th
    ("0 0 */2 * 1", "2024-08-31", [1, 2, 3, 5, 7]),               # odd days and Mondays
    ("0 0 1-31 * 1", "2024-08-31", [1, 2, 3, 4, 5]),              # 1-31 next to "1" is a restriction: every day
    ("0 0 1 * sun-sat", "2024-08-31", [1, 2, 3, 4, 5]),
    # one of them unrestricted: both must match
    ("0 0 1-31 * */2", "2024-08-31", [1, 3, 5, 7, 8]),            # 1-31 next to a "*" counts as *: Sun, Tue, Thu, Sat
    ("0 0 */1 * */3", "2024-08-31", [1, 4, 7, 8, 11]),            # Sun, Wed, Sat
    ("0 0 1,15 * *", "2024-08-31", [1, 15, 1, 15, 1]),
    ("0 0 * * 1-5", "2024-08-31", [2, 3, 4, 5, 6]),
]


def test_day_of_month_and_day_of_week_combine_as_croniter_does(db):
    for cron, after, expected_days in DAY_RULE:
        found = ticks(db, cron, utc(after + " 12:00"), "UTC", 5)
        assert [t.day for t in found] == expected_days, cron
        reference = croniter(cron, utc(after + " 12:00"))
        assert found == [reference.get_next(datetime) for _ in found], cron


MALFORMED = [   # (expression, what the message says after "invalid cron expression '...': ")
    ("61 * * * *", "minute 61 is out of range 0-59"),
    ("* 24 * * *", "hour 24 is out of range 0-23"),
    ("* * 0 * *", "day-of-month 0 is out of range 1-31"),
    ("* * 32 * *", "day-of-month 32 is out of range 1-31"),
    ("* * * 13 *", "month 13 is out of range 1-12"),
    ("* * * * 8", "day-of-week 8 is out of range 0-7"),
    ("5-99999999999 * * * *", "minute 99999999999 is out of range 0-59"),
    ("* * * *", ("needs 5 fields (minute hour day-of-month month day-of-week) or "
                 "@hourly/@daily/@weekly/@monthly/@yearly, not 4")),
    ("0 0 * * * 2024", ("needs 5 fields (minute hour day-of-month month day-of-week) or "
                        "@hourly/@daily/@weekly/@monthly/@yearly, not 6")),
    ("", "needs 5 fields"),
    (" \t ", "needs 5 fields"),
    ("*/0 * * * *", "step 0 in minute field '*/0' must be between 1 and 60"),
    ("0 0-23/25 * * *", "step 25 in hour field '0-23/25' must be between 1 and 24"),
    ("*/x * * * *", "step 'x' in minute field '*/x' is not a number"),
    ("*/ * * * *", "step '' in minute field '*/' is not a number"),
    ("30-10 * * * *", "minute range 30-10 is reversed: its start is after its end"),
    ("0 0 * DEC-JAN *", "month range DEC-JAN is reversed"),
    ("0 0 * * fri-sun", ("day-of-week range fri-sun is reversed: its start is after its end "
                         "(end a range on Sunday with 7: fri-7)")),
    ("0 0 * foo *", "'foo' is not a month: use 1-12 or JAN-DEC"),
    ("0 0 * * monday", "'monday' is not a day of the week: use 0-7 or SUN-SAT"),
    ("0 0 * * jan", "'jan' is not a day of the week"),
    ("0 mon * * *", "hour 'mon' is not a number"),
    ("0 0 L * *", "day-of-month 'L' is not a number"),
    ("0 0 * * 5#3", "unexpected character '#' in day-of-week field '5#3'"),
    ("0 0 ? * *", "unexpected character '?' in day-of-month field '?'"),
    ("0 0 1.5 * *", "unexpected character '.' in day-of-month field '1.5'"),
    ("1,,2 * * * *", "minute field '1,,2' has an empty list item"),
    ("1, * * * *", "minute field '1,' has an empty list item"),
    ("*,5 * * * *", "* cannot be combined with other values in minute field '*,5'"),
    ("1-2-3 * * * *", "'1-2-3' in minute field is not a value, a range (a-b) or a step (*/s, a-b/s, a/s)"),
    ("-5 * * * *", "'-5' in minute field is not a value"),
    ("@every 5m", "unknown macro '@every': use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually"),
    ("@reboot", "unknown macro '@reboot'"),
    ("0 0 30 2 *", "never runs: day-of-month 30 does not occur in month 2"),
    ("0 0 31 apr,jun,sep,nov *", "never runs: day-of-month 31 does not occur in month apr,jun,sep,nov"),
    ("0 0 30,31 feb *", "never runs"),
]


def test_a_malformed_expression_is_refused_with_what_is_wrong(db):
    found = db.execute(
        "SELECT pgrelay._cron_error(u.e), pgrelay._cron_next(u.e, now(), 'UTC'), pgrelay._cron_prev(u.e, now(), 'UTC') "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS u(e, n) ORDER BY u.n", [[m[0] for m in MALFORMED]]).fetchall()
    wrong = [(cron, error) for (cron, problem), (error, _, _) in zip(MALFORMED, found)
             if error is None or not error.startswith(f"invalid cron expression '{cron}': ") or problem not in error]
    assert wrong == []
    assert {(tick, prev) for _, tick, prev in found} == {(None, None)}


def test_a_null_expression_is_refused(db):
    assert cron_error(db, None) == "cron expression must not be NULL"


def test_an_expression_that_runs_only_in_some_months_or_years_is_accepted(db):
    for cron in ["0 0 29 2 *", "0 0 31 * *", "0 0 31 4,5 *", "0 0 30 * *", "0 0 30 2 1", "0 0 31 2 */1"]:
        assert cron_error(db, cron) is None, cron
    assert next_tick(db, "0 0 31 4,5 *", utc("2024-01-01 00:00")) == utc("2024-05-31 00:00")
    # day 30 of February or a Monday in February: the Mondays run
    assert next_tick(db, "0 0 30 2 1", utc("2024-01-01 00:00")) == utc("2024-02-05 00:00")


def test_a_time_zone_of_the_tz_database_is_accepted(db):
    for zone in ["UTC", "GMT", "Z", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Asia/Kathmandu",
                 "Etc/GMT+3", "EST5EDT", "Japan", "Australia/Lord_Howe", "europe/berlin"]:
        assert cron_error(db, "0 9 * * *", zone) is None, zone
        assert next_tick(db, "0 9 * * *", utc("2024-01-01 12:00"), zone) is not None, zone


def test_a_time_zone_that_is_not_a_zone_name_is_refused(db):
    refused = [
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus': use a name from pg_timezone_names, such as 'Europe/Berlin' or 'UTC'"),
        ("Europe/Berln", "unknown time zone 'Europe/Berln'"),
        ("", "unknown time zone ''"),
        ("PST", ("time zone 'PST' is an abbreviation, read as a fixed UTC offset (-08:00:00) that ignores daylight "
                 "saving time: use a name from pg_timezone_names, such as 'Europe/Berlin' or 'UTC'")),
        ("cet", "time zone 'cet' is an abbreviation, read as a fixed UTC offset (01:00:00)"),
        ("UTC+3", "time zone 'UTC+3' is a POSIX offset, not a time zone name: use a name from pg_timezone_names"),
        ("+05:30", "time zone '+05:30' is a POSIX offset"),
        ("EST5EDT,M3.2.0/2,M11.1.0/2", "is a POSIX offset"),
        ("right/Europe/Berlin", ("time zone 'right/Europe/Berlin' counts leap seconds, so its clocks are off by them: "
                                 "use 'Europe/Berlin'")),
        (None, "time zone must not be NULL"),
    ]
    wrong = [(zone, error) for zone, problem in refused
             if (error := cron_error(db, "0 9 * * *", zone)) is None or problem not in error]
    assert wrong == []


def test_next_and_prev_give_null_rather_than_an_error(db):
    assert next_tick(db, "0 9 * * *", utc("2024-01-01 00:00"), "Mars/Olympus") is None
    assert prev_tick(db, "0 9 * * *", utc("2024-01-01 00:00"), "Mars/Olympus") is None
    assert next_tick(db, "0 9 * *", utc("2024-01-01 00:00")) is None
    assert db.execute("SELECT pgrelay._cron_next('@daily', 'infinity', 'UTC'), pgrelay._cron_prev('@daily', '-infinity', 'UTC'),"
                      " pgrelay._cron_next(NULL, now(), 'UTC'), pgrelay._cron_prev('@daily', NULL, 'UTC')").fetchone() \
        == (None, None, None, None)
