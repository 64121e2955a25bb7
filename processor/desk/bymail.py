"""Decisions by mail (issue 19; issue 16's authority): organisers settle the digest's items and
send commands from Outlook; participants confirm a cancellation someone asked in their name.

Who may decide what:
- an organiser is an address in `[organisers] addresses` that is not the desk's own (the desk
  sends its digests and answers from its own address, so nothing from it is ever a decision),
  in a mail without Auto-Submitted; where the receiving server's Authentication-Results is
  trusted, a mail that fails DMARC decides nothing;
- a decision carries a token (desk/tokens.py) for exactly that action and item, not expired,
  not used before, for an item that is still open; a confirmation token is also bound to the
  one address that may send it (the organiser who asked, the participant concerned);
- a command written by hand only asks: the desk answers the organiser's own address with a
  summary and a confirmation link, and only that confirmation applies it.
Each decision runs the same `organiser.*_change` as the `leernetwerk` command, in the
transaction of the mail that carries it, with the token recorded as used in that transaction.
Refusals are answered only to an organiser; anyone else gets nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from urllib.parse import quote

from babel.dates import format_datetime

from processor.config import Settings
from processor.desk import organiser, registry, review, status, tokens
from processor.mail import compose
from processor.store.db import Store
from processor.understand.commands import Command, read_command_mail
from processor.understand.model import Participant

log = logging.getLogger(__name__)

# Refusals an organiser's address gets in a day at most (each counts in the daily reply log).
REFUSALS_PER_DAY = 5
ANSWER_KIND = "organiser_answer"
MAX_MAILTO = 2000        # Outlook opens mailto: links up to about this length

# What the answer says a decision did, per event-log action.
DONE = {
    "confirmed": "ingeschreven, bevestigd", "waitlisted": "ingeschreven, op de wachtlijst",
    "already_registered": "was al ingeschreven", "cancelled": "uitgeschreven",
    "promoted": "van de wachtlijst naar bevestigd", "substitute": "neemt de plaats over",
    "resolved": "mail afgehandeld", "retry": "mail wordt opnieuw verwerkt",
    "announced": "bericht verstuurd", "registration_closed": "inschrijvingen gesloten, geen plaats",
    "no_promotion": "plaats vrij, maar doorschuiven is gesloten",
}
MAIL_NAMES = {
    "confirmation": "bevestiging", "waitlist": "wachtlijst", "already_registered": "al ingeschreven",
    "registration_closed": "inschrijving gesloten", "cancelled": "uitschrijving",
    "promoted": "plaats vrijgekomen", "substitute": "vervanging", "not_registered": "niet ingeschreven",
    "announcement": "bericht", "confirm_request": "vraag om bevestiging",
}
# Per digest item: the decisions offered, as (action, label) in the order shown.
REVIEW_DECISIONS = (("registration", "Inschrijven"), ("cancellation", "Afmelding"),
                    ("nothing", "Niets doen"))
# What each action decides about: a mail (m), a registration (r), a request (c).
ITEM_KINDS = {"registration": "m", "cancellation": "m", "nothing": "m", "retry": "m",
              "unsubscribe": "r", "confirm": "c"}
ACTION_LABELS = {"registration": "Inschrijven", "cancellation": "Afmelding",
                 "nothing": "Niets doen", "retry": "Opnieuw proberen",
                 "unsubscribe": "Uitschrijven", "confirm": "Bevestigen"}


# -- who is who ------------------------------------------------------------------------------------

def desk_addresses(settings: Settings) -> frozenset[str]:
    return frozenset(a for a in (settings.mailbox.address, settings.smtp.from_address) if a)


def organiser_addresses(settings: Settings) -> frozenset[str]:
    """The allow-list, without the desk's own address (its mail is never a decision)."""
    return frozenset(settings.organisers) - desk_addresses(settings)


def secret(settings: Settings) -> bytes | None:
    if not settings.organiser_mail.enabled:
        return None
    return settings.organiser_mail.secret()


# -- links -----------------------------------------------------------------------------------------

