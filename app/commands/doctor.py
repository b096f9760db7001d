"""`kb doctor`: are the chat platforms connected? Each check names exactly what is missing.

Slack: the bot token is tried with `auth.test` against KB_SLACK_API_URL; the scopes Slack says the
token holds (its `x-oauth-scopes` header) are compared with those the code needs (SLACK_BOT_SCOPES,
the same list as deploy/slack/manifest.yaml); the app-level token of Socket Mode is tried with
`apps.connections.open`, which needs connections:write; HTTP delivery needs the signing secret.
Teams: the Entra app's client credentials are tried with a token request for the Bot Framework,
as the bot itself makes one before each reply. An endpoint that cannot be reached is said so: the
credentials were then not checked, which is not the same as wrong.

Exit code 0 when nothing configured is broken, 1 when something is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from app.support import EXIT_ERROR, JsonOption, cli_settings, friendly_errors, out, print_json

if TYPE_CHECKING:
    import aiohttp

    from core.settings import Settings

# What each Web API method and event of bot/slack needs (tests/app/test_connect.py checks the manifest).
SLACK_BOT_SCOPES = (
    "app_mentions:read",  # app_mention events
    "channels:read",  # conversations.info/members, users.conversations: a channel's readers
    "chat:write",  # chat.postMessage, chat.update
    "commands",  # /kb
    "groups:read",  # private channels' members
    "im:history",  # message.im events, conversations.history of DMs (push)
    "im:read",  # conversations.info of DMs
    "im:write",  # conversations.open (push)
    "mpim:read",  # group DMs' members
    "usergroups:read",  # usergroups.list: a person's groups
)
TEAMS_LOGIN_URL = "https://login.microsoftonline.com"
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
Status = Literal["ok", "missing", "failed", "unreachable", "off"]


@dataclass(frozen=True, slots=True)
class Finding:
    platform: str
    status: Status
    message: str


async def _post(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.post(url, **kwargs) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = {}
        return response.status, body if isinstance(body, dict) else {}, dict(response.headers)


def _unreachable(platform: str, url: str, exc: Exception) -> Finding:
    reason = f"{exc.__class__.__name__}: {exc}".strip().rstrip(":")
    return Finding(
        platform, "unreachable", f"cannot reach {url} ({reason}): the credentials were not checked"
    )


async def check_slack(settings: Settings, session: aiohttp.ClientSession) -> list[Finding]:
    import aiohttp

    slack = settings.slack
    if slack.bot_token is None:
        if slack.app_token or slack.signing_secret:
            return [
                Finding(
                    "slack",
                    "missing",
                    "KB_SLACK_BOT_TOKEN is not set (Install App -> Bot User OAuth Token, xoxb-...)",
                )
            ]
        return [
            Finding("slack", "off", "not configured (set KB_SLACK_BOT_TOKEN; deploy/slack/manifest.yaml)")
        ]
    token = slack.bot_token.get_secret_value()
    findings = []
    if not token.startswith("xoxb-"):
        findings.append(Finding("slack", "failed", "KB_SLACK_BOT_TOKEN is not a bot token (xoxb-...)"))
    base = str(slack.api_url).rstrip("/")
    try:
        status, body, headers = await _post(session, f"{base}/auth.test", headers=_bearer(token))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [*findings, _unreachable("slack", base, exc)]
    if status != 200 or not body.get("ok"):
        error = body.get("error") or f"HTTP {status}"
        return [
            *findings,
            Finding(
                "slack", "failed", f"auth.test refused KB_SLACK_BOT_TOKEN: {error}{_slack_hint(str(error))}"
            ),
        ]
    bot, team = body.get("user") or body.get("user_id"), body.get("team") or body.get("team_id")
    who = f"bot {bot} in workspace {team}"
    findings.append(Finding("slack", "ok", f"KB_SLACK_BOT_TOKEN works: {who}"))
    granted = headers.get("x-oauth-scopes") or headers.get("X-OAuth-Scopes")
    if granted is not None:
        missing = sorted(set(SLACK_BOT_SCOPES) - {s.strip() for s in granted.split(",") if s.strip()})
        if missing:
            findings.append(
                Finding(
                    "slack",
                    "missing",
                    f"the bot token lacks scope(s) {', '.join(missing)}: add "
                    "them under OAuth & Permissions and reinstall the app",
                )
            )
    findings.append(await _check_delivery(settings, session, base))
    return findings


async def _check_delivery(settings: Settings, session: aiohttp.ClientSession, base: str) -> Finding:
    """Socket Mode's app-level token, or else the signing secret HTTP delivery needs."""
    import aiohttp

    slack = settings.slack
    if slack.app_token is None:
        if slack.signing_secret is None:
            return Finding(
                "slack",
                "missing",
                "neither KB_SLACK_APP_TOKEN (Socket Mode, xapp-... with "
                "connections:write) nor KB_SLACK_SIGNING_SECRET (HTTP delivery) is set",
            )
        return Finding(
            "slack", "ok", "HTTP delivery: KB_SLACK_SIGNING_SECRET is set (Slack posts to /slack/events)"
        )
    try:
        status, body, _ = await _post(
            session, f"{base}/apps.connections.open", headers=_bearer(slack.app_token.get_secret_value())
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unreachable("slack", base, exc)
    if status == 200 and body.get("ok"):
        return Finding(
            "slack", "ok", "Socket Mode: KB_SLACK_APP_TOKEN opens a connection (connections:write)"
        )
    error = str(body.get("error") or f"HTTP {status}")
    if error == "missing_scope":
        return Finding(
            "slack",
            "missing",
            "KB_SLACK_APP_TOKEN lacks scope connections:write (Basic Information -> App-Level Tokens)",
        )
    return Finding(
        "slack", "failed", f"apps.connections.open refused KB_SLACK_APP_TOKEN: {error}{_slack_hint(error)}"
    )


def _slack_hint(error: str) -> str:
    return {
        "invalid_auth": " (the token is wrong: copy it again from the app's settings)",
        "not_authed": " (no token reached Slack)",
        "token_revoked": " (the token was revoked: reinstall the app)",
        "account_inactive": " (the app was uninstalled or its workspace deleted)",
        "not_allowed_token_type": " (a bot token, xoxb-, for KB_SLACK_BOT_TOKEN; an app token, xapp-, for "
        "KB_SLACK_APP_TOKEN)",
    }.get(error, "")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def check_teams(settings: Settings, session: aiohttp.ClientSession, login_url: str) -> list[Finding]:
    import aiohttp

    teams = settings.teams
    if not teams.app_id:
        if teams.app_password:
            return [
                Finding("teams", "missing", "KB_TEAMS_APP_ID is not set (the Entra app's Application ID)")
            ]
        return [Finding("teams", "off", "not configured (set KB_TEAMS_APP_ID and KB_TEAMS_APP_PASSWORD)")]
    if teams.app_password is None:
        return [
            Finding(
                "teams",
                "missing",
                "KB_TEAMS_APP_PASSWORD is not set (a client secret of the Entra app "
                f"{teams.app_id}: Certificates & secrets)",
            )
        ]
    tenant = teams.tenant_id or "botframework.com"
    url = f"{login_url.rstrip('/')}/{tenant}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": teams.app_id,
        "scope": BOT_FRAMEWORK_SCOPE,
        "client_secret": teams.app_password.get_secret_value(),
    }
    try:
        status, body, _ = await _post(session, url, data=form)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [_unreachable("teams", login_url, exc)]
    if status == 200 and body.get("access_token"):
        return [
            Finding(
                "teams",
                "ok",
                f"KB_TEAMS_APP_ID and KB_TEAMS_APP_PASSWORD get a Bot Framework token (tenant {tenant})",
            )
        ]
    return [Finding("teams", "failed", _entra_error(status, body, tenant))]


