"""Find the people signed up or withdrawn in a mail, and what needs a human look: forms, tables, addresses, the writer."""
from __future__ import annotations

import re

from .classify import Context
from .model import Participant
from .people import (
    ADDRESS, _all_name_tokens_in, _case_for_run, clean_name, _COLLEAGUE_CUE, _COMPANY, domain_of,
    Extraction, fold, _FUNCTION, _generic_government, is_government_domain, is_webmail, _LABEL_LINE,
    _LABELS, name_from_address, name_from_signature, NAME_RUN, normalise_organisation, _NOT_SELF,
    _ORG_ANYWHERE, _ORG_HEAD, organisation_for_domain, organisation_from_signature,
    organisation_from_text, _PARTICLES, Person, same_person, _SELF, _SELF_CANCEL,
)
from .text import Segment


# --- forms --------------------------------------------------------------------------------------------


def _label_kind(label: str) -> str | None:
    label = re.sub(r"\s+", " ", label.strip().lower())
    label = re.sub(r"\s*\d+$", "", label)
    for kind, rx in _LABELS:
        if rx.match(label):
            return kind
    return None


def people_from_form(text: str) -> list[Person]:
    """Labelled fields; a repeated label starts the next person."""
    people: list[Person] = []
    current = Person(source="form")
    seen: set[str] = set()
    for raw_line in text.split("\n"):
        if len(people) >= MAX_CANDIDATES:
            break
        line = raw_line.strip()
        if not line:
            continue
        if re.match(r"(?i)^(?:deelnemer|participant|collega|persoon|person|attendee)\s*\d+\s*:?\s*$", line):
            if seen:
                people.append(current)
                current, seen = Person(source="form"), set()
            continue
        m = _LABEL_LINE.match(line)
        if not m:
            continue
        kind = _label_kind(m.group(1))
        if kind is None:
            continue
        value = m.group(2).strip().strip("_.").strip()
        if kind in seen and kind in ("name", "email", "first", "last"):
            people.append(current)
            current, seen = Person(source="form"), set()
        seen.add(kind)
        if not value:
            continue
        if kind == "email":
            found = ADDRESS.findall(value)
            if found:
                current.email = found[0].lower()
        elif kind == "name":
            found = ADDRESS.findall(value)
            if found and not current.email:
                current.email = found[0].lower()
            current.name = clean_name(ADDRESS.sub("", value).strip(" <>()"))
        elif kind == "first":
            current.first = clean_name(value) or value
        elif kind == "last":
            current.last = clean_name(value) or value
        elif kind == "organisation":
            current.organisation = normalise_organisation(value)
        elif kind == "department" and not current.organisation and _ORG_HEAD.match(value):
            current.organisation = normalise_organisation(value)
    if seen:
        people.append(current)
    return [p for p in people if p.full_name() or p.email]


def people_from_table(text: str) -> list[Person]:
    """Rows of a table (HTML rendered by inscriptis, tabs, pipes or semicolons) that carry an address."""
    people: list[Person] = []
    header: list[str] | None = None
    for line in text.split("\n"):
        if len(people) >= MAX_CANDIDATES:
            break
        if not line.strip():
            continue
        cells = [c.strip(" *") for c in re.split(r"\t+|\s*\|\s*|\s*;\s*|\s{2,}", line.strip()) if c.strip(" *|")]
        if len(cells) < 2:
            continue
        kinds = [_label_kind(c) for c in cells]
        if sum(k is not None for k in kinds) >= 2 and not ADDRESS.search(line):
            header = kinds
            continue
        addrs = ADDRESS.findall(line)
        if len(addrs) != 1:
            continue
        person = Person(source="table", email=addrs[0].lower())
        for i, cell in enumerate(cells):
            kind = header[i] if header and i < len(header) else None
            if ADDRESS.search(cell):
                continue
            if kind == "first":
                person.first = cell
            elif kind == "last":
                person.last = cell
            elif kind == "name":
                person.name = clean_name(cell)
            elif kind == "organisation":
                person.organisation = normalise_organisation(cell)
            elif kind in ("function", "department"):
                continue
            elif kind is None and header is None:
                if not person.name and NAME_RUN.fullmatch(_case_for_run(cell)) and not _ORG_HEAD.match(cell) \
                        and not _FUNCTION.search(cell):
                    person.name = clean_name(cell)
                elif not person.organisation and _ORG_HEAD.match(cell):
                    person.organisation = normalise_organisation(cell)
        if person.first or person.last:
            person.name = clean_name(" ".join(x for x in (person.first, person.last) if x))
        people.append(person)
    return people if (header is not None or len(people) >= 2) else []


