"""Weigh the evidence that a signup or cancellation is real, for this event, from a person it concerns.

The classifiers say what a mail *looks like* (a signup, a cancellation); this step says whether the
desk may *act* on it alone. The mailbox is a team's general address: most mail that mentions
"registering" is spam, an invitation to another event, a newsletter or a colleague's work mail.
So each reading carries a few strong signals, each with its weight and a reason in Dutch, and the
desk acts without a person only when their sum reaches the BAR and nothing speaks strongly against.

The signals, deliberately few:
  for      the event named in the writer's own words (name, acronym, a session theme or date);
           a reply to one of the desk's own mails (In-Reply-To/References in our Message-ID domain);
           the event named in the thread the writer answers (a quoted announcement);
           the sender's domain is a known government or organisation domain.
  against  a spam verdict of a filter on the way (X-Spam-Flag, X-Spam-Status, Microsoft's SCL and
           SFV:SPM); a domain or display name that imitates ours; replies diverted to another domain
           (Reply-To); an invitation to the reader ("schrijf je nu in", "confirm your registration");
           a private (webmail) or non-government sender: the audience is government staff.

Below the bar a mail is kept with its arrival time, never answered, and set aside with the reasons.
A mail that looks like a signup but has no link at all to this event, or that a strong signal
marks as spam or imitation, is not read as a signup: it is 'other', for an organiser to read.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .parse import MailRecord
from .people import _COMPANY, domain_of, is_government_domain, is_webmail
from .text import is_forward_subject, is_reply_subject

# The sum of weights a signup or cancellation needs to be acted on without a person: the event named
# (or a reply in its thread) and the mail sent to the desk, or from a government domain; not from a
# private or company address alone (eligibility), not with replies diverted elsewhere.
BAR = 3
# A cancellation can only withdraw registrations the registry already holds for its sender (the apply
# step looks them up), and it takes no seat: a mail sent to the desk that cancels is enough. Naming
# the event is not expected of it ("Afmelding: ik kan niet deelnemen").
BARS = {"registration": BAR, "cancellation": 1}
# A signal this strong (or stronger) against decides alone: the mail is not read as a signup.
STRONG_AGAINST = -5


@dataclass(frozen=True)
class Signal:
    name: str      # a stable key, for tests and logs
    weight: int    # positive: for acting; negative: against
    reason: str    # for the organiser, in Dutch

    def as_dict(self) -> dict:
        return {"signal": self.name, "weight": self.weight, "reason": self.reason}


# --- what names the event -----------------------------------------------------------------------------

_MONTHS = {
    1: "januari|january|janvier|januar|jan", 2: "februari|february|février|fevrier|februar|feb",
    3: "maart|march|mars|märz|mrt", 4: "april|avril|apr", 5: "mei|may|mai", 6: "juni|june|juin|jun",
    7: "juli|july|juillet|jul", 8: "augustus|august|août|aout|aug", 9: "september|septembre|sept|sep",
    10: "oktober|october|octobre|okt|oct", 11: "november|novembre|nov", 12: "december|décembre|decembre|dezember|dec",
}
_STOP = {"de", "het", "een", "van", "voor", "en", "the", "of", "for", "and", "la", "le", "les", "des", "du", "et",
         "der", "die", "das", "und", "in", "op", "s"}


def event_terms(name: str, themes: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The phrases that name the event: its name, the name without its first word, the acronym of a run of
    three or more capitalised words ("Sustainable Development Goals" → "sdg"), the first word when it is a
    compound noun of its own ("Leernetwerk"), and every session theme."""
    terms: list[str] = []
    words = re.findall(r"[\w'’-]+", name or "")
    if words:
        terms.append(" ".join(words).lower())
    if len(words) >= 2:
        terms.append(" ".join(words[1:]).lower())
        if len(words[0]) >= 8:
            terms.append(words[0].lower())
    run: list[str] = []
    for word in words + [""]:
        if word[:1].isupper() and word.lower() not in _STOP:
            run.append(word)
            continue
        # Every sub-run of three or more: "Leernetwerk Sustainable Development Goals" gives "lsdg" and "sdg".
        for i in range(len(run) - 2):
            terms.append("".join(w[0] for w in run[i:]).lower())
        run = []
    for theme in themes:
        theme = " ".join(re.findall(r"[\w'’-]+", theme or "")).lower()
        if len(theme) >= 12:
            terms.append(theme)
    return tuple(dict.fromkeys(t for t in terms if len(t) >= 3))


