"""Is the desk working? From the database alone: last successful poll, outbox backlog, failures, set-aside mail.

Exit codes follow the monitoring plugin convention, shifted to what a shell check needs:
0 healthy, 1 degraded (a person should look today), 2 unhealthy (mail is not being handled).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from processor.config import Settings
from processor.store.db import Store

LEVELS = ("ok", "degraded", "unhealthy")
EXIT_CODES = {"ok": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True)
class Thresholds:
    """Minutes and counts; None minutes for the poll mean "from the config's poll interval"."""

    poll_warn_minutes: float | None = None
    poll_crit_minutes: float = 30
    outbox_warn_minutes: float = 15
    outbox_crit_minutes: float = 120
    max_failed: int = 0            # mails refused permanently in the last failed_hours
    failed_hours: float = 24
    max_quarantined: int = 0
    max_review: int = 20

    def poll_warn(self, settings: Settings) -> float:
        if self.poll_warn_minutes is not None:
            return self.poll_warn_minutes
        # Three missed polls, and never less than five minutes: one slow cycle is no alarm.
        return max(3 * settings.poll_interval_seconds / 60, 5)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    value: float | int | None = None


@dataclass
class Health:
    checked_at: str
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        return max((c.status for c in self.checks), key=LEVELS.index, default="ok")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_data(self) -> dict:
        return {"status": self.status, "exit_code": self.exit_code, "checked_at": self.checked_at,
                "checks": [asdict(c) for c in self.checks]}

    def as_text(self) -> str:
        lines = [f"{self.status.upper()}"]
        lines += [f"  {c.status:<9} {c.name:<10} {c.detail}" for c in self.checks]
        return "\n".join(lines)


def _minutes(now: dt.datetime, then: str) -> float:
    return (now - dt.datetime.fromisoformat(then)).total_seconds() / 60


def _ago(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f} min ago"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h ago"
    return f"{minutes / 1440:.1f} days ago"


def _level(value: float, warn: float, crit: float | None = None) -> str:
    if crit is not None and value > crit:
        return "unhealthy"
    return "degraded" if value > warn else "ok"


def check(store: Store, settings: Settings, now: dt.datetime,
          limits: Thresholds = Thresholds()) -> Health:
    health = Health(checked_at=now.isoformat())
    add = health.checks.append
    jobs = store.worker_health()

    poll = jobs.get("poll")
    if poll is None or poll["last_success_at"] is None:
        add(Check("poll", "unhealthy", "no successful poll recorded: is the worker running?"))
    else:
        age = _minutes(now, poll["last_success_at"])
        level = _level(age, limits.poll_warn(settings), limits.poll_crit_minutes)
        detail = f"last successful poll {_ago(age)}"
        if poll["failures"]:
            level = max(level, "degraded", key=LEVELS.index)
            detail += f"; the last {poll['failures']} failed: {poll['last_error']}"
        add(Check("poll", level, detail, round(age, 1)))

    send = jobs.get("send")
    if send is not None and send["failures"]:
        add(Check("smtp", "degraded",
                  f"the relay was unavailable the last {send['failures']} time(s): "
                  f"{send['last_error']}", send["failures"]))

    pending, oldest = store.outbox_backlog()
    if pending:
        age = _minutes(now, oldest)
        add(Check("outbox", _level(age, limits.outbox_warn_minutes, limits.outbox_crit_minutes),
                  f"{pending} mail(s) waiting, the oldest queued {_ago(age)}", round(age, 1)))
    else:
        add(Check("outbox", "ok", "nothing waiting to be sent", 0))

    failed = store.failed_mail_since(now - dt.timedelta(hours=limits.failed_hours))
    add(Check("failed", _level(failed, limits.max_failed),
              f"{failed} mail(s) refused permanently in the last {limits.failed_hours:g} h "
              "(see the digest)", failed))

    counts = store.message_counts()
    quarantined, review = counts.get("quarantined", 0), counts.get("review", 0)
    add(Check("quarantine", _level(quarantined, limits.max_quarantined),
              f"{quarantined} mail(s) set aside after an error (`leernetwerk review`)", quarantined))
    add(Check("review", _level(review, limits.max_review),
              f"{review} mail(s) waiting for an organiser", review))
    return health
