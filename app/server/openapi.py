"""The OpenAPI description of `kb serve`'s HTTP API: served at `/api/openapi.json`, committed as
docs/openapi.yaml (`python -m app.server.openapi > docs/openapi.yaml`; a test keeps the two equal).

It is built here rather than read from docs/ because the image installs the packages, not the
repository. tests/security/test_http_fuzz.py generates requests from it with schemathesis.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    """Refusals every route can give (Host 400, 408 slow body) plus the route's own."""
    reasons = {
        400: "Bad request: unknown Host, a body that is not what the route expects, or JSON too deep.",
        401: "Not signed in, or the wrong bearer token.",
        403: "Refused: another site's page, or an address without identity.",
        404: "Not found.",
        408: "The request body did not arrive within KB_BODY_TIMEOUT_S.",
        410: "Gone.",
        413: "The body or the question is too long.",
        415: "The body is not application/json.",
        503: "The knowledge base could not answer.",
    }
    return {str(s): _json(_ref("Error"), reasons[s]) for s in sorted({400, 408, *statuses})}


def _post(summary: str, body: Schema, ok: Schema, *statuses: int, required: bool = True) -> Schema:
    return {
        "summary": summary,
        "requestBody": {"required": required, "content": {JSON: {"schema": body}}},
        "responses": {"200": ok, **_errors(403, 413, 415, *statuses)},
    }


def _get(summary: str, ok: Schema, *statuses: int, **extra: Any) -> Schema:
    return {"summary": summary, **extra, "responses": {"200": ok, **_errors(*statuses)}}


def _query(*names: str) -> list[Schema]:
    return [
        {"name": n, "in": "query", "required": True, "schema": {"type": "string", "maxLength": 200}}
        for n in names
    ]


_QUESTION: Schema = {
    "type": "object",
    "required": ["question"],
    "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 4000}},
}
_FEEDBACK: Schema = {
    "type": "object",
    "required": ["question_id", "helpful"],
    "properties": {"question_id": {"type": "integer"}, "helpful": {"type": "boolean"}},
}
_REPLY: Schema = {
    "type": "object",
    "required": ["text", "citations", "ok", "command"],
    "properties": {
        "text": {"type": "string"},
        "citations": {"type": "array", "items": {"type": "object"}},
        "abstained": {"type": "boolean"},
        "confidence": {"type": ["number", "null"]},
        "ok": {"type": "boolean"},
        "command": {"type": "boolean", "description": "A command's reply (help, digest…), not an answer."},
        "question_id": {"type": ["integer", "null"], "description": "What /api/feedback rates."},
        "buttons": {"type": "array", "items": {"type": "object"}},
    },
}
_SCHEMAS: Schema = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Reply": _REPLY,
}


_TEXT: Schema = {"description": "Text.", "content": {"text/plain": {"schema": {"type": "string"}}}}
_HTML: Schema = {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}
_OBJECT: Schema = {"type": "object"}


def _path_params(**patterns: Schema) -> list[Schema]:
    return [{"name": n, "in": "path", "required": True, "schema": s} for n, s in patterns.items()]


def _chat_paths() -> Schema:
    """The web chat (bot/web): its pages, questions, feedback and history."""
    conversation_id = _path_params(id={"type": "string", "pattern": "^[0-9]{1,18}$"})
    return {
        "/": {"get": _get("The web chat page.", _HTML, 401, 403)},
        "/admin": {"get": _get("The admin page (KB_BOT_ADMINS only).", _HTML, 401, 403)},
        "/sources/{document}": {"get": _get(
            "A document's stored text, if the user may read it.", _HTML, 401, 403, 404,
            parameters=_path_params(document={"type": "string", "minLength": 1, "maxLength": 200}),
        )},
        "/api/ask": {"post": _post(
            "Ask a question or give a command.", _QUESTION, _json(_ref("Reply"), "The reply."), 401, 503
        )},
        "/api/ask/stream": {"post": _post(
            "The same, streamed as lines: drafts, then the reply or an error (what the page uses).",
            _QUESTION, {"description": "Newline-delimited JSON.", "content": {"application/x-ndjson": {}}},
            401, 404,
        )},
        "/api/feedback": {"post": _post(
            "Rate an answer (the 👍/👎 buttons).", _FEEDBACK,
            _json({"type": "object", "properties": {"text": {"type": "string"}}}, "Thanks."), 401, 404,
        )},
        "/api/me": {"get": _get("Who the web user is.", _json(_OBJECT, "The user."), 401, 403)},
        "/api/admin": {"get": _get("What the admin page shows.", _json(_OBJECT, "Status."), 401, 403)},
        "/api/conversations": {"get": _get("The user's conversations.", _json(_OBJECT, "List."), 401, 403)},
        "/api/conversations/{id}": {
            "get": _get("One conversation and its turns.", _json(_OBJECT, "It."), 401, 403, 404,
                        parameters=conversation_id),
            "delete": _get("Delete one conversation.", _json(_OBJECT, "Deleted."), 401, 403, 404,
                           parameters=conversation_id),
        },
    }  # fmt: skip


