"""Connecting a workspace: the Slack manifests match the code, `kb doctor` names what is missing, and
`kb teams package` builds a package Teams accepts (manifest fields, icon sizes)."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from typer.testing import CliRunner

from app.cli import app
from app.commands.doctor import SLACK_BOT_SCOPES, run_checks
from app.commands.teams import SCHEMA_VERSION, build_package, manifest, validate
from core.settings import Settings
from tests.bot.fake_slack import FakeSlack

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = [REPO / "deploy" / "slack" / "manifest.yaml", REPO / "deploy" / "slack" / "manifest-http.yaml"]
APP_ID = "6f1c2a4e-8b3d-4e5f-9a7b-1c2d3e4f5a6b"
# The scope each Web API method of bot/slack needs (a method not listed here fails the test below).
METHOD_SCOPES = {
    "auth.test": None, "views.publish": None, "chat.postMessage": "chat:write", "chat.update": "chat:write",
    "conversations.open": "im:write", "conversations.history": "im:history",
    "conversations.info": "channels:read", "conversations.members": "channels:read",
    "users.conversations": "channels:read", "usergroups.list": "usergroups:read",
}  # fmt: skip
EVENT_SCOPES = {"app_mention": "app_mentions:read", "message.im": "im:history", "app_home_opened": None}


def _methods_in_code() -> set[str]:
    source = "".join(p.read_text() for p in (REPO / "bot" / "slack").glob("*.py"))
    return set(
        re.findall(
            r'"((?:auth|chat|conversations|users|usergroups|views|reactions|files)\.[a-zA-Z]+)"', source
        )
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_slack_manifest_holds_every_scope_and_event_the_code_uses(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert scopes == set(SLACK_BOT_SCOPES)
    methods = _methods_in_code()
    assert methods <= METHOD_SCOPES.keys(), f"scope unknown for {methods - METHOD_SCOPES.keys()}"
    assert {METHOD_SCOPES[m] for m in methods} - {None} <= scopes
    events = set(data["settings"]["event_subscriptions"]["bot_events"])
    assert events == EVENT_SCOPES.keys() and {s for s in EVENT_SCOPES.values() if s} <= scopes
    assert "commands" in scopes and data["features"]["slash_commands"][0]["command"] == "/kb"
    home = data["features"]["app_home"]
    assert (
        home["messages_tab_enabled"]
        and not home["messages_tab_read_only_enabled"]
        and home["home_tab_enabled"]
    )
    assert data["settings"]["interactivity"]["is_enabled"]


def test_socket_mode_and_http_variants_differ_only_in_delivery() -> None:
    socket_mode, http = (yaml.safe_load(p.read_text()) for p in MANIFESTS)
    assert socket_mode["settings"]["socket_mode_enabled"] and not http["settings"]["socket_mode_enabled"]
    assert "connections:write" in MANIFESTS[0].read_text()  # the app-level token's scope, named in the steps
    assert http["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert http["settings"]["interactivity"]["request_url"].endswith("/slack/interactions")
    assert http["features"]["slash_commands"][0]["url"].endswith("/slack/commands")
    assert "request_url" not in socket_mode["settings"]["event_subscriptions"]


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_doctor_says_nothing_is_configured(make_settings: Callable[..., Settings]) -> None:
    findings = await run_checks(make_settings(), login_url=_closed_port())
    assert [(f.platform, f.status) for f in findings] == [("slack", "off"), ("teams", "off")]


async def test_doctor_checks_the_slack_token_and_names_missing_scopes(
    make_settings: Callable[..., Settings],
) -> None:
    async with FakeSlack() as slack:
        slack.scopes = "chat:write,commands,app_mentions:read,im:history"
        slack.canned["apps.connections.open"] = {"ok": False, "error": "missing_scope"}
        settings = make_settings(
            slack_bot_token="xoxb-test", slack_app_token="xapp-test", slack_api_url=slack.api_url
        )
        findings = await run_checks(settings, login_url=_closed_port())
    assert (
        slack.calls[0].method == "auth.test" and slack.calls[0].headers["Authorization"] == "Bearer xoxb-test"
    )
    by_status = {f.status: f.message for f in findings if f.platform == "slack"}
    assert "bot kb in workspace Halden" in by_status["ok"]
    missing = [f.message for f in findings if f.status == "missing"]
    assert any("channels:read" in m and "usergroups:read" in m and "im:write" in m for m in missing)
    assert any("KB_SLACK_APP_TOKEN lacks scope connections:write" in m for m in missing)


async def test_doctor_reports_a_refused_slack_token(make_settings: Callable[..., Settings]) -> None:
    async with FakeSlack() as slack:
        slack.canned["auth.test"] = {"ok": False, "error": "invalid_auth"}
        findings = await run_checks(make_settings(slack_bot_token="xoxb-bad", slack_api_url=slack.api_url),
                                    login_url=_closed_port())  # fmt: skip
    failed = [f.message for f in findings if f.status == "failed"]
    assert failed == ["auth.test refused KB_SLACK_BOT_TOKEN: invalid_auth (the token is wrong: copy it again "
                      "from the app's settings)"]  # fmt: skip


async def test_doctor_names_the_delivery_setting_missing(make_settings: Callable[..., Settings]) -> None:
    async with FakeSlack() as slack:
        findings = await run_checks(make_settings(slack_bot_token="xoxb-t", slack_api_url=slack.api_url),
                                    login_url=_closed_port())  # fmt: skip
    assert any("KB_SLACK_SIGNING_SECRET" in f.message and f.status == "missing" for f in findings)


async def test_doctor_with_teams_unreachable_says_so(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(teams_app_id=APP_ID, teams_app_password="secret")
    (finding,) = [f for f in await run_checks(settings, login_url=_closed_port()) if f.platform == "teams"]
    assert finding.status == "unreachable" and "the credentials were not checked" in finding.message


async def test_doctor_names_the_missing_teams_password(make_settings: Callable[..., Settings]) -> None:
    findings = await run_checks(make_settings(teams_app_id=APP_ID), login_url=_closed_port())
    assert next(f.message for f in findings if f.platform == "teams").startswith(
        "KB_TEAMS_APP_PASSWORD is not set"
    )


async def test_doctor_explains_a_refused_teams_secret(make_settings: Callable[..., Settings]) -> None:
    seen: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append(dict(await request.post()))  # type: ignore[arg-type]
        described = "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"
        body = {"error": "invalid_client", "error_codes": [7000215], "error_description": described}
        return web.json_response(body, status=401)

    entra = web.Application()
    entra.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    async with _serve(entra) as url:
        settings = make_settings(teams_app_id=APP_ID, teams_app_password="wrong")
        (finding,) = [f for f in await run_checks(settings, login_url=url) if f.platform == "teams"]
    assert finding.status == "failed" and "KB_TEAMS_APP_PASSWORD is wrong or expired" in finding.message
    assert "AADSTS7000215" in finding.message and "Trace ID" not in finding.message
    assert seen[0]["client_id"] == APP_ID and seen[0]["scope"] == "https://api.botframework.com/.default"


class _serve:
    def __init__(self, application: web.Application) -> None:
        self.runner = web.AppRunner(application)

    async def __aenter__(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()


def test_kb_doctor_exits_1_and_prints_no_traceback(tmp_path: Path) -> None:
    env = {"KB_DATA_DIR": str(tmp_path), "KB_TEAMS_APP_ID": APP_ID}
    result = CliRunner().invoke(app, ["doctor", "--teams-login-url", _closed_port()], env=env)
    assert result.exit_code == 1 and "KB_TEAMS_APP_PASSWORD is not set" in result.output
    assert "Traceback" not in result.output


def _png_size(data: bytes) -> tuple[int, int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return width, height, colour


def test_teams_package_holds_a_valid_manifest_and_icons(tmp_path: Path) -> None:
    out = tmp_path / "kb.zip"
    result = CliRunner().invoke(app, ["teams", "package", "--out", str(out)], env={"KB_TEAMS_APP_ID": APP_ID})
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        data = json.loads(package.read("manifest.json"))
        color, outline = package.read("color.png"), package.read("outline.png")
    assert data["manifestVersion"] == SCHEMA_VERSION and f"v{SCHEMA_VERSION}/" in data["$schema"]
    assert data["id"] == APP_ID and data["bots"][0]["botId"] == APP_ID
    assert set(data["bots"][0]["scopes"]) == {"personal", "team", "groupChat"}
    assert data["icons"] == {"color": "color.png", "outline": "outline.png"}
    assert validate(data) == []
    assert _png_size(color) == (192, 192, 6) and _png_size(outline) == (32, 32, 6)
    assert _decodes(color, 192) and _decodes(outline, 32)


def _decodes(data: bytes, size: int) -> bool:
    """The IDAT inflates to `size` rows of a filter byte and RGBA pixels; the outline's are white or clear."""
    stream = io.BytesIO(data[8:])
    raw = b""
    while header := stream.read(8):
        length, kind = struct.unpack(">I4s", header)
        body = stream.read(length + 4)[:length]
        raw += body if kind == b"IDAT" else b""
    rows = zlib.decompress(raw)
    return len(rows) == size * (1 + 4 * size)


def test_teams_package_without_an_app_id_names_the_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["teams", "package", "--out", str(tmp_path / "x.zip")])
    assert result.exit_code == 1 and "KB_TEAMS_APP_ID is not set" in result.output
    assert not (tmp_path / "x.zip").exists()


def test_a_bad_app_id_or_url_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="id must be a GUID"):
        build_package(tmp_path / "x.zip", "not-a-guid", name="KB", version="1.0.0", developer="IT",
                      website="https://x.example/")  # fmt: skip
    problems = validate(manifest(APP_ID, name="x" * 31, version="1.0", developer="IT", website="http://x"))
    assert (
        "name.short must be 1-30 characters" in problems and "version must be MAJOR.MINOR.PATCH" in problems
    )
    assert "developer.websiteUrl must be an https URL" in problems