def _term_pattern(terms: tuple[str, ...]) -> re.Pattern | None:
    parts = [r"\b" + re.escape(t).replace(r"\ ", r"[\s-]+") + r"(?:'?s)?\b" for t in terms]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def _date_pattern(dates: tuple[str, ...]) -> re.Pattern | None:
    """A session date as people write it: "26 juni", "June 26", "26/6", "26-06" (not "26.6": a number)."""
    parts = []
    for iso in dates:
        try:
            d = dt.date.fromisoformat(iso)
        except ValueError:
            continue
        months = _MONTHS[d.month]
        parts.append(rf"\b0?{d.day}(?:e|ste|de|er)?\.?\s*(?:{months})\b")
        parts.append(rf"\b(?:{months})\.?\s+0?{d.day}\b")
        parts.append(rf"(?<![\d.,/-])0?{d.day}\s?[/-]\s?0?{d.month}(?![\d.,/-]?\d)")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


_ANY_DATE = re.compile(r"\b(\d{1,2})(?:e|ste|de|er)?\.?\s+(" + "|".join(_MONTHS.values()) + r")\b", re.IGNORECASE)


def _other_date(text: str, session_dates: tuple[str, ...]) -> str | None:
    """A written date ("14 juni") that is no session's date, if the text names one."""
    if not session_dates:
        return None
    ours = set()
    for iso in session_dates:
        try:
            d = dt.date.fromisoformat(iso)
        except ValueError:
            continue
        ours.add((d.day, d.month))
    for m in _ANY_DATE.finditer(text):
        month = next(n for n, names in _MONTHS.items() if re.fullmatch(names, m.group(2), re.IGNORECASE))
        if (int(m.group(1)), month) not in ours:
            return m.group(0)
    return None


_PATTERNS: dict[tuple, tuple[re.Pattern | None, re.Pattern | None]] = {}


def event_patterns(terms: tuple[str, ...], dates: tuple[str, ...]) -> tuple[re.Pattern | None, re.Pattern | None]:
    """(what names the event, what names one of its session dates), compiled once per configuration."""
    key = (terms, dates)
    if key not in _PATTERNS:
        _PATTERNS[key] = (_term_pattern(terms), _date_pattern(dates))
    return _PATTERNS[key]


# --- verdicts already on the mail ---------------------------------------------------------------------

def spam_verdict(record: MailRecord) -> str | None:
    """The verdict of a spam filter the mail passed (SpamAssassin, Microsoft 365), if it says spam."""
    flag = (record.header("x-spam-flag") or "").strip().lower()
    if flag.startswith("yes"):
        return "X-Spam-Flag: YES"
    status = (record.header("x-spam-status") or "").strip().lower()
    if status.startswith("yes"):
        return "X-Spam-Status: Yes"
    scl = (record.header("x-ms-exchange-organization-scl") or "").strip()
    if re.fullmatch(r"-?\d+", scl) and int(scl) >= 5:
        return f"X-MS-Exchange-Organization-SCL: {scl}"
    report = (record.header("x-forefront-antispam-report") or "") + ";" + (
        record.header("x-microsoft-antispam") or "")
    if re.search(r"(?i)\bSFV:SPM\b", report):
        return "X-Forefront-Antispam-Report: SFV:SPM"
    m = re.search(r"(?i)\bSCL:(\d+)\b", report)
    if m and int(m.group(1)) >= 5:
        return f"X-Forefront-Antispam-Report: SCL:{m.group(1)}"
    return None


# --- who sends it -------------------------------------------------------------------------------------

def _registrable(domain: str) -> str:
    parts = domain.lower().split(".")
    return ".".join(parts[-2:]) if len(parts) >= 2 else domain


def imitation(domain: str, display_name: str | None, own_domains: set[str], is_known) -> str | None:
    """A domain or display name made to look like ours: 'vlaanderen-be.info', 'vlaanderen.be.example.com',
    or a display name 'x@vlaanderen.be' on mail from elsewhere. None when the domain is really a known one."""
    if not domain or is_known(domain):
        return None
    for own in own_domains:
        # Our registrable domain written into another one, at a label boundary: "vlaanderen-be.info",
        # "vlaanderen.be.login.example". Not "sportvlaanderen.be": a name of its own that merely contains it.
        head, _, tld = _registrable(own).rpartition(".")
        if head and _registrable(domain) != _registrable(own) and re.search(
                rf"(?:^|[.-]){re.escape(head)}[.\-_]?{re.escape(tld)}(?:[.-]|$)", domain):
            return f"het domein {domain} lijkt op {own} maar is het niet"
        if display_name and own in display_name.lower():
            return f"de naam van de afzender noemt {own}, maar het bericht komt van {domain}"
    return None


