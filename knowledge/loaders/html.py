"""HTML: a page's main text, with h1-h6 as sections linked by the anchors the page itself defines.

The main content is `<main>`, else `[role=main]`, else the page's only `<article>`, else `<body>`;
navigation, asides, forms, scripts, styles, hidden elements and the site-wide header and footer
are dropped. A heading's anchor is its own id; else the id of the `<section>` it opens (Sphinx,
e.g. the Python documentation; older Sphinx uses `<div class="section">`); else the target of
its "¶" permalink or an `<a name>` inside it; else none, as an invented anchor would not land.
Tables become `a | b | c` rows, list items `- item` lines, and `<pre>` keeps its lines.

Metadata: the title is `<title>` (less a site suffix after the first h1's text, as in
"csv — CSV File Reading and Writing — Python 3.11 documentation"), else the first h1;
`<meta name="keywords">` gives tags, `<meta name="kb-acl-groups">` the ACL groups, and
`kb-updated`, `dcterms.modified`, `article:modified_time` or `last-modified` the date.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bs4 import BeautifulSoup, UnicodeDammit
from bs4.element import NavigableString, PageElement, PreformattedString, Tag

from knowledge.errors import LoadError
from knowledge.loaders.base import (
    FileInfo,
    LoadContext,
    drop_top_heading,
    parse_date,
    quiet_library,
    split_names,
    title_from_name,
)
from knowledge.types import Document, Section

_DROP = frozenset(
    "script style noscript template nav aside form button select textarea input label iframe svg "
    "canvas object embed audio video map dialog head title meta link".split()
)
_CHROME_ROLES = frozenset("navigation banner contentinfo complementary search menu menubar toolbar".split())
_PERMALINK_CLASSES = frozenset({"headerlink", "anchor", "anchorjs-link", "hash-link", "permalink"})
# Site chrome that pages without <main> or landmark roles mark by class only (Sphinx before 4, and others).
_CHROME_CLASSES = frozenset({"sphinxsidebar", "related", "footer", "breadcrumbs", "navbar"})
_SKIPPED_CLASSES = _PERMALINK_CLASSES | _CHROME_CLASSES
_BLOCKS = frozenset(
    "address article blockquote body caption center details div dl fieldset figcaption figure footer "
    "header hgroup hr main ol p section summary ul".split()
)
_LINES = frozenset({"br", "dt", "dd", "li", "tr"})
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BANNER_SCOPES = ["article", "aside", "main", "nav", "section"]
_DATE_NAMES = ("kb-updated", "dcterms.modified", "article:modified_time", "last-modified")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_BINARY_SNIFF_BYTES = 8192
# "Page name – Site name": the head, before the last separator.
_SITE_SUFFIX = re.compile(r"^(?P<head>.+?)\s+[|–—·-]\s+[^|–—·]+$")


def load(info: FileInfo, data: bytes, context: LoadContext) -> list[Document]:
    """One document for the page; see the module docstring for what counts as its text."""
    body, head = _parse(info, data, context)
    meta = _meta(head)
    builder: _Builder | None = None
    for root in _candidates(body):
        builder = _Builder(banner_level=root is body)
        builder.walk(root)
        builder.end_section()
        if builder.sections:
            break
    if builder is None or not builder.sections:
        raise LoadError(f"{info.path}: no text in the page's body, nothing to index")
    title = _title(head, builder.first_h1) or title_from_name(info.path)
    sections = [drop_top_heading(section, title) for section in builder.sections]
    return [
        Document(
            id=info.document_id,
            source=info.source,
            uri=info.uri,
            title=title,
            sections=tuple(sections),
            updated_at=_updated_at(meta) or info.modified_at,
            acl_groups=split_names(meta.get("kb-acl-groups", "")),
            tags=split_names(meta.get("keywords", "")),
            size_bytes=info.size_bytes,
        )
    ]


def _parse(info: FileInfo, data: bytes, context: LoadContext) -> tuple[Tag, Tag]:
    """The page's <body> and the whole tree (for <head>); bytes, so the page's own charset applies."""
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf16 and b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise LoadError(f"{info.path}: binary file, not HTML (contains NUL bytes)")
    # bs4 warns about input that looks like a file name or like XML, and logs undecodable bytes;
    # the loader's answer is the document (with a note) or a LoadError, so those go to the debug log.
    with quiet_library(info.path, "bs4"):
        # Decoding first, rather than handing bytes to lxml, keeps a garbled charset name in a
        # <meta> tag from reaching lxml's parser setup, which refuses it with a ValueError.
        dammit = UnicodeDammit(data, is_html=True)
        if dammit.unicode_markup is None:
            raise LoadError(f"{info.path}: cannot tell the HTML page's text encoding")
        try:
            soup = BeautifulSoup(dammit.unicode_markup, "lxml")
        except RecursionError as exc:
            raise LoadError(f"{info.path}: HTML nested too deeply to read") from exc
        except Exception as exc:  # lxml refuses some damaged input outright
            raise LoadError(f"{info.path}: unreadable HTML ({exc.__class__.__name__}: {exc})") from exc
    if dammit.contains_replacement_characters:
        context.on_note(f"bytes that are not {dammit.original_encoding} text were replaced with '\ufffd'")
    if soup.body is None:
        raise LoadError(f"{info.path}: HTML without a <body>, nothing to index")
    return soup.body, soup


def _candidates(body: Tag) -> list[Tag]:
    """Where the main text may be, best first; the body is the last resort."""
    found: list[Tag] = []
    main = body.find("main")
    if isinstance(main, Tag):
        found.append(main)
    role = body.find(None, {"role": "main"})
    if isinstance(role, Tag):
        found.append(role)
    articles = body.find_all("article")
    if len(articles) == 1 and isinstance(articles[0], Tag):
        found.append(articles[0])
    return [*found, body]


class _Then:
    """A step of the walk that runs after an element's children."""

    __slots__ = ("action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action


def _nothing() -> None:
    """A sentinel callable: "no action after this element"."""


class _Builder:
    """Walks the content tree once and collects sections of text under their heading path."""

    def __init__(self, *, banner_level: bool) -> None:
        self.banner_level = banner_level
        self.sections: list[Section] = []
        self.first_h1: str | None = None
        self._stack: list[tuple[int, str]] = []
        self._anchor = ""
        self._paragraphs: list[str] = []
        self._lines: list[str] = []
        self._line: list[str] = []
        self._prefix = ""
        self._lists: list[list[int] | None] = []  # a counter for each open <ol>, None for <ul>

    def walk(self, root: Tag) -> None:
        # An explicit stack rather than recursion: old pages with unclosed inline tags (<font>,
        # <b>) nest thousands of elements deep, past Python's recursion limit.
        stack: list[PageElement | _Then] = [*reversed(list(root.children))]
        while stack:
            item = stack.pop()
            if isinstance(item, _Then):
                item.action()
            elif isinstance(item, NavigableString):
                if not isinstance(item, PreformattedString):  # comments, CDATA, doctype
                    self._text(str(item))
            elif isinstance(item, Tag) and not self._skipped(item):
                after = self._enter(item)
                if after is None:
                    continue
                if after is not _nothing:
                    stack.append(_Then(after))
                stack.extend(reversed(list(item.children)))

    def _enter(self, tag: Tag) -> Callable[[], None] | None:
        """Start an element; returns what to do after its children, or None if it is done already."""
        name = tag.name
        if name in _HEADINGS:
            self._heading(int(name[1]), tag)
            return None
        if name == "table":
            self.end_paragraph()
            rows = _table_rows(tag)
            self._paragraphs.extend(["\n".join(rows)] if rows else [])
            return None
        if name == "pre":
            self.end_paragraph()
            text = tag.get_text().strip("\n")
            self._paragraphs.extend([text] if text.strip() else [])
            return None
        if name in ("ul", "ol"):
            self.end_paragraph()
            start = _attr(tag, "start").strip()
            self._lists.append(
                [int(start) if re.fullmatch(r"[0-9]{1,9}", start) else 1] if name == "ol" else None
            )
            return self._end_list
        if name == "li":
            self.end_line()
            counter = self._lists[-1] if self._lists else None
            self._prefix = f"{counter[0]}. " if counter else "- "
            if counter:
                counter[0] += 1
            return self.end_line
        if name in _LINES:
            self.end_line()
            return self.end_line
        if name in _BLOCKS:
            self.end_paragraph()
            return self.end_paragraph
        return _nothing

    def _end_list(self) -> None:
        self._lists.pop()
        self.end_paragraph()

    def _skipped(self, tag: Tag) -> bool:
        """Navigation, chrome and hidden things, which are not the page's content."""
        if tag.name in _DROP or _attr(tag, "role") in _CHROME_ROLES:
            return True
        if tag.has_attr("hidden") or _attr(tag, "aria-hidden") == "true":
            return True
        if _HIDDEN_STYLE.search(_attr(tag, "style")) or _SKIPPED_CLASSES & _classes(tag):
            return True
        # A header or footer outside any article or section is the site's banner or footer.
        return self.banner_level and tag.name in ("header", "footer") and not tag.find_parent(_BANNER_SCOPES)

    def _heading(self, level: int, tag: Tag) -> None:
        name = _plain(tag).rstrip("¶#§ ").strip()
        if not name:
            return
        self.end_section()
        if level == 1 and self.first_h1 is None:
            self.first_h1 = name
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, name))
        self._anchor = _anchor(tag)

    def _text(self, text: str) -> None:
        if not self._line and not text.strip():
            return
        if not self._line and self._prefix:
            self._line.append(self._prefix)
            self._prefix = ""
        self._line.append(text)

    def end_line(self) -> None:
        line = " ".join("".join(self._line).split())
        if line:
            self._lines.append(line)
        self._line.clear()

    def end_paragraph(self) -> None:
        self.end_line()
        if self._lines:
            self._paragraphs.append("\n".join(self._lines))
        self._lines.clear()

    def end_section(self) -> None:
        self.end_paragraph()
        text = "\n\n".join(self._paragraphs).strip()
        if text:
            headings = tuple(name for _, name in self._stack)
            self.sections.append(Section(text=text, headings=headings, anchor=self._anchor))
        self._paragraphs.clear()


