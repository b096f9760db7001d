"""Build question -> answer training pairs for a reranker from FAQ-style Debian documentation.

    .venv/bin/python bench/faq_pairs.py [--out bench/data/faq-pairs] [--max-words 300]

Scans the HTML documentation of the Debian packages listed in DOC_SOURCES (never a CPython
documentation package: the Python FAQ from python3.11-doc is the retrieval test set). A heading is a
question when its text ends with "?" or starts with How/Why/What/When/Where/Can/Is/Does/Should/Which.
Its answer is the text under it up to the next heading of the same or a higher level.

Output, in OUT:
  pairs.jsonl     {"query", "positive", "source": "pkg/path#anchor", "doc": "pkg/path"}
  sections.jsonl  {"doc", "anchor", "heading", "text"} for every section (question or not) of every
                  document that gave at least one pair, to draw same-page negatives from.
Answers under MIN_WORDS words are skipped; identical queries are kept once; queries that repeat a
Python FAQ test query (bench/data/python-faq/queries.jsonl, when present) are dropped.
Missing documentation directories are reported with the apt-get command that installs them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup, Tag, XMLParsedAsHTMLWarning
from bs4.element import NavigableString

# (Debian package, documentation directory it installs). Paths in the output are "package/relative path".
DOC_SOURCES: list[tuple[str, str]] = [
    ("python-django-doc", "/usr/share/doc/python-django-doc/html"),
    ("debian-faq", "/usr/share/doc/debian/FAQ"),
    ("git-doc", "/usr/share/doc/git-doc"),
    ("sphinx-doc", "/usr/share/doc/sphinx-doc/html"),
    ("python-scipy-doc", "/usr/share/doc/python-scipy-doc/html"),
    ("postgresql-doc-15", "/usr/share/doc/postgresql-doc-15/html"),
    ("python-sqlalchemy-doc", "/usr/share/doc/python-sqlalchemy-doc/html"),
    ("python-requests-doc", "/usr/share/doc/python-requests-doc/html"),
    ("debian-reference-en", "/usr/share/debian-reference"),
    ("apache2-doc", "/usr/share/doc/apache2-doc/manual/en"),
    ("python-setuptools-doc", "/usr/share/doc/python-setuptools-doc/html"),
    ("python-pytest-doc", "/usr/share/doc/python-pytest-doc/html"),
    ("python-celery-doc", "/usr/share/doc/python-celery-doc/html"),
    ("python-scrapy-doc", "/usr/share/doc/python-scrapy-doc/html"),
    ("python-pymongo-doc", "/usr/share/doc/python-pymongo-doc/html"),
    ("python-lxml-doc", "/usr/share/doc/python-lxml-doc/html"),
    ("python-psycopg2-doc", "/usr/share/doc/python-psycopg2-doc/html"),
    ("python-pexpect-doc", "/usr/share/doc/python-pexpect-doc/html"),
    ("python-pygments-doc", "/usr/share/doc/python-pygments-doc/html"),
    ("python-cryptography-doc", "/usr/share/doc/python-cryptography-doc/html"),
    ("docutils-doc", "/usr/share/doc/docutils-doc"),
    ("python-sklearn-doc", "/usr/share/doc/python-sklearn-doc/html"),
    ("python-xarray-doc", "/usr/share/doc/python-xarray-doc/html"),
    ("python-pandas-doc", "/usr/share/doc/python-pandas-doc/html"),
    ("python-dask-doc", "/usr/share/doc/python-dask-doc/html"),
    ("python-statsmodels-doc", "/usr/share/doc/python-statsmodels-doc/html"),
    ("python-h5py-doc", "/usr/share/doc/python-h5py-doc/html"),
    ("python-jinja2-doc", "/usr/share/doc/python-jinja2-doc/html"),
    ("python-tornado-doc", "/usr/share/doc/python-tornado-doc/html"),
    ("sqlite3-doc", "/usr/share/doc/sqlite3"),
    ("python-flask-doc", "/usr/share/doc/python-flask-doc/html"),
    ("mypy-doc", "/usr/share/doc/mypy/html"),
    ("cython-doc", "/usr/share/doc/cython-doc/html"),
    ("python-hypothesis-doc", "/usr/share/doc/python-hypothesis-doc/html"),
    ("python-kombu-doc", "/usr/share/doc/python-kombu-doc/html"),
    ("python-eventlet-doc", "/usr/share/doc/python-eventlet-doc/html"),
    ("python-gevent-doc", "/usr/share/doc/python-gevent-doc/html"),
    ("python-sympy-doc", "/usr/share/doc/python-sympy-doc/html"),
    ("python-astropy-doc", "/usr/share/doc/python-astropy-doc/html"),
    ("python-peewee-doc", "/usr/share/doc/python-peewee-doc/html"),
    ("python-werkzeug-doc", "/usr/share/doc/python-werkzeug-doc/html"),
    ("python-click-doc", "/usr/share/doc/python-click-doc/html"),
    ("python-attr-doc", "/usr/share/doc/python-attr-doc/html"),
    ("python-cffi-doc", "/usr/share/doc/python-cffi-doc/html"),
    ("python-coverage-doc", "/usr/share/doc/python-coverage-doc/html"),
    ("python-webob-doc", "/usr/share/doc/python-webob-doc"),
    ("python-mako-doc", "/usr/share/doc/python-mako-doc/html"),
    ("python-tables-doc", "/usr/share/doc/python-tables-doc/html"),
    ("python-skimage-doc", "/usr/share/doc/python-skimage-doc/html"),
    ("zsh-doc", "/usr/share/doc/zsh-common"),
    ("python-aiohttp-doc", "/usr/share/doc/python-aiohttp-doc/html"),
    ("pylint-doc", "/usr/share/doc/pylint/html"),
    ("python-pygame-doc", "/usr/share/doc/python-pygame-doc/html"),
    ("perl-doc", "/usr/share/perl/5.36.0/pod"),
    ("r-doc-html", "/usr/share/R/doc/manual"),
    ("python-bottle-doc", "/usr/share/doc/python-bottle-doc/html"),
    ("python-pint-doc", "/usr/share/doc/python-pint-doc/html"),
    ("python-ldap-doc", "/usr/share/doc/python-ldap-doc/html"),
    ("python-rdflib-doc", "/usr/share/doc/python-rdflib-doc/html"),
    ("valgrind", "/usr/share/doc/valgrind/html"),
    ("libvirt-doc", "/usr/share/doc/libvirt-doc/html"),
    ("developers-reference", "/usr/share/developers-reference"),
    ("debian-handbook", "/usr/share/doc/debian-handbook/html/en-US"),
    ("postfix-doc", "/usr/share/doc/postfix/html"),
    ("aptitude-doc-en", "/usr/share/doc/aptitude/html/en"),
    ("python-webtest-doc", "/usr/share/doc/python-webtest-doc"),
    ("python-mongoengine-doc", "/usr/share/doc/python-mongoengine-doc/html"),
    ("python-jsonschema-doc", "/usr/share/doc/python-jsonschema-doc/html"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/book"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/edition-guide"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/embedded-book"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/reference"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/nomicon"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/rust-by-example"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/rustc"),
    ("rust-doc", "/usr/share/doc/rust-doc/html/rustdoc"),
    ("python-pydicom-doc", "/usr/share/doc/python-pydicom-doc/html"),
    ("python-nibabel-doc", "/usr/share/doc/python-nibabel-doc/html"),
    ("python-imageio-doc", "/usr/share/doc/python-imageio-doc/html"),
    ("python-structlog-doc", "/usr/share/doc/python-structlog-doc/html"),
    ("python-lark-doc", "/usr/share/doc/python-lark-doc/html"),
    ("python-nose2-doc", "/usr/share/doc/python-nose2/html"),
    ("bind9-doc", "/usr/share/doc/bind9-doc/arm"),
    ("kea-doc", "/usr/share/doc/kea/html/arm"),
    ("nut-doc", "/usr/share/doc/nut-doc/html"),
    ("libgtk-3-doc", "/usr/share/gtk-doc/html/gtk3"),
    ("wireshark-doc", "/usr/share/doc/wireshark/wsug_html_chunked"),
    ("courier-doc", "/usr/share/doc/courier-doc/html"),
]

# CPython documentation would leak the test set; refuse it even if someone adds it above.
FORBIDDEN_PACKAGE = re.compile(r"^python3(\.\d+)?-doc$|^python-doc$")
TEST_QUERIES = Path(__file__).resolve().parent / "data" / "python-faq" / "queries.jsonl"

MIN_WORDS = 15
MIN_QUERY_WORDS = 3
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6", "h7")  # h7: a FAQ entry marked up as <dt> or <p><b>
QUESTION_START = re.compile(r"^(how|why|what|when|where|can|is|does|should|which)\b", re.IGNORECASE)
# Headings that look like questions but are release notes or navigation.
NOT_QUESTIONS = re.compile(r"^(what'?s new|what’s new|what is new|whatsnew)", re.IGNORECASE)
SKIP_PARTS = {"_sources", "_static", "_modules", "_images", "_downloads", "_sphinx_design_static", "genindex"}
SKIP_NAMES = re.compile(
    r"^(genindex|search|py-modindex|modindex|searchindex)(-.*)?\.html?$|^perltoc\.pod$|^print\.html$"
)
# Page furniture whose text belongs to no section (Sphinx, DocBook, Apache manual, asciidoc).
FURNITURE = (
    "script, style, nav, header, footer, div.sphinxsidebar, div.related, div.footer, a.headerlink, "
    "div.navheader, div.navfooter, div.toc, div.contents, div.topic.contents, div.toctree-wrapper, "
    "div#quickview, div#page-header, div.toplang, div.bottomlang, div#path, div#footer, "
    "div#toc, div.navigation, div.breadcrumbs, div.rst-footer-buttons, div.bd-sidebar, "
    "div.bd-sidebar-primary, div.bd-sidebar-secondary, div.bd-header-article, div.prev-next-area, "
    "div.sidebar-drawer, div.toc-drawer, aside, div.sphinxsidebarwrapper, div#sidebar"
)
FAQ_TITLE = re.compile(r"<(title|h1)[^>]*>[^<]*(FAQ|Frequently Asked|Common Questions)", re.IGNORECASE)
QA_PREFIX = re.compile(r"^(Q\s*\d*\s*[:.]\s*|\(\d+\)\s*|\d+(\.\d+)+[.):]?\s+|\d+[.):]\s+)+")
QUESTION_PREFIX = re.compile(r"^Q\s*\d*\s*[:.]\s*\S")
ANSWER_PREFIX = re.compile(r"^A\s*[:.]")
POD_CODE = re.compile(r"([A-Z])<([^<>]*)>")
POD_CODE_DOUBLE = re.compile(r"([A-Z])<<+\s+(.*?)\s+>>+", re.DOTALL)
POD_HEAD_RE = re.compile(r"^=head\d\s+(.*)$", re.MULTILINE)
HEADING_RE = re.compile(r"<h[1-6][^>]*>(.*?)</h[1-6]\s*>", re.IGNORECASE | re.DOTALL)
TAG_RE = re.compile(r"<[^>]+>")


@dataclass
class Section:
    level: int
    heading: str
    anchor: str
    own: list[str]

    def text_words(self) -> list[str]:
        return " ".join(self.own).split()


def _collapse(text: str) -> str:
    return " ".join(text.replace("¶", " ").split())


def is_question(heading: str) -> bool:
    if NOT_QUESTIONS.match(heading) or len(heading.split()) < MIN_QUERY_WORDS:
        return False
    if heading.endswith(("…", "...", ":")):  # "How do I…": a group of questions, not one
        return False
    if heading.endswith("?"):
        return True
    # "WHERE Clause" (SQL keywords) is not a question; "How to ..." / "Why ..." without a "?" is.
    first = heading.split()[0]
    return bool(QUESTION_START.match(heading)) and not first.isupper()


def _maybe_has_question(raw: str) -> bool:
    """Cheap pre-filter on the raw HTML so that only pages with a question heading get parsed."""
    for match in HEADING_RE.finditer(raw):
        text = _collapse(TAG_RE.sub(" ", match.group(1))).replace("&#182;", "").strip()
        if "?" in text or QUESTION_START.match(text):
            return True
    return False


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _named_link(tag: Tag) -> str | None:
    """The id or name of the first link inside `tag` that has one."""
    for link in tag.find_all("a"):
        for attr in ("id", "name"):
            if link.get(attr):
                return str(link[attr])
    return None


def _entry_anchor(entry: Tag) -> str | None:
    """A FAQ entry's own anchor: its id, a named link inside it, or a named link just before it."""
    if entry.get("id"):
        return str(entry["id"])
    named = _named_link(entry)
    if named:
        return named
    previous = entry.find_previous_sibling()
    if isinstance(previous, Tag) and previous.name == "a" and not previous.get_text(strip=True):
        return str(previous.get("name") or previous.get("id") or "") or None
    return None


