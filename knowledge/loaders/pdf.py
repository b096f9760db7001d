"""PDF: one section per page, with its page number and a `#page=N` anchor.

`#page=N` is the PDF open parameter that browsers' PDF viewers follow, so a citation's link opens
the page it quotes. The title is the document's /Title (less a "Microsoft Word - " prefix), else
its first line of text; /ModDate gives the date, /Keywords the tags and a custom /kb-acl-groups
entry the ACL groups (a damaged information dictionary refuses the file, since its ACL cannot be
checked). PDFs that are encrypted with a password, damaged, or have no text layer
(scans) are refused with the reason; pypdf's notes about damage it worked around go to the debug
log instead of surfacing as Python warnings.
"""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError
from pypdf.generic import IndirectObject

from knowledge.errors import LoadError
from knowledge.loaders.base import (
    FileInfo,
    LoadContext,
    first_line,
    quiet_library,
    split_names,
    title_from_name,
)
from knowledge.types import Document, Section

log = logging.getLogger(__name__)

_HEADER_WINDOW = 1024  # readers accept up to 1 KiB of junk before %PDF-, as Acrobat does
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WORD_PREFIX = re.compile(r"^Microsoft (Word|PowerPoint|Excel) - ", re.IGNORECASE)


def load(info: FileInfo, data: bytes, context: LoadContext) -> list[Document]:
    """One document with a section per page that has text."""
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise LoadError(f"{info.path}: not a PDF file (no %PDF- header at its start)")
    with quiet_library(info.path, "pypdf"):
        reader = _open(info, data)
        sections = _pages(info, reader, context)
        meta = _metadata(info, reader)
    title = meta.get("title") or first_line(sections[0].text) or title_from_name(info.path)
    return [
        Document(
            id=info.document_id,
            source=info.source,
            uri=info.uri,
            title=title,
            sections=tuple(sections),
            updated_at=_mod_date(reader) or info.modified_at,
            acl_groups=split_names(meta.get("kb-acl-groups", "")),
            tags=split_names(meta.get("keywords", "")),
            size_bytes=info.size_bytes,
        )
    ]


def _open(info: FileInfo, data: bytes) -> PdfReader:
    # pypdf raises its own errors for what it recognises and plain ones (KeyError, ValueError, ...)
    # where damage trips it up; to the caller both mean the same: this file cannot be read.
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:
        if b"%%EOF" not in data[-_HEADER_WINDOW:]:
            raise LoadError(
                f"{info.path}: truncated PDF (no %%EOF marker at its end; was a download or copy cut short?)"
            ) from exc
        raise LoadError(f"{info.path}: damaged PDF ({_reason(exc)})") from exc
    if not encrypted:
        return reader
    try:
        opened = reader.decrypt("")  # many PDFs are encrypted only to restrict printing or copying
    except DependencyError as exc:
        raise LoadError(
            f"{info.path}: encrypted PDF, and reading it needs the 'cryptography' package ({exc})"
        ) from exc
    except Exception as exc:
        raise LoadError(f"{info.path}: damaged encrypted PDF ({_reason(exc)})") from exc
    if opened == PasswordType.NOT_DECRYPTED:
        raise LoadError(f"{info.path}: encrypted PDF, cannot read without a password")
    return reader


def _pages(info: FileInfo, reader: PdfReader, context: LoadContext) -> list[Section]:
    try:
        pages = list(reader.pages)
    except Exception as exc:
        raise LoadError(f"{info.path}: damaged PDF, its page list cannot be read ({_reason(exc)})") from exc
    if not pages:
        raise LoadError(f"{info.path}: PDF without pages, nothing to index")
    sections: list[Section] = []
    failed: list[int] = []
    for number, page in enumerate(pages, start=1):
        try:
            text = _clean(page.extract_text())
        except Exception as exc:
            log.debug("%s: page %d: %s", info.path, number, _reason(exc))
            failed.append(number)
            continue
        if text:
            sections.append(
                Section(text=text, headings=(f"Page {number}",), anchor=f"page={number}", page=number)
            )
    if failed and len(failed) == len(pages):
        raise LoadError(f"{info.path}: damaged PDF, no page's text can be read")
    if not sections:
        raise LoadError(
            f"{info.path}: no extractable text in the PDF (a scanned document?); "
            "run it through OCR and ingest the result"
        )
    if failed:
        context.on_note(f"pages {', '.join(map(str, failed))}: damaged, their text is left out")
    return sections


def _clean(text: str) -> str:
    lines = (" ".join(line.split()) for line in _CONTROL.sub("", text).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _metadata(info: FileInfo, reader: PdfReader) -> dict[str, str]:
    """Title, keywords and ACL groups from the document information dictionary."""
    try:
        entries = reader.metadata
        items = entries.items() if entries is not None else []
        raw = {str(key).lstrip("/").lower(): _resolved(value) for key, value in items}
    except Exception as exc:
        # Without the dictionary the ACL cannot be checked, and guessing "public" could leak.
        raise LoadError(
            f"{info.path}: damaged document information, so its kb-acl-groups cannot be checked "
            f"({_reason(exc)})"
        ) from exc
    if "kb-acl-groups" in raw and not isinstance(raw["kb-acl-groups"], str):
        raise LoadError(f"{info.path}: /kb-acl-groups must be a text string of group names")
    values = {key: " ".join(value.split()) for key, value in raw.items() if isinstance(value, str)}
    title = _WORD_PREFIX.sub("", values.get("title", ""))
    if title.lower() in ("untitled", "") or re.search(r"\.(docx?|pdf|pptx?|xlsx?|odt)$", title, re.I):
        title = ""  # a file name or a placeholder is not a title
    return {**values, "title": title}


def _resolved(value: object) -> object:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _mod_date(reader: PdfReader) -> datetime | None:
    try:
        info = reader.metadata
        moment = info.modification_date if info is not None else None
    except Exception:  # an unparseable /ModDate: fall back to the file's time
        return None
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _reason(exc: BaseException) -> str:
    message = " ".join(str(exc).split())[:200]
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__
