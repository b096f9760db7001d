"""`kb bench`: measure retrieval and answer quality and speed on labelled sets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from app.support import (
    JsonOption,
    cli_engine,
    cli_settings,
    err,
    friendly_errors,
    open_kb,
    out,
    print_json,
)
from core.errors import KBError

if TYPE_CHECKING:
    from core.settings import Settings
    from knowledge.answer_quality import AnswerItem
    from knowledge.answer_runs import Answered, Retrieved
    from knowledge.service import KnowledgeBase


class HasRelevant(Protocol):
    @property
    def relevant(self) -> tuple[str, ...]: ...


bench_app = typer.Typer(help="Measure retrieval and answer quality and speed.", no_args_is_help=True)


@bench_app.command("retrieval")
@friendly_errors
def bench_retrieval(
    docs: Annotated[Path, typer.Option(help="Folder of documents to index.", show_default=False)],
    queries: Annotated[
        Path,
        typer.Option(
            help='JSONL, one {"query": "...", "relevant": ["it/page.md#anchor" or "it/page.md"]} a line: '
            "links less their source folder (README, Benchmarks).",
            show_default=False,
        ),
    ],
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
        links = corpus_links(kb)
        unmatched = unknown_labels(labelled, links)
        results = [evaluate(kb, labelled, mode=m) for m in modes]  # type: ignore[arg-type]
        stats = kb.stats()
    summary = {
        "documents": stats.documents,
        "chunks": stats.chunks,
        "skipped": len(report.skipped),
        "unknown_labels": len(unmatched),
    }
    if unmatched:
        _warn_unmatched(unmatched, sum(len(q.relevant) for q in labelled), links)
    if as_json:
        print_json(results[0] | summary if len(results) == 1 else {"results": results, **summary})
        return
    for r in results:
        out.print(
            f"{r['mode']:<7} recall@1 {r['recall@1']:.3f}  recall@5 {r['recall@5']:.3f}  "
            f"recall@10 {r['recall@10']:.3f}  mrr@10 {r['mrr@10']:.3f}  ndcg@10 {r['ndcg@10']:.3f}  "
            f"p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms"
        )


def corpus_links(kb: KnowledgeBase) -> set[str]:
    """Every link a hit can have in `kb`: page uri, and page#anchor for each section."""
    import sqlalchemy as sa

    query = sa.text("SELECT d.uri, c.anchor FROM chunks c JOIN documents d ON d.id = c.document_id")
    with kb.store.engine.connect() as connection:
        rows = connection.execute(query).all()
    return {f"{uri}#{anchor}" if anchor else str(uri) for uri, anchor in rows} | {str(u) for u, _ in rows}


def unknown_labels(queries: Sequence[HasRelevant], links: set[str]) -> list[str]:
    """Label entries that no link matches by the scoring rule (knowledge/evaluation.py: the link's
    source folder dropped; an entry without '#' matches any section of its page)."""
    exact = {link.split("/", 1)[1] if "/" in link else link for link in links}
    pages = {uri.split("#", 1)[0] for uri in exact}
    return [e for q in queries for e in q.relevant if e not in (exact if "#" in e else pages)]


def _warn_unmatched(unmatched: list[str], total: int, links: set[str]) -> None:
    """One warning: how many label links match nothing, examples, and the fix when it is the form."""
    examples = ", ".join(unmatched[:3])
    hint = "a label is a link less its source folder, e.g. it/password-reset.md#anchor"
    as_cited = [e for e in unmatched if "/" in e and not unknown_labels([_Label(e.split("/", 1)[1])], links)]
    if as_cited:  # written as `kb ask` prints citations, source folder first
        hint = f"drop the source folder: {as_cited[0].split('/', 1)[1]} rather than {as_cited[0]}"
    err.print(
        f"[yellow]warning:[/] {len(unmatched)} of {total} label links match nothing in the corpus "
        f"(e.g. {examples}); they score 0: {hint}",
        markup=True,
        highlight=False,
    )


class _Label:
    """One label entry alone, to test it with `unknown_labels`."""

    def __init__(self, entry: str) -> None:
        self.relevant = (entry,)


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


