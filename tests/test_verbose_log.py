"""Issue 16: `-v` must not write whole raw mails into the log, where `forget` and `purge` cannot reach."""

from __future__ import annotations

import datetime as dt
import io
import logging

from processor import logs
from processor.mail.imap import Mailbox
from tests.desk import desk_settings, signup

START = dt.datetime(2018, 5, 14, 9, 0, tzinfo=dt.timezone.utc)


def test_verbose_fetch_logs_no_mail_content(dovecot, smtp_server, tmp_path, monkeypatch):
    settings = desk_settings(dovecot, smtp_server, monkeypatch)
    secret = "Geheimezin Onvindbaar"
    dovecot.append(signup(secret, "geheim@stad.be", "Stad Gent", date=START), START)
    stream = io.StringIO()
    before = logs.current()
    logs.setup(logging.DEBUG, "text", stream=stream)
    try:
        with Mailbox(settings.mailbox) as mailbox:
            fetched = list(mailbox.fetch(mailbox.new_uids(0)))
    finally:
        logs.setup(*before)
    assert len(fetched) == 1 and secret.encode() in fetched[0].raw
    text = stream.getvalue()
    assert text  # verbose still logs the conversation's commands
    assert secret not in text and "geheim@stad.be" not in text
