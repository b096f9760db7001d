"""`kb serve`: load the index, say where, and run the service that app/server assembles.

`kb serve --with-model NAME|DIR` (what `make run` runs) also starts the answer model's vLLM server
as a child (app/server/model.py): checked first, started before the index loads so both load at
once, attached to the knowledge base once it answers, and stopped with the service on Ctrl-C or
SIGTERM. A model that cannot start costs one line; the service then answers extractively.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from app.support import cli_settings, err, friendly_errors, open_kb

if TYPE_CHECKING:
    from app.server.model import ModelServerService
    from core.settings import Settings

MODEL_HOST = "127.0.0.1"  # the model server is the service's own: never reachable from outside
_FIX_PORT = "set KB_PORT or pass --port"


@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default KB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default KB_PORT).")] = None,
    with_model: Annotated[
        str | None,
        typer.Option(
            "--with-model",
            metavar="NAME|DIR",
            help="Also run this model with vLLM and answer with it (a `kb models list` name or a folder).",
        ),
    ] = None,
    model_port: Annotated[int, typer.Option(help="Port of the --with-model server.")] = 8000,
) -> None:
    """Run the service: web chat, Slack (/slack/events), Teams (/api/messages), /healthz and /metrics."""
    from app.server import run
    from app.server.ports import require_free_port
    from app.server.security import check_exposure

    settings = cli_settings()
    bind_host, bind_port = host or settings.server.host, port or settings.server.port
    check_exposure(settings, bind_host)  # beyond loopback only with a proxy naming each user
    settings = settings.replace(host=bind_host)  # the address it listens on is an allowed Host
    require_free_port(bind_host, bind_port, fix=_FIX_PORT)
    model = _model_service(settings, with_model, model_port) if with_model else None
    if model is not None:
        settings = settings.replace(llm_url=model.server.url, llm_model=model.model)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # run_app takes over SIGTERM once it runs
    try:
        if model is not None:
            model.launch()  # vLLM loads while the index does
        kb = open_kb(settings)
        if model is not None:
            model.attach(kb)
        with err.status("loading the embedding model and the index…"):
            stats = kb.stats()
            _ = kb.index
        signal.signal(signal.SIGTERM, previous)
        answers = f"; model {model.model} is starting, extractive answers until it is ready" if model else ""
        err.print(
            f"Serving {stats.documents} documents ({stats.chunks} chunks) on "
            f"http://{bind_host}:{bind_port}/{answers}",
            highlight=False,
        )
        run(settings, kb, host=bind_host, port=bind_port, model=model, fix_port=_FIX_PORT)
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        if model is not None:
            model.server.stop()  # no orphan vLLM, whatever ended the service (safe to repeat)


def _model_service(settings: Settings, spec: str, port: int) -> ModelServerService | None:
    """The checked model server's service, or None after one line saying why answers are extractive."""
    from app.server.model import ModelServerService, prepare_model

    plan = prepare_model(settings, spec, host=MODEL_HOST, port=port)
    if plan.server is None:
        _say(f"Model {spec} not started: {plan.reason}. Answers are extractive.")
        return None
    return ModelServerService(plan.server, data_dir=settings.data_dir, say=_say)


def _say(line: str) -> None:
    err.print(line, highlight=False, markup=False)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
