"""Rendering and building outgoing mail: Dutch dates, strict templates, headers built safely."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil

import jinja2
import pytest

from processor.mail import compose
from tests.desk import desk_settings

NOW = dt.datetime(2018, 5, 20, 10, 0, tzinfo=dt.timezone.utc)


def test_dutch_dates_and_hours():
    settings = desk_settings()
    first = settings.event.sessions[0]
    assert compose.dutch_date(first.date) == "dinsdag 26 juni 2018"
    assert compose.dutch_hours(first) == "14.00 – 17.00 uur"


@pytest.mark.parametrize("name", ["Peeters, Jan", 'Jan "de Baas" Peeters', "Zoë D'Hondt-Çelik",
                                  "Ann\r\nBcc: x@evil.example"])
def test_names_are_encoded_and_parse_back(name):
    settings = desk_settings()
    rendered = compose.Rendered("Onderwerp met é", "tekst", "<p>tekst</p>")
    msg = compose.build(settings, rendered, to=[(name, "jan@stad.be")], now=NOW,
                        in_reply_to="<a@b>")
    parsed = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    [to] = parsed["To"].addresses
    assert to.addr_spec == "jan@stad.be"
    assert to.display_name == compose.clean(name)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Onderwerp met é"
    assert parsed["Auto-Submitted"] == "auto-replied"


def test_an_undefined_template_variable_is_an_error_not_a_blank(tmp_path):
    settings = desk_settings()
    templates = tmp_path / "templates"
    shutil.copytree(settings.templates_dir, templates)
    text = (templates / "waitlist.txt").read_text()
    (templates / "waitlist.txt").write_text(text.replace("{{ position }}", "{{ positon }}"))
    broken = settings.__class__(**{**settings.__dict__, "templates_dir": templates})
    context = compose.event_context(broken, NOW) | {
        "person": {"name": "An", "email": "an@stad.be", "organisation": None},
        "registered_by": None, "position": 2, "charter": False, "organisation_cap": 0}
    with pytest.raises(jinja2.UndefinedError, match="positon"):
        compose.render(broken, "waitlist", context)


def test_reusing_parsed_headers_builds_the_same_bytes_as_plain_policy_smtp(monkeypatch):
    settings = desk_settings()
    rendered = compose.Rendered("Bevestiging — je plaats in het Leernetwerk SDG is zeker",
                                "Beste Zoë,\n\nWelkom.\n" * 40, "<p>Beste Zoë,</p>" * 40)

    def build_all():
        out = []
        for i in range(3):  # the second and third builds reuse what the first parsed
            msg = compose.build(
                settings, rendered, to=[(f"Zoë D'Hondt {i}", f"zoe.{i}@stad.be")],
                cc=[("Peeters, Jan", "jan@stad.be")], in_reply_to="<vraag@stad.be>",
                references=("<eerder@stad.be>",), now=NOW, message_id=f"<antwoord.{i}@x.be>",
                attachments=[("leernetwerk.ics", "text", "calendar", b"BEGIN:VCALENDAR\r\n")])
            for part in msg.walk():
                if part.is_multipart():
                    part.set_boundary(f"grens-{i}")
            out.append(bytes(msg))
        return out

    # Written first with other settings (as smtplib does with SMTPUTF8): nothing of that may
    # stick to the ordinary bytes.
    compose.POLICY._folded.clear()
    for other in (compose.POLICY.clone(max_line_length=200), compose.POLICY.clone(utf8=True)):
        compose.build(settings, rendered, to=[("Zoë", "zoe@stad.be")], now=NOW).as_bytes(
            policy=other)
    reused = build_all()
    monkeypatch.setattr(compose, "POLICY", email.policy.SMTP)
    assert reused == build_all()
    assert len(set(reused)) == 3
