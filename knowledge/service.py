"""The knowledge base as the rest of the product sees it: ingest, retrieve, ask, stats.

>>> kb = KnowledgeBase(settings, engine)          # doctest: +SKIP
>>> kb.ingest([Path("examples/handbook")]).ok     # doctest: +SKIP
True
>>> kb.ask(Question("How do I reset my password?")).citations[0].title  # doctest: +SKIP
'Resetting your password'

Async callers (the bot, `kb serve`) use `ask_async` for a whole answer and `ask_stream` for text
deltas while the model writes, then the same final Answer. Both, and `ask`, are one stream
(`_guarded`, where the guards run); a whole answer is that stream collected (`last_part`).
How the indexes on disk are opened and rebuilt is in knowledge.index_lifecycle, and the choice of
a what's-new listing over the answer stream in knowledge.whatsnew_routing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import aclosing, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from core.llm import LLM, llm_from_settings
from core.settings import Settings
from knowledge.answer import extractive_answer
from knowledge.catalog import ChunkCatalog, Filters
from knowledge.embeddings import Embedder, Vectors, get_embedder
from knowledge.generation import SafeDrafts, stream_answer
from knowledge.index import VectorIndex, set_threads
from knowledge.index_lifecycle import open_index, open_lexical, rebuild_index
from knowledge.lexical import LexicalIndex
from knowledge.retrieval import FusionConfig, Mode, Retriever
from knowledge.safety import GuardObserver, screen_answer, screen_question
from knowledge.store import Stats, Store
from knowledge.sync import Ingestor, IngestReport, Problem, Progress
from knowledge.timefilter import extract_time_filter, merge
from knowledge.types import Answer, AnswerParts, Document, Hit, Question, last_part
from knowledge.whatsnew_routing import listing_or
from privacy.access import can_read
from privacy.audit import AuditLog
from privacy.guard import Guard
from privacy.output import OutputGuard
from privacy.redaction import Destination, policy_for

log = logging.getLogger(__name__)

_RELOAD_CHECK_SECONDS = 2.0
Slots = asyncio.Semaphore | None  # held while retrieving (CPU work), never while the model writes


class KnowledgeBase:
    def __init__(self, settings: Settings, engine: Engine, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = Store(engine)
        self.audit = AuditLog.from_settings(settings, engine)
        self.guard = Guard(max_chars=settings.server.max_question_chars)
        self.output_guard = OutputGuard(kinds=settings.privacy.answer_kinds)
        self.guard_observer: GuardObserver | None = None  # `kb serve` sets it to count in /metrics
        self.llm: LLM | None = llm_from_settings(settings)  # None: extractive answers
        prompt_redactor = policy_for(
            Destination.EXTERNAL_PROMPT, prompt_kinds=settings.privacy.prompt_kinds
        ).redactor()
        self._prompt_redactor: Callable[[str], str] = lambda text: prompt_redactor.redact(text).text
        index_redactor = policy_for(Destination.INDEX, index_kinds=settings.privacy.index_kinds).redactor()
        self._index_redactor: Callable[[str], str] = lambda text: index_redactor.redact(text).text
        self._embedder = embedder
        self._index: VectorIndex | None = None
        self._lexical: LexicalIndex | None = None
        self._catalog: ChunkCatalog | None = None
        self._open_lock = threading.Lock()
        self._seen_run: int | None = None
        self._checked_at = 0.0
        set_threads(settings.retrieval.faiss_threads)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(
                self.settings.embedding.model,
                self.settings.embedding.batch_size,
                self.settings.embedding.torch_threads,
                self.settings.embedding.precision,
                query_encoder=self.settings.embedding.query_encoder,
                cache_dir=self.settings.embedding.model_cache_dir,
            )
        return self._embedder

    @property
    def index(self) -> VectorIndex:
        """The vector index, loaded from disk and checked against the database on first use."""
        return self._indexes()[0]

    def _indexes(self) -> tuple[VectorIndex, LexicalIndex, ChunkCatalog]:
        with self._open_lock:
            if (
                self._index is None
                or self._lexical is None
                or self._catalog is None
                or self._changed_elsewhere()
            ):
                self._seen_run = self.store.last_finished_run()
                self._index = open_index(self.settings, self.store, self.embedder)
                self._lexical = open_lexical(self.settings, self.store)
                self._catalog = ChunkCatalog(self.store.catalog_rows())
            return self._index, self._lexical, self._catalog

    def retriever(self) -> Retriever:
        index, lexical, catalog = self._indexes()
        fusion = FusionConfig.from_settings(self.settings)
        return Retriever(self.store, self.embedder, index, lexical, catalog, fusion=fusion)

    def _changed_elsewhere(self) -> bool:
        """Another process (a `kb ingest` beside `kb serve`) finished an ingest since we loaded."""
        now = time.monotonic()
        if now - self._checked_at < _RELOAD_CHECK_SECONDS:
            return False
        self._checked_at = now
        return self.store.last_finished_run() != self._seen_run

    def ingest(
        self,
        paths: list[Path],
        *,
        progress: Progress | None = None,
        prepare: Callable[[Document], Document] | None = None,
    ) -> IngestReport:
        """Ingest files and folders; `prepare` may adjust each loaded document (default ACL groups)."""
        index = self.index
        try:
            return self._ingestor(index, prepare=prepare).run(paths, progress=progress)
        finally:
            self._after_ingest(index)

    def ingest_documents(
        self,
        source: str,
        documents: Iterable[Document | Problem],
        *,
        sweep: bool = False,
        label: str | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Ingest already-built documents of one source (a table, an API); see Ingestor.ingest_documents.

        Sweeping with no documents deletes all of the source's documents, index vectors included.
        """
        index = self.index
        try:
            return self._ingestor(index).ingest_documents(
                source, documents, sweep=sweep, label=label, progress=progress
            )
        finally:
            self._after_ingest(index)

    def _ingestor(
        self, index: VectorIndex, *, prepare: Callable[[Document], Document] | None = None
    ) -> Ingestor:
        return Ingestor(
            self.store,
            self.embedder,
            index,
            chunk_tokens=self.settings.ingest.chunk_tokens,
            overlap=self.settings.ingest.chunk_overlap,
            max_bytes=self.settings.ingest.max_file_bytes,
            prepare=prepare,
            redact=self._index_redactor,
        )

    def _after_ingest(self, index: VectorIndex) -> None:
        """Save the vector index and refresh what derives from the chunks, after any ingest."""
        if index.kind == "flat" and index.size > self.settings.retrieval.ann_threshold:
            log.info("%d chunks: switching to the approximate (IVF) index", index.size)
            index = rebuild_index(self.settings, self.store, self.embedder, reembed=False)
        else:
            index.save(self.settings.index_dir, last_change=self.store.last_change())
        with self._open_lock:
            self._index = index
            # Derived from all chunk texts: rebuilt whole, cheap next to embedding.
            self._lexical = open_lexical(self.settings, self.store)
            self._catalog = ChunkCatalog(self.store.catalog_rows())
            self._seen_run = self.store.last_finished_run()

    def retrieve(
        self,
        question: Question,
        k: int | None = None,
        *,
        filters: Filters | None = None,
        mode: Mode = "hybrid",
    ) -> list[Hit]:
        return self.retriever().search(
            question, k or self.settings.retrieval.top_k, filters=filters, mode=mode
        )

    def ask(self, question: Question, *, filters: Filters | None = None) -> Answer:
        """The guarded extractive answer, for callers without an event loop (the model is not asked)."""
        answer = self._listing_or(question, filters, self._extractive(question, filters))
        return asyncio.run(last_part(self._guarded(question, answer), Answer))

    async def ask_async(
        self,
        question: Question,
        *,
        filters: Filters | None = None,
        model: str | None = None,
        retrieval_slots: asyncio.Semaphore | None = None,
    ) -> Answer:
        """`ask_stream` collected whole: no drafts, the model's reply asked for in one request."""
        parts = self.ask_stream(
            question, filters=filters, model=model, retrieval_slots=retrieval_slots, whole=True
        )
        return await last_part(parts, Answer)

    def ask_stream(
        self,
        question: Question,
        *,
        filters: Filters | None = None,
        model: str | None = None,
        retrieval_slots: asyncio.Semaphore | None = None,
        whole: bool = False,
    ) -> AnswerParts:
        """The guarded answer step by step: text deltas while the model writes, then exactly one Answer.

        The final Answer is authoritative (a fallback, abstention or withheld answer replaces what was
        shown). Deltas are safe to show as they come (generation.SafeDrafts: redacted, unfinished
        tail held back), a prefix of the answer. None come without a model, with `whole` (the reply
        asked for in one request), nor when the database says a retrieved passage is not the asker's
        to read. `retrieval_slots` is held while retrieving (CPU work), not while the model writes.

            async for part in kb.ask_stream(question):   # str, str, ..., then one Answer
                ...
        """
        if self.llm is None:
            answer = self._extractive(question, filters, retrieval_slots)
        else:
            answer = self._written(question, filters, self.llm, model, retrieval_slots, whole)
        return self._guarded(question, self._listing_or(question, filters, answer, retrieval_slots))

    def _listing_or(
        self, question: Question, filters: Filters | None, answer: AnswerParts, slots: Slots = None
    ) -> AnswerParts:
        """The what's-new listing in place of `answer` when the question asks what changed."""
        min_score = self.settings.retrieval.min_score
        return listing_or(
            question, filters, answer, retriever=self.retriever, min_score=min_score, slots=slots
        )

    async def _guarded(self, question: Question, answer: AnswerParts) -> AnswerParts:
        """The guards of every answer, run here once: input guard first, output guard on the Answer."""
        refusal, warnings = screen_question(self.guard, self.audit, question, observer=self.guard_observer)
        if refusal is not None:
            await answer.aclose()  # not started: nothing was retrieved
            yield refusal
            return
        final: Answer | None = None
        async with aclosing(answer) as parts:
            async for part in parts:
                if isinstance(part, Answer):
                    final = part
                else:
                    yield part
        if final is None:  # pragma: no cover - every answer stream ends with an Answer
            raise AssertionError("the answer stream ended without an Answer")
        final.notices.extend(warnings)
        yield await asyncio.to_thread(  # the output guard reads ACLs from the database
            screen_answer, self.output_guard, self.store, self.audit, final, question,
            observer=self.guard_observer,
        )  # fmt: skip

    async def _extractive(
        self, question: Question, filters: Filters | None, slots: Slots = None
    ) -> AnswerParts:
        async with slots or nullcontext():
            yield await asyncio.to_thread(self._answer, question, filters)

    async def _written(
        self,
        question: Question,
        filters: Filters | None,
        llm: LLM,
        model: str | None,
        slots: Slots,
        whole: bool,
    ) -> AnswerParts:
        """The model's answer before the output guard: deltas safe to show (unless `whole`), the Answer."""
        started = time.perf_counter()
        async with slots or nullcontext():
            asked, query, hits = await asyncio.to_thread(self._retrieve, question, filters)
        if self.settings.llm.external:  # the prompt leaves the company: redact it first
            hits = [replace(hit, text=self._prompt_redactor(hit.text)) for hit in hits]
        retrieve_ms = (time.perf_counter() - started) * 1000
        readable = not whole and await asyncio.to_thread(self._all_readable, hits, question.groups)
        drafts = SafeDrafts(self.output_guard) if readable else None
        parts = stream_answer(
            asked, hits, llm=llm, query_vector=query, embedder=self.embedder,
            min_score=self.settings.retrieval.min_score, min_coverage=self.settings.retrieval.min_coverage,
            model=model, retrieve_ms=retrieve_ms, whole=whole,
        )  # fmt: skip
        async with aclosing(parts) as stream:
            async for part in stream:
                if isinstance(part, Answer):
                    yield part
                elif drafts is not None and (shown := drafts.feed(part)):
                    yield shown

    def _all_readable(self, hits: list[Hit], groups: tuple[str, ...]) -> bool:
        """Whether the asker may read every hit, by the ACLs in the database now (not the index's)."""
        acls = self.store.acls_by_uri([hit.uri for hit in hits])
        return all(can_read(groups, acls.get(hit.uri.split("#", 1)[0], [])) for hit in hits)

    def _retrieve(self, question: Question, filters: Filters | None) -> tuple[Question, Vectors, list[Hit]]:
        """The question without its time phrase, its vector, and its readable hits."""
        retriever = self.retriever()
        text, parsed = extract_time_filter(question.text, now=datetime.now(UTC))
        if parsed is not None:
            filters = merge(filters, parsed)
            question = replace(question, text=text or question.text)
        query = retriever.embed(question.text)
        return (
            question,
            query,
            retriever.search(question, self.settings.retrieval.top_k, vector=query, filters=filters),
        )

    def _answer(self, question: Question, filters: Filters | None) -> Answer:
        started = time.perf_counter()
        asked, query, hits = self._retrieve(question, filters)
        retrieved = time.perf_counter()
        answer = extractive_answer(
            query, hits, embedder=self.embedder, min_score=self.settings.retrieval.min_score,
            question=asked.text, min_coverage=self.settings.retrieval.min_coverage,
        )  # fmt: skip
        done = time.perf_counter()
        answer.latency_ms = {
            "retrieve": round((retrieved - started) * 1000, 2),
            "answer": round((done - retrieved) * 1000, 2),
            "total": round((done - started) * 1000, 2),
        }
        return answer

    def stats(self) -> Stats:
        return self.store.stats()
