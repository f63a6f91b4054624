"""The cron expressions of CodePipeline's DeploymentWindow rule, evaluated to the minute.

The dialect is the one AWS documents for the rule (Quartz's): six required fields and an
optional year, ``seconds minutes hours day-of-month month day-of-week [year]``. A
deployment window is a set of minutes, not a trigger, so the seconds field must be ``*``
(as AWS requires) and ``now`` is in the window when its minute matches every field.

Parsed once into sets and a few day predicates (``L``, ``W``, ``#``), so a definition with
a bad expression is rejected when it is loaded, with a message naming the field, and the
engine never has to guess at run time. Pure: the clock and the zone come from the caller.
"""

from __future__ import annotations

import calendar
import functools
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

MIN_YEAR, MAX_YEAR = 1970, 2199
# How far ahead next_window_start looks: a leap day on a given weekday recurs within 28 years.
SEARCH_YEARS = 30

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_WEEKDAYS = {
    name: i + 1 for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
}


class CronError(ValueError):
    """A cron expression or time zone CodePipeline would not accept, or we cannot evaluate."""


@dataclass(frozen=True)
class _Range:
    """What one field accepts: its bounds and the names that stand for numbers."""

    name: str
    low: int
    high: int
    names: dict[str, int]
    wraps: bool = True  # "22-2" in hours means 22, 23, 0, 1, 2 (as in Quartz)


_MINUTES = _Range("minutes", 0, 59, {})
_HOURS = _Range("hours", 0, 23, {})
_DOM = _Range("day-of-month", 1, 31, {})
_MONTH = _Range("month", 1, 12, _MONTHS)
_DOW = _Range("day-of-week", 1, 7, _WEEKDAYS)
_YEAR = _Range("year", MIN_YEAR, MAX_YEAR, {}, wraps=False)


@dataclass(frozen=True)
class _DayOfMonth:
    days: frozenset[int]
    last_offsets: frozenset[int]  # "L" is 0, "L-3" is 3: days before the month's last day
    last_weekday: bool  # "LW"
    nearest_weekday: frozenset[int]  # "15W": the weekday nearest the 15th, within the month

    def matches(self, day: date) -> bool:
        length = calendar.monthrange(day.year, day.month)[1]
        if day.day in self.days or length - day.day in self.last_offsets:
            return True
        if self.last_weekday and day.day == _last_weekday(day.year, day.month, length):
            return True
        return any(
            n <= length and day.day == _nearest_weekday(day.year, day.month, n, length)
            for n in self.nearest_weekday
        )


