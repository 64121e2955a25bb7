"""Decide what kind of mail this is: ordered named classifiers, most specific first, first match wins."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .bounce import BounceFinding, find_bounce, is_machine_sender
from .model import Options
from .parse import MailRecord, is_own_address
from .text import Body, is_reply_subject


@dataclass
class Context:
    record: MailRecord
    body: Body
    options: Options
    intent_text: str  # what the sender (or the forwarded author) wrote, lowercased, subject first
    attachment_text: str = ""
    bounce: BounceFinding | None = None
    is_reply_to_us: bool = False


@dataclass(frozen=True)
class Decision:
    kind: str
    reason: str
    replies_allowed: bool = True
    bounced: tuple[str, ...] = ()
    review: tuple[str, ...] = ()


Classifier = Callable[[Context], "Decision | None"]

# --- patterns -------------------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^\s*+(?:\[?(?:automatisch antwoord|automatisch bericht|automatische (?:reactie|melding|reply)|automatic reply|"
    r"auto(?:matic)?[- ]?(?:reply|response|respond)|out of (?:the )?office|ooo|afwezig(?:heid|heidsmelding|heidsbericht)?|"
    r"niet aanwezig|met verlof|vakantie|réponse automatique|reponse automatique|r[ée]ponse en votre absence|absence|"
    r"absent|abwesenheitsnotiz|abwesend|automatische antwort|vacation|on leave|away from (?:the )?office)\]?)\s*(?::|-|$)",
    re.IGNORECASE,
)
_AUTO_SUBJECT_ANYWHERE = re.compile(
    r"automatisch antwoord|automatic reply|auto[- ]reply|autoreply|out of (?:the )?office|afwezigheidsmelding|"
    r"réponse automatique|abwesenheitsnotiz|automatische antwort", re.IGNORECASE)
_RECEIPT_SUBJECT = re.compile(
    r"^\s*+(?:gelezen|read|lu|gelesen|leído|letto|niet gelezen|not read|non lu|ongelezen|"
    r"bezorgd|delivered|remis|zugestellt|afgeleverd|gelesen|"
    r"leesbevestiging|read receipt|return receipt|accusé de (?:lecture|réception)|ontvangstbevestiging|"
    r"read-receipt|lesebestätigung|message lu)\s*(?::|$)",
    re.IGNORECASE,
)
_OOO_BODY = re.compile(
    r"\b(?:ik ben|i am|i'm|je suis|ich bin|ik zal)\b[^.\n]{0,40}\b(?:afwezig|niet (?:aanwezig|bereikbaar|op kantoor)|"
    r"out of (?:the )?office|away|absent|absente|en congé|met verlof|in verlof|op vakantie|on (?:holiday|vacation|leave)|"
    r"en vacances|abwesend|im urlaub|op reis|op zending|on a business trip|en déplacement|en mission)|"
    r"\bafwezig (?:tot|van|t\.e\.m\.|tem|vanaf|t/m)\b|\b(?:terug|opnieuw) (?:aanwezig|bereikbaar|op kantoor|op|vanaf|vanaf)\b[^.\n]{0,30}\d|"
    r"\bback (?:in the office |at work |)on\b|\bde retour (?:le|au bureau)\b|\bwieder im büro\b|"
    r"\bautomatisch (?:antwoord|bericht|gegenereerd)\b|\bautomatic reply\b|\bauto-?reply\b|\bréponse automatique\b|"
    r"\bthis is an auto(?:mated|matic)\b|\bdit is een automatisch\b|\bceci est un (?:message|e-?mail|courriel) automatique\b|"
    r"\b(?:uw|je) (?:e-?mail|bericht|mail|vraag) (?:is|werd|werden) (?:goed |correct )?(?:ontvangen|geregistreerd)\b|"
    r"\bwe have received your (?:e-?mail|message|request)\b|\bnous avons bien reçu votre\b|"
    r"\bthank you for your (?:e-?mail|message)\.? (?:we|i) will\b|\bwij hebben uw (?:e-?mail|bericht|vraag) goed ontvangen\b|"
    r"\bmijn mailbox wordt niet\b|\bberichten worden niet doorgestuurd\b|\bje n'ai pas accès\b",
    re.IGNORECASE,
)
_NEWSLETTER = re.compile(
    r"\b(?:nieuwsbrief|newsletter|lettre d'information|infolettre|mailing)\b[\s\S]{0,4000}"
    r"\b(?:uitschrijven|afmelden|unsubscribe|se désinscrire|désabonner|désinscription|schrijf je (?:hier )?uit|"
    r"niet langer ontvangen|no longer receive)\b|"
    r"\b(?:uitschrijven|unsubscribe|se désinscrire|désabonner)\b[\s\S]{0,4000}\b(?:nieuwsbrief|newsletter|infolettre)\b|"
    r"\bview (?:this email )?in (?:your|je) browser\b|\bbekijk (?:deze (?:e-?mail|nieuwsbrief) )?in (?:je|uw) browser\b|"
    r"\bwebversie\b|\bweb version\b",
    re.IGNORECASE,
)

_CANCEL = re.compile(
    r"\baf ?melden\b|\bafmeld\w*|\bmeld\w*\b[^.\n?!]{0,50}\baf\b|\buitschrijv\w*|\buit ?te ?schrijven\b|"
    r"\bschrijf\w*\b[^.\n?!]{0,50}\buit\b|\bannul\w*|\bafzeg\w*|\bzeg\w*\b[^.\n?!]{0,40}\baf\b|\baf te zeggen\b|"
    r"\b(?:kan|kunnen|zal|zullen|ga|gaan|zou|zouden|kon)\b[^.\n?!]{0,40}\b(?:helaas |toch |jammer genoeg |spijtig genoeg |uiteindelijk )?"
    r"(?:niet|geen)\b[^.\n?!]{0,30}\b(?:meer )?(?:deelnemen|deel ?nemen|komen|aanwezig|aansluiten|volgen|bijwonen|meedoen|erbij)\b|"
    r"\bniet (?:meer )?(?:deelnemen|aanwezig kunnen|kunnen (?:deelnemen|komen))\b|\bverhinderd\b|"
    r"\binschrijving\w*\b[^.\n?!]{0,40}\b(?:in ?trekken|intrekken|schrappen|verwijderen|annuleren|ongedaan)\b|"
    r"\b(?:trek|schrap|verwijder)\w*\b[^.\n?!]{0,40}\b(?:inschrijving|in\b|van de (?:deelnemers)?lijst)|"
    r"\bd[ée]sinscri\w*|\bannulation\b|\bannuler\b|\bme retirer\b|\bd[ée]sist\w*|\bemp[êe]ch[ée]e?s?\b|"
    r"\bne (?:pourrai|pourra|pourrons|pourrez|pourront|peux|puis|peut|serai|sera)\b[^.\n?!]{0,30}\b(?:pas|plus)\b|"
    r"\bcancel\w*\b|\bwithdraw\w*\b|\bunregister\w*\b|\bderegister\w*\b|"
    r"\b(?:can't|cannot|can not|won't|will not|unable to|not be able to|no longer (?:able to|attend|participate)|"
    r"will no longer|am no longer|is no longer|are no longer)\b[^.\n?!]{0,30}\b(?:attend|make it|join|participate|come|be (?:there|present|attending))\b|"
    r"\bremove (?:me|my|him|her|them|us)\b|"
    # "zet/haal mij van de lijst", "take me off the list", "geef mijn plaats aan iemand anders"
    r"\b(?:zet|haal|schrap|verwijder)\w*\s+(?:mij|me|ons|hem|haar|mijn naam)\b[^.\n?!]{0,30}\b(?:van|uit) de (?:deelnemers)?lijst\b|"
    r"\btake (?:me|my name|us|him|her) off\b|\b(?:geef|mag)\b[^.\n?!]{0,20}\bmijn plaats\b[^.\n?!]{0,30}\b(?:aan|naar) (?:iemand|een ander)|"
    r"\b(?:kan|kunnen|zal|zullen|ga|gaan)\b[^.\n?!]{0,30}\bniet\b[^.\n?!]{0,30}\b(?:er ?bij|bij) (?:zijn|wezen)\b|"
    r"\babsag\w*|\babsagen\b|\babmeld\w*|\bstreichen sie\b|\bnicht (?:mehr )?teilnehmen\b",
    re.IGNORECASE,
)
_REG_STRONG = re.compile(
    r"\binschrijv\w*|\binschrijf\w*|\bingeschreven\b|\bin te schrijven\b|"
    r"\bschrij\w*\b[^.\n?!]{0,80}\bin\s*(?:[.,!:;\n(]|voor\b|op\b|bij\b|aan\b|als\b|graag\b|$)|"
    r"\baan ?melden\b|\baanmeld\w*|\bmeld\w*\b[^.\n?!]{0,50}\baan\b|\baan te melden\b|"
    r"\bdeel ?(?:te )?nemen\b|\bdeelgenomen\b|\bdeelneem\w*|\bdeelname\b|\bneem\w*\b[^.\n?!]{0,50}\bdeel\b|"
    r"\b\d+\s+plaats(?:en)?\b|\bplaats(?:je)? voor (?:mij|me|mezelf|ons|mijn|onze)\b|\bgraag (?:ook )?(?:een |1 )?plaats(?:je)?\b|"
    r"\b(?:graag|willen|wil|zou|zouden|kom|komen)\b[^.\n?!]{0,40}\b(?:aanwezig (?:zijn|zijn op)|bijwonen|meedoen|"
    r"deel uitmaken|komen|aansluiten|volgen)\b|\bregistr\w*|\bopgeven\b|\bgeef\w*\b[^.\n?!]{0,40}\bop\b(?! te)|"
    r"\bplaats(?:je|en)?\b[^.\n?!]{0,30}\b(?:reserveren|vastleggen)\b|\binteresse\b[^.\n?!]{0,60}\b(?:deel|leernetwerk|sessies)\b|"
    r"\binscri\w*|\bparticip\w*|\bassister\b|\br[ée]server\b|"
    r"\bregist\w*|\bsign\w*\b[^.\n?!]{0,20}\bup\b|\bsign-?up\b|\benrol\w*|\battend\w*|\bjoin\b|\bbe part of\b|"
    # joining without a signup verb ("wij doen graag mee"), being put on the list, asking whether a
    # colleague may come along too, and German "anmelden"
    r"\b(?:doe|doen)\s+(?:\w+\s+){0,3}?mee\b|\bzet\w*\s+(?:mij|me|ons|hem|haar|mijn collega\w*)\b[^.\n?!]{0,30}\bop de (?:deelnemers)?lijst\b|"
    r"\b(?:mag|mogen|kan|kunnen)\b(?:[^.\n?!]|\.(?=\w)){0,90}\b(?:ook|nog)\s+mee\b|"
    r"\banmeld\w*|\bmelde\w*\s+(?:mich|uns)\b[^.\n?!]{0,40}\ban\b|\bteilnehmen\b|\bteilnahme\b",
    re.IGNORECASE,
)
_QUESTION = re.compile(r"\?|\b(?:vraag|vraagje|question|vraag ik me af|zou ik willen weten|graag wil ik weten)\b", re.I)
_THANKS = re.compile(
    r"^\W*+(?:(?:hartelijk |heel erg |alvast |ook |nogmaals )?(?:bedankt|dank(?:u| u| je|je)(?:wel| wel)?|merci|thanks|thank you|"
    r"super|top|prima|perfect|ok(?:é|e)?|in orde|goed ontvangen|ontvangen|fijn|great|parfait|très bien)\b)",
    re.IGNORECASE,
)
_PARTIAL = re.compile(
    r"\b(?:enkel|alleen|uitsluitend|slechts|only|seulement|uniquement|niet voor|not for|pas pour)\b[^.\n]{0,50}"
    r"\b(?:sessie|sessies|bijeenkomst|bijeenkomsten|namiddag|workshop|session|sessions|séance|séances|dag|module)\b|"
    r"\b(?:sessie|sessies|session|sessions|séances?)\s*\d(?:\s*(?:,|en|and|et|&)\s*\d)+\b|"
    r"\b(?:niet|pas|not)\b[^.\n]{0,40}\b(?:alle|toutes les|all)\b[^.\n]{0,20}\b(?:sessies|séances|sessions)\b|"
    r"\b(?:eerste|tweede|derde|vierde|vijfde|laatste|zesde) (?:sessie|bijeenkomst)\b[^.\n]{0,50}\b(?:niet|kan ik niet)\b",
    re.IGNORECASE,
)
_CANCEL_EXPLICIT = re.compile(
    r"\baf ?melden\b|\bafmeld\w*|\bmeld\w*\b[^.\n?!]{0,50}\baf\b|\buitschrijv\w*|\buit ?te ?schrijven\b|"
    r"\bschrijf\w*\b[^.\n?!]{0,50}\buit\b|\bannul\w*|\bafzeg\w*|\bd[ée]sinscri\w*|\bcancel\w*|\bwithdraw\w*|"
    r"\bunregister\w*|\binschrijving\w*\b[^.\n?!]{0,40}\b(?:in ?trekken|intrekken|schrappen|verwijderen)\b|"
    r"\babsag\w*|\babmeld\w*|\bstreichen sie\b",
    re.IGNORECASE,
)
_SELF_EXCLUDED = re.compile(
    r"\b(?:zelf|ikzelf|moi-même|myself)\b[^.\n?!]{0,30}\b(?:niet|pas|not)\b|\b(?:niet|pas|not)\b[^.\n?!]{0,30}\b(?:zelf|moi-même|myself)\b",
    re.IGNORECASE,
)
_REPLACEMENT = re.compile(
    r"\bin (?:mijn|zijn|haar|de) plaats\b|\b(?:neemt|nemen|overnemen|neme)\b[^.\n]{0,30}\bplaats\b|\bvervang\w*|\bà ma place\b|\bremplac\w*|\binstead of me\b|\breplace\w*|\bin my place\b",
    re.IGNORECASE,
)

# --- classifiers (order matters) ------------------------------------------------------------------


def delivery_failure(ctx: Context) -> Decision | None:
    """A delivery report (RFC 3464 or an MTA's own wording) with permanent failures."""
    finding = ctx.bounce
    if finding is None or not finding.permanent:
        if finding is not None and finding.how == "rapport zonder adres" and (
                is_machine_sender(ctx.record.sender) or ctx.record.report_type == "delivery-status"):
            return Decision("bounce", "Afleveringsrapport zonder herkenbaar adres", False,
                            review=("Onbestelbaarheidsbericht waarin geen mislukt adres te vinden was",))
        return None
    return Decision("bounce", f"Onbestelbaar bericht ({finding.how})", False, finding.permanent)


def delivery_delay(ctx: Context) -> Decision | None:
    """A delay warning: a delivery report (kind 'bounce') in which nothing failed for good yet, so
    without bounced recipients; a success notice is a machine's auto-reply."""
    finding = ctx.bounce
    if finding is not None and not finding.permanent:
        if _DELAYED.search(" ".join(f.get("action", "") for f in ctx.record.delivery_status)) or \
                _DELAY_SUBJECT.search(ctx.record.subject or ""):
            return Decision("bounce", "Vertragingsbericht van een mailserver (nog geen definitieve fout)", False)
        return Decision("auto_reply", "Afleveringsbericht van een mailserver (geen definitieve fout)", False)
    if ctx.record.report_type == "delivery-status":
        return Decision("auto_reply", "Afleveringsbericht van een mailserver", False)
    return None


_DELAYED = re.compile(r"(?i)\bdelayed\b")
_DELAY_SUBJECT = re.compile(r"(?i)\bdelay(?:ed)?\b|\bvertraag|\bverzögert|\bretard")


def calendar_invitation(ctx: Context) -> Decision | None:
    """A meeting request (text/calendar METHOD:REQUEST): a person invites the team; not a signup."""
    for att in ctx.record.attachments:
        if att.content_type == "text/calendar" and re.search(rb"(?im)^METHOD:\s*REQUEST", att.data[:20000]):
            return Decision("other", "Agenda-uitnodiging (vergaderverzoek), geen in- of afmelding", False)
    return None


def feedback_report(ctx: Context) -> Decision | None:
    """An abuse or feedback report (RFC 5965, ARF): a provider's complaint about a mail, never a wish of
    the person whose mail it quotes."""
    rec = ctx.record
    if rec.report_type == "feedback-report" or any(
            a.content_type == "message/feedback-report" for a in rec.attachments):
        return Decision("other", "Klachtrapport van een provider (ARF, message/feedback-report)", False)
    return None


def from_ourselves(ctx: Context) -> Decision | None:
    """Mail sent from one of our own addresses (a loop, a copy of our reply)."""
    if is_own_address(ctx.record.sender, ctx.options.own_addresses):
        auto = _auto_headers(ctx.record)
        return Decision("auto_reply" if auto else "other", "Afzender is ons eigen adres", False)
    return None


def _auto_headers(record: MailRecord) -> str | None:
    auto = (record.header("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autogenerated", "x-auto-reply",
                 "x-ms-exchange-generated-message-source"):
        if record.has_header(name):
            value = record.header(name) or ""
            if name == "x-ms-exchange-generated-message-source" and "mailbox rules" not in value.lower() \
                    and "oof" not in value.lower() and "autoreply" not in value.lower().replace(" ", ""):
                continue
            return f"{name}: {value}".strip()
    if (record.header("x-autoreply-from") or record.header("x-mail-autoreply") or
            record.header("x-mailer-autoreply") or record.header("x-zimbra-autoreply")):
        return "autoreply-kop"
    return None


def auto_submitted(ctx: Context) -> Decision | None:
    """RFC 3834 Auto-Submitted and the vendors' own autoreply headers."""
    why = _auto_headers(ctx.record)
    if why:
        return Decision("auto_reply", f"Automatisch verzonden bericht ({why})", False)
    return None


def read_receipt(ctx: Context) -> Decision | None:
    """Read and delivery receipts (RFC 8098 and the clients' own)."""
    rec = ctx.record
    if rec.report_type == "disposition-notification" or rec.content_type == "message/disposition-notification":
        return Decision("auto_reply", "Leesbevestiging", False)
    if _RECEIPT_SUBJECT.match(rec.subject) and len(ctx.body.own.text) < 600:
        return Decision("auto_reply", "Lees- of ontvangstbevestiging (onderwerp)", False)
    return None


def mailing_list(ctx: Context) -> Decision | None:
    """List and newsletter mail is never a signup."""
    rec = ctx.record
    if rec.has_header("list-id") or rec.has_header("list-unsubscribe") or rec.has_header("list-post"):
        return Decision("other", "Bericht van een mailinglijst of nieuwsbrief (List-*-koppen)", False)
    prec = (rec.header("precedence") or "").strip().lower()
    if prec == "list":
        return Decision("other", "Bericht van een mailinglijst (Precedence: list)", False)
    return None


def precedence_bulk(ctx: Context) -> Decision | None:
    prec = (ctx.record.header("precedence") or "").strip().lower()
    if prec in ("bulk", "junk", "auto_reply", "auto-reply"):
        if _NEWSLETTER.search(ctx.record.text[:20000]):
            return Decision("other", f"Massamail of nieuwsbrief (Precedence: {prec})", False)
        return Decision("auto_reply", f"Automatisch bericht (Precedence: {prec})", False)
    return None


def robot_sender(ctx: Context) -> Decision | None:
    """A null return path or a robot address (mailer-daemon, postmaster, noreply)."""
    rec = ctx.record
    rp = rec.header("return-path")
    if rp is not None and rp.strip() in ("<>", ""):
        return Decision("auto_reply", "Lege afzender (Return-Path: <>): een machine", False)
    if rec.sender is None or is_machine_sender(rec.sender):
        if rec.sender is None and (ctx.intent_text.strip() or rec.text.strip()):
            return None  # a human mail with a broken From: read it, the review flags the sender
        local = rec.sender.split("@", 1)[0]
        if re.match(r"(?i)^(?:no-?reply|do-?not-?reply|donotreply|noreply[-+.].*|notifications?)$", local) and \
                not rec.in_reply_to and not is_reply_subject(rec.subject) and not _OOO_BODY.search(ctx.body.own.text):
            # A no-reply address that answers nothing sends notices, mailings or phishing: no person to
            # answer, but something for a person to read.
            return Decision("other", f"Bericht van een no-reply-adres ({rec.sender}), geen antwoord op iets", False)
        return Decision("auto_reply", f"Afzender is een machine ({rec.sender or 'geen adres'})", False)
    return None


def out_of_office_subject(ctx: Context) -> Decision | None:
    subject = ctx.record.subject
    if _AUTO_SUBJECT.match(subject) or _AUTO_SUBJECT_ANYWHERE.search(subject):
        return Decision("auto_reply", f"Afwezigheidsmelding (onderwerp: {subject[:80]})", False)
    return None


def out_of_office_body(ctx: Context) -> Decision | None:
    own = ctx.body.own.text
    text = own + "\n" + ctx.body.own.signature[:400]
    if len(own) > 1500:
        return None
    m = _OOO_BODY.search(text)
    if not m:
        return None
    # "ik ben afwezig op de derde sessie, maar schrijf me in" is a person, not a robot.
    if _REG_STRONG.search(own) and not re.search(r"(?i)automati|auto-?reply|out of office", text):
        if not re.search(r"(?i)\b(?:afwezig|absent|out of (?:the )?office)\b[^.\n]{0,30}\b(?:tot|until|jusqu)", text):
            return None
    if _CANCEL.search(own) and re.search(r"(?i)sessie|session|leernetwerk|inschrijving", own) and \
            not re.search(r"(?i)automati", text):
        return None
    return Decision("auto_reply", "Afwezigheidsmelding zonder automatische koppen (tekst)", False)


def x_auto_response_suppress(ctx: Context) -> Decision | None:
    """Exchange marks its own automatic replies so; on a reply without sign-up words it is a machine."""
    rec = ctx.record
    value = (rec.header("x-auto-response-suppress") or "").lower()
    if value and (rec.in_reply_to or is_reply_subject(rec.subject)) and ("all" in value or "oof" in value) \
            and not _REG_STRONG.search(ctx.intent_text) and not _CANCEL.search(ctx.intent_text):
        return Decision("auto_reply", "Automatisch antwoord van Exchange (X-Auto-Response-Suppress)", False)
    return None


def newsletter_body(ctx: Context) -> Decision | None:
    if _NEWSLETTER.search(ctx.record.text[:30000]) and not _looks_personal(ctx):
        return Decision("other", "Nieuwsbrief (afmeldlink in de tekst)", False)
    return None


def _looks_personal(ctx: Context) -> bool:
    own = ctx.body.own.text.lower()
    return bool(re.search(r"\b(?:ik|mij|mijn|je suis|je souhaite|je voudrais|i would|i'd|i am)\b", own[:600])) and len(own) < 1500


# Missing one session while saying the rest will be followed: an absence, and the seat is kept.
_KEEPS_SEAT = re.compile(
    r"\b(?:andere|overige|volgende|rest\w*|other|remaining|autres)\b[^.\n]{0,40}\b(?:blijf|volg|kom|ben ik|will|zal|je)\w*\b"
    r"[^.\n]{0,30}\b(?:wel|graag|volgen|aanwezig|attend|present|bijwonen|participer)\b|"
    r"\bblijf\w* (?:ik |we )?(?:wel )?(?:ingeschreven|volgen|deelnemen)\b|\bkeep my (?:seat|place|registration)\b",
    re.IGNORECASE)


def absence_for_one_session(ctx: Context) -> Decision | None:
    """Away for one session while staying registered: nothing to cancel, but the organisers want to know."""
    text = ctx.body.own.text
    if _CANCEL.search(text) and _KEEPS_SEAT.search(text) and not _CANCEL_EXPLICIT.search(text):
        return Decision("other", "Afwezig voor een sessie, maar blijft ingeschreven: geen afmelding",
                        review=("Afwezigheid voor een deel van de sessies; de inschrijving blijft",))
    return None


def cancellation(ctx: Context) -> Decision | None:
    text = ctx.intent_text
    m = _CANCEL.search(text)
    if not m:
        return None
    review: list[str] = []
    reg_any = _REG_STRONG.search(_without_questions(_CANCEL.sub(" ", text)))
    if reg_any and not _CANCEL_EXPLICIT.search(text) and (
            not _mentions_existing_registration(text) or _SELF_EXCLUDED.search(text)):
        # "Zelf kan ik niet deelnemen" beside a signup of colleagues: a registration.
        return None
    if _REPLACEMENT.search(text):
        review.append("Vervanging: iemand anders neemt de plaats in; controleer wie er ingeschreven moet worden")
    reg = _REG_STRONG.search(text)
    if reg and not _mentions_existing_registration(text):
        # Both wishes in one mail ("ik schrijf me in, maar sessie 3 kan ik niet"): a signup for part.
        if _PARTIAL.search(text) or re.search(r"(?i)\b(?:sessie|session|séance)\b", text[max(0, m.start() - 80):m.end() + 80]):
            return None
    if _PARTIAL.search(text) and not re.search(r"(?i)\b(?:alle|volledige|toutes|all)\b", text[m.start():m.end() + 60]):
        review.append("Afmelding voor slechts een deel van de sessies")
    return Decision("cancellation", f"Afmelding: \u201c{m.group(0).strip()}\u201d", review=tuple(review))


def _mentions_existing_registration(text: str) -> bool:
    return bool(re.search(r"(?i)\b(?:mijn|zijn|haar|onze|hun|my|his|her|mon|son|ma|sa)\s+(?:inschrijving|aanmelding|"
                          r"deelname|registration|inscription|participation)\b|\bingeschreven\b|\binscrit\w*|\bregistered\b",
                          text))


_INFO_QUESTION = re.compile(
    r"^\W*+(?:en |maar |of )?(?:hoe|wanneer|tot wanneer|vanaf wanneer|waar|wat|welke|waarom|wie|hoeveel|"
    r"how|when|where|what|which|why|who|comment|quand|où|quel\w*|pourquoi|combien|"
    r"moet|moeten|is het|is er|zijn er|kan men|mag men|must|is it|are there|do (?:i|we) need|faut-il|est-ce)\b",
    re.IGNORECASE)
_ASKER = re.compile(r"\b(?:mij|me|mezelf|ons|onze|mijn|m'|my|me|myself|us|our|nous|mes|mon|ma)\b|@", re.IGNORECASE)


def _without_questions(text: str) -> str:
    """The text without its questions: 'tot wanneer kan men zich inschrijven?' asks, it does not sign up.

    A question that is a request about the asker ('Mag ik mij inschrijven?', 'Could you register me?') stays.
    """
    def drop(sentence: str) -> str:
        if not _INFO_QUESTION.match(sentence) and _ASKER.search(sentence):
            return sentence
        return " "
    # Each '?' is found once and its sentence read backwards from it, at most 300 characters: a
    # pattern that tried every start position cost seconds on 100 KB without a '?' (issue 16).
    out, done = [], 0
    for mark in _QUESTION_MARK.finditer(text):
        end = mark.end()
        start = max(done, end - 1 - _QUESTION_SPAN)
        boundary = _SENTENCE_END.search(text[start:end - 1][::-1])
        if boundary:
            start = end - 1 - boundary.start()
        out.append(text[done:start])
        out.append(drop(text[start:end]))
        done = end
    out.append(text[done:])
    return "".join(out)


_QUESTION_MARK = re.compile(r"\?")
_QUESTION_SPAN = 300
# Read backwards: a '.', '!', '?' or line break ends the sentence before the question, except a dot
# inside a word ("lier.be", "o.a."), which in the reversed text has a word character before it.
_SENTENCE_END = re.compile(r"[!?\n]|\.(?<!\w\.)")


# A clause that declines or postpones a signup: a negation, doubt or waiting in the same clause.
_DECLINE = re.compile(
    r"\b(?:niet|geen|nog niet|not|pas|nicht|kein\w*|twijfel\w*|wacht\w*|overweeg\w*|doubt\w*|hesit\w*|h[ée]sit\w*|"
    r"wait\w*|attend[sz]? encore|later)\b", re.IGNORECASE)


def _without_declines(text: str) -> str:
    """The text without the clauses that decline or postpone a signup; "ik kan niet op 26/6, maar schrijf
    me in" keeps its second clause, because clauses end at punctuation."""
    # ("maar" alone is no boundary: in Dutch it is also a softening particle; ", maar" is.)
    clauses = re.split(r"[.!?;,:](?!\w)|\n", text[:20000])
    return "\n".join(c for c in clauses if not (_DECLINE.search(c) and _REG_STRONG.search(c)))


def registration(ctx: Context) -> Decision | None:
    text = ctx.intent_text
    m = _REG_STRONG.search(_without_declines(_without_questions(text)))
    form = _has_form(ctx)
    if not m and not form:
        return None
    own = ctx.body.own.text
    for seg in ctx.body.forwarded:
        own += "\n" + seg.text
    # A thank-you for the confirmation signs nobody up, unless a later sentence does.
    after_thanks = re.split(r"[.!?\n](?!\w)", own.strip(), maxsplit=1)[1:] or [""]
    if m and not form and _THANKS.match(own.strip()) and len(own) < 400 and not _REG_STRONG.search(
            _without_declines(_without_questions(after_thanks[0]))) and not re.search(
            r"(?i)\b(?:schrijf|wil|zou|graag|ook|inscrire|register|sign)\b[^.\n]{0,40}\b(?:in|deelnemen|aan|inscrire|up|register)\b",
            own):
        return None
    review: list[str] = []
    if _PARTIAL.search(text):
        review.append("Inschrijving voor slechts een deel van de sessies")
    # The questions that count are the writer's: a forwarded announcement's "Hoe vertaal je ...?" is not
    # (only when the writer adds nothing is the forwarded mail the one asking).
    asking = ctx.body.own.text if re.search(r"\w", ctx.body.own.text) else own
    own_q = re.sub(r"(?m)^.*\b(?:https?://|www\.)\S*.*$", "", asking)
    for question in _questions(own_q):
        # A request the confirmation answers anyway ("kunnen jullie dit bevestigen?") needs no organiser.
        if _REQUEST.match(question) or _HANDLED.search(question) or (
                _REG_STRONG.search(question) and not _INFO_QUESTION.match(question) and _ASKER.search(question)):
            continue
        review.append(f"Bevat ook een vraag: \u201c{question}\u201d")
        break
    why = f"\u201c{m.group(0).strip()[:60]}\u201d" if m else "inschrijvingsformulier"
    return Decision("registration", f"Inschrijving: {why}", review=tuple(review))


_REQUEST = re.compile(
    r"^(?:(?:en|maar|dus|ook)\s+)?(?:kunnen|kan|kunt|mogen|mag|wil|wilt|willen|zou|zouden)\s+(?:jullie|je|jij|u|de organisatoren)\b|"
    r"^(?:could|can|would|will)\s+(?:you|someone|somebody)\b|^(?:pourriez|pouvez|voudriez)[- ]vous\b|^(?:graag|gelieve)\b|"
    r"^(?:kan|kunnen|wil|zou)\s+(?:iemand|er iemand)\b",
    re.IGNORECASE)
_HANDLED = re.compile(
    r"\b(?:bevestig\w*|confirm\w*|ingeschreven|inscrit\w*|registered|eerste (?:twintig|20)|wachtlijst|waiting list|"
    r"plaats(?:je)? (?:vrij|over)|nog plaats|ontvangen|reçu|received)\b", re.IGNORECASE)


def _questions(text: str, limit: int = 50):
    """Each question sentence, in order (at most `limit`): each one is looked for in the 300 characters
    before its "?" only, so a mail of thousands of question marks stays linear."""
    for count, m in enumerate(re.finditer(r"\?", text)):
        if count >= limit:
            return
        yield _question_sentence(text, m.start())


def _question_sentence(text: str, idx: int) -> str:
    lo = max(0, idx - 300)
    # ";" ends a clause too: "...@stad.be>; wilt u ...?" must not start the question inside an address.
    start = max(text.rfind(". ", lo, idx), text.rfind("\n", lo, idx), text.rfind("!", lo, idx),
                text.rfind(";", lo, idx), text.rfind("?", lo, idx))
    start = start + 1 if start >= 0 else lo
    return re.sub(r"\s+", " ", text[start:idx + 1]).strip()[:160]


_FORM_LABEL = re.compile(
    r"(?im)^[ \t*•\-]*+(?:naam|voornaam|achternaam|familienaam|name|full name|first name|last name|nom|prénom|"
    r"e-?mail(?:adres)?|mail|courriel|adresse e-?mail)[ \t]*(?:\([^)]*\))?[ \t]*[:=\t]")


def _has_form(ctx: Context) -> bool:
    return len(_FORM_LABEL.findall(ctx.intent_text)) >= 2 or len(_FORM_LABEL.findall(ctx.attachment_text)) >= 2


def passed_on_to_someone_else(ctx: Context) -> Decision | None:
    """A mail to someone else with the desk only in Cc (a tip to a colleague, internal team mail):
    a signup only if the writer's own words sign someone up."""
    rec = ctx.record
    own = ctx.options.own_addresses
    if not own or any(a in own for _, a in rec.to) or not rec.to:
        return None
    words = _without_declines(_without_questions(ctx.body.own.text))
    if _REG_STRONG.search(re.sub(r"(?i)\b\d+\s+(?:inschrijvingen|registrations|inscriptions)\b", " ", words)) \
            or _CANCEL.search(ctx.body.own.text):
        return None
    return Decision("other", "Gericht aan iemand anders, de desk staat enkel in kopie; de schrijver schrijft "
                             "zelf niemand in of uit")


def reply_to_our_mail(ctx: Context) -> Decision | None:
    """A reply to one of our mails without a new wish: thanks, questions; organisers read it."""
    if ctx.is_reply_to_us:
        return Decision("other", "Antwoord op een van onze berichten zonder nieuwe in- of afmelding")
    return None


def question(ctx: Context) -> Decision | None:
    if _QUESTION.search(ctx.body.own.text):
        return Decision("other", "Vraag of bericht zonder in- of afmelding")
    return None


def anything_else(ctx: Context) -> Decision | None:
    if not ctx.body.own.text.strip() and not ctx.body.forwarded:
        return Decision("other", "Leeg bericht")
    return Decision("other", "Geen in- of afmelding herkend")


CLASSIFIERS: list[Classifier] = [
    delivery_failure,
    delivery_delay,
    feedback_report,
    from_ourselves,
    calendar_invitation,
    auto_submitted,
    read_receipt,
    mailing_list,
    precedence_bulk,
    robot_sender,
    out_of_office_subject,
    x_auto_response_suppress,
    out_of_office_body,
    newsletter_body,
    passed_on_to_someone_else,
    absence_for_one_session,
    cancellation,
    registration,
    reply_to_our_mail,
    question,
    anything_else,
]


def classify(ctx: Context) -> Decision:
    for classifier in CLASSIFIERS:
        decision = classifier(ctx)
        if decision is not None:
            return decision
    return Decision("other", "Geen in- of afmelding herkend")


def build_context(record: MailRecord, body: Body, options: Options, attachment_text: str = "") -> Context:
    # A reply's subject is the subject of the mail answered ("Re: Bevestiging inschrijving"): no intent.
    parts = [] if is_reply_subject(record.subject) else [record.subject or ""]
    parts.append(body.own.text)
    for seg in body.forwarded:
        parts.append(seg.text)
    if attachment_text:
        parts.append(attachment_text)
    intent = "\n".join(parts)
    ctx = Context(record=record, body=body, options=options, intent_text=intent, attachment_text=attachment_text)
    ctx.bounce = find_bounce(record, options.own_addresses)
    domain = (options.own_message_id_domain or "").lower()
    if domain:
        ids = [record.in_reply_to or ""] + list(record.references)
        ctx.is_reply_to_us = any(i.lower().rstrip(">").endswith("@" + domain) for i in ids if i)
    return ctx