def mailto(settings: Settings, subject: str, body: str) -> str:
    """A mailto: link to the desk (RFC 6068): every reserved character percent-encoded."""
    return (f"mailto:{settings.mailbox.address}?subject={quote(subject, safe='')}"
            f"&body={quote(body, safe='')}")


def decision_link(settings: Settings, key: bytes, action: str, item: str, what: str,
                  expires: dt.datetime, target: str = "") -> dict:
    token = tokens.make(key, action, item, expires, target).text
    label = ACTION_LABELS[action]
    subject = f"{label}: {what} [{token}]"
    body = (f"Beslissing: {label} ({what}).\nCode: {token}\n\n"
            "Verstuur deze mail zonder iets te wijzigen; de inschrijvingsdesk antwoordt u.\n")
    return {"action": action, "label": label, "token": token,
            "href": mailto(settings, subject, body)}


def digest_links(settings: Settings, attention: dict, now: dt.datetime,
                 key: bytes | None = None) -> dict:
    """Attach to each open item of the digest its links (HTML buttons, plain lines). Without a
    token secret (or with decisions by mail turned off) the digest has no links."""
    key = key or secret(settings)
    if key is None:
        return attention
    expires = now + dt.timedelta(days=settings.organiser_mail.link_days)
    for row in attention["review"]:
        row["links"] = [decision_link(settings, key, action, f"m{row['id']}",
                                      f"mail {row['id']}", expires)
                        for action, _ in REVIEW_DECISIONS]
    for row in attention["quarantined"]:
        row["links"] = [decision_link(settings, key, "retry", f"m{row['id']}",
                                      f"mail {row['id']}", expires)]
    for row in attention["bounced"]:
        if row.get("registration_id") and row.get("command"):
            row["links"] = [decision_link(settings, key, "unsubscribe",
                                          f"r{row['registration_id']}",
                                          f"{row['person']['email']} (adres werkt niet)",
                                          expires)]
    return attention


def _when(settings: Settings, moment: dt.datetime) -> str:
    return format_datetime(moment.astimezone(settings.event.timezone), "d MMMM y 'om' HH:mm",
                           locale="nl_BE")


# -- the pipeline step -----------------------------------------------------------------------------

def decide(w) -> bool:
    """Pipeline step (w: pipeline.Work): a decision mail is handled here and never read as a
    signup; any other mail goes on to the next step."""
    settings, reading = w.settings, w.reading
    sender = reading.sender
    raw = w.message["raw"]
    if not settings.organiser_mail.enabled or not sender or not raw:
        return False
    from_organiser = sender in organiser_addresses(settings)
    if not from_organiser and b"LN-" not in raw and b"ln-" not in raw.lower():
        return False  # the common case: no parse twice
    if sender in desk_addresses(settings):
        return False  # our own digest or answer, come back to us: never input
    if not from_organiser and reading.kind in ("bounce", "auto_reply"):
        # A bounce or an out-of-office quoting a participant's link. (An organiser's own mail
        # is judged by its headers below: a decision about an "onbestelbaar" address may read
        # like a bounce to the classifiers.)
        return False
    mail = read_command_mail(raw)
    if mail.automatic or _is_ours(settings, mail.message_id):
        return False
    if not from_organiser:
        if not mail.tokens:
            return False
        _participant_confirms(w, mail.tokens)
        return True
    if not mail.tokens and mail.command is None:
        return False  # a colleague writing to the team's mailbox: as before, not a decision
    key = secret(settings)
    if key is None:
        _answer(w, refused="de sleutel voor beslissingen per mail is niet ingesteld op de "
                "server (token_secret_env); vraag het aan de IT-collega", subject="Niet uitgevoerd")
        return True
    if reading.authentication == "fail":
        _answer(w, refused="de mailserver kon niet bevestigen dat deze mail echt van u komt "
                "(DMARC faalt). Stuur ze opnieuw vanuit uw eigen mailbox.",
                subject="Niet uitgevoerd")
        return True
    if len(mail.tokens) > 1:
        _answer(w, refused="de mail bevat meer dan één beslissing; klik op één link per mail.",
                subject="Niet uitgevoerd")
        return True
    if mail.tokens:
        _organiser_decides(w, key, mail.tokens[0])
    else:
        _organiser_asks(w, key, mail.command)
    return True


