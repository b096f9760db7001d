"""The assembly of `kb serve`: one aiohttp application for every surface, and what runs beside it.

    create_app(settings, kb)          # web chat, Slack, Teams, /healthz, /metrics (assembly.py)
    serve_app(settings, kb)           # create_app + push's routes + the background services
    run(settings, kb, host=, port=)   # what `kb serve` runs

Push (push.py) is wired here because `push` and `bot` never import each other: the matcher comes
from `push`, the senders from `bot`. Long-running work that is not a request handler (the push
scheduler, the model server, the training worker) is a `BackgroundService` (background.py), started with the
application and stopped with it.
"""

from app.server.assembly import create_app, run, serve_app
from app.server.background import BackgroundService, background_services, start_with_app
from app.server.push import mount_push, push_service, senders

__all__ = [
    "BackgroundService",
    "background_services",
    "create_app",
    "mount_push",
    "push_service",
    "run",
    "senders",
    "serve_app",
    "start_with_app",
]
