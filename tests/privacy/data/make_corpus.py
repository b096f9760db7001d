"""Writes redaction_corpus.jsonl: labelled English and Chinese sentences for the redaction tests.

Positive cases carry one or more sensitive values, each labelled with its kind; negative cases are
look-alikes that carry none (versions, order ids, ISBNs, Luhn-failing numbers, ...). Values come from
`corpus_values.py` (sentences in `corpus_templates.py`), seeded, so the output is reproducible:

    .venv/bin/python tests/privacy/data/make_corpus.py

Version numbers: a dotted quad is an address unless the text marks it as a version or section
number (a word such as "version", "build", "section", "版本", "第" right before it, a "v" glued to
it, or a suffix such as "-rc1"). The negatives follow that rule; an unmarked quad would be an IP.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corpus_templates import KNOWN_MISSES, MULTI, NEGATIVE, POSITIVE
from corpus_values import Values

SEED = 20261104
OUT = Path(__file__).with_name("redaction_corpus.jsonl")
_SLOT = re.compile(r"\{([A-Z_]+)(?::(\w+))?\}")
_NEAR = re.compile(r"\{n:(\w+)\}")
LANGS = {"en": "an English sentence", "zh": "a Chinese sentence"}
POSITIVE_PER_KIND = {"en": 30, "zh": 15}
NEGATIVES = {"en": 230, "zh": 120}


def near_misses(v: Values) -> dict[str, Callable[[], str]]:
    """Generators for the `{n:name}` slots of negative templates."""
    r, d = v.r, v.digits

    def date() -> str:
        return f"20{r.randint(19, 27)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"

    return {
        "semver": v.semver,
        "quad": v.quad,
        "quad_suffix": lambda: (
            v.quad() + r.choice(["-rc1", "-rc2", "-beta", "-alpha.2", "+build.7", "-SNAPSHOT"])
        ),
        "chrome": lambda: f"{r.randint(110, 131)}.0.{r.randint(5000, 6999)}.{r.randint(10, 250)}",
        "date": date,
        "slash_date": lambda: date().replace("-", "/"),
        "cn_date": lambda: f"20{r.randint(19, 27)}年{r.randint(1, 12)}月{r.randint(1, 28)}日",
        "time": lambda: f"{r.randint(0, 23):02d}:{r.choice([0, 15, 30, 45]):02d}:{r.randint(0, 59):02d}",
        "iso": lambda: f"{date()}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
        "order": lambda: f"ORD-20{r.randint(19, 27)}-{d(6)}",
        "order_short": lambda: f"{v.chars(4, 'ABCDEFGHJKLMNPQRSTUVWXYZ0123456789')}-{d(4)}",
        "po": lambda: "45" + d(8),
        "cn_order": lambda: date().replace("-", "") + f"{r.randint(0, 23):02d}{r.randint(0, 59):02d}" + d(6),
        "invoice": lambda: f"INV-20{r.randint(19, 27)}-{d(5)}",
        "invoice2": lambda: f"20{r.randint(19, 27)}-{d(3)}-{d(5)}",
        "fp_code": lambda: "1" + d(11),
        "isbn": v.isbn13,
        "isbn_en": lambda: v.isbn13(r.choice(["978-0-306", "978-1-4919", "978-0-13"])),
        "isbn_compact": lambda: v.isbn13(r.choice(["978-0-596", "978-7-302"])).replace("-", ""),
        "part": lambda: f"{d(4)}-{d(3)}-{d(2)}",
        "inc": lambda: f"INC-{date().replace('-', '')}-{d(4)}",
        "chg": lambda: "CHG" + d(7),
        "amount_usd": lambda: f"{r.randint(1, 999)},{d(3)},{d(3)}.{d(2)}",
        "amount_usd2": lambda: f"{r.randint(1, 99)}.{r.randint(1, 9)}",
        "amount_eur": lambda: f"{r.randint(1, 99)} {d(3)},{d(2)}",
        "zip4": lambda: f"94{d(3)}-{d(4)}",
        "cn_zip": lambda: r.choice(["100080", "200120", "518057", "310012", "610041", "430074"]),
        "luhn_fail": v.luhn_failing_card,
        "uuid": v.uuid,
        "sha": v.sha,
        "sha40": lambda: v.sha(full=True),
        "b64": lambda: v.token("b64"),
        "hex": lambda: v.token("hex"),
        "mac": lambda: ":".join(v.chars(2, "0123456789ABCDEF") for _ in range(6)),
        "bad_ssn": v.bad_ssn,
        "bad_cn_id": v.bad_cn_id,
        "bad_iban": v.bad_iban,
        "student": lambda: f"20{r.randint(15, 24)}" + d(6),
        "uscc": lambda: "9111" + d(4) + "MA0" + v.chars(6, "0123456789ABCDEFGHJKLMNPQRTUWXY") + "X",
        "digits": lambda: d(r.choice([4, 5, 6, 8])),
        "digits15": lambda: "110108" + d(9),
        "digits20": lambda: d(20, first="123456789"),
        "digits9": lambda: d(9, first="123456789"),
    }


def positive(v: Values, template: str, lang: str) -> tuple[str, list[dict[str, str]]]:
    spans: list[dict[str, str]] = []

    def fill(match: re.Match[str]) -> str:
        kind, variant = match.group(1), match.group(2)
        if kind == "SECRET":
            value = v.token(variant or "any")
        elif variant:
            value = str(getattr(v, f"{kind.lower()}_{variant}")())
        else:
            value = str(getattr(v, kind.lower())(lang))
        spans.append({"kind": kind, "value": value})
        return value

    return _SLOT.sub(fill, template), spans


def build() -> list[dict[str, object]]:
    rng = random.Random(SEED)
    v = Values(rng)
    near = near_misses(v)
    cases: list[dict[str, object]] = []
    seen: set[str] = set()

    def add(text: str, spans: list[dict[str, str]], lang: str, note: str) -> bool:
        if text in seen:
            return False
        seen.add(text)
        cases.append({"text": text, "spans": spans, "lang": lang, "note": note})
        return True

    for kind, by_lang in POSITIVE.items():
        for lang, templates in by_lang.items():
            made = 0
            for i in range(POSITIVE_PER_KIND[lang] * 3):
                if made == POSITIVE_PER_KIND[lang]:
                    break
                index = i % len(templates)
                text, spans = positive(v, templates[index], lang)
                made += add(text, spans, lang, f"{kind} in {LANGS[lang]} (template {index + 1})")
    for lang, templates in MULTI.items():
        for index, template in enumerate(templates * 2):
            text, spans = positive(v, template, lang)
            kinds = "+".join(sorted({s["kind"] for s in spans}))
            add(text, spans, lang, f"several values: {kinds} (template {index % len(templates) + 1})")
    for text, labels, lang, why in KNOWN_MISSES:
        add(text, [{"kind": kind, "value": value} for kind, value in labels], lang, f"known miss: {why}")
    for lang, target in NEGATIVES.items():
        pool = [(category, t) for category, by_lang in NEGATIVE.items() for t in by_lang.get(lang, [])]
        made = 0
        for i in range(target * 4):
            if made == target:
                break
            category, template = pool[i % len(pool)]
            text = _NEAR.sub(lambda m: near[m.group(1)](), template)
            made += add(text, [], lang, f"no personal data: {category}")
    return cases


def main() -> None:
    cases = build()
    with OUT.open("w", encoding="utf-8") as out:
        for case in cases:
            out.write(json.dumps(case, ensure_ascii=False) + "\n")
    positives = sum(1 for c in cases if c["spans"])
    print(f"wrote {len(cases)} cases ({positives} positive, {len(cases) - positives} negative) to {OUT}")


if __name__ == "__main__":
    main()