def _entra_error(status: int, body: dict[str, Any], tenant: str) -> str:
    described = str(body.get("error_description") or body.get("error") or f"HTTP {status}").splitlines()[0]
    codes = {int(c) for c in body.get("error_codes") or [] if isinstance(c, int)}
    if codes & {7000215, 7000222}:
        fix = "KB_TEAMS_APP_PASSWORD is wrong or expired: create a new client secret"
    elif 700016 in codes:
        fix = f"no app KB_TEAMS_APP_ID in tenant {tenant}: check the id, or set KB_TEAMS_TENANT_ID"
    elif 90002 in codes:
        fix = f"tenant {tenant} does not exist: check KB_TEAMS_TENANT_ID"
    else:
        fix = "check KB_TEAMS_APP_ID, KB_TEAMS_APP_PASSWORD and KB_TEAMS_TENANT_ID"
    return f"the token request was refused ({described}): {fix}"


async def run_checks(
    settings: Settings, *, login_url: str = TEAMS_LOGIN_URL, seconds: float = 10.0
) -> list[Finding]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session:
        slack, teams = await asyncio.gather(
            check_slack(settings, session), check_teams(settings, session, login_url)
        )
    return [*slack, *teams]


_MARKS = {
    "ok": "[green]ok[/]",
    "missing": "[red]missing[/]",
    "failed": "[red]failed[/]",
    "unreachable": "[yellow]unreachable[/]",
    "off": "[dim]off[/]",
}


@friendly_errors
def doctor(
    as_json: JsonOption = False,
    teams_login_url: Annotated[str, typer.Option(help="Entra ID's login endpoint.")] = TEAMS_LOGIN_URL,
    timeout: Annotated[
        float, typer.Option(help="Seconds per platform before it counts as unreachable.")
    ] = 10.0,
) -> None:
    """Check the Slack and Teams credentials against the platforms and say exactly what is missing."""
    findings = asyncio.run(run_checks(cli_settings(), login_url=teams_login_url, seconds=timeout))
    broken = any(f.status in ("missing", "failed") for f in findings)
    if as_json:
        print_json(
            {
                "ok": not broken,
                "findings": [
                    {"platform": f.platform, "status": f.status, "message": f.message} for f in findings
                ],
            }
        )
    else:
        for f in findings:
            out.print(f"{f.platform:<6} {_MARKS[f.status]:<28} {f.message}", markup=True, highlight=False)
    if broken:
        raise typer.Exit(EXIT_ERROR)
