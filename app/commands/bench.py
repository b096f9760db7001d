"""`kb bench`: measure retrieval quality and speed on a labelled query set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.support import (
    JsonOption,
    cli_engine,
    cli_settings,
    err,
    friendly_errors,
    out,
    print_json,
)
from core.errors import KBError

bench_app = typer.Typer(help="Measure retrieval quality and speed.", no_args_is_help=True)


@bench_app.command("retrieval")
@friendly_errors
def bench_retrieval(
    docs: Annotated[Path, typer.Option(help="Folder of documents to index.", show_default=False)],
    queries: Annotated[Path, typer.Option(help="JSONL of {query, relevant}.", show_default=False)],
    mode: Annotated[str, typer.Option(help="hybrid, dense, bm25, or all.")] = "hybrid",
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the index here (default: a temporary folder).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Index DOCS in a scratch knowledge base and report recall@k, MRR, nDCG@10 and latency."""
    import tempfile

    from core import db
    from core.settings import load_settings
    from knowledge.evaluation import evaluate, load_queries
    from knowledge.service import KnowledgeBase

    modes = ["bm25", "dense", "hybrid"] if mode == "all" else [mode]
    if any(m not in ("bm25", "dense", "hybrid") for m in modes):
        raise KBError(f"unknown mode {mode!r}", hint="use hybrid, dense, bm25 or all")
    labelled = load_queries(queries)
    cli_settings()  # logging, and a clear error for a bad environment
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch:
        settings = load_settings(data_dir=data_dir or Path(scratch), database_url="")
        engine = cli_engine(settings)
        db.upgrade(engine)
        kb = KnowledgeBase(settings, engine)
        with err.status(f"indexing {docs}…"):
            report = kb.ingest([docs])
        if report.added + report.unchanged == 0:
            raise KBError(f"nothing could be indexed from {docs}")
        results = [evaluate(kb, labelled, mode=m) for m in modes]  # type: ignore[arg-type]
        stats = kb.stats()
    summary = {"documents": stats.documents, "chunks": stats.chunks, "skipped": len(report.skipped)}
    if as_json:
        print_json(results[0] | summary if len(results) == 1 else {"results": results, **summary})
        return
    for r in results:
        out.print(
            f"{r['mode']:<7} recall@1 {r['recall@1']:.3f}  recall@5 {r['recall@5']:.3f}  "
            f"recall@10 {r['recall@10']:.3f}  mrr@10 {r['mrr@10']:.3f}  ndcg@10 {r['ndcg@10']:.3f}  "
            f"p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms"
        )


@bench_app.command("ingest")
@friendly_errors
def bench_ingest(
    docs: Annotated[Path, typer.Option(help="Folder of real documents to ingest.", show_default=False)],
    raw: Annotated[
        bool, typer.Option(help="Also time plain fp32 sentence-transformers encode on the same chunks.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Ingest DOCS into a scratch knowledge base: documents/s, chunks/s, peak memory, raw encode ratio."""
    import tempfile

    from core import db
    from core.settings import load_settings
    from knowledge.evaluation import ingest_throughput
    from knowledge.service import KnowledgeBase

    if not docs.is_dir():
        raise KBError(f"{docs} is not a folder", hint="pass --docs with a folder of documents")
    cli_settings()
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch:
        settings = load_settings(data_dir=Path(scratch), database_url="")
        engine = cli_engine(settings)
        db.upgrade(engine)
        with err.status(f"ingesting {docs}…"):
            result = ingest_throughput(KnowledgeBase(settings, engine), docs, raw=raw)
        result["skipped"] = len(result["skipped"])
        engine.dispose()
    if as_json:
        print_json(result)
        return
    out.print(" ".join(f"{key} {value}" for key, value in result.items()))
