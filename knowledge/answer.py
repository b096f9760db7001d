"""Question -> cited answer.

Without a language model the answer is extractive: whole sentences of the best passages, closest
to the question and holding its key terms, each followed by the [n] of the source it came from, with
Markdown emphasis, links and table pipes rendered as plain text; where a passage holds a question that
restates the asker's (an FAQ entry), the sentences that follow it, never the question line itself.

Every answer path abstains on weak evidence (`weak_evidence`): the best passage's similarity below
`min_score`, or the top passages missing too many of the question's key terms (`min_coverage`). Both
thresholds were calibrated on labelled unanswerable questions
(docs/decisions/answer-prompt-and-abstention.md).
The bot then says so and lists the closest documents instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from knowledge.citations import SUPPORT_MIN, strip_markers
from knowledge.embeddings import Embedder, Vectors
from knowledge.lexical import is_chinese, tokenize
from knowledge.types import Answer, Citation, Hit

ABSTAIN_TEXT = "I could not find this in the knowledge base."
# A sentence ends at . ! ? before a space, unless what follows starts in lower case or with a digit
# (bold or not): "ext. 4410", "e.g. a badge", "approx. 5 days" go on.
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?!\**[a-z0-9])|(?<=[。！？])")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")
_SNIPPET_CHARS = 240
_TERM_WEIGHT = 0.2  # similarity added by a sentence holding all key terms
_QUESTION_MARKS = ("?", "？")
# A question in a passage this close to the asker's restates it (an FAQ entry's own question): its
# answer is what follows it. MiniLM puts paraphrased questions at 0.8-0.95, related ones at 0.5-0.7.
ECHO_MIN = 0.8
# Evidence gate defaults, chosen on the handbook set's unanswerable questions and checked on the
# Python FAQ set (docs/decisions/answer-prompt-and-abstention.md).
MIN_COVERAGE = 0.5
# Chinese key terms are character bigrams, about half of which straddle two words ("工每"), so the
# same evidence covers fewer of them: the bar for a Chinese question is this share of MIN_COVERAGE.
CHINESE_COVERAGE_SCALE = 0.6
EVIDENCE_PASSAGES = 3
# Evidence strong enough to doubt a model that says the passages do not answer: the best passage
# this close to the question, and the top passages holding this share of its key terms (scaled for
# Chinese as above). No unanswerable question a model abstained on, in either labelled set, comes
# near both.
STRONG_SCORE = 0.6
STRONG_COVERAGE = 0.8
# Words of how a question is asked, not what it is about (stemmed as `tokenize` stems them).
_QUESTION_WORDS = frozenset(
    (
        *"much mani get use need long often name kind tell want like make take doe did done".split(),
        *"should must shall may might way us one someth anyth also".split(),
        *"什么 多少 哪个 哪些 怎么 如何 可以 是什 是多 需要 多长 几天".split(),
    )
)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# `__` stays: in these documents it is far more often a Python name (`__init__`) than emphasis.
_MD_EMPHASIS = re.compile(r"(\*\*|`+|~~)")
_MD_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_MD_QUOTE = re.compile(r"^\s*>\s?")


def cite(hits: list[Hit]) -> list[Citation]:
    """Number the hits' sources 1..n; several chunks of one section share a number."""
    citations: dict[str, Citation] = {}
    for hit in hits:
        if hit.link not in citations:
            citations[hit.link] = Citation(
                number=len(citations) + 1,
                title=hit.title,
                uri=hit.link,
                section=hit.section,
                snippet=_snippet(hit.text),
                score=round(hit.score, 4),
                document_id=hit.document_id,
                chunk_ids=(hit.chunk_id,),
            )
        elif hit.chunk_id not in (cited := citations[hit.link]).chunk_ids:
            citations[hit.link] = replace(cited, chunk_ids=(*cited.chunk_ids, hit.chunk_id))
    return list(citations.values())


@dataclass(frozen=True, slots=True)
class Evidence:
    """How well the top passages back a question: best similarity, and key-term coverage."""

    score: float
    coverage: float
    missing: tuple[str, ...]
    chinese: bool