def _is_ours(settings: Settings, message_id: str | None) -> bool:
    domain = settings.smtp.message_id_domain.lower()
    return bool(message_id and domain and message_id.lower().rstrip(">").endswith("@" + domain))


def actor_of(address: str) -> str:
    return f"organiser:{address}"


def _by_whom(actor: str | None) -> str:
    if not actor:
        return "iemand"
    kind, _, who = actor.partition(":")
    if kind == "organiser":
        return who or "een organisator"
    if kind == "participant":
        return f"de deelnemer zelf ({who})"
    return "de inschrijvingsdesk zelf"


def _settled_text(settings: Settings, store: Store, token: tokens.Token) -> str | None:
    """None while the item is open; else who settled it and how, in Dutch."""
    kind, number = token.item[0], int(token.item[1:])
    if kind == "m":
        message = store.message(number)
        if message is None:
            return "deze mail bestaat niet (meer)"
        if token.action == "retry" and message["state"] == "quarantined":
            return None
        if token.action != "retry" and message["state"] in ("review", "quarantined"):
            return None
        last = store.last_settlement(number)
        if last is None:
            return f"mail {number} is al afgehandeld"
        at = _when(settings, dt.datetime.fromisoformat(last["at"]))
        return f"mail {number} werd al afgehandeld door {_by_whom(last['actor'])} op {at} " \
               f"({DONE.get(last['action'], last['action'])})"
    if kind == "r":
        row = store.registration(number)
        if row is None:
            return "deze inschrijving bestaat niet (meer)"
        if row["status"] != "cancelled":
            return None
        last = store.conn.execute(
            "SELECT at, actor FROM events WHERE registration_id = ? AND action = 'cancelled'"
            " ORDER BY id DESC LIMIT 1", (number,)).fetchone()
        who = f" door {_by_whom(last['actor'])} op " \
              f"{_when(settings, dt.datetime.fromisoformat(last['at']))}" if last else ""
        return f"{row['email']} werd al uitgeschreven{who}"
    if kind == "c":
        req = store.request(number)
        if req is None:
            return "dit verzoek bestaat niet (meer)"
        if req["settled_at"] is None:
            return None
        return f"dit verzoek werd al afgehandeld door {_by_whom(req['settled_by'])} op " \
               f"{_when(settings, dt.datetime.fromisoformat(req['settled_at']))}"
    return "onbekend onderdeel"


def _check(w, key: bytes, text: str, sender: str) -> tuple[tokens.Token | None, str | None]:
    """The token if it may be used now by this sender, else why not (in Dutch)."""
    token = tokens.parse(text)
    if token is None or token.item[0] != ITEM_KINDS[token.action]:
        return None, "de code in de mail is niet geldig"
    target = ""
    if token.item.startswith("c"):
        req = w.store.request(int(token.item[1:]))
        if req is None or token.action != "confirm":
            return None, "de code in de mail is niet geldig"
        target = req["email"]
    elif token.action == "confirm":
        return None, "de code in de mail is niet geldig"
    verdict = tokens.verify(key, token, w.now, target)
    if verdict == "invalid" or (target and target != sender):
        return None, "de code in de mail is niet geldig (gewijzigd, of voor iemand anders)"
    if verdict == "expired":
        return None, f"de link is verlopen op {_when(w.settings, token.expires)}; gebruik die " \
                     "in het jongste dagoverzicht"
    used = w.store.token_use(token.mac)
    if used is not None:
        return None, f"deze link werd al gebruikt door {used['used_by']} op " \
                     f"{_when(w.settings, dt.datetime.fromisoformat(used['used_at']))} " \
                     f"({used['outcome']})"
    settled = _settled_text(w.settings, w.store, token)
    if settled:
        return None, settled
    return token, None