def _anchor(heading: Tag) -> str:
    if heading.name == "h7":
        return _entry_anchor(heading) or _slug(_collapse(heading.get_text(" ")))
    parent = heading.parent
    if isinstance(parent, Tag) and parent.name in ("section", "div") and parent.get("id"):
        return str(parent["id"])
    if heading.get("id"):
        return str(heading["id"])
    named = _named_link(heading)
    if named:
        return named
    # DocBook puts the id on the enclosing div.section, two levels up (div.titlepage > div > h2).
    for ancestor in heading.parents:
        if not isinstance(ancestor, Tag) or ancestor.name == "body":
            break
        is_section = ancestor.name == "section" or "section" in (ancestor.get("class") or [])
        if ancestor.name in ("section", "div") and ancestor.get("id") and is_section:
            return str(ancestor["id"])
    return _slug(_collapse(heading.get_text(" ")))


def is_faq_page(rel_path: str, raw: str) -> bool:
    return "faq" in rel_path.lower() or bool(FAQ_TITLE.search(raw[:20000]))


def _mark_faq_entries(body: Tag) -> None:
    """On a FAQ page, entries written as <dt>question</dt><dd>answer</dd> or as a paragraph that is
    only a bold question ("Q: ...?", "(3) ...?") become level-7 headings, so the walk splits them."""
    for dt in body.find_all("dt"):
        if dt.find_parent("h7") is not None:
            continue
        if not ANSWER_PREFIX.match(_collapse(dt.get_text(" "))):
            dt.name = "h7"
    for para in body.find_all("p"):
        if para.find_parent("h7") is not None:
            continue
        text = _collapse(para.get_text(" "))
        if QUESTION_PREFIX.match(text):  # "Q: ...", whatever the markup
            para.name = "h7"
            continue
        children = [c for c in para.children if not (isinstance(c, NavigableString) and not c.strip())]
        if len(children) != 1 or not isinstance(children[0], Tag) or children[0].name not in ("b", "strong"):
            continue
        if text.endswith("?") or QA_PREFIX.match(text):
            para.name = "h7"


