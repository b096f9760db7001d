"""Benchmark of PII redaction: precision and recall per kind on the labelled corpus, and throughput.

    .venv/bin/python bench/redaction.py [--corpus PATH] [--out PATH] [--megabytes 5]

Prints a table and writes bench/results/redaction.json. A labelled value counts as found when a
finding of the same kind covers exactly that value (surrounding punctuation may differ); a finding
that matches no label of its kind is a false positive.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import string
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import HANDBOOK, RESULTS, write_results  # noqa: E402
from privacy.detectors import ALL_KINDS  # noqa: E402
from privacy.redaction import Finding, Redactor  # noqa: E402

CORPUS = REPO / "tests" / "privacy" / "data" / "redaction_corpus.jsonl"
OUT = RESULTS / "redaction.json"
_EDGE = string.punctuation + string.whitespace + "，。；：、（）【】《》“”‘’！？"


def _covers(text: str, finding: Finding, value: str) -> bool:
    """The finding spans this labelled value, give or take punctuation at either end."""
    start = text.find(value)
    while start != -1:
        if finding.start < start + len(value) and start < finding.end:
            return text[finding.start : finding.end].strip(_EDGE) == value.strip(_EDGE)
        start = text.find(value, start + 1)
    return False


def score(redactor: Redactor, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-kind and overall precision, recall and F1, with the counts behind them."""
    labels: Counter[str] = Counter()
    found: Counter[str] = Counter()
    true_findings: Counter[str] = Counter()
    false_findings: Counter[str] = Counter()
    misses: list[dict[str, str]] = []
    false_positives: list[dict[str, str]] = []
    for case in cases:
        text = case["text"]
        findings = redactor.find(text)
        for span in case["spans"]:
            labels[span["kind"]] += 1
            if any(f.kind == span["kind"] and _covers(text, f, span["value"]) for f in findings):
                found[span["kind"]] += 1
            else:
                misses.append({"kind": span["kind"], "value": span["value"], "text": text})
        for f in findings:
            if any(f.kind == s["kind"] and _covers(text, f, s["value"]) for s in case["spans"]):
                true_findings[f.kind] += 1
            else:
                false_findings[f.kind] += 1
                false_positives.append({"kind": f.kind, "value": text[f.start : f.end], "text": text})
    per_kind = {
        kind: _metrics(labels[kind], found[kind], true_findings[kind], false_findings[kind])
        for kind in sorted(ALL_KINDS)
    }
    overall = _metrics(
        sum(labels.values()), sum(found.values()), sum(true_findings.values()), sum(false_findings.values())
    )
    return {"overall": overall, "per_kind": per_kind, "misses": misses, "false_positives": false_positives}


def _metrics(labels: int, found: int, true_findings: int, false_findings: int) -> dict[str, Any]:
    recall = found / labels if labels else 1.0
    findings = true_findings + false_findings
    precision = true_findings / findings if findings else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "labels": labels,
        "found": found,
        "findings": findings,
        "false_positives": false_findings,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def throughput(redactor: Redactor, texts: list[str], *, megabytes: float, passes: int = 3) -> dict[str, Any]:
    """Documents and megabytes per second over the corpus repeated to about `megabytes` MB, best of
    `passes`, per wall-clock and per CPU second (on a busy machine, what redaction itself costs)."""
    corpus_bytes = sum(len(t.encode()) for t in texts)
    repeats = max(1, round(megabytes * 1_000_000 / corpus_bytes))
    documents = texts * repeats
    wall, cpu = [], []
    for _ in range(passes):
        started, started_cpu = time.perf_counter(), time.process_time()
        for text in documents:
            redactor.redact(text)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    total = corpus_bytes * repeats / 1e6
    return {
        "documents": len(documents),
        "megabytes": round(total, 2),
        "passes": passes,
        "documents_per_second": round(len(documents) / min(wall)),
        "megabytes_per_second": round(total / min(wall), 3),
        "documents_per_cpu_second": round(len(documents) / min(cpu)),
        "megabytes_per_cpu_second": round(total / min(cpu), 3),
    }


