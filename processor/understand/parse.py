"""Raw bytes to a message record: headers, addresses, body text and attachments (the only mail-parser user)."""
from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import logging
import re
from dataclasses import dataclass, field
from email.message import Message

log = logging.getLogger(__name__)
# mail-parser warns on every part type it does not render (rfc822-headers, delivery-status): that is
# our normal input, so keep it off stderr unless the application configures logging itself.
logging.getLogger("mailparser").addHandler(logging.NullHandler())

# Bodies beyond this are cut before any text processing: nobody signs up in the 300th kilobyte,
# and regexes over megabytes would make one hostile mail stall the worker.
MAX_TEXT_CHARS = 200_000
MAX_HTML_CHARS = 400_000
# One header field beyond this is cut before parsing: the parsers' address scanners are slow on
# 40 KB of one header, and 16 KB is some 400 addresses, far more than any signup names.
MAX_HEADER_BYTES = 16_384
MAX_ID_CHARS = 998
MAX_REFERENCES = 10

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\ufeff]")
# A match starts only where a run of address characters starts, and the run is taken whole: tried
# from every position of a 40 KB header without "@", the local part was rescanned each time (6 s).
_ADDRESS = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]++@[\w-]+(?:\.[\w-]+)+", re.UNICODE)


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class MailRecord:
    message: Message | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    sender: str | None = None
    sender_name: str | None = None
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    content_type: str = "text/plain"
    report_type: str | None = None
    plain: str = ""
    html: str = ""
    text: str = ""  # the body a person reads: plain text, or the HTML rendered as text
    attachments: list[Attachment] = field(default_factory=list)
    embedded: list["MailRecord"] = field(default_factory=list)  # attached messages (forwards, bounce originals)
    delivery_status: list[dict[str, str]] = field(default_factory=list)  # RFC 3464 per-recipient blocks
    errors: list[str] = field(default_factory=list)
    parser: str = "mail-parser"

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def has_header(self, name: str) -> bool:
        return name.lower() in self.headers