def _push_paths() -> Schema:
    """Push's web inbox and the digest links' click tracking (app/server/push.py)."""
    item = _path_params(
        id={"type": "string", "pattern": "^[0-9]{1,18}$"},
        action={"type": "string", "enum": ["open", "dismiss"]},
    )
    document = {
        "type": "object",
        "required": ["document_id"],
        "properties": {"document_id": {"type": "string", "minLength": 1, "maxLength": 200}},
    }
    return {
        "/api/push/inbox": {"get": _get("The web user's pushed messages, newest first.", _json(
            {"type": "object", "required": ["messages"], "properties": {"messages": {"type": "array"}}},
            "Messages.",
        ), 401, 403)},
        "/api/push/inbox/read": {"post": _post(
            "Mark every message of the inbox read.", _OBJECT,
            _json({"type": "object", "properties": {"read": {"type": "integer"}}}, "How many."),
            401, required=False,
        )},
        "/api/push/inbox/{id}/{action}": {"post": _post(
            "Open or dismiss one item of a message.", document, _json(_OBJECT, "Done."), 401, 404,
        ) | {"parameters": item}},
        "/push/open": {"get": {
            "summary": "Count a digest link's click and go to the document.",
            "parameters": _query("key", "doc"),
            "responses": {"302": {"description": "To the document."}, **_errors(403, 404, 410)},
        }},
        "/push/dismiss": {"get": _get(
            "\"Not for me\": fewer documents like this one.", _TEXT, 403, 404, parameters=_query("key", "doc")
        )},
    }  # fmt: skip


def _service_paths() -> Schema:
    """Health, metrics, this description, and the platforms' webhooks."""
    return {
        "/healthz": {"get": _get("Liveness and index size.", _json(
            {"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string"}, "documents": {"type": "integer"}, "chunks": {"type": "integer"},
            }}, "Healthy.",
        ), 503)},
        "/metrics": {"get": _get(
            "Prometheus metrics: KB_METRICS_TOKEN as a bearer token, or from 127.0.0.1 without one.",
            _TEXT, 401, 403, security=[{"metricsToken": []}, {}],
        )},
        "/api/openapi.json": {"get": _get("This description.", _json(_OBJECT, "OpenAPI 3.1."))},
        "/slack/events": {"post": {
            "summary": "Slack's Events API and interactivity (mounted when Slack is configured; signed).",
            "requestBody": {"required": True, "content": {JSON: {"schema": _OBJECT},
                "application/x-www-form-urlencoded": {"schema": _OBJECT}}},
            "responses": {"200": {"description": "Acknowledged."}, **_errors(401, 404, 413, 415)},
        }},
        "/api/messages": {"post": {
            "summary": "Teams' Bot Framework activities (mounted when Teams is configured; signed token).",
            "requestBody": {"required": True, "content": {JSON: {"schema": _OBJECT}}},
            "responses": {"200": {"description": "Handled."}, "202": {"description": "Accepted."},
                          **_errors(401, 404, 413, 415)},
        }},
    }  # fmt: skip


def openapi() -> Schema:
    """The description as a dict (JSON- and YAML-ready)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Halden KB",
            "version": "1",
            "description": 'The HTTP API of `kb serve`. Every refusal is `{"error": ...}` with a 4xx '
            "status. State-changing requests from browsers must come from this origin "
            "(Origin header); `/api/` bodies must be application/json. docs/operations.md says "
            "what an operator configures.",
        },
        "paths": _chat_paths() | _push_paths() | _service_paths(),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"metricsToken": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(openapi())


def main() -> None:
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # shared pieces written out in full: the file is read by people too

    sys.stdout.write(yaml.dump(openapi(), Dumper=Plain, sort_keys=False, allow_unicode=True, width=100))


if __name__ == "__main__":
    main()