def _query_text(heading: str, parent: str | None) -> str:
    """ "Q: (3) How ...?" -> "How ...?"; Sphinx's "How do I…" + "… get section numbers?" are joined."""
    text = QA_PREFIX.sub("", heading).strip()
    if parent is not None and text[:1] in ("…", ".") and parent.rstrip(".… ") != parent:
        text = parent.rstrip(".… ") + " " + text.lstrip(".… ")
    return text


def _is_toc_entry(heading: Tag) -> bool:
    """A heading that is only a link to another page (zsh's FAQ contents page). A link back to the
    page's own contents (docutils' toc-backref, href="#...") does not count."""
    text = _collapse(heading.get_text(" "))
    links = [a for a in heading.find_all("a", href=True) if not str(a["href"]).startswith("#")]
    return bool(text) and any(_collapse(a.get_text(" ")) == text for a in links)


def sections_of(html: str, faq_page: bool = False) -> list[Section]:
    """The page's headings in order, each with the text that follows it up to the next heading."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    body = soup.body or soup
    for furniture in body.select(FURNITURE):
        furniture.decompose()
    for row in body.select("tr.question"):  # DocBook <qandaset>, on any page
        row.name = "h7"
    if faq_page:
        _mark_faq_entries(body)
    sections: list[Section] = []
    current: Section | None = None
    for node in body.descendants:
        if isinstance(node, Tag) and node.name in HEADINGS and _is_toc_entry(node):
            current = None  # a table of contents: its entries are headings elsewhere
        elif isinstance(node, Tag) and node.name in HEADINGS:
            level, heading = int(node.name[1]), QA_PREFIX.sub("", _collapse(node.get_text(" ")))
            if level == 7:
                parent = next((s.heading for s in reversed(sections) if s.level < 7), None)
                heading = _query_text(heading, parent)
            current = Section(level, heading, _anchor(node), [])
            sections.append(current)
        elif isinstance(node, NavigableString) and current is not None:
            if type(node) is not NavigableString:  # comments, doctypes, CDATA
                continue
            if any(isinstance(p, Tag) and p.name in HEADINGS for p in node.parents):
                continue
            current.own.append(str(node))
    return sections


def _pod_plain(text: str) -> str:
    """POD formatting codes to plain text: C<code>, L<text|target>, B<< x >>, E<gt> ..."""
    text = text.replace("E<lt>", "<").replace("E<gt>", ">").replace("E<verbar>", "|").replace("E<sol>", "/")
    previous = None
    while previous != text:
        previous = text
        text = POD_CODE_DOUBLE.sub(lambda m: m.group(2), text)
        text = POD_CODE.sub(lambda m: m.group(2).split("|")[0] if m.group(1) == "L" else m.group(2), text)
    return text


def pod_sections(pod: str) -> list[Section]:
    """perlfaq and friends: =head1/=head2 are the headings; =item text is kept, other commands dropped."""
    sections: list[Section] = []
    current: Section | None = None
    in_begin = False
    for line in pod.splitlines():
        if line.startswith("="):
            command, _, rest = line.partition(" ")
            if command.startswith("=head") and command[5:].isdigit():
                heading = _collapse(_pod_plain(rest))
                current = Section(int(command[5:]), heading, _slug(heading), [])
                sections.append(current)
            elif command == "=begin":
                in_begin = True
            elif command == "=end":
                in_begin = False
            elif command == "=item" and current is not None:
                current.own.append(_pod_plain(rest))
            continue
        if current is not None and not in_begin:
            current.own.append(_pod_plain(line))
    return sections


def section_texts(sections: list[Section], max_words: int) -> list[str]:
    """Each section's text up to the next heading of the same or a higher level, truncated."""
    texts = []
    for i, section in enumerate(sections):
        words = section.text_words()
        for later in sections[i + 1 :]:
            if later.level <= section.level or len(words) >= max_words:
                break
            words += later.heading.split() + later.text_words()
        if section.level == 7 and words and words[0] in ("A:", "A.", "A", "Answer:", "Answer"):
            words = words[1:]
            words = words[1:] if words and words[0] == ":" else words
        texts.append(" ".join(words[:max_words]))
    return texts