@dataclass(frozen=True)
class _DayOfWeek:
    days: frozenset[int]  # 1 (SUN) to 7 (SAT)
    last_of: frozenset[int]  # "6L": the month's last Friday
    nth: frozenset[tuple[int, int]]  # "6#3": (6, 3), the month's third Friday

    def matches(self, day: date) -> bool:
        dow = quartz_weekday(day)
        if dow in self.days:
            return True
        length = calendar.monthrange(day.year, day.month)[1]
        if dow in self.last_of and day.day + 7 > length:
            return True
        return (dow, (day.day - 1) // 7 + 1) in self.nth


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression. ``None`` for a day field or the year means "any"."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    day_of_month: _DayOfMonth | None
    day_of_week: _DayOfWeek | None
    years: frozenset[int] | None

    def matches_day(self, day: date) -> bool:
        if self.years is not None and day.year not in self.years:
            return False
        if day.month not in self.months:
            return False
        if self.day_of_month is not None and not self.day_of_month.matches(day):
            return False
        return self.day_of_week is None or self.day_of_week.matches(day)

    def matches(self, local: datetime) -> bool:
        """Whether the wall-clock minute of ``local`` is in the window (seconds ignored)."""
        return (
            local.minute in self.minutes
            and local.hour in self.hours
            and self.matches_day(local.date())
        )


def quartz_weekday(day: date) -> int:
    """Quartz numbers days 1 (Sunday) to 7 (Saturday); Python's weekday() is Monday=0."""
    return (day.weekday() + 1) % 7 + 1


def _last_weekday(year: int, month: int, length: int) -> int:
    d = length
    while date(year, month, d).weekday() >= 5:
        d -= 1
    return d


def _nearest_weekday(year: int, month: int, n: int, length: int) -> int:
    """Quartz's ``nW``: never leaves the month, so the 1st on a Saturday gives Monday the 3rd."""
    wd = date(year, month, n).weekday()
    if wd == 5:  # Saturday
        return n - 1 if n > 1 else n + 2
    if wd == 6:  # Sunday
        return n + 1 if n < length else n - 2
    return n


# ---------------------------------------------------------------------------- parsing


@functools.lru_cache(maxsize=256)
def parse_cron(expression: str) -> CronSchedule:
    """Parse an AWS DeploymentWindow expression, or raise CronError saying what is wrong."""
    fields = expression.upper().split()
    if len(fields) not in (6, 7):
        raise CronError(
            f"cron expression '{expression}' has {len(fields)} fields; expected 6 "
            "(seconds minutes hours day-of-month month day-of-week) and an optional year"
        )
    if fields[0] != "*":
        raise CronError(
            f"seconds field '{fields[0]}' must be '*': a deployment window is matched to the minute"
        )
    dom_text, dow_text = fields[3], fields[5]
    dom_any = dom_text in ("*", "?")
    dow_any = dow_text in ("*", "?")
    if not dom_any and not dow_any:
        raise CronError(
            f"day-of-month '{dom_text}' and day-of-week '{dow_text}' are both set; "
            "set one of them to '?'"
        )
    year_text = fields[6] if len(fields) == 7 else "*"
    return CronSchedule(
        expression=expression,
        minutes=_plain_field(fields[1], _MINUTES),
        hours=_plain_field(fields[2], _HOURS),
        months=_plain_field(fields[4], _MONTH),
        day_of_month=None if dom_any else _day_of_month(dom_text),
        day_of_week=None if dow_any else _day_of_week(dow_text),
        years=None if year_text == "*" else _plain_field(year_text, _YEAR),
    )


def _plain_field(text: str, rng: _Range) -> frozenset[int]:
    values: set[int] = set()
    for item in _items(text, rng):
        values |= _expand(item, rng)
    return frozenset(values)


def _items(text: str, rng: _Range) -> list[str]:
    items = text.split(",")
    if any(not item for item in items):
        raise CronError(f"{rng.name} field '{text}' has an empty list item")
    return items


def _expand(item: str, rng: _Range) -> set[int]:
    """``*``, ``n``, ``a-b``, each optionally ``/step``; ``n/step`` runs from n to the top."""
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        step = _number(step_text, rng, item, kind="step")
        if not 1 <= step <= rng.high:
            raise CronError(f"{rng.name} '{item}': step must be between 1 and {rng.high}")
    if base == "*":
        start, end = rng.low, rng.high
    elif "-" in base:
        lo, _, hi = base.partition("-")
        start, end = _value(lo, rng, item), _value(hi, rng, item)
        if end < start and not rng.wraps:
            raise CronError(f"{rng.name} '{item}': range runs backwards")
    else:
        start = _value(base, rng, item)
        end = rng.high if slash else start
    span = rng.high - rng.low + 1
    length = (end - start) % span + 1
    return {rng.low + (start - rng.low + i) % span for i in range(0, length, step)}


def _value(text: str, rng: _Range, item: str) -> int:
    if text in rng.names:
        return rng.names[text]
    n = _number(text, rng, item, kind="value")
    if not rng.low <= n <= rng.high:
        names = f" or {_name_span(rng)}" if rng.names else ""
        raise CronError(f"{rng.name} '{item}': {n} is not in {rng.low}-{rng.high}{names}")
    return n


def _name_span(rng: _Range) -> str:
    names = list(rng.names)
    return f"{names[0]}-{names[-1]}"


def _number(text: str, rng: _Range, item: str, *, kind: str) -> int:
    if not text.isdigit() or not text.isascii():
        allowed = "a number" + (f" or a name ({_name_span(rng)})" if rng.names else "")
        raise CronError(f"{rng.name} '{item}': {kind} '{text}' is not {allowed}")
    return int(text)


def _day_of_month(text: str) -> _DayOfMonth:
    days: set[int] = set()
    offsets: set[int] = set()
    nearest: set[int] = set()
    last_weekday = False
    for item in _items(text, _DOM):
        if item == "L":
            offsets.add(0)
        elif item.startswith("L-"):
            offset = _number(item[2:], _DOM, item, kind="offset")
            if not 0 <= offset <= 30:
                raise CronError(f"day-of-month '{item}': offset must be between 0 and 30")
            offsets.add(offset)
        elif item == "LW":
            last_weekday = True
        elif item.endswith("W"):
            nearest.add(_value(item[:-1], _DOM, item))
        elif "L" in item or "W" in item or "#" in item:
            raise CronError(
                f"day-of-month '{item}' is not supported: use n, a-b, */n, L, L-n, LW or nW"
            )
        else:
            days |= _expand(item, _DOM)
    return _DayOfMonth(frozenset(days), frozenset(offsets), last_weekday, frozenset(nearest))


def _day_of_week(text: str) -> _DayOfWeek:
    days: set[int] = set()
    last_of: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for item in _items(text, _DOW):
        if item == "L":
            days.add(7)  # alone, "L" is simply Saturday
        elif item.endswith("L"):
            last_of.add(_value(item[:-1], _DOW, item))
        elif "#" in item:
            day_text, _, n_text = item.partition("#")
            n = _number(n_text, _DOW, item, kind="occurrence")
            if not 1 <= n <= 5:
                raise CronError(f"day-of-week '{item}': occurrence after '#' must be 1 to 5")
            nth.add((_value(day_text, _DOW, item), n))
        else:
            days |= _expand(item, _DOW)
    return _DayOfWeek(frozenset(days), frozenset(last_of), frozenset(nth))


# ---------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=64)
def load_zone(name: str) -> tzinfo:
    """The zone for a TimeZone value; "UTC" works even without a time zone database."""
    if name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    hint = " (an IANA name such as Europe/Berlin or America/New_York)"
    if not zoneinfo.available_timezones():
        hint = " (no time zone database found: install the tzdata package)"
    raise CronError(f"unknown time zone '{name}'{hint}")


def in_window(cron: str, tz: str, now_epoch: float) -> bool:
    """Whether ``now_epoch``'s minute, read on a wall clock in ``tz``, matches ``cron``."""
    schedule = parse_cron(cron)
    return schedule.matches(datetime.fromtimestamp(now_epoch, load_zone(tz)))


def next_window_start(cron: str, tz: str, now_epoch: float) -> float | None:
    """The first moment at or after ``now_epoch`` that is in the window.

    ``now_epoch`` itself when the window is open; otherwise the start of the next matching
    minute; None if nothing matches within SEARCH_YEARS (e.g. February 30th). For a
    scheduler that waits for the window to open instead of polling every minute. Wall-clock
    minutes skipped by a DST change never match; repeated ones match twice.
    """
    schedule = parse_cron(cron)
    zone = load_zone(tz)
    if schedule.matches(datetime.fromtimestamp(now_epoch, zone)):
        return now_epoch
    day = datetime.fromtimestamp(now_epoch, zone).date()
    last = min(day.year + SEARCH_YEARS, MAX_YEAR)
    if schedule.years is not None:
        last = min(last, max(schedule.years))
    hours, minutes = sorted(schedule.hours), sorted(schedule.minutes)
    while day.year <= last:
        if schedule.matches_day(day):
            # The current minute is not in the window, so any match lies in a later one.
            found = [
                t for h in hours for m in minutes for t in _epochs(day, h, m, zone) if t > now_epoch
            ]
            if found:
                return min(found)
        day += timedelta(days=1)
    return None


def _epochs(day: date, hour: int, minute: int, zone: tzinfo) -> list[float]:
    """Epochs whose wall clock in ``zone`` reads this minute: none in a DST gap, two in a fold."""
    out: list[float] = []
    for fold in (0, 1):
        local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone, fold=fold)
        t = local.timestamp()
        back = datetime.fromtimestamp(t, zone)
        if (back.date(), back.hour, back.minute) == (day, hour, minute) and t not in out:
            out.append(t)
    return out
