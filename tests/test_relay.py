"""The outbox under a relay's rate limit (aiosmtpd's limit_rate), on an injected clock: no sleeps."""

from __future__ import annotations

import datetime as dt

import pytest

from processor import config
from processor.store import db
from processor.desk import outbox
from processor.clock import iso
from processor.mail.smtp import is_throttle
from tests.desk import PROJECT, base_config, desk_settings

NOW = dt.datetime(2018, 5, 20, 10, 0, tzinfo=dt.timezone.utc)
START = dt.datetime(2018, 5, 14, 7, 0, tzinfo=dt.timezone.utc)


class FakeTime:
    """One clock for the pacer and the relay: sleeping moves it, so minutes pass in no time."""

    def __init__(self):
        self.t = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


@pytest.fixture
def fake():
    return FakeTime()


@pytest.fixture
def relay(make_smtp_server, fake):
    server = make_smtp_server(rate_clock=fake)
    server.limit_rate(30, 60, "451 4.7.0 Too many messages, slow down")
    return server


@pytest.fixture
def store(tmp_path):
    return db.Store(db.connect(tmp_path / "state.sqlite"))


def queue(store, n: int, *, priority: int = 0, kind: str = "confirmation", first: int = 0,
          to: str = "p{i}@stad.be") -> None:
    with store.transaction():
        for i in range(first, first + n):
            address = to.format(i=i)
            raw = (f"From: desk@vlaanderen.be\r\nTo: {address}\r\nSubject: {kind} {i}\r\n"
                   f"Message-ID: <{kind}-{i}@test>\r\n\r\n{kind} {i}\r\n").encode()
            store.queue_mail(kind=kind, priority=priority,
                             order_key=(START + dt.timedelta(seconds=i)).isoformat(),
                             sender="desk@vlaanderen.be", recipients=[address],
                             message_id=f"<{kind}-{i}@test>", raw=raw, registration_id=None,
                             source_message=None, now=NOW)


def subjects(server) -> list[str]:
    return [m.message["Subject"] for m in server.messages]


def refused(server) -> list[str]:
    return [a.response for a in server.attempts if not a.response.startswith("2")]


def test_a_burst_goes_out_at_the_relays_rate_in_arrival_order_without_one_4xx(store, relay, fake):
    settings = desk_settings(smtp_server=relay)
    queue(store, 100)
    pacer = outbox.Pacer(settings.smtp.max_per_minute, clock=fake, sleep=fake.sleep)

    report = outbox.flush(store, settings, NOW, pacer=pacer)

    assert report.sent == 100 and report.throttled == 0
    assert refused(relay) == []
    assert subjects(relay) == [f"confirmation {i}" for i in range(100)]
    # 30 a minute: the 100th may leave only after three full windows.
    assert 180 <= fake.slept < 200


