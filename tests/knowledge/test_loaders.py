from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from knowledge.errors import LoadError
from knowledge.loaders import load_file
from knowledge.loaders.base import slugify


def _load(path: Path, *, max_bytes: int = 1_000_000):  # type: ignore[no-untyped-def]
    (document,) = load_file(path, root=path.parent, source="docs", max_bytes=max_bytes)
    return document


def test_markdown_front_matter_sections_and_anchors(tmp_path: Path) -> None:
    page = tmp_path / "vpn.md"
    page.write_text(
        "---\ntitle: VPN access\ntags: [it, network]\nacl_groups: [staff]\nupdated: 2026-03-04\n---\n"
        "# VPN access\n\nIntro text.\n\n## Installing the client\n\nDownload it.\n\n"
        "### On Windows\n\nRun the MSI.\n\n## Installing the client\n\nA second section, same name.\n"
        "```bash\n# not a heading\necho hi\n```\n"
    )
    doc = _load(page)
    assert doc.id == "docs:vpn.md" and doc.uri == "docs/vpn.md"
    assert doc.title == "VPN access"
    assert doc.tags == ("it", "network") and doc.acl_groups == ("staff",)
    assert doc.updated_at == datetime(2026, 3, 4, tzinfo=UTC)
    paths = [(s.path, s.anchor) for s in doc.sections]
    assert paths == [
        ("", "vpn-access"),
        ("Installing the client", "installing-the-client"),
        ("Installing the client > On Windows", "on-windows"),
        ("Installing the client", "installing-the-client-1"),
    ]
    assert "# not a heading" in doc.sections[-1].text


def test_markdown_without_front_matter_uses_the_first_heading_or_the_name(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Canteen menu\n\nSoup on Mondays.\n")
    (tmp_path / "opening-hours.md").write_text("Open 7 to 19.\n")
    assert _load(tmp_path / "a.md").title == "Canteen menu"
    assert _load(tmp_path / "opening-hours.md").title == "Opening hours"


def test_content_hash_changes_with_text_and_acl(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# P\n\nOne.\n")
    first = _load(page).content_hash
    page.write_text("---\nacl_groups: [hr]\n---\n# P\n\nOne.\n")
    second = _load(page).content_hash
    page.write_text("---\nacl_groups: [hr]\n---\n# P\n\nTwo.\n")
    assert len({first, second, _load(page).content_hash}) == 3


def test_plain_text_is_one_section(tmp_path: Path) -> None:
    (tmp_path / "notes_2026.txt").write_text("Line one.\nLine two.\n")
    doc = _load(tmp_path / "notes_2026.txt")
    assert doc.title == "Notes 2026" and len(doc.sections) == 1


def test_chinese_headings_keep_their_characters() -> None:
    assert slugify("连接步骤 (Windows)") == "连接步骤-windows"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"", "empty file"),
        ("blank.txt", b"  \n\t\n", "empty file"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("latin1.txt", "Caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 3)"),
        ("open.md", b"---\ntitle: x\n\nno closing line\n", "never closed"),
        ("bad-yaml.md", b"---\ntitle: [unclosed\n---\ntext\n", "invalid YAML front matter"),
        ("list.md", b"---\n- a\n- b\n---\ntext\n", "must be a mapping"),
        ("bad-date.md", b"---\nupdated: last tuesday\n---\ntext\n", "'updated' is not a date"),
        ("headings.md", b"# Only\n## Headings\n", "no text besides headings"),
    ],
)
def test_bad_files_are_refused_with_their_name_and_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError) as caught:
        _load(path)
    assert str(path) in str(caught.value)
    assert reason in str(caught.value)


def test_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    with pytest.raises(LoadError, match="over the limit of 1,000"):
        _load(path, max_bytes=1000)


def test_unreadable_path_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "looks-like-a-file.md"
    folder.mkdir()
    with pytest.raises(LoadError, match="cannot read"):
        _load(folder)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.xyz").write_text("hello")
    with pytest.raises(LoadError, match=r"unsupported file type '\.xyz'"):
        _load(tmp_path / "a.xyz")
