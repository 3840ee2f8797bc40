"""croniter as an independent oracle for kiq's cron next-fire times (tests/cron_crosscheck.rs).

Reads queries, one per line: id TAB expression TAB IANA zone TAB start (Unix seconds).
Writes, first, "croniter VERSION", then one line per query: id TAB next fire strictly after
start (Unix seconds), or id TAB "ERR" message.

croniter is adapted to kiq's (Vixie cron's) reading, where the two differ:
- kiq's 6-field form has seconds first: second_at_beginning=True;
- Vixie's day rule: a day matching either day field fires when both are restricted, but both
  must match when either day field starts with `*` (`*/2`): implement_cron_bug=True, which
  croniter documents as exactly that rule.
Weekday numbers (0 and 7 = Sunday), names, lists, ranges and steps are croniter's own reading.
"""

import sys
from datetime import datetime, timezone
from importlib.metadata import version
from zoneinfo import ZoneInfo

from croniter import croniter


def next_fire(expr: str, zone: str, start: int) -> int:
    fields = expr.split()
    tz = ZoneInfo(zone)
    begin = datetime.fromtimestamp(start, tz=timezone.utc).astimezone(tz)
    it = croniter(
        expr,
        begin,
        ret_type=datetime,
        day_or=True,
        implement_cron_bug=True,
        second_at_beginning=len(fields) == 6,
    )
    return int(it.get_next(datetime).timestamp())


def main() -> None:
    out = [f"croniter {version('croniter')}"]
    for line in sys.stdin.read().splitlines():
        if not line.strip():
            continue
        qid, expr, zone, start = line.split("\t")
        try:
            out.append(f"{qid}\t{next_fire(expr, zone, int(start))}")
        except Exception as e:  # reported back to the Rust test, which fails on it
            out.append(f"{qid}\tERR {type(e).__name__}: {e}".replace("\n", " "))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
