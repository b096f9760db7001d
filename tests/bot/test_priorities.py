"""`kb serve` gives its event loop priority: nicer worker threads, one OpenMP thread each, acks first.

See bot/tasks.py (Linux, where niceness is per thread, is the platform `kb serve` runs on). Worker
threads are checked through what the operating system and FAISS report from inside them; the gate
through the order in which acks and retrievals get their turn.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable

import faiss
import pytest
from aiohttp.test_utils import TestServer

from app.server.assembly import create_app
from bot.tasks import AckFirst, AckFirstSlots, lower_priority, worker_executor
from core import db
from core.settings import Settings
from knowledge.embeddings import Embedder
from knowledge.service import KnowledgeBase


def _own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_worker_threads_are_nicer_and_search_with_their_own_openmp_count() -> None:
    here = _own_priority()
    workers = worker_executor(nice=3, faiss_threads=3, max_workers=1)
    try:
        niceness, omp = workers.submit(lambda: (_own_priority(), faiss.omp_get_max_threads())).result()
    finally:
        workers.shutdown()
    assert niceness == min(19, here + 3)
    assert omp == 3, "OpenMP's count is per thread: the worker must set its own"
    assert _own_priority() == here, "only the worker thread is reniced, not the process"


def test_lowering_priority_by_nothing_changes_nothing() -> None:
    here = _own_priority()
    seen: list[int] = []

    def work() -> None:
        lower_priority(0)
        seen.append(_own_priority())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [here]


async def test_kb_serve_runs_to_thread_work_on_the_nicer_workers(
    make_settings: Callable[..., Settings], embedder: Embedder
) -> None:
    settings = make_settings(bot_worker_nice=4, bot_switch_interval_ms=1.0)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    kb = KnowledgeBase(settings, engine, embedder=embedder)
    python_interval = sys.getswitchinterval()
    here = _own_priority()
    server = TestServer(create_app(settings, kb))
    await server.start_server()
    try:
        assert await asyncio.to_thread(_own_priority) == min(19, here + 4)
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        await server.close()
        engine.dispose()
    assert sys.getswitchinterval() == python_interval, "restored when the app stops"


async def test_a_retrieval_slot_waits_for_the_acks_in_flight_and_bounds_retrievals() -> None:
    gate = AckFirst(max_wait_s=5.0)
    slots = AckFirstSlots(1, gate=gate)
    order: list[str] = []

    async def retrieve(name: str) -> None:
        async with slots:
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    with gate.acking():
        tasks = [asyncio.create_task(retrieve(name)) for name in ("a", "b")]
        await asyncio.sleep(0.05)
        order.append("acked")
    await asyncio.gather(*tasks)
    assert order == ["acked", "a in", "a out", "b in", "b out"]
