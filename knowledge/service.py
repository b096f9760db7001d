"""The knowledge base as the rest of the product sees it: ingest, retrieve, ask, stats.

>>> kb = KnowledgeBase(settings, engine)          # doctest: +SKIP
>>> kb.ingest([Path("examples/handbook")]).ok     # doctest: +SKIP
True
>>> kb.ask(Question("How do I reset my password?")).citations[0].title  # doctest: +SKIP
'Resetting your password'

Async callers (the bot, `kb serve`) use `ask_async` for a whole answer and `ask_stream` for text
deltas while the model writes, then the same final Answer. Both, and `ask`, are one stream
(`_guarded`, where the guards run); a whole answer is that stream collected (`last_part`).
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

import numpy as np
from sqlalchemy import Engine

from core.llm import LLM, llm_from_settings
from core.settings import Settings
from knowledge.answer import extractive_answer
from knowledge.catalog import ChunkCatalog, Filters
from knowledge.embeddings import Embedder, Vectors, get_embedder
from knowledge.errors import VectorIndexError
from knowledge.generation import SafeDrafts, stream_answer
from knowledge.index import VectorIndex, set_threads
from knowledge.lexical import LEXICAL_FILE, LexicalIndex
from knowledge.retrieval import FusionConfig, Mode, Retriever
from knowledge.safety import GuardObserver, screen_answer, screen_question
from knowledge.store import Stats, Store
from knowledge.sync import Ingestor, IngestReport, Problem, Progress, embedding_text
from knowledge.timefilter import extract_time_filter, merge
from knowledge.types import Answer, AnswerParts, Document, Hit, Question, last_part
from knowledge.whatsnew import read_listing, whats_new
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
                self._index = self._open_index()
                self._lexical = self._open_lexical()
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
            index = self._rebuild(reembed=False)
        else:
            index.save(self.settings.index_dir, last_change=self.store.last_change())
        with self._open_lock:
            self._index = index
            # Derived from all chunk texts: rebuilt whole, cheap next to embedding.
            self._lexical = self._open_lexical()
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

    async def _listing_or(
        self, question: Question, filters: Filters | None, answer: AnswerParts, slots: Slots = None
    ) -> AnswerParts:
        """A time-scoped question about change ("what's new this week") gets the dated list of the
        documents that changed (knowledge.whatsnew) in place of `answer`, which is then never started."""
        now = datetime.now(UTC)
        listing = None
        # Reading the question needs no retrieval slot; only a listing retrieves.
        if await asyncio.to_thread(read_listing, question.text, now=now) is not None:
            async with slots or nullcontext():
                listing = await asyncio.to_thread(
                    whats_new, self.retriever, question, now=now, filters=filters,
                    min_score=self.settings.retrieval.min_score,
                )  # fmt: skip
        if listing is not None:
            await answer.aclose()
            yield listing
            return
        async with aclosing(answer) as parts:
            async for part in parts:
                yield part

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

    def _open_index(self) -> VectorIndex:
        directory, embedder = self.settings.index_dir, self.embedder
        expected = self.store.fingerprint()
        reason = "no index on disk"
        if (directory / "manifest.json").exists():
            try:
                index, manifest = VectorIndex.load(directory, nprobe=self.settings.retrieval.ivf_nprobe)
            except VectorIndexError as exc:
                reason = str(exc)
            else:
                if manifest.model != embedder.name or manifest.dim != embedder.dim:
                    log.warning(
                        "index built with %s, configured %s: re-embedding", manifest.model, embedder.name
                    )
                    return self._rebuild(reembed=True)
                if (stored := index.precision) != (configured := self.settings.retrieval.index_precision):
                    log.warning("index stored in %s, configured %s: rebuilding", stored, configured)
                    return self._rebuild(reembed=False)
                if (
                    manifest.fingerprint == expected
                    and index.ids().size == expected.count
                    and manifest.last_change == self.store.last_change()
                ):
                    return index
                reason = f"index holds {index.size} vectors, the database {expected.count} chunks"
        if expected.count:
            log.warning("rebuilding the vector index from the database: %s", reason)
        return self._rebuild(reembed=False)

    def _open_lexical(self) -> LexicalIndex:
        directory, expected = self.settings.index_dir, self.store.fingerprint()
        if (directory / LEXICAL_FILE).exists():
            try:
                lexical = LexicalIndex.load(directory)
            except VectorIndexError as exc:
                log.warning("rebuilding the lexical index: %s", exc)
            else:
                if lexical.fingerprint == expected:
                    return lexical
        ids: list[int] = []
        texts: list[str] = []
        for batch in self.store.iter_chunk_texts():
            ids += [row[0] for row in batch]
            texts += [embedding_text(title, section, text) for _, title, section, text in batch]
        lexical = LexicalIndex.build(ids, texts)
        lexical.save(directory)
        return lexical

    def _rebuild(self, *, reembed: bool) -> VectorIndex:
        if reembed:
            for batch in self.store.iter_chunk_texts():
                texts = [embedding_text(t, s, x) for _, t, s, x in batch]
                self.store.update_embeddings([row[0] for row in batch], self.embedder.encode(texts))
        last_change = self.store.last_change()  # read first: a change after it makes the next open rebuild
        batches = list(self.store.iter_embeddings())
        ids = [np.asarray(i, dtype=np.int64) for i, _ in batches]
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        dim = self.embedder.dim
        vectors = np.concatenate([v for _, v in batches]) if batches else np.zeros((0, dim), np.float32)
        index = VectorIndex.build(
            self.embedder.dim,
            model=self.embedder.name,
            ids=all_ids,
            vectors=vectors,
            ann_threshold=self.settings.retrieval.ann_threshold,
            nprobe=self.settings.retrieval.ivf_nprobe,
            precision=self.settings.retrieval.index_precision,
        )
        index.save(self.settings.index_dir, last_change=last_change)
        return index