# --- invitations to the reader ------------------------------------------------------------------------

# A call to the *reader* to sign up or confirm: how an invitation, a newsletter or a phisher writes,
# never how a person signs up.
_CALL_TO_ACTION = re.compile(
    r"\b(?:schrijf|registreer|meld)\s+(?:je|jij|u|uzelf|jezelf)\s+(?:\w+\s+){0,2}?(?:in|aan)\b|"
    r"\binschrijven\s+(?:kan|kunt|kun je|via|op|door)\b|\b(?:bevestig|activeer)\s+(?:uw|je|jouw)\b|"
    r"\bklik\s+(?:hier|op)\b|\bclick\s+(?:here|on|below|the)\b|\b(?:register|sign up|enrol+|subscribe)\s+(?:now|here|today|online|for free|below)\b|"
    r"\b(?:confirm|verify|activate|update)\s+your\b|\binscrivez[- ]vous\b|\bconfirmez\s+votre\b|"
    r"\bcliquez\s+ici\b|"
    # the language of an invitation to an event of one's own
    r"\b(?:inschrijven|aanmelden|registratie|registration|inscription|anmeldung)\s+(?:is\s+)?(?:verplicht|mogelijk|required|"
    r"obligatoire|erforderlich|open)\b|\b(?:nodig\w*|nodigen)\s+(?:u|je|jou|jullie)\b[^.\n]{0,60}\buit\b|"
    r"\binvites? you\b|\bvous invite\w*\b|\bde vous inviter\b|\blädt sie\b",
    re.IGNORECASE)
_URL = re.compile(r"\bhttps?://|\bwww\.", re.IGNORECASE)


def invitation(own_text: str) -> str | None:
    m = _CALL_TO_ACTION.search(own_text[:6000])
    if m:
        return m.group(0).strip()[:60]
    return None


def link_count(own_text: str) -> int:
    return len(_URL.findall(own_text[:20000]))


# --- the assessment -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assessment:
    signals: tuple[Signal, ...]
    confidence: int
    event_known: bool       # the options name the event: its absence can be judged
    linked_to_event: bool | None  # True: named in own words or thread, or a reply to the desk;
                                  # None: only sent to the desk; False: nothing ties it to this event
    strong_against: Signal | None
    bar: int = BAR

    @property
    def acts(self) -> bool:
        return self.strong_against is None and self.confidence >= self.bar and (
            self.linked_to_event is not False or not self.event_known)


