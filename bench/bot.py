"""Benchmark of the Slack bot: ack latency, time to the posted answer, the bot's own overhead, duplicates.

    .venv/bin/python bench/bot.py [--events 200] [--concurrency 50] [--deliveries 4] [--database-url URL]

`kb serve`'s app runs in a process of its own with the sample handbook ingested (SQLite by
default); Slack's Web API is the tests' recording fake and the model FakeLLM, streaming a cited
answer (~20 ms). `--events` signed app_mention events from 10 public channels, each delivered
`--deliveries` times (redeliveries with X-Slack-Retry-Num), go out at most `--concurrency` at a
time; then `--serial-events` more at concurrency 1 (each event's deliveries, then its answer).

- ack: each delivery's HTTP response time. The connections are opened and the requests signed
  before the clock starts: opening 50 connections costs the load generator 130-150 ms;
- e2e: from an event's first delivery to its final chat.update at the fake;
- overhead: in the server, from the first delivery's arrival to the final chat.update leaving,
  less the time inside the AnswerService (retrieval, model, the wait for a retrieval slot).
  `overhead_wall_*`, at `--concurrency` in flight, is the targets' figure (`overhead_p95_ms`);
  `serial.overhead_*` the same at concurrency 1; `overhead_before_answer_*` and
  `overhead_after_answer_*` split it; `overhead_with_slack_*` is e2e less the AnswerService time;
- `bot_cpu_ms_per_event`: the server's CPU per event at concurrency 1 with the bot alone;
- duplicate answers: final answers beyond one per event, plus "searching…" messages beyond one;
- server side: event-loop lag on a 10 ms sleep and garbage-collector pauses (waiting for a CPU).

Two servers, one after the other: the bot alone (`bot_alone`: a canned answer after 20 ms, no
retrieval), then the full product (the top-level figures, which the targets are checked against).
About three minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.server import create_app
from bench.common import HANDBOOK, load_average, open_kb, proc_cpu, write_results
from bot.answers import KnowledgeBaseAnswers
from bot.slack.app import SLACK_BOT_KEY
from bot.slack.blocks import WRITING, SlackMessage
from bot.slack.sender import SlackSender
from bot.tasks import AckFirst
from bot.wiring import build_conversation
from knowledge.types import Answer, Citation, Question
from tests.bot.fake_slack import TEAM, FakeSlack
from tests.fakes import FakeLLM

SECRET = "bench-signing-secret"
QUESTIONS = [
    "How do I reset my password?", "How many vacation days do I get?", "When are expense reports due?",
    "How do I connect to the VPN?", "Who do I call when my laptop is stolen?",
    "How do I book a meeting room?", "What is the parental leave policy?",
    "How do I report a phishing email?",
]  # fmt: skip
ANSWER = "Follow the steps on the handbook page: open the portal, choose the option and confirm [1]."
SERIAL_THREAD = "1700002000."  # the events of the concurrency-1 phase
CHANNELS = 10  # public channels the events come from
TARGETS = {"ack_p99_ms": 100.0, "overhead_p95_ms": 20.0, "duplicate_answers": 0}


class CannedAnswers:
    """The `--side bot-alone` AnswerService: a cited handbook answer after 20 ms, no retrieval at all."""

    async def answer(self, question: Question) -> Answer:
        await asyncio.sleep(0.02)
        cited = Citation(1, "Passwords", "handbook/it/passwords.md#resetting", "Resetting", "…", 0.8)
        return Answer(text=ANSWER, citations=[cited], confidence=0.8, model="canned")

    async def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        yield await self.answer(question)

    def preview(self, text: str) -> str:
        return text


class TimedAnswers:
    """An AnswerService, timed per question (keyed by the question's thread)."""

    def __init__(self, inner: KnowledgeBaseAnswers | CannedAnswers) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {}
        self.began: dict[str, float] = {}  # perf_counter when each question's answer started

    async def answer(self, question: Question) -> Answer:
        started = self.began[question.thread or ""] = time.perf_counter()
        try:
            return await self.inner.answer(question)
        finally:
            self.seconds[question.thread or ""] = time.perf_counter() - started

    async def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        started = self.began[question.thread or ""] = time.perf_counter()
        async for part in self.inner.stream(question):
            if isinstance(part, Answer):
                self.seconds[question.thread or ""] = time.perf_counter() - started
            yield part

    def preview(self, text: str) -> str:
        return self.inner.preview(text)


class TimedSender(SlackSender):
    """The bot's Slack sender, noting when each question's final answer leaves for Slack."""

    def __init__(self, client: AsyncWebClient) -> None:
        super().__init__(client)
        self.thread_of: dict[str, str] = {}  # "searching…" message ts -> the question's thread
        self.final_sent: dict[str, float] = {}  # thread -> perf_counter when the final update went out

    async def searching(self, channel: str, *, thread: str | None) -> str:
        ts = await super().searching(channel, thread=thread)
        self.thread_of[ts] = thread or ""
        return ts

    async def update(self, channel: str, ts: str, message: SlackMessage) -> None:
        if not json.dumps(message.blocks[-1:], ensure_ascii=False).count(WRITING):
            self.final_sent.setdefault(self.thread_of.get(ts, ""), time.perf_counter())
        await super().update(channel, ts, message)


def thread_cpu(*, since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads by thread name (Linux), less `since`."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    used: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        if found := proc_cpu(task / "stat"):  # None: the thread ended meanwhile
            name = names.get(int(task.name), "other").rstrip("_0123456789")
            used[name] = used.get(name, 0.0) + found[1]
    return {name: seconds - (since or {}).get(name, 0.0) for name, seconds in used.items()}


def questions_recorded(engine: Engine) -> int:
    """Question events in the bot's database: each answered question must be recorded once."""
    query = sa.text("SELECT count(*) FROM behaviour_events WHERE kind = 'question'")
    with engine.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


def sign(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def delivery(n: int, retry: int, *, thread: str = "1700001000.") -> tuple[bytes, dict[str, str]]:
    """Event `n` (an app_mention) and its signed headers; a redelivery (`retry` > 0) says so, as Slack's."""
    ts = f"{thread}{n:06d}"
    event = {
        "type": "app_mention", "user": f"U{n % 37:04d}", "channel": f"C0BENCH{n % CHANNELS}", "ts": ts,
        "event_ts": ts, "text": f"<@UBOT> {QUESTIONS[n % len(QUESTIONS)]}",
    }  # fmt: skip
    body = json.dumps({
        "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
        "event": event, "event_id": f"EvBench{thread}{n:05d}", "event_time": int(time.time()),
    }).encode()  # fmt: skip
    headers = {**sign(body), "Content-Type": "application/json"}
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return body, headers


def percentiles(name: str, values: list[float], *qs: int) -> dict[str, float]:
    """`NAME_pQ_ms` for each Q: the nearest-rank percentile, nan without values."""
    ordered = sorted(values) or [float("nan")]
    rank = {q: min(len(ordered), max(1, round(q / 100 * len(ordered) + 0.5))) for q in qs}
    return {f"{name}_p{q}_ms": round(ordered[rank[q] - 1], 2) for q in qs}


async def serve(args: argparse.Namespace) -> None:
    """The server process, until stdin closes: apart from the load generator and the fake Slack API,
    as in production, so that their work does not queue on the server's event loop."""
    slack = {"slack_bot_token": "xoxb-bench", "slack_signing_secret": SECRET, "slack_api_url": args.slack_api}
    database = {"database_url": args.database_url} if args.database_url else {}
    kb = open_kb(Path(args.workdir) / "var", **slack, **database)
    settings, engine = kb.settings, kb.store.engine
    gate = AckFirst(max_wait_s=settings.bot.ack_first_wait_s)  # as build_conversation makes it
    if args.side == "bot-alone":
        answers = TimedAnswers(CannedAnswers())
    else:
        kb.ingest([HANDBOOK])
        kb.retrieve(Question("warm up"))  # loads the index and the embedding model
        if engine.dialect.name == "sqlite":
            # The ingest's pages are still in SQLite's write-ahead log: without this, the checkpoint
            # that copies them into the database would fall on a write during the load.
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        kb.llm = FakeLLM(default=ANSWER, piece_chars=10, delay_s=0.002)
        answers = TimedAnswers(
            KnowledgeBaseAnswers(kb, concurrency=max(2, os.cpu_count() or 2), ack_first=gate)
        )
    conversation = build_conversation(settings, kb, answers=answers, ack_first=gate)
    app = create_app(settings, kb, conversation=conversation)

    handlers = app[SLACK_BOT_KEY].handlers
    sender = handlers.sender = TimedSender(handlers.sender.client)
    acks: list[float] = []  # server side: from the request's arrival to the response, in ms
    arrivals: dict[str, float] = {}  # thread (the event's ts) -> first delivery's arrival

    @web.middleware
    async def time_acks(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        if request.path == "/slack/events":
            event = json.loads(await request.read()).get("event") or {}
            arrivals.setdefault(str(event.get("ts")), started)
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            if request.path == "/slack/events":
                acks.append((time.perf_counter() - started) * 1000)

    app.middlewares.append(time_acks)

    lags: list[float] = []  # how late a 10 ms sleep wakes up: how long the loop had no turn

    async def sample_lag() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append((time.perf_counter() - started - 0.01) * 1000)

    sampler = asyncio.create_task(sample_lag())
    gc_pauses: list[float] = []  # the garbage collector's pauses (every thread waits for them), in ms
    gc_started = [0.0]

    def time_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append((time.perf_counter() - gc_started[0]) * 1000)

    gc.callbacks.append(time_gc)

    async def service_times(request: web.Request) -> web.Response:
        """Everything measured so far; `?final=1` also stops the loop-lag sampler."""
        if request.query.get("final"):
            sampler.cancel()
        # Arrival to the final update leaving, less the AnswerService's time (Slack's is left out),
        # and its split at the AnswerService: before it started, and after it ended.
        overhead = {
            thread: (sent - arrivals[thread] - answers.seconds[thread]) * 1000
            for thread, sent in sender.final_sent.items()
            if thread in arrivals and thread in answers.seconds
        }
        before = {thread: (answers.began[thread] - arrivals[thread]) * 1000 for thread in overhead}
        after = {thread: ms - before[thread] for thread, ms in overhead.items()}
        return web.json_response({
            "service_s": answers.seconds, "server_ack_ms": acks, "loop_lag_ms": lags,
            "cpu_s": time.process_time() - cpu_at_start, "server_overhead_ms": overhead,
            "overhead_before_answer_ms": before, "overhead_after_answer_ms": after,
            "thread_cpu_s": thread_cpu(since=threads_at_start), "gc_pauses_ms": gc_pauses,
            "questions_recorded": await asyncio.to_thread(questions_recorded, engine),
        })  # fmt: skip

    app.router.add_get("/bench/service", service_times)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cpu_at_start, threads_at_start = time.process_time(), thread_cpu()
    gc_pauses.clear()  # startup's own collections (app/server/assembly.py freezes what exists) do not count
    print(runner.addresses[0][1], flush=True)
    await asyncio.to_thread(sys.stdin.read)  # the parent closes our stdin when it is done
    await runner.cleanup()
    engine.dispose()


async def run(args: argparse.Namespace, workdir: Path, side: str) -> dict[str, Any]:
    async with FakeSlack() as slack:
        # Slack lists the bot's public channels to it (bot/slack/directory.py's `warm` at start).
        channels = [{"id": f"C0BENCH{n}", "is_private": False} for n in range(CHANNELS)]
        slack.canned["users.conversations"] = {"ok": True, "channels": channels}
        command = [sys.executable, __file__, "--serve", "--side", side, "--workdir", str(workdir)]
        command += ["--slack-api", slack.api_url, "--database-url", args.database_url]
        server = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert server.stdin is not None and server.stdout is not None
        try:
            port = int((await asyncio.wait_for(server.stdout.readline(), timeout=600)).decode().strip())
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                figures = await load(args, f"{base}/slack/events", slack)
                # The loop-lag sampler stops here: its wake-ups would count in the serial phase's CPU.
                loaded = await _measured(session, base, final=True)
                serial = await load_serially(args, f"{base}/slack/events", slack)
                measured = await _measured(session, base)
            figures |= _server_figures(args, loaded, measured)
            figures |= breakdown(args, slack, figures.pop("first_sent"), measured["service_s"])
            serial_overhead = [ms for thread, ms in measured["server_overhead_ms"].items() if _serial(thread)]
            figures["questions_recorded"] = measured["questions_recorded"]
            figures["serial"] = {
                "events": args.serial_events,
                **percentiles("ack", serial["acks"], 50, 99),
                **percentiles("overhead", serial_overhead, 50, 95),
                "server_cpu_ms_per_event": round(
                    (measured["cpu_s"] - loaded["cpu_s"]) * 1000 / max(1, args.serial_events), 2
                ),
                "answered": len(serial_overhead),
                "seconds": serial["seconds"],
                "server_cpu_ms_per_event_by_thread": _per_event(
                    measured["thread_cpu_s"], loaded["thread_cpu_s"], args.serial_events
                ),
            }
        finally:
            server.stdin.close()
            await asyncio.wait_for(server.wait(), timeout=120)
    return figures


async def _measured(session: aiohttp.ClientSession, base: str, *, final: bool = False) -> dict[str, Any]:
    async with session.get(f"{base}/bench/service", params={"final": "1"} if final else {}) as response:
        return await response.json()  # type: ignore[no-any-return]


def _per_event(now: dict[str, float], before: dict[str, float], events: int) -> dict[str, float]:
    used = {name: (s - before.get(name, 0.0)) * 1000 / max(1, events) for name, s in now.items()}
    return {name: round(ms, 2) for name, ms in sorted(used.items(), key=lambda kv: -kv[1]) if ms >= 0.05}


def _serial(thread: str) -> bool:
    return thread.startswith(SERIAL_THREAD)


def _server_figures(
    args: argparse.Namespace, loaded: dict[str, Any], final: dict[str, Any]
) -> dict[str, Any]:
    """The server's own view of the concurrent phase (`loaded`: what it had measured by its end)."""

    def concurrent(figure: str) -> list[float]:
        return [ms for thread, ms in final[figure].items() if not _serial(thread)]

    return {
        **percentiles("server_ack", loaded["server_ack_ms"], 50, 99),
        **percentiles("server_loop_lag", loaded["loop_lag_ms"], 50, 99),
        **percentiles("overhead_wall", concurrent("server_overhead_ms"), 50, 95),
        **percentiles("overhead_before_answer", concurrent("overhead_before_answer_ms"), 50, 95),
        **percentiles("overhead_after_answer", concurrent("overhead_after_answer_ms"), 50, 95),
        # All the server's CPU (every thread, retrieval included) over the phase, per event; a few
        # answers may still be finishing when it ends, so it is a slight undercount.
        "server_cpu_ms_per_event": round(loaded["cpu_s"] * 1000 / args.events, 2),
        "server_cpu_ms_per_event_by_thread": _per_event(loaded["thread_cpu_s"], {}, args.events),
        "server_gc_pauses": len(loaded["gc_pauses_ms"]),
        "server_gc_pause_max_ms": round(max(loaded["gc_pauses_ms"], default=0.0), 2),
        "server_gc_pause_total_ms": round(sum(loaded["gc_pauses_ms"]), 2),
    }


async def load_serially(args: argparse.Namespace, url: str, slack: FakeSlack) -> dict[str, Any]:
    """Concurrency 1: each event's deliveries, then wait for its final answer before the next event."""
    acks: list[float] = []
    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for n in range(args.serial_events):
            seen = len(slack.calls)
            for retry in range(args.deliveries):
                body, headers = delivery(n, retry, thread=SERIAL_THREAD)
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                acks.append((time.perf_counter() - started) * 1000)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # only the calls since the last look: cheap to poll
                calls, seen = slack.calls[seen:], len(slack.calls)
                # The final answer is the first update without the "Writing…" marker (the JSON keeps "…").
                bodies = [json.dumps(c.body, ensure_ascii=False) for c in calls if c.method == "chat.update"]
                if any(WRITING not in body for body in bodies):
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)  # let the claim be closed before the next event arrives
    return {"acks": acks, "seconds": round(time.monotonic() - began, 2)}


async def load(args: argparse.Namespace, url: str, slack: FakeSlack) -> dict[str, Any]:
    deliveries = [(n, retry) for retry in range(args.deliveries) for n in range(args.events)]
    # Redeliveries arrive while the first delivery may still be in flight: shuffle within windows.
    window = args.concurrency * 2
    random.Random(7).shuffle(deliveries)
    deliveries.sort(key=lambda item: (item[0] * args.deliveries + item[1]) // window)
    first_sent: dict[int, float] = {}
    acks: list[float] = []
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency)

    async def deliver(session: aiohttp.ClientSession, n: int, body: bytes, headers: dict[str, str]) -> None:
        async with gate:
            started = time.perf_counter()
            first_sent.setdefault(n, time.monotonic())
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
            acks.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up (not timed, with an event nobody answers): the first request makes bolt call
        # auth.test, and `concurrency` at once open the connections the load keeps alive.
        warm = json.dumps({"type": "event_callback", "team_id": TEAM, "event_id": "EvWarm",
                           "event": {"type": "reaction_added", "user": "U1"}}).encode()  # fmt: skip
        for _ in range(2):
            responses = await asyncio.gather(*(
                session.post(url, data=warm, headers={**sign(warm), "Content-Type": "application/json"})
                for _ in range(args.concurrency)
            ))  # fmt: skip
            for response in responses:
                assert response.status == 200, await response.text()
                response.release()
        # Signed beforehand, as Slack's side of the work; the clock starts as each request goes out.
        requests = [(n, *delivery(n, retry)) for n, retry in deliveries]
        started = time.monotonic()
        await asyncio.gather(*(deliver(session, n, body, headers) for n, body, headers in requests))
    acked = time.monotonic()
    deadline = time.monotonic() + 120
    for _ in range(2400):  # at most two minutes
        if time.monotonic() > deadline or len(final_updates(slack)) >= args.events:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # anything late would be a duplicate: give it the chance to show up
    return {
        "events": args.events,
        "deliveries_per_event": args.deliveries,
        "concurrency": args.concurrency,
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles("ack", acks, 50, 99),
        "ack_max_ms": round(max(acks), 2),
        "all_acked_s": round(acked - started, 2),
        "first_sent": first_sent,
    }


def breakdown(
    args: argparse.Namespace, slack: FakeSlack, first_sent: dict[int, float], seconds: dict[str, float]
) -> dict[str, Any]:
    """End to end, service time and overhead per event; duplicates from what the fake received."""
    every = final_updates(slack)  # duplicates count in both phases
    finals = {thread: at for thread, at in every.items() if not _serial(thread)}
    searching = Counter(c.body.get("thread_ts") for c in slack.calls if c.method == "chat.postMessage")
    duplicates = sum(len(times) - 1 for times in every.values()) + sum(n - 1 for n in searching.values())
    e2e, overhead = [], []
    for n in range(args.events):
        thread = f"1700001000.{n:06d}"
        if thread not in finals or thread not in seconds:
            continue
        total = finals[thread][0] - first_sent[n]
        e2e.append(total * 1000)
        overhead.append((total - seconds[thread]) * 1000)
    service = [s * 1000 for s in seconds.values()]
    return {
        **percentiles("e2e", e2e, 50, 95),
        **percentiles("service", service, 50, 95),
        **percentiles("overhead_with_slack", overhead, 50, 95),
        "answered": len(finals),
        "unanswered": args.events - len(finals),
        "duplicate_answers": duplicates,
    }


def final_updates(slack: FakeSlack) -> dict[str, list[float]]:
    """Final answers (not drafts) by the thread they answer, with when the fake received them."""
    thread_of = {
        str(c.response.get("ts")): str(c.body.get("thread_ts"))
        for c in slack.calls
        if c.method == "chat.postMessage" and c.response
    }
    finals: dict[str, list[float]] = {}
    for call in slack.calls:
        if call.method != "chat.update" or WRITING in json.dumps(call.body.get("blocks"), ensure_ascii=False):
            continue
        if thread := thread_of.get(str(call.body.get("ts"))):
            finals.setdefault(thread, []).append(call.at)
    return finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=4)
    parser.add_argument("--serial-events", type=int, default=40, help="events of the concurrency-1 phase")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary folder")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slack-api", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="kb", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="kb-bench-bot-") as tmp:
        alone = asyncio.run(run(args, Path(tmp) / "alone", "bot-alone"))
    with tempfile.TemporaryDirectory(prefix="kb-bench-bot-") as tmp:
        figures = asyncio.run(run(args, Path(tmp) / "kb", "kb"))
    # The targets are stated at 50 concurrent events: the wall-clock overhead, queueing included.
    figures["overhead_p50_ms"] = figures["overhead_wall_p50_ms"]
    figures["overhead_p95_ms"] = figures["overhead_wall_p95_ms"]
    figures["bot_cpu_ms_per_event"] = alone["serial"]["server_cpu_ms_per_event"]
    figures["bot_alone"] = alone
    figures["database"] = "postgresql" if args.database_url.startswith("postgres") else "sqlite"
    figures["load_average_before"] = load_before
    figures["load_average_after"] = load_average()
    figures["targets"] = TARGETS
    figures["targets_met"] = {name: figures[name] <= target for name, target in TARGETS.items()}
    serial = figures["serial"]
    summary = (
        f"{args.events} events x {args.deliveries} deliveries at {args.concurrency} concurrent "
        f"({figures['database']}, load {load_before[0]}): ack p50 {figures['ack_p50_ms']} / p99 "
        f"{figures['ack_p99_ms']} ms; posted answer p50 {figures['e2e_p50_ms']} ms; bot overhead p95 "
        f"{figures['overhead_p95_ms']} ms at {args.concurrency} concurrent (the target's figure, queueing "
        f"included), {serial['overhead_p95_ms']} ms at concurrency 1; bot CPU "
        f"{figures['bot_cpu_ms_per_event']} ms/event; {figures['duplicate_answers']} duplicate answers, "
        f"{figures['unanswered']} unanswered. Bot alone (canned answers, no retrieval): ack p99 "
        f"{alone['ack_p99_ms']} ms, overhead p95 {alone['overhead_wall_p95_ms']} ms "
        f"(concurrency 1: {alone['serial']['overhead_p95_ms']} ms), {alone['duplicate_answers']} duplicates"
    )
    path = write_results("bot", figures, summary=summary)
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
