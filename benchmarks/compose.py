"""What one reply costs the worker: rendering the templates, building the MIME message, its bytes.

    .venv/bin/python benchmarks/compose.py              # a waiting-list reply, 2,000 times

For comparison it also builds the same reply with the standard library's legacy API
(email.mime + compat32), which the worker does not use: how much a cheaper build could save.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from email import charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S  # noqa: E402

from processor.mail import compose
from processor.demo import samples
from tests.desk import base_config  # noqa: E402

TO = ("Jeroen Vandenbroucke", "jeroen.vandenbroucke@gent.be")


def per_call_ms(step, n: int) -> float:
    step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="waitlist")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    settings = S.settings_from(copy.deepcopy(base_config()))
    now = S.NOW
    context = samples.context(settings, args.kind,
                              samples.variants(settings, args.kind, now)[0], now)
    rendered = compose.render(settings, args.kind, context)

    def build():
        return bytes(compose.build(settings, rendered, to=[TO], in_reply_to="<a@gent.be>",
                                   now=now))

    qp = charset.Charset("utf-8")
    qp.header_encoding = qp.body_encoding = charset.QP

    def legacy():
        msg = MIMEMultipart("alternative", boundary=compose._boundary())
        msg["From"] = formataddr((settings.smtp.from_name, settings.smtp.from_address), "utf-8")
        msg["To"] = formataddr(TO, "utf-8")
        msg["Subject"] = Header(rendered.subject, "utf-8")
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = make_msgid(domain=settings.smtp.message_id_domain)
        msg["In-Reply-To"] = msg["References"] = "<a@gent.be>"
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg.attach(MIMEText(rendered.text, "plain", qp))
        msg.attach(MIMEText(rendered.html, "html", qp))
        return msg.as_bytes()

    render_ms = per_call_ms(lambda: compose.render(settings, args.kind, context), args.n)
    build_ms = per_call_ms(build, args.n)
    legacy_ms = per_call_ms(legacy, args.n)
    print(f"one {args.kind} reply ({len(build())} bytes), mean of {args.n}:")
    print(f"  render (Jinja2, .txt and .html)         {render_ms:6.3f} ms")
    print(f"  build + bytes (EmailMessage, the worker) {build_ms:6.3f} ms")
    print(f"  build + bytes (email.mime, compat32)     {legacy_ms:6.3f} ms  (not used; comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