def key_terms(question: str) -> list[str]:
    """What the question is about: its index terms less question words; Chinese as bigrams."""
    terms = (t for t in tokenize(question) if t not in _QUESTION_WORDS)
    return list(dict.fromkeys(t for t in terms if not (_is_cjk(t) and len(t) < 2)))


def _is_cjk(term: str) -> bool:
    return "\u3400" <= term[0] <= "\u9fff" or "\uf900" <= term[0] <= "\ufaff"


def evidence(question: str, hits: list[Hit], passages: int = EVIDENCE_PASSAGES) -> Evidence:
    """The evidence the best `passages` hits (title, section and text) give for `question`."""
    terms = key_terms(question)
    held: set[str] = set()
    for hit in hits[:passages]:
        held.update(tokenize(f"{hit.title} {hit.section} {hit.text}"))
    missing = tuple(t for t in terms if t not in held)
    coverage = 1.0 - len(missing) / len(terms) if terms else 1.0
    score = hits[0].score if hits else -1.0
    return Evidence(score, coverage, missing, is_chinese(question))


def weak_evidence(question: str, hits: list[Hit], *, min_score: float, min_coverage: float = 0.0) -> bool:
    """Whether to abstain before answering: no hits, the best too far from the question, or the top
    passages missing too many of its key terms (a Chinese question's bar scaled, see above)."""
    if not hits or hits[0].score < min_score:
        return True
    if min_coverage <= 0 or not question:
        return False
    return not _covers(evidence(question, hits), min_coverage)


def strong_evidence(question: str, hits: list[Hit]) -> bool:
    """Whether the best passage matches the question closely and the top passages hold most of
    its key terms: too much to believe a small model's "not in the documents" (see STRONG_SCORE)."""
    if not hits or not question or hits[0].score < STRONG_SCORE:
        return False
    return _covers(evidence(question, hits), STRONG_COVERAGE)


def _covers(found: Evidence, share: float) -> bool:
    """Whether the evidence holds `share` of the key terms (a Chinese question's bar scaled)."""
    return found.coverage >= share * (CHINESE_COVERAGE_SCALE if found.chinese else 1.0)


def plain_text(text: str) -> str:
    """Markdown as a surface without Markdown shows it: emphasis, code ticks, links, heading and
    quote marks and table pipes dropped, the words kept."""
    lines = []
    for line in text.splitlines():
        line = _MD_QUOTE.sub("", _MD_HEADING.sub("", line))
        line = _MD_LINK.sub(r"\1", line)
        line = _MD_STAR.sub(r"\1", _MD_EMPHASIS.sub("", line))
        if line.lstrip().startswith("|"):
            line = "; ".join(cell.strip() for cell in line.strip().strip("|").split("|") if cell.strip())
        lines.append(line)
    return "\n".join(lines)


def abstention(hits: list[Hit]) -> Answer:
    """The honest answer when the documents do not answer: say so, list the closest documents."""
    return Answer(
        text=ABSTAIN_TEXT + (" The closest documents are listed below." if hits else ""),
        citations=cite(hits),
        confidence=round(max((h.score for h in hits), default=0.0), 4),
        abstained=True,
    )


def extractive_answer(
    query: Vectors,
    hits: list[Hit],
    *,
    embedder: Embedder,
    min_score: float,
    max_sentences: int = 3,
    question: str = "",
    min_coverage: float = 0.0,
) -> Answer:
    """Pick whole sentences closest to the question, holding its key terms, from the top passages.

    Abstains (`abstention`) on weak evidence; `question` (the text) enables the key-term checks.
    """
    if weak_evidence(question, hits, min_score=min_score, min_coverage=min_coverage):
        return abstention(hits)
    citations = cite(hits)
    number = {c.uri: c.number for c in citations}
    candidates: list[tuple[int, int, str]] = []  # (citation number, position in its passage, sentence)
    passage: list[int] = []  # which of the top hits each candidate came from
    for rank, hit in enumerate(hits[:3]):
        if hit.flag:  # text aimed at an assistant (flagged at ingest) is never quoted as an answer
            continue
        for position, sentence in enumerate(_sentences(hit.text)):
            candidates.append((number[hit.link], position, sentence))
            passage.append(rank)
    if not candidates:
        chosen: list[tuple[int, int, str]] = []
    else:
        similarity = embedder.encode([s for _, _, s in candidates]) @ query
        terms = set(key_terms(question))
        chosen = _faq_answer(candidates, passage, similarity, max_sentences) or _closest(
            candidates, similarity, max_sentences, terms
        )
    clean = [hit for hit in hits if not hit.flag]
    if not chosen and not clean:
        return abstention(hits)
    text = (
        " ".join(f"{sentence} [{n}]" for n, _, sentence in chosen)
        or f"{_snippet(plain_text(clean[0].text))} [{number[clean[0].link]}]"
    )
    return Answer(text=text, citations=citations, confidence=round(hits[0].score, 4))