# --- free text ----------------------------------------------------------------------------------------

_STOP_WORDS = {"ik", "graag", "hierbij", "mijn", "collega", "collega's", "en", "beste", "dag", "hallo", "goedemorgen",
               "goedemiddag", "bonjour", "hello", "hi", "dear", "geachte", "ook", "met", "naam", "email", "e-mail",
               "organisatie", "de", "het", "een", "wij", "we", "schrijf", "schrijven", "in", "voor", "leernetwerk",
               "sessie", "sessies", "inschrijving", "deelnemer", "deelnemers", "vriendelijke", "groeten", "sustainable",
               "development", "goals", "sdg", "sdgs", "vlaanderen", "vlaamse", "overheid", "stad", "gemeente",
               "provincie", "ocmw", "agentschap", "departement", "dienst", "afdeling", "team", "mevrouw", "meneer",
               "heer", "dhr", "mevr", "monsieur", "madame", "mme", "my", "colleague", "colleagues", "mes",
               "mon", "ma", "collègue", "collègues", "je", "nous", "inscription", "registration", "van", "aan",
               "bij", "op", "tel", "gsm", "mail", "adres", "telefoon", "functie", "alvast", "bedankt", "dank",
               "tot", "zijn", "haar", "hun", "onze", "also", "and", "et", "ou", "of", "or", "zowel", "als",
               "want", "omdat", "maar", "wel", "niet", "nog", "sowieso", "zelf", "samen", "volgende", "personen",
               "hij", "zij", "ze", "she", "he", "il", "elle", "is", "kan", "wil", "zou", "zal", "name"}


def _name_near(text_before: str, text_after: str) -> str | None:
    """A name right before an address ('Jan Peeters (jan@x)') or right after it ('jan@x (Jan Peeters)')."""
    after = re.match(r"^\s*+[>)\]]?\s*[\(\[]\s*([^()\[\]\n]{3,60})[\)\]]", text_after)
    if after:
        name = clean_name(after.group(1))
        if name and NAME_RUN.fullmatch(_case_for_run(name)) and not _ORG_HEAD.match(name):
            return name
    before = text_before[-90:]
    before = re.split(r"[.;!?\n]|\b(?:en|and|et)\b\s*(?=[a-z])|[,]\s*(?=[a-z])", before)[-1]
    before = re.sub(r"[\s:,(<\[–-]+$", "", before)
    runs = list(NAME_RUN.finditer(before))
    for m in reversed(runs):
        candidate = m.group(0)
        words = [w for w in candidate.split() if w.lower() not in _STOP_WORDS or w.lower() in _PARTICLES]
        # Drop leading stop words such as "Collega Jan Peeters".
        while words and words[0].lower() in _STOP_WORDS:
            words = words[1:]
        if len(words) >= 2 and len(before) - m.end() <= 6:
            cleaned = clean_name(" ".join(words))
            if cleaned and not _ORG_HEAD.match(cleaned):
                return cleaned
        break
    return None


MAX_ADDRESSES = 60  # far beyond any max_participants: the review flag fires long before
# People gathered from all sources together: every later step compares them, so their number
# bounds the work; a mail naming more goes to an organiser anyway (max_participants).
MAX_CANDIDATES = 100


