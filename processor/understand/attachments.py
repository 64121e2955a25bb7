"""Text of registration forms sent as attachments (Word .docx, PDF, plain text)."""
from __future__ import annotations

import io
import logging
import re
import zipfile
from xml.etree import ElementTree

from .parse import Attachment, decode_bytes

log = logging.getLogger(__name__)

MAX_ATTACHMENT_BYTES = 5_000_000
# A form's word/document.xml is tens of kilobytes; a zip member is inflated only up to this, so a
# 600 KB mail that inflates to gigabytes (a zip bomb) costs 2 MB and is left to the organisers.
MAX_DOCUMENT_XML_BYTES = 2_000_000
# Text kept from all attachments of one mail: every rule after this runs over it.
MAX_ATTACHMENT_TEXT_CHARS = 100_000


class TooLarge(Exception):
    """An attachment whose content is larger than we read."""
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def docx_text(data: bytes) -> str:
    """Paragraphs one per line, table cells joined by tabs: forms keep their 'Label: value' shape.

    The standard library reads the XML directly; python-docx would add a dependency for no more text.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("word/document.xml")
        # The declared size says no before anything is inflated; the capped read holds even
        # when the declaration lies (zipfile stops at the declared size and checks the CRC).
        if info.file_size > MAX_DOCUMENT_XML_BYTES:
            raise TooLarge(info.file_size)
        with archive.open(info) as member:
            xml = member.read(MAX_DOCUMENT_XML_BYTES + 1)
        if len(xml) > MAX_DOCUMENT_XML_BYTES:
            raise TooLarge(len(xml))
    root = ElementTree.fromstring(xml)
    lines: list[str] = []

    def paragraph_text(p) -> str:
        parts = []
        for node in p.iter():
            if node.tag == _W + "t" and node.text:
                parts.append(node.text)
            elif node.tag == _W + "tab":
                parts.append("\t")
            elif node.tag in (_W + "br", _W + "cr"):
                parts.append("\n")
        return "".join(parts)

    body = root.find(_W + "body")
    if body is None:
        return ""
    for block in body:
        if block.tag == _W + "p":
            lines.append(paragraph_text(block))
        elif block.tag == _W + "tbl":
            for row in block.iter(_W + "tr"):
                cells = [" ".join(paragraph_text(p) for p in cell.iter(_W + "p")).strip() for cell in row.iter(_W + "tc")]
                # A two-cell row is a label and its value; wider rows are a table of people.
                if len(cells) == 2 and cells[0] and not cells[0].rstrip().endswith(":"):
                    lines.append(f"{cells[0]}: {cells[1]}")
                else:
                    lines.append("\t".join(cells))
    return "\n".join(lines)


def pdf_text(data: bytes) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:  # optional: without pypdf a PDF form is left to the organisers
        return ""
    reader = PdfReader(io.BytesIO(data))
    parts = []
    fields = {}
    try:
        fields = reader.get_form_text_fields() or {}
    except Exception:  # noqa: BLE001
        fields = {}
    for key, value in fields.items():
        if value:
            parts.append(f"{key}: {value}")
    for page in reader.pages[:5]:
        if sum(map(len, parts)) > MAX_ATTACHMENT_TEXT_CHARS:
            break
        try:
            parts.append(page.extract_text() or "")
        except Exception as exc:  # noqa: BLE001
            log.debug("pdf page failed: %r", exc)
    return "\n".join(parts)


def attachment_text(attachments: list[Attachment]) -> tuple[str, list[str]]:
    """The readable text of all form-like attachments, and notes on those that could not be read."""
    texts: list[str] = []
    notes: list[str] = []
    for att in attachments:
        name = (att.filename or "").lower()
        ctype = att.content_type.lower()
        if not att.data or len(att.data) > MAX_ATTACHMENT_BYTES:
            continue
        try:
            if name.endswith(".docx") or "wordprocessingml" in ctype:
                texts.append(docx_text(att.data))
            elif name.endswith(".pdf") or ctype == "application/pdf":
                text = pdf_text(att.data)
                if text.strip():
                    texts.append(text)
                else:
                    notes.append(f"Bijlage {att.filename or 'PDF'} kon niet gelezen worden")
            elif name.endswith((".txt", ".csv")) or ctype in ("text/plain", "text/csv"):
                texts.append(decode_bytes(att.data)[:MAX_ATTACHMENT_TEXT_CHARS + 1])
            elif name.endswith((".doc", ".odt", ".xlsx", ".xls", ".rtf")):
                notes.append(f"Bijlage {att.filename} niet automatisch gelezen")
        except TooLarge:
            notes.append(f"Bijlage {att.filename or '?'} te groot om te lezen (uitgepakt meer dan "
                         f"{MAX_DOCUMENT_XML_BYTES // 1_000_000} MB tekst): niet gelezen")
        except Exception as exc:  # noqa: BLE001 - a broken attachment must not stop the mail
            notes.append(f"Bijlage {att.filename or '?'} onleesbaar ({type(exc).__name__})")
    text = "\n".join(t for t in texts if t.strip())
    if len(text) > MAX_ATTACHMENT_TEXT_CHARS:
        text = text[:MAX_ATTACHMENT_TEXT_CHARS]
        notes.append(f"Bijlagen langer dan {MAX_ATTACHMENT_TEXT_CHARS:,} tekens: alleen het begin gelezen".replace(",", "."))
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", text), notes