def _organiser_decides(w, key: bytes, text: str) -> None:
    sender = w.reading.sender
    token, refusal = _check(w, key, text, sender)
    if token is None:
        w.log("decision_refused", f"decision by mail from {sender} refused: {refusal}")
        _answer(w, refused=refusal, subject="Niet uitgevoerd")
        return
    actor = actor_of(sender)
    number = int(token.item[1:])
    attachment = None
    try:
        if token.action in ("registration", "cancellation", "nothing"):
            change = organiser.resolve_change(w.store, w.settings, message_id=number,
                                              as_kind=token.action, person=None, now=w.now,
                                              actor=actor)
            what = f"mail {number} afgehandeld als {ACTION_LABELS[token.action].lower()}"
        elif token.action == "retry":
            change = organiser.retry_change(w.store, message_id=number, now=w.now, actor=actor)
            what = f"mail {number} wordt bij de volgende ronde opnieuw verwerkt"
        elif token.action == "unsubscribe":
            email = w.store.registration(number)["email"]
            change = organiser.cancel_change(w.store, w.settings, email=email,
                                             reason="onbestelbaar adres (beslist per mail)",
                                             now=w.now, actor=actor)
            what = f"{email} uitgeschreven (onbestelbaar adres)"
        else:  # confirm: a command this organiser asked for
            change, what, attachment = _command_change(w, w.store.request(number), actor)
        result = organiser.act_within(w.store, change)
    except organiser.OrganiserError as exc:
        w.log("decision_refused", f"decision by mail from {sender} refused: {exc}")
        _answer(w, refused=f"het kon niet uitgevoerd worden ({exc})", subject="Niet uitgevoerd")
        return
    if token.item.startswith("c"):
        w.store.settle_request(number, by=actor, outcome="confirmed", now=w.now)
    w.store.use_token(mac=token.mac, action=token.action, item=token.item, by=sender,
                      message=w.message["id"], outcome=what, now=w.now)
    w.store.log(now=w.now, actor=actor, action="decided_by_mail", email=sender,
                message=w.message["id"], reason=f"{token.action} {token.item} by mail: {what}")
    _answer(w, summary=what, result=result, subject="Uitgevoerd", attachment=attachment)


# -- commands written by hand ---------------------------------------------------------------------

def _summary(settings: Settings, store: Store, command: Command) -> str:
    if command.verb == "register":
        who = f"{command.name or '(geen naam)'} <{command.email}>" + (
            f", {command.organisation}" if command.organisation else "")
        return (f"{who} inschrijven, nu aangekomen: een plaats als er een vrij is, anders de "
                "wachtlijst; de deelnemer krijgt de gewone bevestiging")
    if command.verb == "cancel":
        row = store.live_registration(command.email)
        state = {"confirmed": "bevestigd", "waitlisted": "op de wachtlijst"}.get(
            row["status"], row["status"]) if row else "?"
        freed = " De eerste op de wachtlijst krijgt de plaats." if row and \
            row["status"] == "confirmed" else ""
        return f"{command.email} (nu {state}) uitschrijven; die krijgt een bevestiging.{freed}"
    if command.verb == "announce":
        count = len(store.confirmed_participants())
        return (f"dit bericht over sessie {command.session} sturen aan alle {count} bevestigde "
                f"deelnemers:\n\n{command.text}")
    return command.line


def _precheck(settings: Settings, store: Store, command: Command) -> str | None:
    """Why a command cannot be done, before a confirmation is even asked."""
    if command.verb == "register":
        row = store.live_registration(command.email)
        if row is not None:
            return f"{command.email} is al ingeschreven ({row['status']})"
    if command.verb == "cancel" and store.live_registration(command.email) is None:
        return f"{command.email} heeft geen lopende inschrijving"
    if command.verb == "announce":
        if not any(s.number == command.session for s in settings.event.sessions):
            return f"er is geen sessie {command.session}"
        if not (command.text or "").strip():
            return "het bericht is leeg"
    return None