def clean(text: str) -> str:
    """Drop control characters (NUL included) that no reader wants and that break JSON consumers."""
    return _CONTROL.sub("", text)


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Declared charset first, then UTF-8, then Windows-1252; never raises."""
    if not data:
        return ""
    declared = (declared or "").strip().strip('"').lower() or None
    candidates: list[str] = []
    if declared and declared not in ("unknown-8bit", "x-unknown", "8bit"):
        candidates.append(declared)
    # A Latin-1/ASCII label on bytes that are valid UTF-8 is a mislabel far more often than
    # a coincidence: multi-byte UTF-8 sequences almost never occur in real Latin-1 text.
    if declared in (None, "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "windows-1252", "cp1252",
                    "iso-8859-15"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    candidates += ["utf-8", "windows-1252"]
    for charset in candidates:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeError, ValueError):
            continue
    return data.decode("latin-1", "replace")


def _surrogates_to_text(value: str) -> str:
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        return decode_bytes(value.encode("utf-8", "surrogateescape"))
    return value


def decode_header_value(value) -> str:
    """A header as text: RFC 2047 words decoded, raw 8-bit guessed, folding and control chars removed."""
    if value is None:
        return ""
    try:
        if isinstance(value, email.header.Header):
            chunks = value._chunks  # noqa: SLF001 - the only way to reach undecodable 8-bit chunks
            parts = []
            for text, charset in chunks:
                text = str(text)
                if str(charset) in ("unknown-8bit", "None") or charset is None:
                    parts.append(_surrogates_to_text(text))
                else:
                    parts.append(text)
            value = "".join(parts)
        value = str(value)
        value = _surrogates_to_text(value)
        if "=?" in value:
            pieces = []
            for chunk, charset in email.header.decode_header(value):
                if isinstance(chunk, bytes):
                    pieces.append(decode_bytes(chunk, charset))
                else:
                    pieces.append(chunk)
            value = "".join(pieces)
    except Exception:  # noqa: BLE001 - a header we cannot decode is kept as it came
        value = str(value)
    value = re.sub(r"\r?\n[ \t]*", " ", value)
    return clean(value).strip()


def parse_addresses(value: str) -> list[tuple[str, str]]:
    """(display name, lowercased address) pairs; tolerant of unquoted commas and missing brackets."""
    if not value:
        return []
    out: list[tuple[str, str]] = []
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:  # noqa: BLE001
        pairs = []
    for name, addr in pairs:
        addr = addr.strip().strip("<>").lower()
        if "@" not in addr:
            continue
        out.append((name.strip().strip('"').strip("'").strip(), addr))
    if not out:
        for addr in _ADDRESS.findall(value):
            out.append(("", addr.lower()))
    return out


def _without_plus_tag(address: str) -> str:
    local, _, domain = address.strip().lower().rpartition("@")
    return local.split("+", 1)[0] + "@" + domain


def is_own_address(address: str | None, own_addresses) -> bool:
    """One of the desk's own addresses, or a plus-alias of one ("desk+x@domain" is delivered to
    "desk@domain"): mail from it is the desk itself, and it is never a participant."""
    if not address or "@" not in address:
        return False
    return _without_plus_tag(address) in {_without_plus_tag(a) for a in own_addresses if "@" in a}


def html_to_text(html: str) -> str:
    """HTML rendered as a person sees it (inscriptis keeps tables and line structure)."""
    if not html or not html.strip():
        return ""
    html = html[:MAX_HTML_CHARS]
    try:
        from inscriptis import get_text
        from inscriptis.model.config import ParserConfig
        return get_text(html, ParserConfig(display_links=False, display_images=False))
    except Exception as exc:  # noqa: BLE001 - fall back to a crude strip rather than lose the mail
        log.debug("inscriptis failed: %s", exc)
        text = re.sub(r"(?is)<(script|style).*?</\1>", " ", html)
        text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
        text = re.sub(r"<[^>]+>", " ", text)
        import html as html_module
        return html_module.unescape(text)


def _part_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _part_charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:  # noqa: BLE001
        return None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = part.get_param("name") if hasattr(part, "get_param") else None
    if name:
        return decode_header_value(name) or None
    return None


def _headers_of(msg: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    try:
        items = msg._headers  # noqa: SLF001 - raw items: policy-independent, never raises on bad values
    except Exception:  # noqa: BLE001
        items = []
    for name, value in items:
        try:
            key = clean(str(name)).strip().lower()
            headers.setdefault(key, []).append(decode_header_value(value))
        except Exception:  # noqa: BLE001
            continue
    return headers


def _walk(msg: Message, record: MailRecord, depth: int = 0) -> None:
    """Collect the body text of this message, its attachments, and embedded messages apart."""
    if depth > 20:
        record.errors.append("MIME nesting too deep")
        return
    try:
        ctype = msg.get_content_type()
    except Exception:  # noqa: BLE001
        ctype = "text/plain"
    if msg.is_multipart():
        payload = msg.get_payload()
        if not isinstance(payload, list):
            return
        if ctype == "message/delivery-status":
            for block in payload:
                if isinstance(block, Message):
                    record.delivery_status.append(
                        {k.lower(): decode_header_value(v) for k, v in block.items()})
            return
        if ctype in ("message/rfc822", "message/global"):
            for inner in payload:
                if isinstance(inner, Message):
                    record.embedded.append(_record_from_message(inner, depth + 1))
            return
        if ctype == "multipart/alternative":
            # Keep every alternative: the record prefers plain text over HTML later on.
            for sub in payload:
                if isinstance(sub, Message):
                    _walk(sub, record, depth + 1)
            return
        for sub in payload:
            if isinstance(sub, Message):
                _walk(sub, record, depth + 1)
        return
    disposition = ""
    try:
        disposition = (msg.get_content_disposition() or "").lower()
    except Exception:  # noqa: BLE001
        pass
    filename = _filename(msg)
    if ctype in ("message/rfc822", "message/global", "text/rfc822-headers"):
        data = _part_bytes(msg)
        if data:
            inner = _message_from_bytes_safely(data)
            if inner is not None:
                record.embedded.append(_record_from_message(inner, depth + 1))
        return
    if ctype == "message/delivery-status":
        # Some MTAs send the status as one text blob; its blocks are separated by blank lines.
        text = decode_bytes(_part_bytes(msg))
        for block in re.split(r"\r?\n\s*\r?\n", text):
            fields = {}
            for line in block.splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
            if fields:
                record.delivery_status.append(fields)
        return
    is_text = ctype in ("text/plain", "text/html")
    if is_text and not filename and disposition != "attachment":
        text = decode_bytes(_part_bytes(msg), _part_charset(msg))
        if ctype == "text/html":
            record.html += ("\n" if record.html else "") + text
        else:
            record.plain += ("\n" if record.plain else "") + text
        return
    data = _part_bytes(msg)
    record.attachments.append(Attachment(filename or "", ctype, data))


def _message_from_bytes_safely(data: bytes) -> Message | None:
    try:
        return email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception:  # noqa: BLE001
        return None


def _raw_values(msg: Message, name: str) -> list[str]:
    try:
        return [str(v) for k, v in msg._headers if str(k).strip().lower() == name]  # noqa: SLF001
    except Exception:  # noqa: BLE001
        return []


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """Addresses are read from the header as sent, and only the display names are decoded
    afterwards: an encoded-word name such as "=?utf-8?q?x=0D=0ABcc:_a@b?=" must never turn
    into an address of its own (RFC 2047 forbids encoded words in the address itself)."""
    pairs = []
    for value in _raw_values(msg, name):
        # Raw 8-bit bytes (an SMTPUTF8 mailer's "jösé@…") arrive as surrogate escapes: as text
        # first, or the address is lowercased wrongly and cannot be stored (the mail was set aside).
        value = _surrogates_to_text(value)
        for display, addr in parse_addresses(clean(value.replace("\r", " ").replace("\n", " "))):
            pairs.append((clean(decode_header_value(display)).strip() if display else "", addr))
    return pairs


def _fill_headers(record: MailRecord, msg: Message) -> None:
    record.headers = _headers_of(msg)
    frm = record.header("from") or ""
    pairs = _addresses(msg, "from")
    if pairs:
        record.sender_name, record.sender = pairs[0][0] or None, pairs[0][1]
    else:
        record.sender_name = frm.strip() or None
    record.to = _addresses(msg, "to")
    record.cc = _addresses(msg, "cc")
    record.reply_to = _addresses(msg, "reply-to")
    record.subject = record.header("subject") or ""
    mid = re.findall(r"<[^<>\s]+>", record.header("message-id") or "")
    record.message_id = mid[0] if mid else ((record.header("message-id") or "").strip() or None)
    # Threading headers of our replies repeat these: an id longer than a header line may be
    # (RFC 5322: 998) is dropped, and only the last references (the parent's end) are kept.
    if record.message_id and len(record.message_id) > MAX_ID_CHARS:
        record.message_id = None
    irt = [i for i in re.findall(r"<[^<>\s]+>", record.header("in-reply-to") or "") if len(i) <= MAX_ID_CHARS]
    record.in_reply_to = irt[0] if irt else None
    refs = re.findall(r"<[^<>\s]+>", " ".join(record.headers.get("references", [])))
    record.references = tuple(r for r in refs if len(r) <= MAX_ID_CHARS)[-MAX_REFERENCES:]
    try:
        record.content_type = msg.get_content_type()
        record.report_type = (msg.get_param("report-type") or None) if record.content_type == "multipart/report" else None
        if isinstance(record.report_type, tuple):
            record.report_type = str(record.report_type[2])
        if record.report_type:
            record.report_type = record.report_type.lower()
    except Exception:  # noqa: BLE001
        pass


def _finish(record: MailRecord) -> None:
    record.plain = clean(record.plain[:MAX_TEXT_CHARS]).replace("\r\n", "\n").replace("\r", "\n")
    html_text = ""
    plain_words = len(re.findall(r"\w+", record.plain))
    if record.html and plain_words < 3:
        html_text = clean(html_to_text(record.html)[:MAX_TEXT_CHARS])
    record.text = record.plain if plain_words >= 3 or not html_text else html_text
    record.text = record.text.replace("\u00a0", " ")


def _record_from_message(msg: Message, depth: int = 0) -> MailRecord:
    record = MailRecord(message=msg, parser="email")
    try:
        _fill_headers(record, msg)
    except Exception as exc:  # noqa: BLE001
        record.errors.append(f"headers: {exc!r}")
    try:
        _walk(msg, record, depth)
    except Exception as exc:  # noqa: BLE001
        record.errors.append(f"body: {exc!r}")
    _finish(record)
    return record


def _from_mail_parser(raw: bytes) -> MailRecord:
    import mailparser  # only here: the rest of the program never sees mail-parser's types

    parsed = mailparser.parse_from_bytes(raw)
    msg = parsed.message
    if msg is None:
        raise ValueError("mail-parser returned no message")
    record = _record_from_message(msg)
    record.parser = "mail-parser"
    # mail-parser's own sender reading is a second opinion when ours found none.
    if not record.sender:
        try:
            for name, addr in parsed.from_ or []:
                if addr and "@" in addr:
                    record.sender, record.sender_name = addr.lower().strip(), (name or None)
                    break
        except Exception:  # noqa: BLE001
            pass
    return record


def cap_headers(raw: bytes, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The mail with each top-level header field cut to `limit` bytes (References: its last
    bytes, where the parent is); a mail whose header block is short enough is returned as is."""
    end = raw.find(b"\n\n")
    end_crlf = raw.find(b"\r\n\r\n")
    cuts = [i for i in (end, end_crlf) if i >= 0]
    head_end = min(cuts) if cuts else len(raw)
    if head_end <= limit:
        return raw
    fields: list[list[bytes]] = []
    for line in raw[:head_end].split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    out = []
    for lines in fields:
        field_bytes = b"\n".join(lines)
        if len(field_bytes) > limit:
            name = field_bytes.split(b":", 1)[0]
            key = name.strip().lower()
            start = field_bytes.rfind(b"<")
            end = field_bytes.find(b">", start)
            if key == b"references":
                tail = field_bytes[-limit:]
                field_bytes = name + b":" + tail[tail.find(b"<"):] if b"<" in tail else name + b":"
            elif key in (b"from", b"sender", b"reply-to") and 0 <= start < end and b"@" in field_bytes[start:end]:
                # The sender's address outlives an absurd display name, which is dropped.
                field_bytes = name + b": " + field_bytes[start:end + 1]
            else:
                field_bytes = field_bytes[:limit]
            # A continuation line cut after its break would end the header block early.
            field_bytes = field_bytes.rstrip(b"\r\n")
        out.append(field_bytes)
    return b"\n".join(out) + raw[head_end:]


def parse(raw: bytes) -> MailRecord:
    """Parse raw RFC 5322 bytes; mail-parser first, the standard library's policy.default next."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = cap_headers(raw)
    errors: list[str] = []
    try:
        return _from_mail_parser(raw)
    except Exception as exc:  # noqa: BLE001 - known crashes on odd attachments and addresses
        errors.append(f"mail-parser: {exc!r}")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        record = _record_from_message(msg)
        record.parser = "email.policy.default"
        record.errors = errors + record.errors
        return record
    except Exception as exc:  # noqa: BLE001
        errors.append(f"email: {exc!r}")
    raise ValueError("; ".join(errors))
