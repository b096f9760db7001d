"""Benchmark of the Slack bot: ack latency, time to the posted answer, the bot's own overhead, duplicates.

    .venv/bin/python bench/bot.py [--events 200] [--concurrency 50] [--deliveries 4] [--database-url URL]

`kb serve`'s aiohttp app (bot/web/app.py's create_app, exactly as `kb serve` builds it) listens on
a loopback port with the sample handbook ingested (real embeddings, real hybrid retrieval, SQLite
by default). Slack's Web API is the recording fake of the tests (tests/bot/fake_slack.py) and the
model is FakeLLM streaming a cited answer (about 20 ms of "writing"). The load generator sends
`--events` app_mention events, each delivered `--deliveries` times (the later ones with
X-Slack-Retry-Num, as Slack redelivers), correctly signed, at most `--concurrency` requests in flight.

- ack: time for each delivery's HTTP request to be answered (bolt's signature check, the workspace
  check, the event claim in the database, the listener);
- end to end: from an event's first delivery to the final chat.update of its answer at the fake;
- overhead (`overhead_*`, the target's figure): measured in the server, from the first delivery's
  arrival to the moment the final chat.update leaves for Slack, less the time spent inside the
  AnswerService (input guard, retrieval, model, output guard): what the bot adds itself (HTTP,
  bolt, the claim, the channel lookup, recording the question, rendering, and waiting its turn for
  the event loop and the database), without Slack's own response times;
- `overhead_with_slack_*`: end to end (at the fake) less the AnswerService time: the same plus
  the fake Slack API's response times, which on this machine share the CPUs with the server;
- duplicate answers: final answers beyond one per event, plus "searching…" messages beyond one;
- server-side figures: the request's time inside the server (ack) and how late the server's event
  loop wakes from a 10 ms sleep (loop lag): on a busy machine, most of the ack time is the server
  waiting for a CPU, which these separate from the bot's own work.

Two runs, side by side: the bot alone (`bot_alone`: a canned answer after 20 ms, no retrieval) and
then the full product as above (the top-level figures, which the targets are checked against).

Writes bench/results/bot.json and the bot row of bench/BENCHMARKS.md. Takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from bot.answers import KnowledgeBaseAnswers  # noqa: E402
from bot.slack.app import SLACK_BOT_KEY  # noqa: E402
from bot.slack.blocks import WRITING, SlackMessage  # noqa: E402
from bot.slack.sender import SlackSender  # noqa: E402
from bot.web.app import create_app  # noqa: E402
from bot.wiring import build_conversation  # noqa: E402
from core import db  # noqa: E402
from core.settings import load_settings  # noqa: E402
from knowledge.service import KnowledgeBase  # noqa: E402
from knowledge.types import Answer, Citation, Question  # noqa: E402
from tests.bot.fake_slack import TEAM, FakeSlack  # noqa: E402
from tests.fakes import FakeLLM  # noqa: E402

HANDBOOK = REPO / "examples" / "handbook"
SECRET = "bench-signing-secret"
QUESTIONS = [
    "How do I reset my password?",
    "How many vacation days do I get?",
    "When are expense reports due?",
    "How do I connect to the VPN?",
    "Who do I call when my laptop is stolen?",
    "How do I book a meeting room?",
    "What is the parental leave policy?",
    "How do I report a phishing email?",
]
ANSWER = "Follow the steps on the handbook page: open the portal, choose the option and confirm [1]."
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

    async def answer(self, question: Question) -> Answer:
        started = time.perf_counter()
        try:
            return await self.inner.answer(question)
        finally:
            self.seconds[question.thread or ""] = time.perf_counter() - started

    async def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        started = time.perf_counter()
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


def sign(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def event_body(n: int) -> bytes:
    ts = f"1700001000.{n:06d}"
    event = {
        "type": "app_mention", "user": f"U{n % 37:04d}", "channel": f"C0BENCH{n % 10}", "ts": ts,
        "event_ts": ts, "text": f"<@UBOT> {QUESTIONS[n % len(QUESTIONS)]}",
    }  # fmt: skip
    return json.dumps({
        "token": "legacy", "team_id": TEAM, "api_app_id": "A0KB", "type": "event_callback",
        "event": event, "event_id": f"EvBench{n:05d}", "event_time": int(time.time()),
    }).encode()  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def serve(args: argparse.Namespace) -> None:
    """The server process: `kb serve`'s app with the timed AnswerService, until stdin closes.

    It runs apart from the load generator and the fake Slack API, as it would in production,
    so that their work does not queue on the server's event loop.
    """
    workdir = Path(args.workdir)
    overrides: dict[str, Any] = {
        "slack_bot_token": "xoxb-bench", "slack_signing_secret": SECRET, "slack_api_url": args.slack_api,
        "data_dir": workdir / "var",
    }  # fmt: skip
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = load_settings(**overrides)
    engine = db.make_engine(settings)
    db.upgrade(engine)
    kb = KnowledgeBase(settings, engine)
    if args.side == "bot-alone":
        answers = TimedAnswers(CannedAnswers())
    else:
        kb.ingest([HANDBOOK])
        kb.retrieve(Question("warm up"))  # loads the index and the embedding model
        kb.llm = FakeLLM(default=ANSWER, piece_chars=10, delay_s=0.002)
        answers = TimedAnswers(KnowledgeBaseAnswers(kb, concurrency=max(2, os.cpu_count() or 2)))
    app = create_app(settings, kb, conversation=build_conversation(settings, kb, answers=answers))

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

    async def service_times(_request: web.Request) -> web.Response:
        sampler.cancel()
        cpu_s = time.process_time() - cpu_at_start
        # The bot's own time per question: first delivery's arrival to the final update leaving,
        # less the time inside the AnswerService; Slack's (the fake's) response times are left out.
        overhead = [
            (sent - arrivals[thread] - answers.seconds[thread]) * 1000
            for thread, sent in sender.final_sent.items()
            if thread in arrivals and thread in answers.seconds
        ]
        return web.json_response({
            "service_s": answers.seconds, "server_ack_ms": acks, "loop_lag_ms": lags, "cpu_s": cpu_s,
            "server_overhead_ms": overhead,
        })  # fmt: skip

    app.router.add_get("/bench/service", service_times)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cpu_at_start = time.process_time()
    print(runner.addresses[0][1], flush=True)
    await asyncio.to_thread(sys.stdin.read)  # the parent closes our stdin when it is done
    await runner.cleanup()
    engine.dispose()


async def run(args: argparse.Namespace, workdir: Path, side: str) -> dict[str, Any]:
    async with FakeSlack() as slack:
        profile = ["-m", "cProfile", "-o", f"{args.profile}.{side}"] if args.profile else []
        command = [sys.executable, *profile, __file__, "--serve", "--side", side]
        command += ["--slack-api", slack.api_url]
        command += ["--workdir", str(workdir)]
        if args.database_url:
            command += ["--database-url", args.database_url]
        server = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert server.stdin is not None and server.stdout is not None
        try:
            port = int((await asyncio.wait_for(server.stdout.readline(), timeout=600)).decode().strip())
            base = f"http://127.0.0.1:{port}"
            figures = await load(args, f"{base}/slack/events", slack)
            async with aiohttp.ClientSession() as session, session.get(f"{base}/bench/service") as response:
                measured = await response.json()
            server_acks, lags = measured["server_ack_ms"], measured["loop_lag_ms"]
            figures["server_loop_lag_p50_ms"] = round(percentile(lags, 50), 2)
            figures["server_loop_lag_p99_ms"] = round(percentile(lags, 99), 2)
            figures["server_ack_p50_ms"] = round(percentile(server_acks, 50), 2)
            overhead = measured["server_overhead_ms"]
            figures["overhead_p50_ms"] = round(percentile(overhead, 50), 2)
            figures["overhead_p95_ms"] = round(percentile(overhead, 95), 2)
            # All the server's CPU (every thread, retrieval included) over the run, per event.
            figures["server_cpu_ms_per_event"] = round(measured["cpu_s"] * 1000 / args.events, 2)
            figures["server_ack_p99_ms"] = round(percentile(server_acks, 99), 2)
            figures |= breakdown(args, slack, figures.pop("first_sent"), measured["service_s"])
        finally:
            server.stdin.close()
            await asyncio.wait_for(server.wait(), timeout=120)
    return figures


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

    async def deliver(session: aiohttp.ClientSession, n: int, retry: int) -> None:
        body = event_body(n)
        headers = {**sign(body), "Content-Type": "application/json"}
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        async with gate:
            started = time.perf_counter()
            first_sent.setdefault(n, time.monotonic())
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
            acks.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up (not timed): the first request makes bolt call auth.test; an event nobody answers.
        warm = json.dumps({"type": "event_callback", "team_id": TEAM, "event_id": "EvWarm",
                           "event": {"type": "reaction_added", "user": "U1"}}).encode()  # fmt: skip
        headers = {**sign(warm), "Content-Type": "application/json"}
        async with session.post(url, data=warm, headers=headers) as response:
            assert response.status == 200, await response.text()
        started = time.monotonic()
        await asyncio.gather(*(deliver(session, n, retry) for n, retry in deliveries))
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
        "ack_p50_ms": round(percentile(acks, 50), 2),
        "ack_p99_ms": round(percentile(acks, 99), 2),
        "ack_max_ms": round(max(acks), 2),
        "all_acked_s": round(acked - started, 2),
        "first_sent": first_sent,
    }


def breakdown(
    args: argparse.Namespace, slack: FakeSlack, first_sent: dict[int, float], seconds: dict[str, float]
) -> dict[str, Any]:
    """End to end, service time and overhead per event; duplicates from what the fake received."""
    finals = final_updates(slack)
    searching = Counter(c.body.get("thread_ts") for c in slack.calls if c.method == "chat.postMessage")
    duplicates = sum(len(times) - 1 for times in finals.values()) + sum(n - 1 for n in searching.values())
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
        "e2e_p50_ms": round(percentile(e2e, 50), 2),
        "e2e_p95_ms": round(percentile(e2e, 95), 2),
        "service_p50_ms": round(percentile(service, 50), 2),
        "service_p95_ms": round(percentile(service, 95), 2),
        "overhead_with_slack_p50_ms": round(percentile(overhead, 50), 2),
        "overhead_with_slack_p95_ms": round(percentile(overhead, 95), 2),
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
        if call.method == "chat.update" and WRITING not in json.dumps(
            call.body.get("blocks"), ensure_ascii=False
        ):
            thread = thread_of.get(str(call.body.get("ts")))
            if thread:
                finals.setdefault(thread, []).append(call.at)
    return finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--deliveries", type=int, default=4)
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary folder")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slack-api", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="kb", help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="", help="cProfile the server processes into PROFILE.<side>")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return
    # Side by side, one after the other: the bot alone (canned answers), then the full product.
    with tempfile.TemporaryDirectory(prefix="kb-bench-bot-") as tmp:
        alone = asyncio.run(run(args, Path(tmp) / "alone", "bot-alone"))
    with tempfile.TemporaryDirectory(prefix="kb-bench-bot-") as tmp:
        figures = asyncio.run(run(args, Path(tmp) / "kb", "kb"))
    figures["bot_alone"] = alone
    figures["database"] = "postgresql" if args.database_url.startswith("postgres") else "sqlite"
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["targets"] = TARGETS
    figures["targets_met"] = {
        "ack_p99_ms": figures["ack_p99_ms"] <= TARGETS["ack_p99_ms"],
        "overhead_p95_ms": figures["overhead_p95_ms"] <= TARGETS["overhead_p95_ms"],
        "duplicate_answers": figures["duplicate_answers"] == 0,
    }
    summary = (
        f"{args.events} events x {args.deliveries} deliveries at {args.concurrency} concurrent "
        f"({figures['database']}): ack p50 {figures['ack_p50_ms']} / p99 {figures['ack_p99_ms']} ms; "
        f"posted answer p50 {figures['e2e_p50_ms']} ms; bot overhead p95 {figures['overhead_p95_ms']} ms; "
        f"{figures['duplicate_answers']} duplicate answers, {figures['unanswered']} unanswered. "
        f"Bot alone (canned answers, no retrieval): ack p99 {alone['ack_p99_ms']} ms, overhead p95 "
        f"{alone['overhead_p95_ms']} ms, {alone['duplicate_answers']} duplicates"
    )
    path = write_results("bot", figures, summary=summary)
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
