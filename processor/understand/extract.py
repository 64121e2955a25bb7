"""Find the people signed up or withdrawn: names, addresses and organisations, and what needs a human look."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field

from .classify import Context
from .model import Participant
from .text import _MOBILE_FOOTER, Segment

ADDRESS = re.compile(r"(?<![\w.+-])[A-Za-z0-9][\w.+'-]*+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")

WEBMAIL = frozenset("""
gmail.com googlemail.com hotmail.com hotmail.be hotmail.fr hotmail.nl hotmail.co.uk outlook.com outlook.be outlook.fr
live.com live.be live.fr live.nl msn.com yahoo.com yahoo.fr yahoo.be yahoo.co.uk ymail.com icloud.com me.com mac.com
telenet.be skynet.be proximus.be scarlet.be base.be pandora.be belgacom.net edpnet.be voo.be orange.be mobistar.be
gmx.com gmx.net gmx.de gmx.be web.de protonmail.com proton.me pm.me aol.com mail.com zoho.com tutanota.com
kpnmail.nl ziggo.nl home.nl planet.nl xs4all.nl free.fr laposte.net wanadoo.fr sfr.fr hotmail.it
""".split())

# Domains of government that need no table entry to be known as public sector.
_GOV_SUFFIXES = ("vlaanderen.be", ".fgov.be", ".fed.be", "belgium.be", "belgie.be", "belgique.be", ".brussels",
                 "wallonie.be", "vlaamsbrabant.be", "limburg.be", "oost-vlaanderen.be", "west-vlaanderen.be",
                 "provincieantwerpen.be", "europa.eu")

_PARTICLES = {"van", "de", "der", "den", "da", "di", "du", "le", "la", "del", "della", "ter", "ten", "vande",
              "vanden", "vander", "von", "d'", "op", "in", "'t", "het", "t"}
_TITLES = re.compile(
    r"^(?:dhr|mevr|mvr|mw|mr|mrs|ms|miss|dr|prof|ir|ing|drs|lic|ere|mme|mlle|madame|monsieur|mevrouw|meneer|"
    r"de heer|heer|mijnheer|m|sir|madam)\.?\s+", re.IGNORECASE)
_ORG_HEAD = re.compile(
    r"^(?:stad|gemeente|gemeentebestuur|stadsbestuur|ocmw|ocmw-|cpas|provincie|provinciebestuur|province|"
    r"agentschap|departement|vlaamse|vlaams|vlaanderen|fod|spf|pod|pps|federale overheidsdienst|service public|"
    r"kabinet|cabinet|ministerie|ministère|intercommunale|politiezone|zone|hulpverleningszone|"
    r"universiteit|université|university|hogeschool|haute école|instituut|institut|institute|"
    r"autonoom gemeentebedrijf|agb|igs|vzw|kind en gezin|de lijn|vdab|ovam|vmm|vlm|inbo|vito|vrt|"
    r"commune|ville|city of|municipality|regie|district|rekenhof|vlaams parlement|parlement|"
    r"sociaal-economische raad|serv|sar|minaraad|vvsg|vvp|agii|aiv|digitaal vlaanderen|informatie vlaanderen|"
    r"onroerend erfgoed|natuur en bos|wegen en verkeer|zorg en gezondheid|opgroeien|"
    r"bruxelles|brussel|leefmilieu brussel|bruxelles environnement|europese commissie|european commission|"
    r"flanders|flemish|agency|department of|ministry|federal|agence|institut|société|maatschappij)\b",
    re.IGNORECASE,
)
_ORG_ANYWHERE = re.compile(
    r"\b(?:stad|gemeente|ocmw|provincie|agentschap|departement|fod|spf|pod|universiteit|université|hogeschool|"
    r"intercommunale|politiezone|kabinet|vzw|asbl|bvba|bv|nv|sa|srl|cvba|consult\w*|consultancy|advies(?:bureau)?|"
    r"b\.v\.|n\.v\.)\b", re.IGNORECASE)
_COMPANY = re.compile(
    r"\b(?:bvba|bv|nv|cvba|comm\.?v|vof|sprl|srl|sa|ltd|gmbh|inc|llc|b\.v\.|n\.v\.|consult\w*|consultancy|"
    r"advies(?:bureau|kantoor)?|adviseurs|partners|freelance\w*|zelfstandig\w*|studiebureau|bureau|interim|"
    r"solutions|services|group|groep)\b", re.IGNORECASE)
_LEGAL_FORM = re.compile(r"\s+(?:bvba|bv|nv|cvba|vzw|asbl|sprl|srl|sa|comm\.?\s?v|vof|ltd|gmbh|b\.v\.|n\.v\.)\.?$", re.IGNORECASE)
_DEPARTMENT = re.compile(
    r"^(?:dienst|afdeling|team|cel|directie|division|service|unit|sectie|stafdienst|entiteit|"
    r"beleidsdomein|domein|cluster|bedrijf|programma|project|bureau|secretariaat|kenniscentrum|"
    r"direction|cellule|équipe|dept\.?|directorate|office of)\b", re.IGNORECASE)
_FUNCTION = re.compile(
    r"\b(?:medewerker|beleidsmedewerker|stafmedewerker|adviseur|beleidsadviseur|coördinator|coordinator|"
    r"co[öo]rdinatrice|diensthoofd|afdelingshoofd|teamleider|teamverantwoordelijke|directeur|directrice|"
    r"secretaris|secretaresse|projectleider|projectmedewerker|projectcoördinator|deskundige|expert|"
    r"consulent|consultant|officer|manager|advisor|adviser|analyst|analist|specialist|ambtenaar|"
    r"verantwoordelijke|administratief|administratieve|medewerkster|stagiair|stagiaire|jurist|ingenieur|"
    r"chargée?|conseill[eè]re?|attachée?|gestionnaire|responsable|chef|head of|lead|senior|junior|"
    r"duurzaamheidsambtenaar|milieuambtenaar|mobiliteitsambtenaar|beleidsondersteuner|programmamanager|"
    r"kwaliteitscoördinator|communicatie|sdg[- ]?(?:coördinator|trekker|ambassadeur)|trekker|schepen|burgemeester|"
    r"gedelegeerd|voorzitter|algemeen directeur|hoofd|projectverantwoordelijke|beleidsambtenaar|zaakvoerder|"
    r"oprichter|founder|co-founder|owner|eigenaar|gérante?|zaakvoerster|researcher|onderzoeker|chercheu\w+|"
    r"professor|docent|lector|assistent|assistant|intern)\b", re.IGNORECASE)
_CONTACT_LINE = re.compile(
    r"(?:\+?\d[\d ./()-]{6,}|\b(?:tel|t|gsm|m|fax|f|mob|mobile|phone|tél|e|mail|e-mail|www|http|https)\b\.?\s*[:.]|"
    r"www\.|https?://|@|\b\d{4}\s+[A-Z][a-z]+|\b(?:straat|laan|plein|lei|steenweg|kaai|dreef|weg|rue|avenue|"
    r"boulevard|place|building|gebouw|bus|boîte)\b)", re.IGNORECASE)

_SELF = re.compile(
    r"\b(?:me|mij|mezelf|mijzelf|ikzelf|mijn persoon|onszelf)\b[^.\n?!]{0,60}\b(?:inschrijv\w*|in te schrijven|in\b|"
    r"aan ?melden|aan\b|registr\w*|opgeven|op\b)|"
    r"\b(?:schrijf|meld|geef|schrijven|melden|geven)\b\s+(?:ik|wij|we)\s+(?:graag |hierbij |bij deze |ook )?(?:me|mij|mezelf|ons)\b|"
    r"\b(?:wij|we)\s+(?:schrijven|melden|geven)\s+ons\b|"
    r"\b(?:ik|wij|we)\b[^.\n?!]{0,50}\b(?:deelnemen|deel ?(?:te )?nemen|deelgenomen|aanwezig zijn|bijwonen|meedoen|aansluiten|"
    r"geïnteresseerd|interesse)\b|\bplaats(?:je)? voor (?:mij|me|mezelf)\b|"
    r"\b(?:neem|kom)\b\s+(?:ik|ikzelf)\b(?![^.\n?!]{0,20}\bniet\b)|\b(?:ik|ikzelf)\s+(?:neem|kom)\b(?![^.\n?!]{0,20}\bniet\b)|"
    r"\b(?:ik|mijn collega)\s+en\s+(?:mijn|ik)\b|\ben (?:ik|ikzelf|mezelf|mijzelf|ook mezelf)\b|\bsamen met\b|\bik ook\b|"
    r"\bmezelf\b|\bmijzelf\b|\bikzelf\b|\bzelf (?:neem|kom|schrijf|wil|zou) ik\b(?![^.\n?!]{0,20}\bniet\b)|"
    r"\bm'inscri\w*|\bnous inscrire\b|\bmoi-même\b|\bje\b[^.\n?!]{0,40}\b(?:participer|assister|viendrai|serai présente?)\b|"
    r"\b(?:et|ainsi que) moi\b|\bmyself\b|\bme and my\b|\bmy colleague and I\b|\b(?:register|sign|enrol)\s+me\b|\bsign me up\b|"
    r"\bI\b[^.\n?!]{0,40}\b(?:attend|join|participate|be there)\b|"
    r"\bI\b[^.\n?!]{0,30}\b(?:register|sign up|enrol\w*)\b(?!\s+(?:my|our|two|three|the following|these|him|her|them)\b)",
    re.IGNORECASE,
)
# Cancelling oneself: "ik kan niet", "mijn inschrijving", "je dois annuler", "my registration".
_SELF_CANCEL = re.compile(
    r"\b(?:ik|ikzelf)\b[^.\n?!]{0,50}\b(?:niet|afmelden|uitschrijven|annuleren|afzeggen|verhinderd)\b|"
    r"\b(?:me|mij|mezelf)\b[^.\n?!]{0,40}\b(?:af ?melden|af\b|uit ?(?:te )?schrijven|uit\b|schrappen)|"
    r"\bmijn (?:inschrijving|aanmelding|deelname|plaats)\b|\bmon inscription\b|\bma participation\b|"
    r"\bje\b[^.\n?!]{0,40}\b(?:annuler|pourrai pas|ne peux|désinscri\w*|dois|serai pas)\b|\bme désinscrire\b|"
    r"\bmy (?:registration|participation|place|seat)\b|\bI\b[^.\n?!]{0,40}\b(?:can't|cannot|won't|unable|no longer|have to cancel|must cancel)\b|"
    r"\b(?:cancel|remove|unregister)\s+me\b|\bwij\b[^.\n?!]{0,40}\bniet\b|\bwe\b[^.\n?!]{0,40}\bniet\b|\bons\b[^.\n?!]{0,20}\baf\b",
    re.IGNORECASE,
)
_NOT_SELF = re.compile(
    r"\b(?:ik|wij|we)\b[^.\n?!]{0,40}\b(?:schrijf|schrijven|meld|melden|geef|geven)\b[^.\n?!]{0,15}\b(?:graag |hierbij |bij deze )?"
    r"(?:mijn|onze|de volgende|volgende|twee|drie|vier|de|het|deze)\b|\bvoor (?:mijn|onze) (?:collega|medewerker)\w*\b[^.\n?!]{0,40}"
    r"\b(?:inschrijven|aanmelden)\b|\bik zelf (?:kan|zal) niet\b|\bzelf (?:kan|zal) ik niet\b|\bniet voor mezelf\b",
    re.IGNORECASE,
)
_COLLEAGUE_CUE = re.compile(
    r"\b(?:collega(?:'s|s)?|medewerk(?:er|ster|ers)|teamlid|teamleden|mevrouw|mevr\.?|de heer|dhr\.?|meneer|"
    r"coll[èe]gues?|madame|monsieur|mme|colleagues?|mr\.?|mrs\.?|ms\.?|deelnemers?|participants?)\b[\s:,]*",
    re.IGNORECASE,
)
_NAME_WORD = r"(?:[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ'’]+(?:-[A-ZÀ-ÖØ-Þa-zà-öø-ÿ][a-zà-öø-ÿ'’]+)?|[A-ZÀ-ÖØ-Þ]{2,}(?:-[A-ZÀ-ÖØ-Þ]{2,})?)"
_PARTICLE = r"(?:[Vv]an(?: [Dd]e[nr]?| [Hh]et| 't)?|[Dd]e|[Dd]en|[Dd]er|[Vv]ander|[Vv]anden|[Vv]ande|[Ll]e|[Ll]a|[Dd]u|[Dd]'|[Tt]er|[Tt]en|[Vv]on|[Dd]el)"
NAME_RUN = re.compile(
    _NAME_WORD + r"(?:[ \t]+(?:" + _PARTICLE + r"[ \t]+)*" + _NAME_WORD + r"){1,3}")

_LABELS: list[tuple[str, re.Pattern]] = [
    ("first", re.compile(r"^(?:voornaam|first ?name|given name|prénom|prenom|roepnaam)$", re.I)),
    ("last", re.compile(r"^(?:achternaam|familienaam|naam \(familie\)|last ?name|surname|family name|nom de famille)$", re.I)),
    ("name", re.compile(r"^(?:naam|name|full name|nom|nom et prénom|nom complet|naam en voornaam|naam \+ voornaam|"
                        r"voornaam en (?:achter|familie)?naam|voor- en (?:achter|familie)naam|deelnemer|participant|"
                        r"naam deelnemer|name of participant|nom du participant|attendee)(?: \d)?$", re.I)),
    ("email", re.compile(r"^(?:e-?mail(?:adres)?|mail(?:adres)?|email address|e-?mail address|adresse e-?mail|"
                         r"adresse électronique|courriel|mailadres|e-?mailadres deelnemer)$", re.I)),
    ("organisation", re.compile(r"^(?:organisatie|organisation|organization|organisme|bestuur|lokaal bestuur|"
                                r"entiteit|werkgever|employer|administration|overheid|instelling|institution|"
                                r"stad/gemeente|gemeente|stad|bedrijf|company|entreprise|organisatie/bestuur)$", re.I)),
    ("department", re.compile(r"^(?:dienst|afdeling|department|service|team|directie|cel|division)$", re.I)),
    ("function", re.compile(r"^(?:functie|function|fonction|job ?title|titel|title|rol|role)$", re.I)),
]
# Every run of blanks is taken whole (possessive) and the separator decided after it: with the
# blanks given back one at a time, a line of 20,000 spaces between two letters took 30 s.
_LABEL_LINE = re.compile(r"^[ \t*•\-–>]*+([A-Za-zÀ-ÿ][A-Za-zÀ-ÿ /+\-()]{1,40}?)"
                         r"(?:[ \t]*+(?:\(\w+\)[ \t]*+)?[:=]|[ ]*+(?:\(\w+\)[ ]*+)?\t)[ \t]*+(.*)$")


@dataclass
class Person:
    name: str | None = None
    email: str | None = None
    organisation: str | None = None
    first: str | None = None
    last: str | None = None
    source: str = ""
    is_author: bool = False

    def full_name(self) -> str | None:
        if self.name:
            return self.name
        if self.first or self.last:
            return " ".join(p for p in (self.first, self.last) if p)
        return None


@dataclass
class Extraction:
    participants: list[Participant]
    review: list[str] = field(default_factory=list)
    substitutes: list[Participant] = field(default_factory=list)


# --- small helpers -----------------------------------------------------------------------------------


def fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c)).lower()


def domain_of(address: str | None) -> str:
    return address.rsplit("@", 1)[1].lower() if address and "@" in address else ""


def organisation_for_domain(domain: str, table) -> str | None:
    """Look the domain up, then its parents ('mail.stad.gent.be' → 'gent.be'), never a bare public suffix."""
    parts = domain.lower().split(".")
    for i in range(len(parts) - 1):
        candidate = ".".join(parts[i:])
        if candidate in table:
            return table[candidate]
    return None


def is_webmail(address: str | None) -> bool:
    return domain_of(address) in WEBMAIL


def is_government_domain(domain: str, table) -> bool:
    if not domain:
        return False
    if organisation_for_domain(domain, table):
        return True
    return any(domain == s.lstrip(".") or domain.endswith(s if s.startswith(".") else "." + s) or domain == s
               for s in _GOV_SUFFIXES)


def _smart_case(word: str) -> str:
    if word.isupper() and len(word) > 1:
        return "-".join(w.capitalize() for w in word.split("-"))
    return word


MAX_NAME_SOURCE = 200


def clean_name(raw: str | None) -> str | None:
    """'Dhr. PEETERS, Jan (Stad Gent)' → 'Jan Peeters'."""
    if not raw:
        return None
    name = raw.strip().strip("\"'").strip()
    if len(name) > MAX_NAME_SOURCE:
        # No name and organisation take this much; the bracket and separator patterns below are
        # quadratic on a run of "( " or spaces, so a longer text is not read as a name at all.
        return None
    if "@" in name:
        name = ADDRESS.sub("", name).strip(" <>()[]\"'")
        if not name:
            return None
    name = re.sub(r"\s*[\(\[][^)\]]*[\)\]]", "", name)
    name = re.split(r"\s+(?:[-–|/]|namens|for|pour)\s+|\s*\|\s*|\s+-\s*$", name)[0]
    name = name.strip(" ,;:.-–")
    if "," in name:
        left, right = [p.strip() for p in name.split(",", 1)]
        if right and left and len(right.split()) <= 3 and not _ORG_ANYWHERE.search(right):
            name = f"{right} {left}"
        else:
            name = left
    previous = None
    while previous != name:
        previous = name
        name = _TITLES.sub("", name).strip()
    words = [_smart_case(w) for w in name.split()]
    name = " ".join(words).strip(" ,;:.")
    if not name or len(name) > 60 or re.search(r"\d|@|www\.|http", name):
        return None
    if not re.search(r"[A-Za-zÀ-ÿ]{2,}", name):
        return None
    return name


def name_from_address(address: str | None) -> str | None:
    """'jan.van.damme@x' → 'Jan Van Damme'; None when the local part is not a first.last form."""
    if not address:
        return None
    local = address.split("@", 1)[0]
    local = re.sub(r"\d+$", "", local)
    parts = [p for p in re.split(r"[._]", local) if p]
    if len(parts) < 2 or any(len(p) < 2 or not p.isalpha() for p in parts if p.lower() not in _PARTICLES):
        return None
    if any(p.lower() in ("info", "admin", "secretariaat", "contact", "noreply", "mail", "office", "team", "dienst")
           for p in parts):
        return None
    return " ".join(p.capitalize() if p.lower() not in _PARTICLES else p.capitalize() for p in parts)


@functools.lru_cache(maxsize=4096)
def _name_tokens(name: str | None) -> frozenset[str]:
    # Cached: one mail compares the same few names many times (merging, twins, the author).
    return frozenset(t for t in re.findall(r"[a-z]+", fold(name or "")) if t not in _PARTICLES and len(t) > 1)


def same_person(a: str | None, b: str | None) -> bool:
    ta, tb = _name_tokens(a), _name_tokens(b)
    if not ta or not tb:
        return False
    return len(ta & tb) >= min(2, len(ta), len(tb))


def _all_name_tokens_in(name: str | None, address: str | None) -> bool:
    tokens = [t for t in _name_tokens(name) if len(t) > 2]
    local = fold((address or "").split("@", 1)[0])
    return len(tokens) >= 2 and all(t in local for t in tokens)


def name_matches_address(name: str | None, address: str | None) -> bool:
    if not name or not address:
        return False
    local = fold(address.split("@", 1)[0])
    tokens = [t for t in _name_tokens(name) if len(t) > 2]
    return any(t in local for t in tokens)


# --- organisations ----------------------------------------------------------------------------------


def normalise_organisation(raw: str | None) -> str | None:
    """The organisation without its department: 'Stad Gent – Dienst Milieu' → 'Stad Gent'."""
    if not raw:
        return None
    text = re.sub(r"\s+", " ", raw).strip(" ,;:.-–|")
    if not text:
        return None
    pieces = [p.strip(" ,;:.-–|") for p in re.split(r"\s+[-–|/]\s+|\s*\|\s*|,\s+|\s*[\(\)]\s*", text) if p.strip(" ,;:.-–|")]
    if len(pieces) > 1:
        orgish = [p for p in pieces if _ORG_HEAD.match(p) and not _DEPARTMENT.match(p)]
        if not orgish:
            orgish = [p for p in pieces if not _DEPARTMENT.match(p) and not _FUNCTION.search(p)]
        if orgish:
            specific = [p for p in orgish if not _generic_government(p)]
            text = (specific or orgish)[0]
        else:
            text = pieces[0]
    # "bij de Vlaamse Waterweg" in a sentence loses its article; a capital "De Lijn" is the name itself.
    text = re.sub(r"^(?:de|het|la|le|l')\s+", "", text)
    if _DEPARTMENT.match(text) and not _ORG_HEAD.match(text):
        return None
    if len(text) > 80 or "@" in text or re.search(r"https?://|www\.", text):
        return None
    words = text.split()
    if words and words[0].lower() in ("stad", "gemeente", "provincie", "agentschap", "departement"):
        words[0] = words[0].capitalize()
    return " ".join(words) or None


def _generic_government(text: str) -> bool:
    return bool(re.fullmatch(r"(?i)(?:de )?(?:vlaamse (?:overheid|regering|gemeenschap)|vlaanderen|federale overheid|"
                             r"overheid|government of flanders|flemish government|gouvernement flamand|autorités flamandes)",
                             text.strip(" .,")))


def _without_mobile_footer(signature: str) -> str:
    """"Sent from my phone" lines name the device, never the organisation."""
    return _MOBILE_FOOTER.sub("", signature)


def organisation_from_signature(signature: str, loose: bool = True) -> str | None:
    best = None
    signature = _without_mobile_footer(signature)
    for line in signature.split("\n")[:15]:
        line = line.strip(" \t*•>|_-")
        if not line or "@" in line or len(line) > 100:
            continue
        for piece in re.split(r"\s+[-–|]\s+|\s*\|\s*|,\s+", line):
            piece = piece.strip(" .,;")
            if not piece or _CONTACT_LINE.search(piece) and not _ORG_HEAD.match(piece):
                continue
            if (_ORG_HEAD.match(piece) or _LEGAL_FORM.search(piece)) and not _DEPARTMENT.match(piece) \
                    and not _FUNCTION.search(piece):
                org = normalise_organisation(_LEGAL_FORM.sub("", piece).strip(" ,.") if _LEGAL_FORM.search(piece) else piece)
                if not org:
                    continue
                if _generic_government(org):
                    best = best or org
                    continue
                if best is None or _generic_government(best):
                    best = org
                    break
        if best and not _generic_government(best):
            break
    if best and _generic_government(best):
        best = None
    if best is None and loose:
        best = _organisation_after_name(signature)
    return best


def _organisation_after_name(signature: str) -> str | None:
    """Without a telling word, the organisation is the first plain line under the name and function."""
    lines = [l.strip(" \t*•>|_-") for l in signature.split("\n")[:12]]
    lines = [l for l in lines if l]
    seen_name = False
    for line in lines:
        if re.match(r"^(?:" + _SIGN_OFF_WORDS + r")\b[\s,!.]*$", line, re.IGNORECASE):
            continue
        if not seen_name:
            if NAME_RUN.fullmatch(_case_for_run(clean_name(line) or "")) or (clean_name(line) or "").count(" ") == 0:
                seen_name = True
                continue
            return None
        if _CONTACT_LINE.search(line) or _FUNCTION.search(line) or _DEPARTMENT.match(line) or _generic_government(line):
            continue
        if len(line.split()) <= 8 and line[:1].isupper() and not re.search(r"\d", line):
            return normalise_organisation(line)
        return None
    return None


_ORG_IN_TEXT = re.compile(
    r"\b(?:bij|namens|van|voor|vanuit|pour|de la|du|at|from|for|on behalf of)\s+(?:de |het |la |le |l'|the )?"
    r"((?:stad|gemeente|ocmw|provincie|agentschap|departement|fod|spf|ville|commune|city of|province)\s+"
    r"(?:[A-ZÀ-Þ][\w'’-]+)(?:\s+(?:en\s+|van\s+|voor\s+|de\s+|et\s+|of\s+)?[A-ZÀ-Þ][\w'’-]+){0,4})",
    re.IGNORECASE)


# "Ik werk sinds maart als jurist bij De Watergroep", "ik ben tewerkgesteld bij het Agentschap X":
# the capitalised run after "bij/at/chez" in a sentence about where the writer works.
_WORKS_AT = re.compile(
    r"\b(?:werk|werken|werkt|werkzaam|tewerkgesteld|actief|in dienst|employed|work|works|working|travaille|arbeite)\b"
    r"[^.\n]{0,40}?\b(?:bij|at|for|voor|pour|chez|bei)\s+"
    r"((?:De |Het |de |het |the |la |le |l')?[A-ZÀ-Þ][\w'’&-]+(?:\s+(?:en |van |voor |de |der |het |et |für )?[A-ZÀ-Þ][\w'’&-]+){0,4})")


def organisation_from_text(text: str) -> str | None:
    m = _ORG_IN_TEXT.search(text)
    if m:
        return normalise_organisation(m.group(1))
    m = _WORKS_AT.search(text)
    if m and not _DEPARTMENT.match(m.group(1)) and not _FUNCTION.search(m.group(1)):
        return normalise_organisation(m.group(1))
    return None


# --- names from signatures ------------------------------------------------------------------------------


def name_from_signature(signature: str) -> str | None:
    for line in signature.split("\n")[:8]:
        line = line.strip(" \t*•>|_-")
        if not line:
            continue
        m = re.match(r"^(?:" + _SIGN_OFF_WORDS + r")\b[\s,!.]*(.*)$", line, re.IGNORECASE)
        if m:
            line = m.group(1).strip()
            if not line:
                continue
        if _CONTACT_LINE.search(line) or _ORG_HEAD.match(line) or _DEPARTMENT.match(line) or _FUNCTION.search(line):
            continue
        candidate = re.split(r"\s*[|,–]\s*|\s+-\s+", line)[0]
        cleaned = clean_name(candidate)
        if cleaned and 2 <= len(cleaned.split()) <= 5 and NAME_RUN.fullmatch(_case_for_run(cleaned)):
            return cleaned
        if cleaned and len(cleaned.split()) == 1 and cleaned[0].isupper():
            return cleaned  # a first name alone ("Jan"): better than nothing, merged later
        return None
    return None


_SIGN_OFF_WORDS = (r"met vriendelijke groeten?|vriendelijke groeten?|hartelijke groeten?|beste groeten?|groeten|groetjes|"
                   r"mvg|cordialement|bien à vous|kind regards|best regards|regards|best|thanks|merci|bedankt|"
                   r"alvast bedankt|dank u|salutations|sincerely")


def _case_for_run(name: str) -> str:
    return " ".join(w if w.lower() in _PARTICLES else w[:1].upper() + w[1:] for w in name.split())


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
