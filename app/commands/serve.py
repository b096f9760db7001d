"""`kb serve`: load the index, say where, and run the service that app/server assembles."""

from __future__ import annotations

from typing import Annotated

import typer

from app.support import cli_settings, err, friendly_errors, open_kb


@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default KB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default KB_PORT).")] = None,
) -> None:
    """Run the service: web chat, Slack (/slack/events), Teams (/api/messages), /healthz and /metrics."""
    from app.server import run

    settings = cli_settings()
    kb = open_kb(settings)
    with err.status("loading the embedding model and the index…"):
        stats = kb.stats()
        _ = kb.index
    bind_host, bind_port = host or settings.server.host, port or settings.server.port
    err.print(
        f"Serving {stats.documents} documents ({stats.chunks} chunks) on http://{bind_host}:{bind_port}/"
    )
    run(settings, kb, host=bind_host, port=bind_port)