def _attr(tag: Tag, name: str) -> str:
    value = tag.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) else " ".join(value)


def _classes(tag: Tag) -> set[str]:
    return set(_attr(tag, "class").split())


def _plain(tag: Tag) -> str:
    """A tag's text on one line, without the parts a reader does not see (permalinks, hidden bits)."""
    parts: list[str] = []
    stack: list[PageElement | str] = [tag]
    while stack:
        node = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):
                parts.append(str(node))
        elif isinstance(node, Tag):
            unseen = node.name in _DROP or _attr(node, "aria-hidden") == "true"
            if unseen or _PERMALINK_CLASSES & _classes(node):
                continue  # unseen: scripts, permalinks, decorations
            if node.name in _LINES or node.name in _BLOCKS:
                stack.append(" ")  # after the children: block boundaries separate words
            stack.extend(reversed(list(node.children)))
        elif isinstance(node, str):
            parts.append(node)
    return " ".join("".join(parts).split())


def _table_rows(table: Tag) -> list[str]:
    """The table as `a | b | c` lines, caption first; rows of nested tables stay inside their cell."""
    rows: list[str] = []
    caption = table.find("caption")
    if isinstance(caption, Tag) and caption.find_parent("table") is table and _plain(caption):
        rows.append(_plain(caption))
    for row in table.find_all("tr"):
        if not isinstance(row, Tag) or row.find_parent("table") is not table:
            continue
        cells = [
            _plain(cell) for cell in row.find_all(["td", "th"], recursive=False) if isinstance(cell, Tag)
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _anchor(heading: Tag) -> str:
    """The id a browser scrolls to for this heading, or "" when the page defines none."""
    if own := _attr(heading, "id"):
        return own
    section = heading.find_parent(
        lambda t: t.name == "section" or (t.name == "div" and "section" in _classes(t))
    )
    if isinstance(section, Tag) and _attr(section, "id") and section.find(_HEADINGS) is heading:
        return _attr(section, "id")
    for link in heading.find_all("a"):
        href = _attr(link, "href")
        if _PERMALINK_CLASSES & _classes(link) and href.startswith("#") and len(href) > 1:
            return href[1:]
        if named := _attr(link, "id") or _attr(link, "name"):
            return named
    before = heading.find_previous_sibling()
    if isinstance(before, Tag) and before.name in ("a", "span") and not _plain(before):
        return _attr(before, "id") or _attr(before, "name")
    return ""


def _meta(soup: Tag) -> dict[str, str]:
    values: dict[str, str] = {}
    for tag in soup.find_all("meta"):
        if not isinstance(tag, Tag):
            continue
        key = (_attr(tag, "name") or _attr(tag, "property") or _attr(tag, "http-equiv")).strip().lower()
        if key and key not in values:
            values[key] = _attr(tag, "content").strip()
    return values


def _title(soup: Tag, first_h1: str | None) -> str:
    """<title>, unless the first h1 says the same without the site's name, as pages usually do."""
    tag = soup.find("title")
    title = " ".join(tag.get_text().split()) if isinstance(tag, Tag) else ""
    if not first_h1:
        return title
    suffixed = _SITE_SUFFIX.match(title)
    if not title or title.startswith(first_h1) or (suffixed and first_h1.startswith(suffixed["head"])):
        return first_h1
    return title


def _updated_at(meta: dict[str, str]) -> datetime | None:
    for name in _DATE_NAMES:
        value = meta.get(name, "")
        if not value:
            continue
        parsed = parse_date(value)
        if parsed is None:
            try:  # the HTTP date format that http-equiv="last-modified" uses
                parsed = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