def people_from_addresses(text: str, exclude: set[str]) -> list[Person]:
    people: list[Person] = []
    for count, m in enumerate(ADDRESS.finditer(text)):
        if count >= MAX_ADDRESSES:
            break
        addr = m.group(0).lower().rstrip(".")
        if addr in exclude or any(p.email == addr for p in people):
            continue
        # 'mailto:' duplicates and the address inside '[mailto:...]' of Outlook quotes.
        before = text[max(0, m.start() - 120):m.start()]
        if before.endswith(("mailto:", "[mailto:")):
            if addr in text[:m.start()].lower():
                continue
            # Outlook's 'Name<mailto:a@b>' with only the name shown: the address is the link's.
            before = re.sub(r"\s*[<\[]?mailto:$", "", before)
        after = text[m.end():m.end() + 80]
        name = _name_near(before, after)
        line_start = max(text.rfind("\n", 0, m.start()) + 1, m.start() - 200)
        line_end = text.find("\n", m.end(), m.end() + 200)
        line = text[line_start:line_end if line_end >= 0 else m.end() + 200]
        org = None
        for piece in re.split(r"\s*[,;|()–]\s*|\s+-\s+", ADDRESS.sub(" ", line)):
            piece = piece.strip(" .:<>[]")
            if piece and _ORG_HEAD.match(piece) and not _generic_government(piece):
                org = normalise_organisation(piece)
                break
        people.append(Person(name=name, email=addr, organisation=org, source="text"))
    return people


_NAMED_COLLEAGUE = re.compile(
    r"\b(?:collega(?:'s|s)?|medewerk(?:er|ster|ers)|mevrouw|mevr\.|de heer|dhr\.|meneer|coll[èe]gues?|"
    r"madame|monsieur|mme\.?|m\.|colleagues?|mr\.|mrs\.|ms\.)[\s:,]+"
    r"((?:" + NAME_RUN.pattern + r")(?:\s*(?:,|\ben\b|\band\b|\bet\b|&)\s*(?:" + NAME_RUN.pattern + r"))*)"
)


def people_named_without_address(text: str) -> list[Person]:
    """'mijn collega Els Janssens' and lists of names after such a word."""
    people: list[Person] = []
    text = text[:8000]
    for m in _NAMED_COLLEAGUE.finditer(text):
        if len(people) >= MAX_ADDRESSES:
            break
        tail = text[m.end():m.end() + 8]
        if re.match(r"\s*[(<\[]?\s*[\w.+-]+@", tail):
            continue  # the address follows: people_from_addresses reads it
        for piece in re.split(r"\s*(?:,|\ben\b|\band\b|\bet\b|&)\s*", m.group(1)):
            piece = piece.strip()
            words = [w for w in piece.split() if w.lower() not in _STOP_WORDS or w.lower() in _PARTICLES]
            name = clean_name(" ".join(words))
            if name and len(name.split()) >= 2 and not _ORG_HEAD.match(name):
                people.append(Person(name=name, source="named"))
    # Bulleted name lines ("- Els Janssens") under a registration.
    for line in text.split("\n"):
        if len(people) >= MAX_CANDIDATES:
            break
        m = re.match(r"^\s*+(?:[-•*·–]|\d+[.)])\s*(.+?)\s*$", line)
        if not m or ADDRESS.search(line):
            continue
        piece = re.split(r"\s*[,(–|]\s*|\s+-\s+", m.group(1))[0]
        if NAME_RUN.fullmatch(piece.strip()) and not _ORG_HEAD.match(piece) and not _FUNCTION.search(piece):
            name = clean_name(piece)
            if name and not any(same_person(name, p.name) for p in people):
                org_part = m.group(1)[len(piece):]
                people.append(Person(name=name, source="named",
                                     organisation=normalise_organisation(org_part) if _ORG_ANYWHERE.search(org_part) else None))
    return people


