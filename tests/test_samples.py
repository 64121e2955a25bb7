"""`preview`, the sample contexts, and the template check that stops the worker at start-up."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil

import pytest

from processor.commands import cli
from processor.mail import compose
from processor import config
from processor.desk import registry, reminders
from processor.demo import samples
from processor.clock import iso
from processor.understand.model import Participant
from tests.desk import PROJECT, desk_settings

START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("kind", samples.KINDS)
def test_preview_prints_headers_and_text_of_every_kind(kind, capsys):
    assert cli.main(["preview", kind]) == 0
    out = capsys.readouterr().out
    assert "Subject: " in out and "Message-ID: " in out and "Auto-Submitted: " in out
    if kind != "digest":
        assert "Beste Sofie Janssens," in out


def test_preview_to_eml_has_the_real_headers_and_attachment(tmp_path, capsys):
    target = tmp_path / "confirmation.eml"
    assert cli.main(["preview", "confirmation", "--to-eml", str(target)]) == 0
    msg = email.message_from_bytes(target.read_bytes(), policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == samples.SIGNUP_MESSAGE_ID
    assert msg["To"] == "Sofie Janssens <sofie.janssens@gent.be>"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["sessies.ics"]
    assert "Uw plaats is bevestigd" in msg.get_body(("plain",)).get_content()
    assert "wrote" in capsys.readouterr().out


def test_preview_variants_and_digest_attachment(capsys):
    assert cli.main(["preview", "waitlist", "--variant", "2"]) == 0
    assert "Pieter De Smet schreef u in" in capsys.readouterr().out
    assert cli.main(["preview", "waitlist", "--variant", "9"]) == 2
    assert cli.main(["preview", "digest"]) == 0
    out = capsys.readouterr().out
    assert "Auto-Submitted: auto-generated" in out and "inschrijvingen-" in out


def test_the_shipped_templates_pass_the_check():
    assert samples.check_templates(config.load(PROJECT / "config" / "leernetwerk.toml")) == []


def _broken_templates(tmp_path, name: str, line: int, text: str):
    folder = tmp_path / "templates"
    shutil.copytree(PROJECT / "templates", folder)
    lines = (folder / name).read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(line - 1, text + "\n")
    (folder / name).write_text("".join(lines), encoding="utf-8")
    return folder


def test_an_unknown_variable_is_reported_with_template_and_line(tmp_path, monkeypatch):
    folder = _broken_templates(tmp_path, "waitlist.txt", 7, "plaats {{ positon }}")
    monkeypatch.chdir(tmp_path)
    settings = samples.with_templates(config.load(PROJECT / "config" / "leernetwerk.toml"), folder)
    problems = samples.check_templates(settings)
    assert [str(p) for p in problems] == ["templates/waitlist.txt line 7: 'positon' is undefined"]


def test_an_error_in_an_included_template_or_a_rare_branch_is_found(tmp_path, monkeypatch):
    folder = _broken_templates(tmp_path, "_footer.txt", 2, "{{ event.nmae }}")
    # Only the variant of a substitute on the waiting list takes this branch.
    substitute = (folder / "substitute.txt").read_text(encoding="utf-8")
    (folder / "substitute.txt").write_text(
        substitute.replace("op plaats {{ position }}", "op plaats {{ posittion }}"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = samples.with_templates(config.load(PROJECT / "config" / "leernetwerk.toml"), folder)
    shown = {str(p) for p in samples.check_templates(settings)}
    assert any(s.startswith("templates/_footer.txt line 2: ") and "nmae" in s for s in shown)
    assert any(s.startswith("templates/substitute.txt line ") and "'posittion' is undefined" in s
               for s in shown)


def test_a_syntax_error_names_its_line(tmp_path, monkeypatch):
    folder = _broken_templates(tmp_path, "reminder.html", 3, "{% if %}")
    monkeypatch.chdir(tmp_path)
    settings = samples.with_templates(config.load(PROJECT / "config" / "leernetwerk.toml"), folder)
    problems = samples.check_templates(settings)
    assert problems and all(p.template == "templates/reminder.html" and p.line == 3
                            for p in problems)


def test_run_refuses_to_start_with_a_broken_template(tmp_path, monkeypatch, capsys):
    folder = _broken_templates(tmp_path, "waitlist.txt", 7, "plaats {{ positon }}")
    monkeypatch.chdir(tmp_path)
    settings = samples.with_templates(config.load(PROJECT / "config" / "leernetwerk.toml"), folder)
    monkeypatch.setattr(config, "load", lambda path=None: settings)
    started = []
    monkeypatch.setattr("processor.desk.worker.run", lambda *a: started.append(a))
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "--db", str(tmp_path / "state.sqlite")])
    assert stop.value.code == 2
    assert "templates/waitlist.txt line 7: 'positon' is undefined" in capsys.readouterr().err
    assert started == []
    # preview points at the same line.
    assert cli.main(["preview", "waitlist", "--variant", "2"]) == 1
    assert "templates/waitlist.txt line 7: 'positon' is undefined" in capsys.readouterr().err


def test_sample_contexts_carry_the_keys_the_real_mails_get(tmp_path, monkeypatch):
    """The samples are only worth their name if each kind sees the same variables as the real
    mail: record what registry.py and reminders.py pass to compose.render."""
    settings = desk_settings(event={"capacity": 1})
    seen: dict[str, set] = {}
    real_render = compose.render

    def recording(settings_, kind, context):
        seen.setdefault(kind, set()).update(context)
        if "person" in context:
            assert set(context["person"]) <= set(samples.PERSON)
        return real_render(settings_, kind, context)

    monkeypatch.setattr(compose, "render", recording)
    store = samples.scratch_store()
    outcome = registry.Outcome()
    now = START + dt.timedelta(hours=1)

    def by_mail(sender: str, minutes: int, arrived=None) -> registry.Origin:
        return registry.Origin(message=None, arrived_at=iso(arrived or START + dt.timedelta(minutes=minutes)),
                               uid=minutes, sender=sender, sender_name=None, in_reply_to=None,
                               references=())

    ann = Participant("Ann", "ann@gent.be", "Stad Gent")
    bob = Participant("Bob", "bob@leuven.be", "Stad Leuven")
    cas = Participant("Cas", "cas@gent.be", "Stad Gent")
    with store.transaction():
        registry.register(store, settings, ann, 0, by_mail(ann.email, 1), now, outcome)
        registry.register(store, settings, bob, 0, by_mail(bob.email, 2), now, outcome)
        registry.register(store, settings, ann, 0, by_mail(ann.email, 3), now, outcome)
        registry.substitute(store, settings, store.live_registration(ann.email), cas,
                            by_mail(ann.email, 4), now, outcome)
        registry.cancel(store, settings, store.live_registration(cas.email), by_mail(cas.email, 5),
                        now, outcome)
        registry.tell_not_registered(store, settings, Participant("Dirk", None, None),
                                     by_mail("eva@gent.be", 6), now, outcome)
        late = settings.registration.closes + dt.timedelta(days=1)
        registry.register(store, settings, Participant("Fien", "fien@gent.be", None), 0,
                          by_mail("fien@gent.be", 7, late), now, outcome)
    first = settings.event.sessions[0]
    reminders.queue_due(store, settings, reminders.due_moment(first, 7, settings.reminders.send_time))

    base = set(compose.event_context(settings, now)) | {"person"}
    # The by-mail kinds' contexts are checked in tests/test_organisers.py.
    expected = set(samples.KINDS) - {"session_update", "digest", *samples.BY_MAIL_KINDS}
    assert expected <= set(seen)
    for kind in expected:
        for variant in samples.variants(settings, kind):
            assert set(variant) == seen[kind] - base, kind


# -- mails as read (issue 18) ---------------------------------------------------------------------

AFTER_THE_LAST_SESSION = dt.datetime(2018, 12, 19, 9, 0, tzinfo=dt.timezone.utc)
# A word that may stand longer than a line: a link or an address is never broken.
UNBREAKABLE = re.compile(r"^\S*(?:https?://|@)\S*$")


def every_sample(now=None):
    settings = config.load(PROJECT / "config" / "leernetwerk.toml")
    for kind in samples.KINDS:
        for variant in range(len(samples.variants(settings, kind, now or samples.sample_now(settings)))):
            yield kind, variant, samples.build(settings, kind, variant=variant, now=now)


def test_every_mail_reads_cleanly_no_folded_subject_no_line_over_76():
    for kind, variant, built in every_sample():
        raw = bytes(built)
        head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
        assert not re.search(r"^[\w-]+:\r\n", head, re.MULTILINE), (kind, head)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for name, value in msg.items():
            assert value == value.strip(), (kind, variant, name, value)
        assert msg["Subject"] == built["Subject"]
        text = msg.get_body(("plain",)).get_content()
        for line in text.splitlines():
            if kind == "digest" and line[:1] in ("-", " "):
                continue    # an item with a name or subject from mail stays on its one line
            assert len(line) <= 76 or UNBREAKABLE.match(line.split()[-1]), (kind, variant, line)


def test_the_event_name_in_the_text_is_wrapped_evenly_not_ragged():
    settings = config.load(PROJECT / "config" / "leernetwerk.toml")
    text = samples.build(settings, "already_registered").get_body(("plain",)).get_content()
    paragraph = text.split("\n\n")[1].splitlines()
    # The template's own line breaks follow the inserted name: no stub of a few words between
    # two full lines.
    assert all(len(line) > 50 for line in paragraph[:-1]), paragraph


def test_no_double_blank_line_when_no_sessions_are_ahead():
    for kind, variant, built in every_sample(AFTER_THE_LAST_SESSION):
        if kind == "digest":
            continue    # its sections are set apart by two blank lines on purpose
        text = built.get_body(("plain",)).get_content()
        assert not re.search(r"\n[ \t]*\n[ \t]*\n", text), (kind, variant, text)


@pytest.mark.parametrize("line, wrapped", [
    ("  2. dinsdag 28 augustus 2018, 14.00 – 17.00 uur – Voorstelling SDG actieplan van de"
     " deelnemers",
     ["  2. dinsdag 28 augustus 2018, 14.00 – 17.00 uur – Voorstelling SDG",
      "     actieplan van de deelnemers"]),
    ("> Graag schrijf ik mij in voor het leernetwerk, samen met twee collega's van de dienst"
     " omgeving.",
     ["> Graag schrijf ik mij in voor het leernetwerk, samen met twee collega's van",
      "> de dienst omgeving."]),
    ("    waarom:   een vraag voor de organisatoren over de parking en de bereikbaarheid met het"
     " openbaar vervoer",
     ["    waarom:   een vraag voor de organisatoren over de parking en de",
      "              bereikbaarheid met het openbaar vervoer"]),
    ("Meer weten? https://example.org/" + "a" * 80,
     ["Meer weten?", "https://example.org/" + "a" * 80]),
])
def test_wrapping_keeps_lists_quotes_columns_and_links_whole(line, wrapped):
    assert compose.wrap_text(line).split("\n") == wrapped


def test_wrapping_carries_the_rest_into_the_same_paragraph_only():
    text = ("Bedankt voor uw inschrijving voor het Leernetwerk Sustainable Development Goals en\n"
            "voor uw interesse.\n"
            "\n"
            "Met vriendelijke groeten,\n"
            "Team\n")
    assert compose.wrap_text(text) == (
        "Bedankt voor uw inschrijving voor het Leernetwerk Sustainable Development\n"
        "Goals en voor uw interesse.\n"
        "\n"
        "Met vriendelijke groeten,\n"
        "Team\n")