def _organiser_asks(w, key: bytes, command: Command) -> None:
    sender = w.reading.sender
    if command.verb == "overview":
        # Nothing changes and the list goes only to this allow-listed address, exactly where
        # a confirmation link would go: answered at once.
        csv_bytes = ("\ufeff" + status.export_csv(w.store, w.settings)).encode("utf-8")
        regs = status.registry_status(w.store, w.settings)["registrations"]
        counts = {s: sum(1 for r in regs if r["status"] == s)
                  for s in ("confirmed", "waitlisted", "cancelled")}
        lines = [f"{r['name'] or '(geen naam)'} <{r['email']}>"
                 + (f", {r['organisation']}" if r["organisation"] else "")
                 + (f" — wachtlijst {r['position']}" if r["status"] == "waitlisted" else "")
                 for r in regs if r["status"] != "cancelled"]
        w.store.log(now=w.now, actor=actor_of(sender), action="overview_sent", email=sender,
                    message=w.message["id"], reason=f"the registry list mailed to {sender}")
        _answer(w, subject="Overzicht",
                summary=f"{counts['confirmed']} bevestigd, {counts['waitlisted']} op de "
                        f"wachtlijst, {counts['cancelled']} geannuleerd",
                done=[compose.clean(x) for x in lines], mailed=[],
                attachment="de volledige lijst als CSV (inschrijvingen.csv)",
                files=[("inschrijvingen.csv", "text", "csv", csv_bytes)])
        return
    problem = _precheck(w.settings, w.store, command)
    if problem:
        w.log("command_refused", f"command by mail from {sender} refused: {problem}")
        _answer(w, refused=problem, subject="Niet uitgevoerd")
        return
    expires = w.now + dt.timedelta(days=w.settings.organiser_mail.confirm_days)
    summary = _summary(w.settings, w.store, command)
    request_id = w.store.add_request(
        kind="command", email=sender, message=w.message["id"], registration_id=None,
        payload=dataclasses.asdict(command), summary=summary, now=w.now, expires=expires)
    link = decision_link(w.settings, key, "confirm", f"c{request_id}",
                         f"verzoek {request_id}", expires, target=sender)
    w.store.log(now=w.now, actor=actor_of(sender), action="command_asked", email=sender,
                message=w.message["id"],
                reason=f"command by mail ({command.verb}) waits for {sender}'s confirmation "
                       f"(request {request_id})")
    _answer(w, subject="Bevestig uw opdracht", summary=summary, command=command.line,
            confirm_link=link["href"], token=link["token"],
            expires=_when(w.settings, tokens.parse(link["token"]).expires))


def _command_change(w, req, actor: str):
    """The confirmed command as an organiser.*_change, what it does, and any attachment."""
    if req["kind"] != "command":
        raise organiser.OrganiserError("not a command")
    cmd = Command(**json.loads(req["payload"]))
    if cmd.verb == "register":
        change = organiser.register_change(w.store, w.settings, name=cmd.name, email=cmd.email,
                                           organisation=cmd.organisation, now=w.now, actor=actor)
        return change, f"{cmd.email} ingeschreven (opdracht per mail)", None
    if cmd.verb == "cancel":
        change = organiser.cancel_change(w.store, w.settings, email=cmd.email,
                                         reason="afgemeld per mail door een organisator",
                                         now=w.now, actor=actor)
        return change, f"{cmd.email} uitgeschreven (opdracht per mail)", None
    if cmd.verb == "announce":
        change = organiser.announce_change(w.store, w.settings, session=cmd.session,
                                           text=cmd.text or "", now=w.now, actor=actor)
        return change, f"bericht over sessie {cmd.session} verstuurd", None
    raise organiser.OrganiserError(f"unknown command {cmd.verb}")


# -- participants confirm (issue 16) ---------------------------------------------------------------