def latency(redactor: Redactor, text: str, *, size: int = 10_000, runs: int = 200) -> dict[str, Any]:
    """Milliseconds to redact one `size`-character document cut from `text` (repeated if short)."""
    page = (text * (size // max(1, len(text)) + 1))[:size]
    wall, cpu = [], []
    for _ in range(runs):
        tick, tick_cpu = time.perf_counter(), time.process_time()
        redactor.redact(page)
        wall.append((time.perf_counter() - tick) * 1000)
        cpu.append((time.process_time() - tick_cpu) * 1000)
    return {
        "characters": len(page),
        "findings": len(redactor.find(page)),
        "ms_median": round(statistics.median(wall), 3),
        "ms_p95": round(statistics.quantiles(wall, n=20)[-1], 3),
        "cpu_ms_median": round(statistics.median(cpu), 3),
    }


def _shown(path: Path) -> str:
    """A path relative to the repository when it lies inside it (keeps the .venv symlink)."""
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(REPO)) if absolute.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--megabytes", type=float, default=5.0)
    args = parser.parse_args(argv)
    cases = [json.loads(line) for line in args.corpus.read_text(encoding="utf-8").splitlines() if line]
    redactor = Redactor()
    quality = score(redactor, cases)
    texts = [c["text"] for c in cases]
    speed = throughput(redactor, texts, megabytes=args.megabytes)
    handbook = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(HANDBOOK.rglob("*.md")))
    speed["latency_10k_corpus_page"] = latency(
        redactor, "\n".join(random.Random(1).sample(texts, len(texts)))
    )
    speed["latency_10k_handbook_prose"] = latency(redactor, handbook)
    command = shlex.join([_shown(Path(sys.executable)), _shown(Path(__file__)), *sys.argv[1:]])
    result = {
        "corpus": {
            "path": _shown(args.corpus),
            "cases": len(cases),
            "positive": sum(1 for c in cases if c["spans"]),
            "negative": sum(1 for c in cases if not c["spans"]),
            "languages": dict(Counter(c["lang"] for c in cases)),
        },
        "overall": quality["overall"],
        "per_kind": quality["per_kind"],
        "throughput": speed,
        "misses": quality["misses"],
        "false_positives": quality["false_positives"],
    }
    print(f"{'kind':<8} {'labels':>6} {'found':>6} {'FP':>4} {'precision':>9} {'recall':>7} {'F1':>7}")
    for kind, m in [*quality["per_kind"].items(), ("overall", quality["overall"])]:
        print(
            f"{kind:<8} {m['labels']:>6} {m['found']:>6} {m['false_positives']:>4} "
            f"{m['precision']:>9.4f} {m['recall']:>7.4f} {m['f1']:>7.4f}"
        )
    page, prose = speed["latency_10k_corpus_page"], speed["latency_10k_handbook_prose"]
    print(
        f"throughput: {speed['documents_per_second']} documents/s, {speed['megabytes_per_second']} MB/s "
        f"({speed['documents_per_cpu_second']} documents and {speed['megabytes_per_cpu_second']} MB per CPU "
        f"second; {speed['megabytes']} MB, best of {speed['passes']} passes)\n"
        f"10 kB corpus page ({page['findings']} findings): {page['ms_median']} ms median "
        f"({page['cpu_ms_median']} ms CPU); 10 kB handbook prose ({prose['findings']} findings): "
        f"{prose['ms_median']} ms median ({prose['cpu_ms_median']} ms CPU)"
    )
    for miss in quality["misses"]:
        print(f"missed {miss['kind']}: {miss['value']!r} in {miss['text']!r}")
    for fp in quality["false_positives"]:
        print(f"false {fp['kind']}: {fp['value']!r} in {fp['text']!r}")
    overall = quality["overall"]
    summary = (
        f"{len(cases)} labelled cases (EN+ZH): precision {overall['precision']}, recall {overall['recall']}; "
        f"{speed['megabytes_per_cpu_second']} MB per CPU second"
    )
    write_results("redaction", result, summary=summary, command=command, path=args.out, load=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