# --- the whole extraction ---------------------------------------------------------------------------------


def _author_person(seg: Segment, ctx: Context, display_name: str | None) -> Person:
    table = ctx.options.domain_organisations
    email = (seg.author_email or "").lower() or None
    name = clean_name(display_name) if display_name else None
    if name and email and fold(name).replace(" ", "") == fold(email.split("@")[0]).replace(".", ""):
        pass
    sig_name = name_from_signature(seg.signature) if seg.signature else None
    if not name or len(name.split()) < 2:
        if sig_name and (len(sig_name.split()) >= 2 or not name):
            name = sig_name
    if not name or len(name.split()) < 2:
        from_address = name_from_address(email)
        if from_address and (not name or same_person(name + " x", from_address + " x") or len(name.split()) < 2):
            name = from_address if not name or name.lower() in from_address.lower() else name
    org = organisation_from_signature(seg.signature) if seg.signature else None
    if not org:
        org = organisation_from_signature(seg.text[-600:], loose=False) if len(seg.text) < 3000 else None
    if not org:
        org = organisation_from_text(seg.text)
    if not org:
        org = organisation_for_domain(domain_of(email), table)
    return Person(name=name, email=email, organisation=org, source="author", is_author=True)


def _merge(people: list[Person]) -> list[Person]:
    """One person per address, and a name without an address joins the first one it matches.
    Addresses are looked up, not compared pairwise: thousands of them made this quadratic."""
    merged: list[Person] = []
    by_email: dict[str, int] = {}
    for p in people:
        found = by_email.get(p.email) if p.email else None
        # Only the first match counts, as in a scan from the top: names are tried up to it.
        for i, q in enumerate(merged[:found]):
            if (not p.email or not q.email) and same_person(p.full_name(), q.full_name()):
                found = i
                break
        if found is None:
            if p.email:
                by_email.setdefault(p.email, len(merged))
            merged.append(p)
            continue
        target = merged[found]
        if target.email is None and p.email:
            by_email.setdefault(p.email, found)
        target.email = target.email or p.email
        if not target.full_name() or (p.full_name() and len(p.full_name().split()) > len(target.full_name().split())
                                      and p.source in ("form", "table")):
            target.name = p.full_name()
        target.organisation = target.organisation or p.organisation
        target.is_author = target.is_author or p.is_author
    return merged