def test_a_throttling_answer_slows_down_and_the_mail_keeps_its_place(store, relay, fake):
    # Configured faster than the relay allows: the relay answers 4xx and we must adapt.
    settings = desk_settings(smtp_server=relay, smtp={"max_per_minute": 100})
    queue(store, 80)
    pacer = outbox.Pacer(settings.smtp.max_per_minute, clock=fake, sleep=fake.sleep)

    first = outbox.flush(store, settings, NOW, pacer=pacer)
    assert first.sent == 30 and first.throttled == 1 and first.retried == 0
    held = store.conn.execute("SELECT * FROM outbox WHERE message_id = '<confirmation-30@test>'"
                              ).fetchone()
    # Not an attempt, not a later slot: it stays at the head of the queue.
    assert held["state"] == "pending" and held["attempts"] == 0
    assert held["next_attempt_at"] == iso(NOW)
    assert "4.7.0" in held["last_error"]

    flushes = 1
    while store.due_mail(NOW, 1):
        outbox.flush(store, settings, NOW, pacer=pacer)
        flushes += 1
        assert flushes < 20
    assert subjects(relay) == [f"confirmation {i}" for i in range(80)]
    rows = store.outbox_rows()
    assert {r["state"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}
    # Each refusal halves the pace (100 → 50 → 25 a minute): two at most before it fits under 30.
    assert 1 <= len(refused(relay)) <= 2


def test_replies_go_before_reminders_and_the_digest_queued_earlier(store, relay, fake):
    settings = desk_settings(smtp_server=relay)
    queue(store, 1, priority=2, kind="digest")
    queue(store, 5, priority=1, kind="reminder")
    queue(store, 40, priority=0, kind="confirmation", first=100)
    pacer = outbox.Pacer(30, clock=fake, sleep=fake.sleep)

    outbox.flush(store, settings, NOW, pacer=pacer)

    sent = subjects(relay)
    assert sent == ([f"confirmation {i}" for i in range(100, 140)]
                    + [f"reminder {i}" for i in range(5)] + ["digest 0"])
    assert refused(relay) == []


def test_one_mail_throttled_again_and_again_does_not_block_the_queue(store, make_smtp_server,
                                                                     fake):
    server = make_smtp_server(rate_clock=fake)
    server.set_responder(lambda env: "451 4.7.0 Too many messages for this recipient"
                         if "stuck@stad.be" in env.rcpt_tos else None)
    settings = desk_settings(smtp_server=server)
    queue(store, 1, to="stuck@stad.be")
    queue(store, 3, first=1)
    pacer = outbox.Pacer(30, clock=fake, sleep=fake.sleep)

    for _ in range(outbox.MAX_THROTTLES_PER_MAIL):
        outbox.flush(store, settings, NOW, pacer=pacer)

    assert subjects(server) == ["confirmation 1", "confirmation 2", "confirmation 3"]
    stuck = store.outbox_rows()[0]
    assert stuck["state"] == "pending" and stuck["attempts"] == 1
    assert stuck["next_attempt_at"] > iso(NOW)  # an ordinary retry from now on


def test_the_flush_yields_when_its_budget_would_be_exceeded(store, relay, fake):
    settings = desk_settings(smtp_server=relay)
    queue(store, 50)
    pacer = outbox.Pacer(30, clock=fake, sleep=fake.sleep)

    report = outbox.flush(store, settings, NOW, pacer=pacer, budget_seconds=10)

    assert report.sent == 30 and fake.slept == 0
    # The same pacer remembers the window: the next flush waits instead of bursting again.
    outbox.flush(store, settings, NOW, pacer=pacer, budget_seconds=120)
    assert len(relay.messages) == 50 and refused(relay) == []
    assert fake.slept >= 60


def test_a_new_pacer_recalls_the_last_minute_from_the_outbox(store, relay, fake):
    # A restart (or an organiser's command that sends) starts with a pacer of its own: what went
    # out in the last minute is read from the outbox, not forgotten (issue 18).
    settings = desk_settings(smtp_server=relay)
    queue(store, 50)
    outbox.flush(store, settings, NOW, limit=25,
                 pacer=outbox.Pacer(30, clock=fake, sleep=fake.sleep))
    fake.t += 20     # down for twenty seconds

    outbox.flush(store, settings, NOW, pacer=outbox.Pacer(30, clock=fake, sleep=fake.sleep))

    assert len(relay.messages) == 50 and refused(relay) == []
    # Five more fitted in the first minute; the sixth waited until that minute was over.
    assert 40 <= fake.slept < 42
    sent = [r["relayed_at"] for r in store.outbox_rows()]
    assert all(later - earlier >= 60 for earlier, later in zip(sent, sent[30:]))


def test_no_pacing_when_the_rate_is_zero(store, smtp_server, fake):
    settings = desk_settings(smtp_server=smtp_server, smtp={"max_per_minute": 0})
    queue(store, 70)
    report = outbox.flush(store, settings, NOW,
                          pacer=outbox.Pacer(0, clock=fake, sleep=fake.sleep))
    assert report.sent == 70 and fake.slept == 0


@pytest.mark.parametrize("code, text, throttle", [
    (421, "4.7.66 Too many connections, closing", True),
    (451, "4.7.0 Temporary server error, rate limited", True),
    (452, "4.3.1 Too many messages in this session", True),
    (450, "4.7.1 Client host rejected: slow down", True),
    (451, "4.3.0 Try again later", False),       # an ordinary retry of that one mail
    (450, "4.2.1 Mailbox busy", False),
    (550, "5.7.0 Too many recipients", False),    # permanent stays permanent
])
def test_throttling_answers_are_told_from_other_failures(code, text, throttle):
    assert is_throttle(code, text) is throttle


@pytest.mark.parametrize("value, problem", [(-1, "0 (no limit) or more"), ("30", "must be a int")])
def test_max_per_minute_is_validated_naming_file_and_key(value, problem):
    raw = base_config()
    raw["smtp"]["max_per_minute"] = value
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(raw, PROJECT / "config" / "leernetwerk.toml")
    assert "leernetwerk.toml" in str(err.value) and "[smtp] max_per_minute" in str(err.value)
    assert problem in str(err.value)


def test_the_default_is_exchange_onlines_thirty_a_minute():
    assert config.from_dict(base_config(), PROJECT / "config" / "leernetwerk.toml"
                            ).smtp.max_per_minute == 30
