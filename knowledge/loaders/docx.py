"""Word (.docx): Title and Heading 1-6 paragraphs become sections, tables `a | b | c` rows.

A .docx file is a ZIP archive, so it is checked before python-docx opens it: not a ZIP (or an
encrypted or legacy .doc file, which are OLE containers), a ZIP without word/document.xml, or a
ZIP whose entries would unpack to far more than the file's size (a zip bomb) is refused with the
reason. Styles derived from a heading style count as that heading; section anchors are
GitHub-style slugs of the heading text. Core properties give the title, the modification date and
the tags (keywords); a custom property `kb-acl-groups` gives the ACL groups.
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime
from xml.etree import ElementTree

import docx
from docx.document import Document as WordDocument
from docx.styles.style import CharacterStyle
from docx.table import Table
from docx.text.paragraph import Paragraph

from knowledge.errors import LoadError
from knowledge.loaders.base import (
    AnchorAllocator,
    FileInfo,
    LoadContext,
    drop_top_heading,
    split_names,
    title_from_name,
)
from knowledge.types import Document, Section

# What zipfile raises for bytes that are not a readable archive (NotImplementedError: a version or
# feature it does not support, as a damaged header may claim).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAX_ENTRIES = 10_000
_MAX_UNPACKED = 200 * 1024 * 1024
_MIN_UNPACKED_LIMIT = 10 * 1024 * 1024  # small documents may compress well past 100:1
_RATIO = 100
_MAX_CUSTOM_XML = 1024 * 1024
_HEADING_STYLE = re.compile(r"^heading ([1-9])$", re.IGNORECASE)
_CUSTOM_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/custom-properties}"


def load(info: FileInfo, data: bytes, context: LoadContext) -> list[Document]:
    """One document for the Word file; see the module docstring for its structure."""
    acl_groups = _check_archive(info, data)
    try:
        word = docx.Document(io.BytesIO(data))
        builder = _Builder()
        for block in word.iter_inner_content():
            if isinstance(block, Paragraph):
                builder.paragraph(block)
            else:
                builder.table(block)
        builder.end_section()
        title, modified, keywords = _properties(word)
    except Exception as exc:  # python-docx and lxml fail in many ways on damaged parts
        reason = " ".join(str(exc).split())[:200]
        raise LoadError(f"{info.path}: damaged Word document ({exc.__class__.__name__}: {reason})") from exc
    if not builder.sections:
        raise LoadError(f"{info.path}: no text in the Word document, nothing to index")
    title = title or builder.first_title or title_from_name(info.path)
    sections = [drop_top_heading(section, title) for section in builder.sections]
    return [
        Document(
            id=info.document_id,
            source=info.source,
            uri=info.uri,
            title=title,
            sections=tuple(sections),
            updated_at=modified or info.modified_at,
            acl_groups=acl_groups,
            tags=split_names(keywords),
            size_bytes=info.size_bytes,
        )
    ]


def _check_archive(info: FileInfo, data: bytes) -> tuple[str, ...]:
    """Refuse what is not a safe .docx archive; return the ACL groups from its custom properties."""
    if data.startswith(_OLE_MAGIC):
        raise LoadError(
            f"{info.path}: a password-protected or old-format (.doc) Word file; "
            "remove the password or save it as .docx, then ingest it again"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise LoadError(f"{info.path}: not a Word document (not a ZIP archive: {exc})") from exc
    if len(entries) > _MAX_ENTRIES:
        raise LoadError(f"{info.path}: {len(entries):,} entries in the archive, too many for a Word document")
    unpacked = sum(entry.file_size for entry in entries)
    limit = min(max(_RATIO * len(data), _MIN_UNPACKED_LIMIT), _MAX_UNPACKED)
    if unpacked > limit:
        raise LoadError(
            f"{info.path}: would unpack to {unpacked:,} bytes, over the limit of {limit:,}; "
            "refused as a possible zip bomb"
        )
    names = {entry.filename for entry in entries}
    if "word/document.xml" not in names:
        raise LoadError(f"{info.path}: a ZIP archive without word/document.xml, not a Word document")
    if any(entry.flag_bits & 0x1 for entry in entries):
        raise LoadError(f"{info.path}: encrypted ZIP entries, cannot read without a password")
    try:
        return _acl_groups(archive)
    except Exception as exc:  # unreadable ACLs must not turn a restricted document into a public one
        raise LoadError(
            f"{info.path}: damaged custom properties (docProps/custom.xml), so its kb-acl-groups "
            f"cannot be read ({exc.__class__.__name__})"
        ) from exc


def _acl_groups(archive: zipfile.ZipFile) -> tuple[str, ...]:
    try:
        entry = archive.getinfo("docProps/custom.xml")
    except KeyError:
        return ()
    if entry.file_size > _MAX_CUSTOM_XML:
        return ()
    # Entities are not expanded beyond expat's built-in amplification limits, and the entry is small.
    root = ElementTree.fromstring(archive.read(entry))
    for prop in root.iter(f"{_CUSTOM_NS}property"):
        if prop.get("name", "").strip().lower() == "kb-acl-groups":
            return split_names("".join(prop.itertext()))
    return ()


class _Builder:
    """Collects sections from the body's paragraphs and tables, in document order."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_title: str | None = None
        self._anchors = AnchorAllocator()
        self._stack: list[tuple[int, str]] = []
        self._anchor = ""
        self._blocks: list[str] = []
        self._in_list = False

    def paragraph(self, paragraph: Paragraph) -> None:
        text = " ".join(paragraph.text.split())
        if not text:
            return
        level = _heading_level(paragraph.style)
        if level is not None:
            self._heading(level, text)
            return
        if _is_list_item(paragraph):
            line = f"- {text}"
            if self._in_list and self._blocks:
                self._blocks[-1] += f"\n{line}"
            else:
                self._blocks.append(line)
            self._in_list = True
            return
        self._blocks.append(text)
        self._in_list = False

    def table(self, table: Table) -> None:
        rows = []
        for row in table.rows:
            cells, last = [], None
            for cell in row.cells:
                if cell._tc is last:  # a merged cell repeats for each column it spans
                    continue
                last = cell._tc
                cells.append(" ".join(cell.text.split()))
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            self._blocks.append("\n".join(rows))
        self._in_list = False

    def _heading(self, level: int, text: str) -> None:
        self.end_section()
        if level == 0 and self.first_title is None:
            self.first_title = text
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        self._anchor = self._anchors(text)

    def end_section(self) -> None:
        text = "\n\n".join(self._blocks).strip()
        if text:
            headings = tuple(name for _, name in self._stack)
            self.sections.append(Section(text=text, headings=headings, anchor=self._anchor))
        self._blocks.clear()
        self._in_list = False


def _heading_level(style: CharacterStyle | None) -> int | None:
    """0 for Title, 1-9 for Heading N, following a custom style to the heading it is based on."""
    for _ in range(5):
        if style is None:
            return None
        name = (style.name or "").strip()
        if name.lower() == "title":
            return 0
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
        style = style.base_style
    return None


def _is_list_item(paragraph: Paragraph) -> bool:
    name = (paragraph.style.name if paragraph.style is not None else None) or ""
    properties = paragraph._p.pPr  # numbering without a list style still makes a list item
    return name.lower().startswith("list") or (properties is not None and properties.numPr is not None)


def _properties(word: WordDocument) -> tuple[str, datetime | None, str]:
    """Title, modification time and keywords from the core properties."""
    core = word.core_properties
    try:
        modified = core.modified
    except ValueError:  # an unparseable date in docProps/core.xml
        modified = None
    if modified is not None and modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)  # core properties are written in UTC
    return " ".join((core.title or "").split()), modified, core.keywords or ""
