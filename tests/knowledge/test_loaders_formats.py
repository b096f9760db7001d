"""Loaders for HTML, PDF, Word, CSV and JSON: what a good file gives, and how a bad one is refused."""

from __future__ import annotations

import io
import logging
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfWriter
from sqlalchemy import Engine

from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.errors import LoadError
from knowledge.loaders import load_file, supported
from knowledge.loaders.base import RecordOptions
from knowledge.service import KnowledgeBase
from knowledge.types import Document

FIXTURES = Path(__file__).parent / "fixtures"


def _load(path: Path, *, max_bytes: int = 5_000_000, options: RecordOptions | None = None) -> list[Document]:
    return load_file(path, root=path.parent, source="docs", max_bytes=max_bytes, options=options)


def _fixture(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copy(FIXTURES / name, tmp_path / name))


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _refused(path: Path, reason: str, **kwargs: object) -> None:
    with pytest.raises(LoadError) as caught:
        _load(path, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)


def _outline(doc: Document) -> list[tuple[str, str]]:
    return [(section.path, section.anchor) for section in doc.sections]


# --- HTML ------------------------------------------------------------------------------------------------


def test_sphinx_page_sections_use_the_section_ids() -> None:
    (doc,) = _load(FIXTURES / "sphinx-module.html")
    assert doc.id == "docs:sphinx-module.html" and doc.uri == "docs/sphinx-module.html"
    assert doc.title == "shelve — Python object persistence"
    assert _outline(doc) == [
        ("", "module-shelve"),
        ("Restrictions", "restrictions"),
        ("Example", "example"),
        ("Example > Nested example", "nested-example"),
    ]
    text = doc.text
    assert "'r' | Open for reading only" in text
    assert "- The shelve module does not support concurrent read/write access." in text
    assert "\n    # indented comment keeps its spaces" in text, "<pre> keeps its indentation"
    assert "shelve.open(filename, flag='c')" in text
    for chrome in ("¶", "Table of Contents", "Previous topic", "Copyright", "Navigation", "dark", "theme"):
        assert chrome not in text


def test_legacy_sphinx_page_in_latin1_with_named_anchors() -> None:
    (doc,) = _load(FIXTURES / "sphinx-legacy.html")
    assert doc.title == "Pump maintenance guide"
    assert doc.tags == ("engineering", "pumps", "maintenance")
    assert [s.anchor for s in doc.sections] == [
        "pump-maintenance-guide",
        "intervals",
        "bearings",
        "lubrication",
    ]
    assert "20 °C, Straße, café" in doc.text, "the declared charset is honoured"
    assert "Table Of Contents" not in doc.text and "Copyright" not in doc.text


def test_intranet_article_metadata_and_main_text() -> None:
    (doc,) = _load(FIXTURES / "intranet-article.html")
    assert doc.title == "Salary review 2027", "the site suffix of <title> is dropped"
    assert doc.acl_groups == ("hr", "managers")
    assert doc.tags == ("hr", "pay", "salary review")
    assert doc.updated_at == datetime(2026, 10, 2, 9, 15, tzinfo=UTC)
    assert _outline(doc) == [("", "salary-review"), ("Timeline", "timeline"), ("Budget by band", "budget")]
    assert doc.sections[1].text == "1. Managers receive budgets.\n2. Proposals are due on 31 January."
    assert "B1–B3 | 3.0%" in doc.text and "Owner: HR Business Partners" in doc.text
    for dropped in (
        "Draft note",
        "hidden draft",
        "tracking",
        "Quick links",
        "helpful",
        "© Halden",
        "PeopleHub",
    ):
        assert dropped not in doc.text


def test_main_element_wins_and_headings_without_ids_get_no_anchor(tmp_path: Path) -> None:
    page = _write(
        tmp_path,
        "menu.htm",
        "<html><body><div>Cookie banner text</div><main><h1>Menu</h1><p>Soup.</p>"
        "<h2>Friday</h2><p>Fish.</p></main></body></html>",
    )
    (doc,) = _load(page)
    assert doc.title == "Menu" and _outline(doc) == [("", ""), ("Friday", "")]
    assert "Cookie" not in doc.text


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<html><head><title>Only a head</title></head></html>", "HTML without a <body>"),
        (b"<html><body><nav>Home</nav><script>x()</script>\n</body></html>", "no text in the page's body"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file, not HTML"),
    ],
)
def test_html_without_body_or_text_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    _refused(_write(tmp_path, "page.html", content), reason)


# --- PDF -------------------------------------------------------------------------------------------------