def _faq_answer(
    candidates: list[tuple[int, int, str]], passage: list[int], similarity: Vectors, max_sentences: int
) -> list[tuple[int, int, str]]:
    """An FAQ entry: a question in a passage that restates the asker's is followed by its answer.

    The sentences after the best such question, in its own passage, up to the next question; [] when
    no question in the passages restates the asker's (cosine below ECHO_MIN) or nothing follows it.
    """
    echoes = [i for i, c in enumerate(candidates) if _is_question(c[2]) and similarity[i] >= ECHO_MIN]
    if not echoes:
        return []
    best = max(echoes, key=lambda i: float(similarity[i]))
    answer = []
    for i in range(best + 1, len(candidates)):
        if passage[i] != passage[best] or _is_question(candidates[i][2]):
            break
        answer.append(candidates[i])
        if len(answer) == max_sentences:
            break
    return answer


def _closest(
    candidates: list[tuple[int, int, str]], similarity: Vectors, max_sentences: int, terms: set[str]
) -> list[tuple[int, int, str]]:
    """The sentences of one passage closest to the question, in reading order.

    The passage is the best-ranked one, unless none of its sentences holds any of the question's
    key terms (or the question is not given); then it is the passage of the single closest
    sentence. Sentences stitched from several passages cite passages that do not hold the answer:
    on the labelled sets, one passage raised citation precision from 0.56 to 0.84 (handbook) and
    0.52 to 0.89 (Python FAQ) with correctness equal or higher
    (docs/decisions/answer-prompt-and-abstention.md).

    Each of the question's key terms a sentence holds adds to its similarity, so the sentences about
    what was asked win near-ties. (Leaving out every sentence without a key term was measured too: it
    cost a correct answer on the held-out FAQ set, where an answer may be a bare link or a name.)
    """
    # A question in a passage (an FAQ entry's heading) is the closest sentence to the question and
    # answers nothing: leave questions out while anything else is there.
    keep = [i for i, c in enumerate(candidates) if not _is_question(c[2])] or list(range(len(candidates)))
    held = [len(terms & set(tokenize(candidates[i][2]))) / len(terms) if terms else 0.0 for i in keep]
    scores = similarity[keep] + _TERM_WEIGHT * np.array(held, dtype=np.float32)
    order = np.argsort(-scores, kind="stable").tolist()
    first = min(candidates[i][0] for i in keep)  # citation numbers follow the retrieval ranking
    holds_term = any(h > 0 for k, h in zip(keep, held, strict=True) if candidates[k][0] == first)
    passage = first if holds_term else candidates[keep[order[0]]][0]
    best = [keep[i] for i in order if candidates[keep[i]][0] == passage][:max_sentences]
    return sorted((candidates[i] for i in best), key=lambda c: (c[0], c[1]))


def off_topic(answer: str, passages: list[str], question: str) -> bool:
    """Whether a model's answer comes only from sentences about something the question did not ask.

    Small models sometimes answer from the wrong sentence of a right passage ("when is a doctor's
    note needed?" answered with the passage's rule about notice by e-mail): every word is in the
    passage, so the citation check passes it. Off topic here means that the sentences holding the
    answer hold none of the question's key terms, while other sentences of the passages do. The
    answer's words are its index terms less the question's; a sentence holds the answer when it
    holds at least SUPPORT_MIN of them (the citation check's share). Nothing is judged where no
    sentence holds a key term (passages in another language than the question) or none holds the
    answer.
    """
    terms = set(key_terms(question))
    if not terms:
        return False
    sentences = [sentence for text in passages for sentence in _sentences(text)]
    about = [bool(terms & set(tokenize(sentence))) for sentence in sentences]
    if not any(about):
        return False
    said = set(tokenize(strip_markers(answer))) - set(tokenize(question))
    if not said:
        return False
    holding = [
        on
        for on, sentence in zip(about, sentences, strict=True)
        if len(said & set(tokenize(sentence))) >= SUPPORT_MIN * len(said)
    ]
    return bool(holding) and not any(holding)


