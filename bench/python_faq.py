"""Build the Python FAQ retrieval set from Debian's python3.11-doc.

    .venv/bin/python bench/python_faq.py [--docs DIR] [--out bench/data/python-faq]

Every FAQ heading that asks a question ("How do I ...?") becomes a query; its section's anchor is
the gold answer (faq/programming.html#how-do-i-...). The indexed copy has those headings replaced
by a neutral label, and the FAQ's own tables of contents and the cross-reference links that
repeat a question's text removed, so retrieval has to find the answer text, not the question.
Output: OUT/docs/faq/*.html and OUT/queries.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bs4 import BeautifulSoup, Tag

DEFAULT_DOCS = Path("/usr/share/doc/python3.11-doc/html")
HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]


def _section_id(heading: Tag) -> str | None:
    parent = heading.parent
    if isinstance(parent, Tag) and parent.name == "section" and parent.get("id"):
        return str(parent["id"])
    return str(heading["id"]) if heading.get("id") else None


def _question_text(heading: Tag) -> str:
    for link in heading.select("a.headerlink"):
        link.extract()
    return " ".join(heading.get_text(" ").split())


def blank_heading(heading: Tag) -> None:
    """The heading's text goes; a neutral label keeps it a section boundary (and its anchor)."""
    for child in list(heading.children):
        if not (isinstance(child, Tag) and "headerlink" in (child.get("class") or [])):
            child.extract()
    heading.insert(0, "Entry")


def remove_repeats(soup: BeautifulSoup, texts: set[str]) -> None:
    """Tables of contents, and cross-reference links whose text repeats a removed heading."""
    for toc in soup.select("nav.contents, div.contents, div.topic.contents, nav#contents"):
        toc.decompose()
    for link in soup.find_all("a"):
        if " ".join(link.get_text(" ").split()) in texts:
            link.decompose()


def build(docs: Path, out: Path) -> tuple[int, int]:
    faq = docs / "faq"
    if not faq.is_dir():
        raise SystemExit(
            f"{faq} is missing: install Debian's python3.11-doc (`make corpora` does it) or pass --docs"
        )
    target = out / "docs" / "faq"
    shutil.rmtree(out / "docs", ignore_errors=True)
    target.mkdir(parents=True)
    queries: list[dict[str, object]] = []
    for page in sorted(faq.glob("*.html")):
        if page.name == "index.html":
            continue
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "lxml")
        questions: set[str] = set()
        for heading in soup.find_all(HEADINGS):
            text, anchor = _question_text(heading), _section_id(heading)
            if not text.endswith("?") or not anchor:
                continue
            queries.append({"query": text, "relevant": [f"faq/{page.name}#{anchor}"]})
            questions.add(text)
            blank_heading(heading)
        remove_repeats(soup, questions)
        (target / page.name).write_text(str(soup), encoding="utf-8")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(query, ensure_ascii=False) + "\n")
    return len(list(target.glob("*.html"))), len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data" / "python-faq")
    args = parser.parse_args()
    pages, queries = build(args.docs, args.out)
    print(f"{pages} pages, {queries} queries in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