def _pdf_variant(tmp_path: Path, name: str, change: str) -> Path:
    writer = PdfWriter(clone_from=FIXTURES / "expenses.pdf")
    if change == "user-password":
        writer.encrypt(user_password="secret", algorithm="AES-128")
    elif change == "owner-password":
        writer.encrypt(user_password="", owner_password="owner", algorithm="AES-256")
    elif change == "no-title":
        writer.add_metadata({"/Title": "Microsoft Word - expenses.docx", "/ModDate": "yesterday"})
    elif change == "scanned":
        writer = PdfWriter()
        writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return _write(tmp_path, name, buffer.getvalue())


def test_pdf_pages_become_sections_with_page_anchors() -> None:
    (doc,) = _load(FIXTURES / "expenses.pdf")
    assert doc.title == "Expense rules at a glance"
    assert [(s.page, s.anchor, s.path) for s in doc.sections] == [
        (1, "page=1", "Page 1"),
        (2, "page=2", "Page 2"),
        (3, "page=3", "Page 3"),
    ]
    assert "EUR 28" in doc.sections[0].text and "30 days" in doc.sections[2].text
    assert doc.tags == ("finance", "expenses") and doc.acl_groups == ("finance", "managers")
    assert doc.updated_at == datetime(2026, 3, 5, 13, 30, tzinfo=UTC)


def test_pdf_without_a_usable_title_or_date_falls_back(tmp_path: Path) -> None:
    path = _pdf_variant(tmp_path, "expenses.pdf", "no-title")
    (doc,) = _load(path)
    assert doc.title == "Per diems", "a file name as /Title is no title; the first line is"
    assert doc.updated_at == datetime.fromtimestamp(path.stat().st_mtime, UTC)


def test_pdf_encrypted_only_against_changes_is_read(tmp_path: Path) -> None:
    (doc,) = _load(_pdf_variant(tmp_path, "locked.pdf", "owner-password"))
    assert len(doc.sections) == 3


def test_bad_pdfs_are_refused_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    data = (FIXTURES / "expenses.pdf").read_bytes()
    cases = [
        (
            _pdf_variant(tmp_path, "secret.pdf", "user-password"),
            "encrypted PDF, cannot read without a password",
        ),
        (
            _pdf_variant(tmp_path, "scan.pdf", "scanned"),
            "no extractable text in the PDF (a scanned document?)",
        ),
        (_write(tmp_path, "cut.pdf", data[: len(data) // 2]), "truncated PDF (no %%EOF marker"),
        (_write(tmp_path, "junk.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n%%EOF\n"), "damaged PDF"),
        (_write(tmp_path, "fake.pdf", b"Just text with a .pdf name"), "not a PDF file"),
    ]
    for path, reason in cases:
        _refused(path, reason)
    assert not [r for r in caplog.records if r.name.startswith("pypdf")], "pypdf's complaints stay quiet"


def test_pdf_acl_that_cannot_be_read_refuses_the_file(tmp_path: Path) -> None:
    data = (FIXTURES / "expenses.pdf").read_bytes()
    old, new = rb"/kb-acl-groups (finance\054 managers)", b"/kb-acl-groups [(finance) (managers)]"
    assert old in data and len(old) == len(new)
    _refused(_write(tmp_path, "acl.pdf", data.replace(old, new)), "/kb-acl-groups must be a text string")


# --- Word ------------------------------------------------------------------------------------------------


def test_docx_headings_tables_lists_and_properties() -> None:
    (doc,) = _load(FIXTURES / "laptop-return.docx")
    assert doc.title == "Laptop return"
    assert _outline(doc) == [
        ("", "laptop-return"),
        ("Where to go", "where-to-go"),
        ("Where to go > Orrenfeld staff use room O-112.", "orrenfeld-staff-use-room-o-112"),
        ("Checklist", "checklist"),
        ("Where to go", "where-to-go-1"),
    ]
    assert doc.sections[1].text.endswith("- Laptop and charger\n- Docking station")
    assert doc.sections[3].text == "Item | Where | Note\nLaptop | IT Hub | Wiped\nBadge | Reception"
    assert doc.tags == ("it", "hardware") and doc.acl_groups == ("finance", "managers")
    assert doc.updated_at == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _docx_with(change: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(FIXTURES / "laptop-return.docx") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    return _zip({**entries, **change})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"This is plain text saved as .docx", "not a Word document (not a ZIP archive"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512),
            "a password-protected or old-format (.doc) Word file",
        ),
        (_zip({"word/document.xml": bytes(12_000_000)}), "refused as a possible zip bomb"),
        (_zip({"content.xml": b"<office:document/>"}), "a ZIP archive without word/document.xml"),
        (_docx_with({"word/document.xml": b"<w:document><unclosed"}), "damaged Word document"),
        (_docx_with({"docProps/custom.xml": b"<Properties"}), "damaged custom properties"),
    ],
)
def test_bad_docx_files_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    _refused(_write(tmp_path, "file.docx", content), reason)


