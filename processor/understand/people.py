"""People in a mail: names, addresses, organisations and the patterns that find them, as small pure functions."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field

from .model import Participant
from .text import _MOBILE_FOOTER

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