def _read(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def doc_files(root: Path) -> list[Path]:
    """HTML pages and POD documents under root, minus indexes, search pages and copies of sources."""
    files = []
    for path in sorted(root.rglob("*")):
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        if not name.endswith((".html", ".htm", ".pod")) or SKIP_NAMES.match(name):
            continue
        if SKIP_PARTS.intersection(path.relative_to(root).parts):
            continue
        if path.is_file():
            files.append(path)
    return files


def _test_queries() -> set[str]:
    if not TEST_QUERIES.exists():
        return set()
    with TEST_QUERIES.open() as f:
        return {json.loads(line)["query"].strip().lower() for line in f if line.strip()}


def build(out: Path, max_words: int) -> Counter[str]:
    out.mkdir(parents=True, exist_ok=True)
    banned = _test_queries()
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    roots_per_package = Counter(pkg for pkg, _ in DOC_SOURCES)
    missing = [(pkg, d) for pkg, d in DOC_SOURCES if not Path(d).is_dir()]
    for pkg, d in missing:
        print(f"missing {d}: apt-get install -y --no-install-recommends {pkg}", file=sys.stderr)
    with (out / "pairs.jsonl").open("w") as pairs_f, (out / "sections.jsonl").open("w") as sections_f:
        for pkg, d in DOC_SOURCES:
            if FORBIDDEN_PACKAGE.match(pkg):
                raise SystemExit(f"{pkg} is CPython documentation: it holds the test set")
            root = Path(d)
            if not root.is_dir():
                continue
            counts[pkg] += 0
            for path in doc_files(root):
                raw = _read(path)
                rel = path.relative_to(root).as_posix().removesuffix(".gz")
                if roots_per_package[pkg] > 1:  # rust-doc/book/..., rust-doc/reference/...
                    rel = f"{root.name}/{rel}"
                if rel.endswith(".pod"):
                    if not any(is_question(_pod_plain(h).strip()) for h in POD_HEAD_RE.findall(raw)):
                        continue
                    sections = pod_sections(raw)
                else:
                    faq_page = is_faq_page(rel, raw)
                    if not faq_page and not _maybe_has_question(raw):
                        continue
                    sections = sections_of(raw, faq_page)
                texts = section_texts(sections, max_words)
                doc = f"{pkg}/{rel}"
                page_pairs = []
                for section, text in zip(sections, texts, strict=True):
                    query = section.heading
                    key = query.lower()
                    if not is_question(query) or key in seen or key in banned:
                        continue
                    if len(text.split()) < MIN_WORDS:
                        continue
                    seen.add(key)
                    page_pairs.append(
                        {"query": query, "positive": text, "source": f"{doc}#{section.anchor}", "doc": doc}
                    )
                if not page_pairs:
                    continue
                counts[pkg] += len(page_pairs)
                for pair in page_pairs:
                    pairs_f.write(json.dumps(pair, ensure_ascii=False) + "\n")
                for section, text in zip(sections, texts, strict=True):
                    row = {"doc": doc, "anchor": section.anchor, "heading": section.heading, "text": text}
                    sections_f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if missing:
        pkgs = " ".join(pkg for pkg, _ in missing)
        install = f"apt-get install -y --no-install-recommends {pkgs}"
        print(f"{len(missing)} sources missing; install with: {install}", file=sys.stderr)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/data/faq-pairs"))
    parser.add_argument("--max-words", type=int, default=300)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    counts = build(args.out, args.max_words)
    for pkg, n in counts.most_common():
        print(f"{n:6d}  {pkg}")
    print(
        f"{sum(counts.values())} pairs from {sum(1 for n in counts.values() if n)} packages "
        f"in {time.perf_counter() - start:.1f} s -> {args.out}/pairs.jsonl, {args.out}/sections.jsonl"
    )


if __name__ == "__main__":
    main()
