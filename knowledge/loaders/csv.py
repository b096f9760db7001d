"""CSV: one document per row, or per group of rows, each row written as `column: value` lines.

The first row names the columns. The delimiter (comma, semicolon, tab or bar) is sniffed from
the first rows; values are quoted with double quotes, and quotes inside them doubled, as RFC 4180
and every spreadsheet write them. A row with too few values is kept with the missing
ones blank, a row with too many is skipped; both are noted. Broken quoting cannot be repaired
without guessing, so it refuses the file, naming the line where the broken value starts.

Section anchors follow RFC 7111 (`#row=N`, the header being row 1); document ids end in
`#row-N` (N counts data rows) or in the key column's value. Columns named `acl_groups`, `tags`
and `updated` become metadata instead of text.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from knowledge.errors import LoadError
from knowledge.loaders.base import FileInfo, LoadContext, send_notes
from knowledge.loaders.records import Record, RecordLayout, pick_field, record_documents, record_layout
from knowledge.types import Document

_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 16_384
_SNIFF_ROWS = 50
_REASONS = {
    "unexpected end of data": "a quoted value is never closed",
}


class _Dialect(csv.Dialect):
    """RFC 4180: double quotes, doubled inside values; sniffing replaces the delimiter."""

    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\r\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True


def load(info: FileInfo, content: str, context: LoadContext) -> list[Document]:
    """Documents from a CSV file's rows; see the module docstring for how rows map to documents."""
    dialect = _sniff(content)
    header, records, notes = _read(info, content, dialect)
    layout = record_layout(info, header, context.options)
    if layout.title is None:
        layout = replace(layout, title=header[0])
    text_columns = _text_columns(info, header, layout, context.options.text_fields)

    def render(record: Record) -> str:
        return "\n".join(f"{name}: {record.fields[name]}" for name in text_columns if record.fields.get(name))

    documents = record_documents(info, records, layout, render=render, notes=notes)
    send_notes(context, notes)
    if not documents:
        raise LoadError(f"{info.path}: no data rows with text under the header, nothing to index")
    return documents


def _sniff(content: str) -> type[csv.Dialect]:
    """The dialect whose delimiter splits the first rows most consistently into the header's width.

    csv.Sniffer guesses from regular expressions and is easily misled by quoted values that hold
    other candidates (a semicolon file with "Building A, A-014" in it); parsing a sample with each
    candidate and comparing row widths is slower but does not guess from quotes.
    """
    sample = content[:_SNIFF_CHARS]
    truncated = len(content) > len(sample)
    best: tuple[float, int, str] = (0.0, 1, ",")
    for delimiter in _DELIMITERS:
        rows = [row for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if row]
        if truncated:
            rows = rows[:-1]  # the sample may cut the last row short
        rows = rows[:_SNIFF_ROWS]
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistency = sum(len(row) == width for row in rows) / len(rows)
        best = max(best, (consistency, width, delimiter))
    delimiter = best[2]
    header = content.split("\n", 1)[0]
    spaced = header.count(delimiter) > 0 and header.count(delimiter) == header.count(delimiter + " ")
    return type("_Sniffed", (_Dialect,), {"delimiter": delimiter, "skipinitialspace": spaced})


def _read(
    info: FileInfo, content: str, dialect: type[csv.Dialect]
) -> tuple[list[str], list[Record], list[str]]:
    reader = csv.reader(io.StringIO(content, newline=""), dialect)
    header: list[str] | None = None
    records: list[Record] = []
    notes: list[str] = []
    start, rows = 1, 0
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue  # blank lines and rows of empty cells carry nothing
            if header is None:
                header = _column_names(row)
                continue
            rows += 1  # skipped rows count too, so that fixing one leaves the others' ids alone
            cells = _fit(row, len(header), line, notes)
            if cells is not None:
                fields = {name: _value(cell) for name, cell in zip(header, cells, strict=True)}
                records.append(Record(rows, f"line {line}", fields, anchor=f"row={rows + 1}"))
    except csv.Error as exc:
        if str(exc).startswith("field larger than field limit"):
            raise LoadError(
                f"{info.path}: line {start}: a value longer than {csv.field_size_limit():,} characters; "
                "usually a quote that is never closed"
            ) from exc
        reason = _REASONS.get(str(exc), str(exc))
        raise LoadError(
            f"{info.path}: line {start}: broken quoting ({reason}); a value that holds the delimiter, "
            "a quote or a line break must be in double quotes, with its own quotes doubled"
        ) from exc
    if header is None:
        raise LoadError(f"{info.path}: no rows, nothing to index")
    if not records:
        raise LoadError(f"{info.path}: only a header row, no data to index")
    return header, records, notes


def _value(cell: str) -> str:
    return cell.replace("\r\n", "\n").replace("\r", "\n").strip()


def _column_names(row: list[str]) -> list[str]:
    """The header's names, with blanks and repeats made unique so that no value is lost."""
    names: list[str] = []
    for index, cell in enumerate(row, start=1):
        name = " ".join(cell.split()) or f"column {index}"
        base, count = name, 1
        while name in names:
            count += 1
            name = f"{base} ({count})"
        names.append(name)
    return names


def _fit(row: list[str], width: int, line: int, notes: list[str]) -> list[str] | None:
    """The row's cells for `width` columns, or None (noted) when it cannot be matched to them."""
    if len(row) > width and not any(cell.strip() for cell in row[width:]):
        return row[:width]  # trailing delimiters, as some exports write them
    if len(row) > width:
        notes.append(
            f"line {line}: {len(row)} values for {width} columns (a delimiter in an unquoted value?); "
            "row skipped"
        )
        return None
    if len(row) < width:
        notes.append(f"line {line}: {len(row)} values for {width} columns; the missing ones are left blank")
        return row + [""] * (width - len(row))
    return row


def _text_columns(
    info: FileInfo, header: list[str], layout: RecordLayout, wanted: tuple[str, ...]
) -> list[str]:
    if not wanted:
        return [name for name in header if name not in layout.metadata]
    columns = []
    for name in wanted:
        found = pick_field(header, name)
        if found is None:
            raise LoadError(f"{info.path}: no text column {name!r}; the columns are {', '.join(header)}")
        columns.append(found)
    return columns