def ask_participant(w, kind: str, row, substitute: Participant | None = None) -> bool:
    """A cancellation or substitution our mail server could not tie to its sender: it takes
    effect only when the participant confirms from their own registered address (or an
    organiser settles the mail). False when no confirmation can be asked (no token secret):
    then the mail simply waits for an organiser."""
    key = secret(w.settings)
    if key is None:
        return False
    expires = w.now + dt.timedelta(days=w.settings.organiser_mail.confirm_days)
    email = row["email"]
    waiting = w.store.open_request_for_registration(row["id"], kind, w.now)
    summary = (f"{email} replaced by {substitute.email}" if substitute
               else f"cancel {email}")
    payload = {"substitute": substitute.as_dict() if substitute else None}
    request_id = w.store.add_request(kind=kind, email=email, message=w.message["id"],
                                     registration_id=row["id"], payload=payload,
                                     summary=summary, now=w.now, expires=expires)
    if waiting is not None and waiting["payload"] == json.dumps(payload, ensure_ascii=False):
        # One question at a time: a stranger repeating a forged request does not make us write
        # to the participant again; their answer to the first settles this mail too.
        w.store.log(now=w.now, action="confirmation_pending", email=email,
                    registration_id=row["id"], message=w.message["id"],
                    reason=f"{kind} for {email} asked again by {w.reading.sender}; request "
                           f"{waiting['id']} already waits for their confirmation: not asked twice")
        w.outcome.review("waits for the participant's confirmation")
        return True
    token = tokens.make(key, "confirm", f"c{request_id}", expires, target=email).text
    label = "Bevestiging vervanging" if substitute else "Bevestiging afmelding"
    link = mailto(w.settings, f"{label} [{token}]",
                  f"Ik bevestig: {'mijn plaats doorgeven' if substitute else 'schrijf mij uit'}."
                  f"\nCode: {token}\n")
    origin = dataclasses.replace(registry.origin_of(w.message, w.reading), in_reply_to=None,
                                 references=())
    registry.queue_reply(
        w.store, w.settings, "confirm_request",
        person={"name": row["name"], "email": email, "organisation": row["organisation"]},
        origin=origin, registration_id=row["id"], now=w.now, copy_sender=False,
        extra={"requested_by": w.reading.sender or "een onbekende afzender",
               "substitute": (substitute.name or substitute.email) if substitute else None,
               "link": link, "token": token, "expires": _when(w.settings, expires)})
    w.outcome.replies += 1
    w.store.log(now=w.now, action="confirmation_asked", email=email, registration_id=row["id"],
                message=w.message["id"],
                reason=f"{'substitution' if substitute else 'cancellation'} for {email} asked "
                       f"by {w.reading.sender} without a trusted sender verdict: it waits for "
                       f"{email} to confirm by mail (request {request_id}) or for an organiser")
    w.outcome.review("waits for the participant's confirmation")
    return True


def _participant_confirms(w, texts: tuple[str, ...]) -> None:
    """A confirmation from a participant. Whatever is wrong, nobody is answered: the sender is
    not an organiser, and a refusal would be a mail to whoever forged the From."""
    sender = w.reading.sender
    key = secret(w.settings)

    def refuse(why: str) -> None:
        w.log("token_refused", f"a mail with a decision code from {sender}, who is not an "
              f"organiser: {why}; nothing done, not answered")

    claimed = tokens.parse(texts[0]) if len(texts) == 1 else None
    if key is None or claimed is None or claimed.action != "confirm" \
            or not claimed.item.startswith("c"):
        return refuse("no participant's confirmation code")
    if w.reading.authentication == "fail":
        return refuse("sender authentication (DMARC) failed")
    token, why = _check(w, key, texts[0], sender)
    if token is None:
        return refuse(why)
    req = w.store.request(int(token.item[1:]))
    if req["kind"] not in ("cancel", "substitute"):
        return refuse("not a participant's confirmation")
    row = w.store.registration(req["registration_id"])
    if row is None or row["status"] == "cancelled" or row["email"] != sender:
        return refuse("the registration is no longer live")
    source = w.store.message(req["message"])
    reading = review.stored_reading(source["reading"])
    origin = dataclasses.replace(registry.origin_of(source, reading), actor=registry.WORKER)
    if req["kind"] == "substitute":
        newcomer = Participant(**json.loads(req["payload"])["substitute"])
        if not registry.substitute(w.store, w.settings, row, newcomer, origin, w.now, w.outcome):
            return refuse("the substitute can no longer take the place")
        what = f"{sender} replaced by {newcomer.email}, confirmed by {sender}"
    else:
        registry.cancel(w.store, w.settings, row, origin, w.now, w.outcome,
                        reason=f"cancellation asked by {reading.sender} in mail {source['id']}, "
                               f"confirmed by {sender} by mail")
        what = f"cancellation of {sender} confirmed by {sender}"
    w.store.use_token(mac=token.mac, action=token.action, item=token.item, by=sender,
                      message=w.message["id"], outcome=what, now=w.now)
    # The same request may have come in several mails (asked once): all of them are answered.
    same = [r for r in w.store.open_requests_of_registration(row["id"])
            if r["kind"] == req["kind"] and r["payload"] == req["payload"]]
    for r in same:
        w.store.settle_request(r["id"], by=f"participant:{sender}", outcome="confirmed",
                               now=w.now)
    for message_id in {r["message"] for r in same if r["message"]}:
        if w.store.message(message_id)["state"] == "review" \
                and not w.store.open_requests_for(message_id):
            w.store.set_message_state(message_id, "processed", w.now)
    w.store.log(now=w.now, action="confirmed_by_mail", email=sender, message=w.message["id"],
                registration_id=row["id"], reason=what)