def assess(ctx, kind: str, participants) -> Assessment:
    """The evidence for acting on a signup or cancellation without a person. ctx: classify.Context."""
    rec = ctx.record
    options = ctx.options
    table = options.domain_organisations
    signals: list[Signal] = []

    # 1. The event: named in the writer's own words, or in the thread answered, or a reply to the desk.
    #    A session date alone is weaker: every event has a date.
    pattern, date_pattern = event_patterns(tuple(options.event_terms), tuple(options.session_dates))
    linked: bool | None = False
    if pattern is not None:
        own_words = ctx.intent_text
        m = pattern.search(own_words[:30000])
        if m:
            signals.append(Signal("event_named", 2, f"Het evenement wordt genoemd: \u201c{m.group(0).strip()}\u201d"))
            linked = True
        else:
            thread = (rec.subject or "") + "\n" + ctx.body.quoted[:30000]
            m = pattern.search(thread)
            if m:
                signals.append(Signal("event_in_thread", 2,
                                      f"Antwoord op een bericht over het evenement (\u201c{m.group(0).strip()}\u201d)"))
                linked = True
    else:
        # Without an event in the options (a bare understand() call) the link cannot be judged; it is
        # neither held against the mail nor silently left out of the sum.
        signals.append(Signal("event_not_configured", 2, "Geen evenement ingesteld: de band met het evenement "
                              "is niet beoordeeld"))
    if ctx.is_reply_to_us:
        signals.append(Signal("reply_to_desk", 2, "Antwoord op een bericht van de inschrijvingsdesk"))
        linked = True
    # Mail sent to the desk itself (not Bcc'd, not a list) is a small sign that it means the desk.
    recipients = {a for _, a in rec.to} | {a for _, a in rec.cc}
    addressed = not options.own_addresses or bool(recipients & set(options.own_addresses))
    if addressed and options.own_addresses:
        signals.append(Signal("addressed_to_desk", 1, "Rechtstreeks aan de inschrijvingsdesk gericht"))
    if pattern is not None and not linked:
        signals.append(Signal("event_not_named", -1 if kind == "registration" else 0,
                              "Het leernetwerk of een sessie wordt nergens genoemd"))
        m = date_pattern.search(ctx.intent_text[:30000]) if date_pattern is not None else None
        if m:
            signals.append(Signal("session_date", 1, f"Noemt een sessiedatum (\u201c{m.group(0).strip()}\u201d)"))
        other = None if m else _other_date(ctx.intent_text[:30000], options.session_dates)
        if other:
            # A signup for a course on a date that is no session's: a signup, but for something else.
            signals.append(Signal("other_date", -2, f"Noemt een datum die geen sessiedatum is (\u201c{other}\u201d): "
                                  "mogelijk een ander evenement"))
        # Neither named, nor in a thread, nor dated, nor sent to the desk: nothing ties it to this event.
        linked = None if (addressed or m) and not other else False

    # 2. Verdicts already on the mail.
    verdict = spam_verdict(rec)
    if verdict:
        signals.append(Signal("spam_verdict", -10, f"Door een spamfilter als spam gemarkeerd ({verdict})"))

    # 3. Who sends it: the audience is government staff; an imitation of our own domain is a phisher.
    sender_domain = domain_of(rec.sender)
    own_domains = {domain_of(a) for a in options.own_addresses if "@" in a}
    is_known = lambda d: is_government_domain(d, table)  # noqa: E731
    fake = imitation(sender_domain, rec.sender_name, own_domains, is_known)
    if fake:
        signals.append(Signal("imitation", -10, f"Mogelijk phishing: {fake}"))
    for _, addr in rec.reply_to:
        d = domain_of(addr)
        if d and d != sender_domain and addr not in options.own_addresses and not is_known(d) \
                and _registrable(d) != _registrable(sender_domain):
            signals.append(Signal("reply_to_elsewhere", -3,
                                  f"Antwoorden gaan naar een ander domein ({d}) dan dat van de afzender"))
            break
    if sender_domain and is_known(sender_domain):
        signals.append(Signal("government_sender", 1, f"Afzender van een overheidsdomein ({sender_domain})"))
    elif kind == "registration":
        # Eligibility matters for a seat only: a cancellation can only free the sender's own seat(s).
        if rec.sender and is_webmail(rec.sender):
            signals.append(Signal("private_sender", -2, f"Privé-adres ({sender_domain}): niet zeker dat de "
                                  "afzender bij een overheid werkt; een organisator beslist over de inschrijving"))
        elif sender_domain and (not sender_domain.endswith(".be") or _COMPANY.search(
                (ctx.body.own.signature or "")[:500] + " " + (rec.sender_name or ""))):
            signals.append(Signal("outside_government", -2, f"Afzender lijkt niet van een overheid te komen "
                                  f"({sender_domain}); een organisator beslist over de inschrijving"))

    # 4. The form of the mail: a call to the reader to sign up is an invitation, not a signup.
    if kind == "registration":
        # Only the writer's own words: a forwarded announcement rightly says "inschrijven kan bij ...".
        # A reply or forward keeps the subject of the mail answered ("Re: Schrijf je nu in!"): not the writer's.
        subject = "" if is_reply_subject(rec.subject) or is_forward_subject(rec.subject) else (rec.subject or "")
        cta = invitation(subject + "\n" + ctx.body.own.text)
        if cta:
            signals.append(Signal("invitation", -5, f"Nodigt de lezer uit om in te schrijven (\u201c{cta}\u201d)"))
        if link_count(ctx.body.own.text) >= 3:
            signals.append(Signal("many_links", -1, "Veel links in de tekst, zoals in reclame of een nieuwsbrief"))

    strong = next((s for s in signals if s.weight <= STRONG_AGAINST), None)
    confidence = sum(s.weight for s in signals)
    return Assessment(tuple(signals), confidence, pattern is not None, linked, strong, BARS.get(kind, BAR))