# The prompt asks for one or two short sentences: a reply of this many, all copied from one passage,
# is that passage quoted, not an answer.
QUOTE_MIN_SENTENCES = 3


def quotes_passage(answer: str, passages: list[str]) -> bool:
    """Whether a model's answer is one passage quoted at length instead of an answer: three or more
    sentences (the prompt asks for one or two), every one of them word for word in the same passage.

    A small model that cannot find the answer sometimes copies a whole passage that mentions the
    question's subject ("how far in advance do I apply for a sabbatical?" answered with the
    compliance-training page's three sentences on who is exempt during a sabbatical). Every word is
    in the passage and the passage is on the subject, so neither the citation check nor `off_topic`
    objects; the extractive answer picks that passage's or another's sentences by the question.
    A long answer stitched from several passages, or one in the model's own words, is not judged.
    """
    said = [_flat(s).rstrip(_ENDS) for s in _SENTENCE.split(plain_text(strip_markers(answer)))]
    said = [s for s in said if s]
    if len(said) < QUOTE_MIN_SENTENCES:
        return False
    return any(all(s in flat for s in said) for flat in (_flat(plain_text(p)) for p in passages))


_ENDS = " .!?。！？"
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[.,;:!?。，；：！？])")


def _flat(text: str) -> str:
    """Whitespace runs made one space, none before punctuation (where a marker was), case folded."""
    return _SPACE_BEFORE_PUNCTUATION.sub("", " ".join(text.split())).casefold()


# Questions that ask for an amount, a count, a duration, a frequency, a distance or a time of day.
_ASKS_AMOUNT = re.compile(
    r"\bhow\s+(?:much|many|long|often|far)\b|\bwhat\s+time\b|\bat\s+what\s+age\b"
    r"|多少|多久|多长|几点|几(?:天|个|次|年|月|周|小时|分钟|岁)",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty"
    r"|forty|fifty|hundred|thousand|half|once|twice|daily|weekly|monthly|yearly|annually|every|each|per)\b"
    r"|[一二两三四五六七八九十百千万半每]",
    re.IGNORECASE,
)


def misses_amount(answer: str, question: str) -> bool:
    """Whether the question asks for an amount (how much, how many, how long, what time; 多少, 几,
    多久) and the answer gives none: no figure or number word of its own, beyond the question's.

    "How much is deducted for losing my badge a second time within 24 months?" answered "The
    second loss within 24 months is deducted from your salary [1]" cites the right passage and
    holds only its words, yet does not answer; the passage's sentence with the amount does.
    """
    if not _ASKS_AMOUNT.search(question):
        return False
    own = set(_NUMBER.findall(plain_text(strip_markers(answer)).casefold()))
    return not own - set(_NUMBER.findall(question.casefold()))


def _is_question(sentence: str) -> bool:
    return sentence.endswith(_QUESTION_MARKS)


def _sentences(text: str) -> list[str]:
    """Sentences of prose, list items without their markers, and table rows as 'header: value'."""
    out: list[str] = []
    header: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            header = None
            parts = _SENTENCE.split(_LIST_MARK.sub("", _MD_HEADING.sub("", stripped)))
        elif _TABLE_RULE.match(stripped):
            continue
        else:
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            if header is None:
                header = cells  # a table's first row names its columns
                continue
            pairs = zip(header, cells, strict=False)
            parts = ["; ".join(f"{name}: {value}" if name else value for name, value in pairs if value)]
        out.extend(plain for part in parts if len(plain := plain_text(part).strip()) >= 12)
    return out


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SNIPPET_CHARS else flat[: _SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