# --- CSV -------------------------------------------------------------------------------------------------


def test_csv_rows_become_documents() -> None:
    docs = _load(FIXTURES / "directory.csv")
    assert [d.id for d in docs] == [
        "docs:directory.csv#row-1",
        "docs:directory.csv#row-2",
        "docs:directory.csv#row-3",
    ]
    assert [d.title for d in docs] == ["IT Service Desk", "Payroll", "Travel Desk"]
    assert [d.sections[0].anchor for d in docs] == ["row=2", "row=3", "row=4"], (
        "RFC 7111, the header is row 1"
    )
    assert all(d.uri == "docs/directory.csv" and d.sections[0].path == "Directory" for d in docs)
    assert docs[0].sections[0].text.splitlines()[-1] == 'notes: Walk-in "IT Hub", Mon–Fri'
    assert "notes: Salary questions;\ntwo-line note" in docs[1].text
    assert docs[1].acl_groups == ("hr",) and docs[0].acl_groups == ()
    assert "acl_groups" not in docs[1].text


def test_csv_grouped_rows_keep_each_acl_apart(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "people.csv",
        "name,team,acl_groups\nAda,Pumps,\nBen,Valves,\nCy,Pumps,hr\nDee,Pumps,\n",
    )
    docs = _load(path, options=RecordOptions(group_by="Team"))
    assert [(d.id, d.title, d.acl_groups) for d in docs] == [
        ("docs:people.csv#Pumps [everyone]", "Pumps", ()),
        ("docs:people.csv#Valves", "Valves", ()),
        ("docs:people.csv#Pumps [hr]", "Pumps", ("hr",)),
    ]
    assert [(s.path, s.anchor) for s in docs[0].sections] == [("Ada", "row=2"), ("Dee", "row=5")]


def test_csv_key_and_title_columns_from_options(tmp_path: Path) -> None:
    path = _write(tmp_path, "phones.csv", "department\textension\tfloor\nIT\t4410\t1\nHR\t4200\t2\n")
    docs = _load(path, options=RecordOptions(key_field="extension", title_field="department"))
    assert [d.id for d in docs] == ["docs:phones.csv#4410", "docs:phones.csv#4200"]
    assert docs[0].text == "department: IT\nextension: 4410\nfloor: 1"
    _refused(path, "no title field 'room'", options=RecordOptions(title_field="room"))


def test_csv_ragged_rows_are_noted_and_recovered(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12,,\n")
    notes: list[str] = []
    docs = load_file(path, root=tmp_path, source="docs", max_bytes=10_000, on_note=notes.append)
    assert [d.id.rsplit("#", 1)[1] for d in docs] == ["row-1", "row-2", "row-4"]
    assert docs[1].text == "a: 4\nb: 5"
    assert notes == [
        "line 3: 2 values for 3 columns; the missing ones are left blank",
        "line 4: 4 values for 3 columns (a delimiter in an unquoted value?); row skipped",
    ]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('a,b\n1,2\n3,"never closed\n5,6\n', "line 3: broken quoting (a quoted value is never closed)"),
        ('a,b\n1,"2"x\n', "line 2: broken quoting (',' expected after '\"')"),
        ("a,b,c\n", "only a header row"),
        ("a,acl_groups\n,hr\n", "no data rows with text"),
    ],
)
def test_bad_csv_files_are_refused_with_the_line(tmp_path: Path, content: str, reason: str) -> None:
    _refused(_write(tmp_path, "bad.csv", content), reason)


# --- JSON and JSON Lines ---------------------------------------------------------------------------------


def test_jsonl_records_with_ids_titles_and_metadata() -> None:
    docs = _load(FIXTURES / "faq.jsonl")
    assert [d.id for d in docs] == ["docs:faq.jsonl#faq-1", "docs:faq.jsonl#faq-2", "docs:faq.jsonl#row-4"]
    assert docs[0].title == "How do I reset my password?"
    assert docs[0].text == "How do I reset my password?\n\nUse https://intranet.halden.example/id/reset."
    assert docs[0].tags == ("it", "password") and docs[0].updated_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert docs[2].acl_groups == ("staff",)


