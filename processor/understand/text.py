"""Split a body into what the sender wrote, their signature, disclaimers, quoted history and forwarded mail."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .parse import decode_header_value, parse_addresses

# Quote headers of the common clients in Dutch, French, English and German. Gmail and Apple Mail
# wrap long ones over two lines, hence the tolerance for one line break inside.
_WROTE = re.compile(
    r"^[ \t>]*+(?:Op|On|Le|Am|El|Il|Den)\b[^\n]{0,200}(?:\n[^\n]{0,200})?"
    r"(?:schreef|heeft [^\n]{0,60}geschreven|wrote|a écrit|a ecrit|schrieb|escribió|ha scritto)"
    r"[^\n]{0,80}:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_WROTE_SHORT = re.compile(
    r"^[ \t>]*+[^\n]{2,120}(?:schreef|wrote|a écrit|schrieb)[ \t]*:[ \t]*$", re.IGNORECASE | re.MULTILINE)
_ORIGINAL = re.compile(
    r"^[ \t>]*+-{2,}[ \t]*(?:Original Message|Oorspronkelijk bericht|Origineel bericht|Message d'origine|"
    r"Ursprüngliche Nachricht|Message original|Reply message|Antwoord bericht)[ \t]*-{2,}[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
# Outlook desktop puts "-----Original Message-----" (nl: Oorspronkelijk bericht, fr: Message d'origine)
# above the history of a *reply* as well as of a forward: it is a reply marker (_ORIGINAL), and only a
# forward subject ("FW:", "Doorst:") makes it a forward. Reading it as a forward made the quoted
# desk mail the author of "afmelden".
_FORWARD = re.compile(
    r"^[ \t>]*+(?:-{2,}[ \t]*(?:Forwarded message|Doorgestuurd bericht|Doorgezonden bericht|"
    r"Message transféré|Message transfere|Forwarded Message|Weitergeleitete Nachricht)[ \t]*-{2,}|"
    r"Begin (?:forwarded message|doorgestuurd bericht|doorgestuurd bericht)[ \t]*:|"
    r"Début du message (?:réexpédié|transféré)[ \t]*:|Anfang der weitergeleiteten Nachricht[ \t]*:)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_FROM = r"(?:Van|From|De|Von|Afzender|Expéditeur|Exp[ée]diteur)"
_HEADER_SENT = r"(?:Verzonden|Sent|Envoyé|Envoye|Date|Datum|Gesendet|Verstuurd|Sent Date)"
_HEADER_TO = r"(?:Aan|To|À|A|An|Destinataire)"
_HEADER_SUBJECT = r"(?:Onderwerp|Subject|Objet|Betreff|Sujet)"
_HEADER_LINE = re.compile(
    r"^[ \t>*]*+(" + "|".join([_HEADER_FROM, _HEADER_SENT, _HEADER_TO, _HEADER_SUBJECT, r"CC|Cc|Kopie"]) +
    r")[ \t]*:[ \t]*\**[ \t]*(.*)$", re.IGNORECASE)
_OUTLOOK_BLOCK = re.compile(
    r"^[ \t>*]*+" + _HEADER_FROM + r"[ \t]*:[^\n]*\n(?:[^\n]*\n){0,3}?[ \t>*]*(?:" + _HEADER_SENT + "|" + _HEADER_TO +
    r")[ \t]*:", re.IGNORECASE | re.MULTILINE)
_FORWARD_SUBJECT = re.compile(r"^\s*+(?:(?:re|antw|aw|sv|réf|ref)\s*:\s*)*(?:fw|fwd|tr|doorst|wg|fw:|trans)\s*:", re.I)
_REPLY_SUBJECT = re.compile(r"^\s*+(?:re|antw|aw|réf|ref|sv|odp)\s*(?:\[\d+\])?\s*:", re.I)

_SIGN_OFF = re.compile(
    r"^[ \t]*+(?:met )?(?:(?:vriendelijke|hartelijke|beste|collegiale|warme|fijne|vele|zonnige|duurzame)[ \t]+)?"
    r"(?:groet(?:en|jes)?|groeten)\b[^\n]{0,40}$|"
    r"^[ \t]*+(?:mvg|vg|mvgr|m\.v\.g\.?|groetjes|groeten|cordialement|bien (?:à|a) (?:vous|toi)|"
    r"bien cordialement|salutations(?: distinguées)?|meilleures salutations|sincères salutations|"
    r"avec mes (?:meilleures |sincères )?salutations|bonne journée|"
    r"(?:kind|best|warm|many thanks and|with kind)?[ \t]*regards|best wishes|best|cheers|sincerely|yours sincerely|"
    r"thanks|thank you|many thanks|alvast bedankt|alvast dank|bedankt|dank u(?: wel)?|dank je(?: wel)?|"
    r"met dank|hoogachtend|tot dan|tot binnenkort|merci(?: d'avance| beaucoup)?|"
    r"mit freundlichen grüßen|viele grüße)[ \t]*[,.!]*[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_MOBILE_FOOTER = re.compile(
    r"^[ \t]*+(?:Verzonden (?:vanaf|met|van) mijn|Verstuurd (?:vanaf|met|van) mijn|Sent from my|Envoyé de mon|"
    r"Envoyé depuis mon|Von meinem|Get Outlook for|Download Outlook voor|Outlook voor (?:iOS|Android) downloaden|"
    r"Sent from Mail for Windows|Verzonden vanuit Mail voor Windows|Verzonden vanuit Outlook)[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_SIG_DASHES = re.compile(r"^-- ?$", re.MULTILINE)
_DISCLAIMER = re.compile(
    r"^[ \t]*+(?:disclaimer|\*{0,2}[ \t]*(?:dit e-?mail(?:bericht)?|deze e-?mail|de informatie (?:in|verzonden)|"
    r"this e-?mail (?:message )?(?:and|is|may|contains)|the information (?:contained|in this)|"
    r"ce (?:message|courriel|e-?mail) (?:et|est|peut)|les informations contenues|"
    r"denk aan het milieu|please consider the environment|pensez à l'environnement|"
    r"vlaanderen is (?:onderwijs|zorg)|"
    r"op deze e-?mail is een disclaimer|aan deze e-?mail kunnen geen rechten)).*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class Segment:
    """A piece of text and who wrote it (for a forward: the original author)."""
    text: str
    author_name: str | None = None
    author_email: str | None = None
    signature: str = ""


@dataclass
class Body:
    own: Segment  # what the sender wrote in this mail, signature apart
    forwarded: list[Segment] = field(default_factory=list)
    quoted: str = ""  # the history below a reply
    is_forward: bool = False
    quote_header: str = ""


def _strip_quoted_lines(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(">"))


def _first(*matches):
    found = [m for m in matches if m is not None]
    return min(found, key=lambda m: m.start()) if found else None


def _outlook_block(text: str, start: int = 0):
    """An Outlook-style 'Van:/Verzonden:/Aan:/Onderwerp:' block at or after start."""
    for m in _OUTLOOK_BLOCK.finditer(text, start):
        # The line before is usually a rule or blank: a 'Van:' in a running sentence is not a header.
        line_start = text.rfind("\n", 0, m.start()) + 1
        prefix = text[line_start:m.start()]
        if prefix.strip(" \t>*_-") == "":
            return m
    return None


def parse_header_block(text: str) -> tuple[dict[str, str], int]:
    """Read an embedded header block ('Van: ... Onderwerp: ...'); return fields and where its body starts."""
    fields: dict[str, str] = {}
    pos = 0
    lines = text.split("\n")
    consumed = 0
    started = False
    last_key = None
    for i, line in enumerate(lines[:14]):
        m = _HEADER_LINE.match(line)
        if m:
            key = m.group(1).lower()
            if re.fullmatch(_HEADER_FROM, m.group(1), re.I):
                key = "from"
            elif re.fullmatch(_HEADER_SENT, m.group(1), re.I):
                key = "date"
            elif re.fullmatch(_HEADER_TO, m.group(1), re.I):
                key = "to"
            elif re.fullmatch(_HEADER_SUBJECT, m.group(1), re.I):
                key = "subject"
            else:
                key = "cc"
            fields.setdefault(key, m.group(2).strip().strip("*").strip())
            last_key = key
            started = True
            consumed = i + 1
        elif not started and not line.strip(" \t>*_-"):
            consumed = i + 1
            continue
        elif started and line.strip() and last_key in ("to", "cc", "from") and line.startswith((" ", "\t")):
            fields[last_key] += " " + line.strip()
            consumed = i + 1
        elif started:
            break
    pos = sum(len(line) + 1 for line in lines[:consumed])
    return fields, pos


def _author(fields: dict[str, str]) -> tuple[str | None, str | None]:
    raw = fields.get("from", "")
    if not raw:
        return None, None
    raw = decode_header_value(raw)
    # Outlook writes 'Name [mailto:a@b]' or 'Name <a@b>'; Gmail 'Name <a@b>'.
    raw = re.sub(r"\[mailto:([^\]]+)\]", r"<\1>", raw)
    pairs = parse_addresses(raw)
    if pairs:
        name = pairs[0][0] or None
        return name, pairs[0][1]
    return raw.strip() or None, None


def split_signature(text: str) -> tuple[str, str]:
    """(body, signature): the signature starts at the sign-off line, a '-- ' line or a mobile footer."""
    cut = len(text)
    sign_off = None
    for m in _SIGN_OFF.finditer(text):
        # "Bedankt!" as the opening line, with the message below it, thanks; it does not sign off.
        if not text[:m.start()].strip() and re.search(r"\w", text[m.end():m.end() + 400]):
            continue
        sign_off = m
        break
    candidates = []
    if sign_off is not None:
        candidates.append(sign_off.start())
    for rx in (_SIG_DASHES, _MOBILE_FOOTER):
        m = rx.search(text)
        if m:
            candidates.append(m.start())
    if candidates:
        cut = min(candidates)
    return text[:cut].rstrip(), text[cut:].strip()


def strip_disclaimer(text: str) -> str:
    m = _DISCLAIMER.search(text)
    # Only a disclaimer in the lower part is one; near the top it is more likely the mail itself.
    if m and m.start() > len(text) * 0.25:
        return text[:m.start()].rstrip()
    return text


MAX_OWN_CHARS = 20_000
# A quote header is searched for in the first part only: a history can be megabytes long.
MAX_SCAN_CHARS = 60_000


def split_body(text: str, subject: str = "", depth: int = 0, *, own_closing: str = "") -> Body:
    text = text.replace("\r\n", "\n").replace("\r", "\n")[:MAX_SCAN_CHARS]
    forward_marker = _FORWARD.search(text)
    is_forward_subject = bool(_FORWARD_SUBJECT.match(subject or ""))
    reply_markers = _first(_WROTE.search(text), _ORIGINAL.search(text), _outlook_block(text))
    forwarded: list[Segment] = []
    own_text = text
    quoted = ""
    quote_header = ""
    is_forward = False
    forward_start = None
    if forward_marker is not None and (reply_markers is None or forward_marker.start() <= reply_markers.start()
                                       or is_forward_subject):
        forward_start = forward_marker
    elif is_forward_subject and reply_markers is not None:
        forward_start = reply_markers
    if forward_start is not None:
        is_forward = True
        own_text = text[:forward_start.start()]
        rest = text[forward_start.start():]
        if _FORWARD.match(rest):
            rest = rest[rest.find("\n") + 1:] if "\n" in rest else ""
        fields, pos = parse_header_block(rest)
        inner = rest[pos:]
        name, addr = _author(fields)
        # The forwarded mail may itself carry a history; only its own part counts.
        inner_body = split_body(inner, fields.get("subject", ""), depth + 1) if depth < 5 else \
            Body(own=Segment(inner[:MAX_OWN_CHARS]))
        seg = inner_body.own
        seg.author_name, seg.author_email = name, addr
        forwarded.append(seg)
        forwarded.extend(inner_body.forwarded)
    elif reply_markers is not None:
        own_text = text[:reply_markers.start()]
        quoted = text[reply_markers.start():]
        quote_header = quoted.split("\n", 2)[0] if quoted else ""
        # Some people answer *below* the quote header (bottom-posting): if nothing is above it, read
        # the non-quoted lines below.
        if not re.search(r"[^\W_]", own_text):  # a rule of underscores (Outlook on the web) is no text
            below = _strip_quoted_lines(quoted)
            fields, pos = parse_header_block(quoted)
            if not fields:
                own_text = below[below.find("\n") + 1:] if "\n" in below else ""
            elif own_closing:
                # An Outlook quote marks no line: below a quote of the desk's own mail, the
                # writer's words are what follows that mail's last words.
                end = _end_of(quoted, own_closing)
                if end is not None and re.search(r"\w", quoted[end:]):
                    own_text, quoted = quoted[end:], quoted[:end]
    else:
        m = _WROTE_SHORT.search(text)
        if m and m.start() > 0:
            own_text, quoted = text[:m.start()], text[m.start():]
    # Nobody signs up in the twentieth kilobyte; bounding the text bounds every rule after this one.
    own_text = _strip_quoted_lines(own_text[:MAX_OWN_CHARS])
    own_text = strip_disclaimer(own_text)
    body, signature = split_signature(own_text)
    return Body(own=Segment(body.strip("\n"), signature=signature), forwarded=forwarded, quoted=quoted,
                is_forward=is_forward, quote_header=quote_header)


def _end_of(text: str, words: str) -> int | None:
    """Where the last occurrence of `words` ends in `text`, however the text breaks its lines."""
    pattern = r"\s+".join(re.escape(word) for word in words.split()[-12:])
    last = None
    for last in re.finditer(pattern, text[-MAX_SCAN_CHARS:], re.IGNORECASE):
        pass
    return None if last is None else len(text) - len(text[-MAX_SCAN_CHARS:]) + last.end()


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_SUBJECT.match(subject or ""))


def is_forward_subject(subject: str) -> bool:
    return bool(_FORWARD_SUBJECT.match(subject or ""))
