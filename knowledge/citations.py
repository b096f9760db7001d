"""Post-processing of a model's [n] citation markers, token by token, so streaming and batch agree.

The model saw passages numbered 1..k. In its answer, a marker that points at one of them is kept
and renumbered by order of first use (the first source cited becomes [1]); a marker that points
elsewhere ([7] of 5), a citation-shaped scrap ([a], [?], []) or an unclosed one ([3 at the end) is
dropped, and the whitespace around it tidied. Other bracketed text ("[see below]") stays as it is.

>>> rewriter = CitationRewriter(valid={1, 2, 3})
>>> rewriter.feed("Reset it online [3], or call IT [9]. It takes a day [3][1].") + rewriter.finish()
'Reset it online [1], or call IT. It takes a day [1][2].'
>>> rewriter.order
[3, 1]
"""

from __future__ import annotations

import re
from collections.abc import Collection

_NUMBERS = re.compile(r"\s*(?:(?:source|passage|doc(?:ument)?)\s*)?(\d+(?:\s*[,;]\s*\d+)*)\s*", re.IGNORECASE)
_NUMERIC_PREFIX = re.compile(r"\s*(?:(?:source|passage|doc(?:ument)?)\s*)?[\d\s,;]*", re.IGNORECASE)
_WORDS = ("source", "passage", "document")
_SCRAP = re.compile(r"\S{0,3}")  # [a], [n], [?], [], [1a]: marker-shaped, meaning nothing
_MARKER = re.compile(r"\[\d+\]")
_YEARLIKE = re.compile(r"\d{4}")  # "[2024 budget]" is text, not a broken citation
_CLOSES_TIGHT = frozenset(".,;:!?)")
_MAX_MARKER_CHARS = 64


class CitationRewriter:
    """Feeds on model output in any pieces; returns the text that is safe to show so far.

    `order` lists the original passage numbers in the order they were first cited: new number
    i + 1 is passage `order[i]`.
    """

    def __init__(self, valid: Collection[int]) -> None:
        self.valid = frozenset(valid)
        self.order: list[int] = []
        self._bracket: str | None = None  # a possible marker, held back until it closes or cannot be one
        self._space = ""  # whitespace held back: it may sit before a marker that is dropped
        self._dropped = False
        self._started = False

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            self._char(char, out)
        return "".join(out)

    def finish(self) -> str:
        """The end of the answer: an unclosed marker is dropped, trailing whitespace too."""
        out: list[str] = []
        if self._bracket is not None:
            pending, self._bracket = self._bracket, None
            self._abandon(pending, out)
        self._space = ""
        return "".join(out)

    def _char(self, char: str, out: list[str]) -> None:
        if self._bracket is None:
            if char == "[":
                self._bracket = "["
            elif char.isspace():
                if self._started:
                    self._space += char
            else:
                self._plain(char, out)
            return
        if char == "]":
            content, self._bracket = self._bracket[1:], None
            self._close(content, out)
            return
        candidate = self._bracket + char
        if char not in "[\n" and len(candidate) <= _MAX_MARKER_CHARS and _could_be_marker(candidate[1:]):
            self._bracket = candidate
            return
        pending, self._bracket = self._bracket, None
        self._abandon(pending, out, lookahead=char)
        self._char(char, out)

    def _abandon(self, pending: str, out: list[str], *, lookahead: str = "") -> None:
        """`pending` turned out not to be a marker: an unclosed number ("[3 and") goes, the rest is text."""
        head = min(_numeric_head(pending[1:] + lookahead), len(pending) - 1)
        if head:
            self._dropped = True
            for char in pending[1 + head :]:
                self._char(char, out)
        else:
            for char in pending:
                self._plain(char, out)

    def _close(self, content: str, out: list[str]) -> None:
        numbers = _NUMBERS.fullmatch(content)
        if numbers:
            kept = []
            for number in (int(n) for n in re.split(r"\s*[,;]\s*", numbers.group(1).strip())):
                if number in self.valid and number not in kept:
                    kept.append(number)
            if kept:
                self._flush_space(out, before="[")
                for number in kept:
                    if number not in self.order:
                        self.order.append(number)
                    out.append(f"[{self.order.index(number) + 1}]")
                self._started = True
                return
            self._dropped = True
        elif _SCRAP.fullmatch(content):
            self._dropped = True
        else:
            for char in f"[{content}]":
                self._plain(char, out)

    def _plain(self, char: str, out: list[str]) -> None:
        self._flush_space(out, before=char)
        self._started = True
        out.append(char)

    def _flush_space(self, out: list[str], *, before: str) -> None:
        space, self._space = self._space, ""
        if space and self._dropped:
            # "word [7]." -> "word."; "word [7] more" -> "word more"; a paragraph break stays one.
            space = "" if before in _CLOSES_TIGHT else (space.lstrip(" \t") if "\n" in space else " ")
        out.append(space)
        self._dropped = False


def _numeric_head(content: str) -> int:
    """Length of the citation-like number list `content` starts with (0 if none; years are not one)."""
    match = _NUMERIC_PREFIX.match(content)
    if not match or not any(c.isdigit() for c in match.group()) or _YEARLIKE.search(match.group()):
        return 0
    return match.end()


def _could_be_marker(content: str) -> bool:
    """Whether more characters could still make `[content` a citation or a scrap worth dropping."""
    if _SCRAP.fullmatch(content):
        return True
    if _NUMERIC_PREFIX.fullmatch(content):
        return not _YEARLIKE.search(content)
    word = content.strip().lower()
    return any(full.startswith(word) for full in _WORDS)


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text)


def looks_like_garbage(text: str) -> bool:
    """Output no one should be shown: nearly no letters, broken characters, or one word on repeat."""
    body = strip_markers(text).strip()
    letters = sum(char.isalnum() for char in body)
    if letters < 2 or letters < 0.3 * len(body):
        return True
    if body.count("\ufffd") > 0.05 * len(body):
        return True
    words = body.split()
    return len(words) >= 12 and len(set(words)) <= 0.2 * len(words)