# -- the answer ------------------------------------------------------------------------------------

def _mailed_lines(result: organiser.Result | None) -> list[str]:
    lines = []
    for m in (result.mails if result else []):
        to = ", ".join(json.loads(m["recipients"] or "[]"))
        lines.append(f"{MAIL_NAMES.get(m['kind'], m['kind'])} aan {compose.clean(to)}")
    return lines


def _answer(w, *, subject: str, refused: str | None = None, summary: str = "",
            result: organiser.Result | None = None, done: list[str] | None = None,
            mailed: list[str] | None = None, command: str = "", confirm_link: str | None = None,
            token: str = "", expires: str = "", attachment: str | None = None,
            files=()) -> None:
    """One short Dutch mail to the organiser who wrote; only ever to an allow-listed address."""
    sender = w.reading.sender
    if sender not in organiser_addresses(w.settings):
        return
    if done is None:
        done = [f"{DONE.get(e['action'], e['action'])}: {compose.clean(e['email'] or '-')}"
                for e in (result.events if result else []) if e["action"] in DONE]
    # Refusals answer mail anyone can forge in an organiser's name: at most a few a day, and
    # without the mail's own subject, which would carry a forger's text in the desk's name.
    if refused and w.store.replies_to_since(sender, w.now - dt.timedelta(days=1)) >= REFUSALS_PER_DAY:
        w.log("refusal_capped", f"refusal to {sender} not sent: {REFUSALS_PER_DAY} a day at most")
        return
    # The organiser's subject without its code: a reply to the answer is no second decision.
    echoed = "" if refused else \
        compose.clean(tokens.PATTERN.sub("", w.reading.subject or "")).strip(" []")[:120]
    answer = {"subject": f"{subject}: {echoed}" if echoed else subject,
              "refused": refused, "summary": summary, "done": done,
              "mailed": mailed if mailed is not None else _mailed_lines(result),
              "command": compose.clean(command), "confirm_link": confirm_link, "token": token,
              "expires": expires, "attachment": attachment}
    context = compose.event_context(w.settings, w.now) | {
        "person": {"name": w.reading.sender_name, "email": sender, "organisation": None},
        "answer": answer}
    rendered = compose.render(w.settings, ANSWER_KIND, context)
    msg = compose.build(w.settings, rendered, to=[(w.reading.sender_name, sender)],
                        in_reply_to=w.reading.message_id, references=w.reading.references[-10:],
                        now=w.now, attachments=list(files))
    outbox_id = w.store.queue_mail(
        kind=ANSWER_KIND, priority=registry.REPLY_PRIORITY, order_key=w.message["arrived_at"],
        sender=w.settings.smtp.from_address, recipients=[sender], message_id=msg["Message-ID"],
        raw=bytes(msg), registration_id=None, source_message=w.message["id"], now=w.now)
    if refused:
        w.store.log_replies([sender], outbox_id, w.now)
    w.outcome.replies += 1