@bench_app.command("answers")
@friendly_errors
def bench_answers(
    queries: Annotated[
        Path, typer.Option(help="JSONL of {query, answers, relevant, unanswerable}.", show_default=False)
    ],
    model: Annotated[
        str | None,
        typer.Option(help="extractive, or a store model / folder (default: KB_LLM_MODEL, else extractive)."),
    ] = None,
    docs: Annotated[
        Path | None,
        typer.Option(help="Index this folder in a scratch knowledge base (default: the configured one)."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer cap in tokens.")] = 256,
    as_json: JsonOption = False,
) -> None:
    """Answer a labelled set and score it: correctness, citation precision, abstention, invented
    citations, time to first token and tokens/s. A model is asked at KB_LLM_URL, or served here by
    vLLM for the run when no URL is set."""
    import tempfile

    from knowledge.answer_quality import load_answer_set

    items = load_answer_set(queries)
    settings = cli_settings()
    chosen = model or (settings.llm.model if settings.llm.url else None) or "extractive"
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch:
        kb = _bench_kb(settings, docs, Path(scratch))
        _warn_unknown_links(kb, items)
        result = _score_answers(kb, items, chosen, max_tokens)
    if as_json:
        print_json(result)
        return
    keys = ("correct", "abstain", "citation_precision", "invented_citations", "ttft_p95_s", "tokens_per_s")
    out.print(f"{chosen}: " + "  ".join(f"{key} {result[key]}" for key in keys), highlight=False)


def _bench_kb(settings: Settings, docs: Path | None, scratch: Path) -> KnowledgeBase:
    from core import db
    from core.settings import load_settings
    from knowledge.service import KnowledgeBase

    if docs is None:
        return open_kb(settings)
    if not docs.is_dir():
        raise KBError(f"{docs} is not a folder", hint="pass --docs with a folder of documents")
    scratch_settings = load_settings(data_dir=scratch, database_url="")
    engine = cli_engine(scratch_settings)
    db.upgrade(engine)
    kb = KnowledgeBase(scratch_settings, engine)
    with err.status(f"indexing {docs}…"):
        report = kb.ingest([docs])
    if report.added + report.unchanged == 0:
        raise KBError(f"nothing could be indexed from {docs}")
    return kb


def _warn_unknown_links(kb: KnowledgeBase, items: list[AnswerItem]) -> None:
    """The retrieval benchmark's warning for label links that match nothing in the corpus."""
    links = corpus_links(kb)
    unmatched = unknown_labels(items, links)
    if unmatched:
        _warn_unmatched(unmatched, sum(len(item.relevant) for item in items), links)


def _score_answers(kb: KnowledgeBase, items: list[AnswerItem], model: str, max_tokens: int) -> dict[str, Any]:
    import asyncio

    from knowledge.answer_runs import answer_set, retrieve_set, summarise

    with err.status("retrieving…"):
        retrieved = retrieve_set(kb, items)
    if model == "extractive":
        return {"model": model} | summarise(asyncio.run(answer_set(kb, retrieved)))
    with _model_url(kb.settings, model) as url, err.status(f"asking {model}…"):
        answered = asyncio.run(_ask_model(kb, retrieved, url, model, max_tokens))
    return {"model": model} | summarise(answered)


async def _ask_model(
    kb: KnowledgeBase, retrieved: list[Retrieved], url: str, model: str, max_tokens: int
) -> list[Answered]:
    from core.llm.vllm import VLLMClient
    from knowledge.answer_runs import answer_set

    async with VLLMClient(url, model=model, first_token_timeout=300, total_timeout=900) as llm:
        return await answer_set(kb, retrieved, llm=llm, model=model, max_answer_tokens=max_tokens)


@contextmanager
def _model_url(settings: Settings, model: str) -> Iterator[str]:
    """KB_LLM_URL when set; otherwise the model served by vLLM here for the run, stopped after."""
    if settings.llm.url is not None:
        yield str(settings.llm.url).rstrip("/")
        return
    import socket

    from core.llm.server import CPU_MAX_MODEL_LEN, VLLMServer, default_python
    from core.llm.store import ModelStore, resolve_model

    resolved = resolve_model(model, ModelStore(settings.llm.store))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = VLLMServer(
        resolved.path, python=default_python(settings.llm.vllm_python), port=port, served_name=model,
        max_model_len=CPU_MAX_MODEL_LEN,
    )  # fmt: skip
    with server, err.status(f"starting vLLM for {model} (log: {server.log_path})…"):
        server.wait_ready(timeout=900)
    try:
        yield server.url
    finally:
        server.stop()