def test_jsonl_malformed_lines_are_noted_and_skipped(tmp_path: Path) -> None:
    good = (FIXTURES / "faq.jsonl").read_text().splitlines()
    path = _write(tmp_path, "faq.jsonl", "\n".join([good[0], '{"question": "cut', "[1, 2]", good[1]]))
    notes: list[str] = []
    docs = load_file(path, root=tmp_path, source="docs", max_bytes=10_000, on_note=notes.append)
    assert [d.id for d in docs] == ["docs:faq.jsonl#faq-1", "docs:faq.jsonl#faq-2"]
    assert notes == [
        "line 2: not valid JSON (Unterminated string starting at at column 14); skipped",
        "line 3: a list, not an object; skipped",
    ]
    _refused(
        _write(tmp_path, "none.jsonl", "not json\n"), "no valid JSON object on any line (line 1: not valid"
    )


def test_json_list_renders_plain_fields_when_there_is_no_body(tmp_path: Path) -> None:
    notes: list[str] = []
    path = FIXTURES / "records.json"
    docs = load_file(path, root=path.parent, source="docs", max_bytes=10_000, on_note=notes.append)
    assert [(d.id, d.title) for d in docs] == [
        ("docs:records.json#7", "Pool car VS-HP 101"),
        ("docs:records.json#8", "Pool van VS-HP 220"),
    ]
    assert docs[0].text == "Pool car VS-HP 101\n\nCompact car at Gate 1, book in the Workplace portal."
    assert docs[1].text == "id: 8\nname: Pool van VS-HP 220\nseats: 3\nnotes: tow bar, roof rack"
    assert notes == ["item 3: a string, not an object; skipped"]
    (one,) = _load(_write(tmp_path, "one.json", '{"title": "T", "body": "B", "x": 1}'))
    assert one.id == "docs:one.json#row-1" and one.text == "T\n\nB"
    _refused(_write(tmp_path, "bad.json", '{"a": 1,}'), "not valid JSON (line 1, column 9")


def test_record_with_an_unreadable_acl_is_skipped_not_made_public(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "acl.jsonl",
        '{"id": 1, "text": "open"}\n{"id": 2, "text": "secret", "ACL groups": {"group": "hr"}}\n'
        '{"id": 3, "text": "listed", "acl_groups": ["hr", "it"]}\n',
    )
    notes: list[str] = []
    docs = load_file(path, root=tmp_path, source="docs", max_bytes=10_000, on_note=notes.append)
    assert [(d.text, d.acl_groups) for d in docs] == [("open", ()), ("listed", ("hr", "it"))]
    assert notes == ["line 2: ACL groups must be a name or a list of names; record skipped"]


def test_repeated_keys_get_a_suffix_and_a_note(tmp_path: Path) -> None:
    path = _write(tmp_path, "dup.jsonl", '{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n')
    notes: list[str] = []
    docs = load_file(path, root=tmp_path, source="docs", max_bytes=10_000, on_note=notes.append)
    assert [d.id for d in docs] == ["docs:dup.jsonl#a", "docs:dup.jsonl#a-2"]
    assert notes == ["line 2: key 'a' repeats line 1; this record is stored as a-2"]


# --- Every format ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "sphinx-module.html",
        "expenses.pdf",
        "laptop-return.docx",
        "directory.csv",
        "faq.jsonl",
        "records.json",
    ],
)
def test_every_format_keeps_the_size_limit(tmp_path: Path, name: str) -> None:
    assert supported(FIXTURES / name)
    _refused(_fixture(tmp_path, name), "over the limit of 100 (KB_MAX_FILE_BYTES)", max_bytes=100)


# --- Ingest of files that hold many documents ------------------------------------------------------------


@pytest.fixture
def kb(settings: Settings, migrated: Engine, embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase(settings, migrated, embedder=embedder)


def test_ingest_follows_the_rows_of_a_table(kb: KnowledgeBase, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    table = _write(root, "phones.csv", "department,extension\nIT,4410\nHR,4200\nTravel,4330\n")
    assert kb.ingest([root]).added == 3
    table.write_text("department,extension\nIT,4410\nHR,4200\n")
    report = kb.ingest([root])
    assert (report.unchanged, report.removed) == (2, 1), "a deleted row is a deleted document"
    table.write_text('department,extension\nIT,"4410\n')
    report = kb.ingest([root])
    assert report.removed == 0 and kb.stats().documents == 2, "a broken file keeps the rows it had"
    assert "broken quoting" in report.skipped[0].reason
    _write(root, "faq.jsonl", '{"title": "Canteen", "body": "Open at 11:15."}\nnot json\n')
    report = kb.ingest([root])
    assert report.added == 1
    assert [(Path(p.path).name, p.reason[:27]) for p in report.skipped] == [
        ("faq.jsonl", "line 2: not valid JSON (Exp"),
        ("phones.csv", "line 2: broken quoting (a q"),
    ]
