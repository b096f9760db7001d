"""Pseudo-queries from the rest of Debian's python3.11-doc, for training fusion without the FAQ.

    .venv/bin/python bench/python_pseudo.py [--docs DIR] [--out bench/data/python-pseudo]

Built exactly like the FAQ set (bench/python_faq.py), but from the tutorial and the HOWTOs: every
section heading below the page title (h2-h4, at least two words once its number is dropped)
becomes a query whose gold answer is that section's anchor; the indexed copy has those headings
replaced by a neutral label and its tables of contents and the links that repeat a heading
removed, so retrieval has to find the section's text. No FAQ page is read.
Output: OUT/docs/<part>/*.html and OUT/queries.jsonl.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from bs4 import BeautifulSoup

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.python_faq import DEFAULT_DOCS, _question_text, _section_id, blank_heading, remove_repeats

PARTS = ("tutorial", "howto")
_NUMBER = re.compile(r"^(?:\d+(?:\.\d+)*\.?\s+)")


def build(docs: Path, out: Path, *, parts: tuple[str, ...] = PARTS) -> tuple[int, int]:
    shutil.rmtree(out / "docs", ignore_errors=True)
    queries: list[dict[str, object]] = []
    pages = 0
    for part in parts:
        target = out / "docs" / part
        target.mkdir(parents=True)
        for page in sorted((docs / part).glob("*.html")):
            if page.name == "index.html":
                continue
            soup = BeautifulSoup(page.read_text(encoding="utf-8"), "lxml")
            headings: set[str] = set()
            for heading in soup.find_all(["h2", "h3", "h4"]):
                raw, anchor = _question_text(heading), _section_id(heading)
                text = _NUMBER.sub("", raw).strip()
                if not anchor or len(text.split()) < 2:
                    continue
                queries.append({"query": text, "relevant": [f"{part}/{page.name}#{anchor}"]})
                headings.update((raw, text))
                blank_heading(heading)
            remove_repeats(soup, headings)
            (target / page.name).write_text(str(soup), encoding="utf-8")
            pages += 1
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(query, ensure_ascii=False) + "\n")
    return pages, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "data" / "python-pseudo"
    )
    args = parser.parse_args()
    pages, queries = build(args.docs, args.out)
    print(f"{pages} pages, {queries} queries in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
