"""`kb serve`'s aiohttp application: the web chat, Slack, Teams, `/healthz`, `/metrics`, push.

One Conversation (bot/wiring.py) serves every chat surface; each platform mounts its routes only
when it is configured (`mount_slack`, `mount_teams`). CPU work (embedding, FAISS) runs in worker
threads so the event loop stays free.

At start the event loop's default executor (where `asyncio.to_thread` runs retrieval) becomes
bot/tasks.py's `worker_executor`, whose threads run KB_BOT_WORKER_NICE steps nicer than the event
loop, and the GIL switch interval becomes KB_BOT_SWITCH_INTERVAL_MS when set: acks and the bot's
own steps get the CPU before other events' retrieval does.

Once started, the objects that live as long as the server (modules, the embedding model, the
index) are frozen out of the garbage collector: a full collection otherwise walks all of them while
every thread waits, which in bench/bot.py (handbook ingested, 50 concurrent Slack events) stopped
the server for up to 330 ms in the middle of the load, more than three times the ack budget.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from app.server.admin_slots import mount_admin_slots
from app.server.background import BackgroundService, background_services, start_with_app
from app.server.ports import port_error
from app.server.push import mount_push
from app.server.security import mount_web_surface, run_options
from app.server.training import chat_hooks, route_answers
from bot.conversation import Conversation
from bot.slack.app import mount_slack
from bot.tasks import worker_executor
from bot.teams.app import mount_teams
from bot.web.app import METRICS_KEY, mount_web_chat
from bot.wiring import build_conversation
from core.errors import KBError
from core.metrics import CONTENT_TYPE, Metrics
from core.settings import Settings
from knowledge.service import KnowledgeBase

KB_KEY = web.AppKey("kb", KnowledgeBase)
SETTINGS_KEY = web.AppKey("settings", Settings)
SWITCH_INTERVAL_KEY = web.AppKey("switch_interval", float)  # Python's, restored at cleanup

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    settings: Settings,
    kb: KnowledgeBase,
    *,
    metrics: Metrics | None = None,
    conversation: Conversation | None = None,
) -> web.Application:
    """The request surfaces of `kb serve`; `conversation` replaces the one from settings (benchmarks)."""
    app = web.Application(client_max_size=settings.server.max_request_bytes, middlewares=[_count_requests])
    app[KB_KEY], app[SETTINGS_KEY] = kb, settings
    metrics = metrics or Metrics()
    route_answers(kb)  # answers ask the active model version (app/server/training.py)
    conversation = conversation or build_conversation(settings, kb, hooks=chat_hooks(settings, kb))
    kb.guard_observer = metrics.count_guard
    app.on_startup.append(_prioritize_the_loop)  # first: before anything uses the default executor
    app.on_startup.append(_freeze_long_lived)
    app.on_cleanup.append(_close_llm)
    app.on_cleanup.append(_checkpoint_audit)
    app.on_cleanup.append(_restore_switch_interval)
    app.on_cleanup.append(_unfreeze)
    mount_web_chat(app, conversation, metrics, settings=settings, engine=kb.store.engine)
    mount_admin_slots(app, settings, kb.store.engine)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    # Each mounts its routes only when its platform is configured.
    mount_slack(app, settings, conversation, metrics=metrics)
    mount_teams(app, settings, conversation, metrics=metrics)
    mount_web_surface(app, settings)  # Host, Origin, content type, timeouts, headers (security.py)
    return app


def serve_app(
    settings: Settings, kb: KnowledgeBase, *, model: BackgroundService | None = None
) -> web.Application:
    """Everything `kb serve` runs: `create_app`, push's routes, and the background services.

    `model` is the answer model's server when `kb serve --with-model` runs one (app/server/model.py).
    """
    app = create_app(settings, kb)
    mount_push(app, settings, kb.store.engine)
    services = background_services(settings, kb.store.engine, embedder=kb.embedder, model=model)
    start_with_app(app, services)
    return app


def run(
    settings: Settings,
    kb: KnowledgeBase,
    *,
    host: str,
    port: int,
    model: BackgroundService | None = None,
    fix_port: str = "set KB_PORT or pass --port",
) -> None:
    """Serve until interrupted (the caller has loaded the index and said where).

    SIGINT and SIGTERM stop it cleanly, background services (the model server too) included.
    A port taken since the caller checked it is one line naming `fix_port`, not a traceback.
    """
    try:
        web.run_app(
            serve_app(settings, kb, model=model), host=host, port=port, print=None, **run_options(settings)
        )
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise port_error(host, port, exc, fix=fix_port) from None


@web.middleware
async def _count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS_KEY].http_requests.labels(route=route, status=str(status)).inc()


async def _prioritize_the_loop(app: web.Application) -> None:
    """Nicer worker threads, and the GIL back to the event loop sooner when set (module docstring)."""
    settings = app[SETTINGS_KEY]
    workers = worker_executor(nice=settings.bot.worker_nice, faiss_threads=settings.retrieval.faiss_threads)
    asyncio.get_running_loop().set_default_executor(workers)
    app[SWITCH_INTERVAL_KEY] = sys.getswitchinterval()
    if settings.bot.switch_interval_ms:
        sys.setswitchinterval(settings.bot.switch_interval_ms / 1000)


async def _restore_switch_interval(app: web.Application) -> None:
    if SWITCH_INTERVAL_KEY in app:
        sys.setswitchinterval(app[SWITCH_INTERVAL_KEY])


async def _freeze_long_lived(_app: web.Application) -> None:
    """Leave what exists at startup out of later garbage collections (module docstring)."""
    gc.collect()
    gc.freeze()


async def _unfreeze(_app: web.Application) -> None:
    """Give the frozen objects back to the collector (tests start and stop many apps in one process)."""
    gc.unfreeze()


async def _checkpoint_audit(app: web.Application) -> None:
    """Sign the audit entries written since the last checkpoint, so a clean stop leaves no window."""
    await asyncio.to_thread(app[KB_KEY].audit.close)


async def _close_llm(app: web.Application) -> None:
    llm = app[KB_KEY].llm
    if llm is not None:
        await llm.aclose()


async def healthz(request: web.Request) -> web.Response:
    kb = request.app[KB_KEY]
    try:
        stats = await asyncio.to_thread(kb.stats)
    except (KBError, SQLAlchemyError) as exc:
        return web.json_response({"status": "error", "reason": str(exc)}, status=503)
    metrics = request.app[METRICS_KEY]
    metrics.documents.set(stats.documents)
    metrics.chunks.set(stats.chunks)
    answers = kb.llm.name if kb.llm is not None else "extractive"  # the model, once one answers
    return web.json_response(
        {"status": "ok", "documents": stats.documents, "chunks": stats.chunks, "answers": answers}
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