def extract(ctx: Context, kind: str) -> Extraction:
    rec = ctx.record
    table = ctx.options.domain_organisations
    review: list[str] = []
    own_addresses = {a.lower() for a in ctx.options.own_addresses}
    recipients = {a for _, a in rec.to}

    segments: list[tuple[Segment, str | None]] = []
    own = ctx.body.own
    own.author_email = rec.sender
    segments.append((own, rec.sender_name))
    for seg in ctx.body.forwarded:
        segments.append((seg, seg.author_name))

    # Which text carries the signup: the sender's own words, unless they only pass on a forwarded mail.
    main_seg, main_display = segments[0]
    intent_own = main_seg.text
    if ctx.body.forwarded:
        fwd = ctx.body.forwarded[0]
        own_has_people = bool(ADDRESS.search(intent_own)) or bool(_NAMED_COLLEAGUE.search(intent_own)) or \
            len(people_from_form(intent_own)) > 0
        own_has_self = bool(_SELF.search(intent_own))
        if not own_has_people and not own_has_self:
            main_seg, main_display = fwd, fwd.author_name
            if not main_seg.author_email:
                main_seg.author_email = None

    author = _author_person(main_seg, ctx, main_display)
    sender_person = author if main_seg is own else _author_person(own, ctx, rec.sender_name)
    text = main_seg.text
    full_text = text + ("\n" + ctx.attachment_text if ctx.attachment_text else "")
    if main_seg is not own:
        # The forwarder's note ("graag inschrijven") still counts for intent, but not for people.
        pass

    exclude = set(own_addresses) | recipients
    found: list[Person] = []
    found += people_from_form(full_text)
    if not found:
        found += people_from_table(full_text)
    form_emails = {p.email for p in found if p.email}
    for p in people_from_addresses(full_text, exclude | form_emails):
        if not any(p.email == q.email for q in found):
            found.append(p)
    named = people_named_without_address(text)
    for p in named:
        twin = next((q for q in found if same_person(p.name, q.full_name()) or
                     (q.email and not q.full_name() and _all_name_tokens_in(p.name, q.email))), None)
        if twin is not None:
            # "mijn collega's Bart Vos en Lien De Wolf ... bart.vos@x, lien.dewolf@x": one person each.
            twin.name = twin.full_name() or p.name
            twin.organisation = twin.organisation or p.organisation
        elif not same_person(p.name, author.name) and not (author.email and _all_name_tokens_in(p.name, author.email)):
            found.append(p)

    # Cc'd colleagues count only when the text points at them ("mijn collega in cc").
    if re.search(r"(?i)\b(?:in ?cc|in kopie|en copie|cc'd|copied|in bijlage cc)\b", text):
        known = {q.email for q in found if q.email}
        for name, addr in rec.cc:
            if len(found) >= MAX_CANDIDATES:
                break
            if addr not in exclude and addr not in known:
                known.add(addr)
                found.append(Person(name=clean_name(name) or name_from_address(addr), email=addr, source="cc"))

    # The author's own address in the text (a signature, "mijn adres is ...") is the author.
    if kind == "cancellation":
        self_cue = bool(_SELF_CANCEL.search(text))
    else:
        self_cue = bool(_SELF.search(text)) or bool(_SELF.search(ctx.record.subject or ""))
    not_self = bool(_NOT_SELF.search(text)) and not re.search(r"(?i)\b(?:en|and|et)\s+(?:mezelf|mijzelf|ikzelf|me|mij|myself|moi)\b|\bik ook\b|\b(?:mezelf|mijzelf|myself)\b", text)
    others: list[Person] = []
    for p in found:
        if p.email and author.email and is_webmail(author.email) and not is_webmail(p.email) and (
                same_person(p.full_name(), author.name) or _all_name_tokens_in(author.name, p.email)):
            # A private address with the work address given in the text: the work address counts.
            author.email = p.email
            author.organisation = p.organisation or organisation_for_domain(domain_of(p.email), table) or author.organisation
            self_cue = True
            continue
        if p.email and not author.email and (same_person(p.full_name(), author.name) or
                                             _all_name_tokens_in(author.name, p.email)):
            # An Outlook forward shows the author's display name only; the address is in the text.
            author.email = p.email
            author.organisation = author.organisation or p.organisation or \
                organisation_for_domain(domain_of(p.email), table)
            continue
        if p.email and author.email and p.email == author.email:
            author.name = author.name if (author.name and len(author.name.split()) >= 2) else (p.full_name() or author.name)
            author.organisation = p.organisation or author.organisation
            self_cue = True
            continue
        if not p.email and same_person(p.full_name(), author.name):
            author.organisation = p.organisation or author.organisation
            self_cue = True
            continue
        if p.source == "form" and not p.email and len(found) == 1 and not _COLLEAGUE_CUE.search(text):
            # A single form without an address describes the sender.
            author.name = p.full_name() or author.name
            author.organisation = p.organisation or author.organisation
            self_cue = True
            continue
        others.append(p)

    include_author = (not others) or (self_cue and not not_self)
    substitutes: list[Person] = []
    if kind == "cancellation" and others and self_cue:
        # "Ik kan niet meer; mijn collega neemt mijn plaats in / blijft ingeschreven": only the sender goes.
        plural = re.search(r"(?i)\b(?:wij|we|beiden|allebei|both|nous|all of us|ons beiden|mijn collega en ik|"
                           r"ik en mijn collega)\b", text)
        if not plural:
            if re.search(r"(?i)\bplaats\b|\bvervang\w*|\bremplac\w*|\breplace\w*|\binstead\b|\bà ma place\b", text):
                substitutes = [p for p in others if p.email or p.full_name()]
            others = []
    people = ([author] if include_author else []) + others
    people = _merge(people)

    # Organisations: colleagues share the author's organisation when nothing else says otherwise.
    for p in people:
        if p.is_author:
            continue
        if not p.name and p.email:
            p.name = name_from_address(p.email)
        if not p.organisation and p.email:
            if domain_of(p.email) == domain_of(author.email) and author.organisation:
                p.organisation = author.organisation
            else:
                p.organisation = organisation_for_domain(domain_of(p.email), table)
                if not p.organisation and not is_webmail(p.email) and domain_of(p.email) == domain_of(sender_person.email):
                    p.organisation = sender_person.organisation
        if not p.organisation and (not p.email or is_webmail(p.email) or
                                   domain_of(p.email) in (domain_of(author.email), domain_of(rec.sender))):
            p.organisation = author.organisation or sender_person.organisation

    # A colleague named without an address in a reply: the history quoted below often holds it
    # (our confirmation lists everyone registered). Only an address made of the name's own words.
    if ctx.body.quoted:
        quoted_addresses = {a.lower() for a in ADDRESS.findall(ctx.body.quoted[:30000])}
        for p in people:
            if not p.email and p.full_name():
                matches = [a for a in quoted_addresses - own_addresses if _all_name_tokens_in(p.full_name(), a)]
                if len(matches) == 1:
                    p.email = matches[0]
                    p.organisation = p.organisation or organisation_for_domain(domain_of(p.email), table)
    participants: list[Participant] = []
    for p in people:
        participants.append(Participant(name=p.full_name(), email=(p.email or None), organisation=p.organisation))

    # --- review reasons -------------------------------------------------------------------------------
    if any(p.email is None for p in participants):
        missing = ", ".join(p.name or "?" for p in participants if p.email is None)
        review.append(f"Deelnemer zonder e-mailadres: {missing}")
    webmail = sorted({p.email for p in participants if p.email and is_webmail(p.email)})
    if webmail:
        review.append(f"Privé-adres (webmail) gebruikt voor een inschrijving bij de overheid: {', '.join(webmail)}")
    sender_domain = domain_of(rec.sender)
    if rec.sender and not is_webmail(rec.sender) and not is_government_domain(sender_domain, table):
        org_text = " ".join(filter(None, [author.organisation, sender_person.organisation, own.signature[:500]]))
        if _COMPANY.search(org_text) or not sender_domain.endswith(".be"):
            review.append(f"Afzender lijkt niet van een overheid te komen ({sender_domain})")
    if len(participants) > ctx.options.max_participants:
        review.append(f"Meer dan {ctx.options.max_participants} deelnemers in één bericht ({len(participants)})")
    if len(found) >= MAX_CANDIDATES:
        # Reading stopped at the cap (the bound on the work per mail): the rest is unread, and
        # the count above is then a floor, not the number the mail names.
        review.append(f"Bericht noemt meer dan {MAX_CANDIDATES} mensen: niet iedereen gelezen, "
                      "een organisator bekijkt het bericht zelf")
    if not participants:
        review.append("Geen deelnemer gevonden")
    emails = [p.email for p in participants if p.email]
    if len(emails) != len(set(emails)):
        review.append("Hetzelfde adres komt meermaals voor")
    subs = []
    for p in substitutes:
        org = p.organisation or (author.organisation if not p.email or domain_of(p.email) == domain_of(author.email)
                                 else organisation_for_domain(domain_of(p.email), table))
        subs.append(Participant(name=p.full_name() or name_from_address(p.email), email=p.email, organisation=org))
    return Extraction(participants=participants, review=review, substitutes=subs)
