"""`kb teams package`: the Teams app package (manifest.json and two icons in a zip) for this bot.

Teams installs a bot from a zip holding `manifest.json`, a full-colour icon (192x192 PNG) and an
outline icon (32x32 PNG, white on transparent). The manifest names the bot by its Entra app id
(KB_TEAMS_APP_ID, the same id the bot authenticates with), which is also the app's id here: one
registration, one id. The icons are drawn here and written as PNG with zlib, so building a
package needs nothing beyond the standard library.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Annotated, Any

import typer

from app.support import cli_settings, err, friendly_errors
from core.errors import ConfigError, KBError

teams_app = typer.Typer(help="Microsoft Teams: the app package to upload.", no_args_is_help=True)

SCHEMA_VERSION = "1.17"
SCHEMA_URL = (
    f"https://developer.microsoft.com/json-schemas/teams/v{SCHEMA_VERSION}/MicrosoftTeams.schema.json"
)
COLOR_ICON, OUTLINE_ICON = "color.png", "outline.png"
COLOR_SIZE, OUTLINE_SIZE = 192, 32
ACCENT = (0x1F, 0x4E, 0x79)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# The fields schema 1.17 requires of an app with a bot, and their length limits.
_REQUIRED = (
    "$schema",
    "manifestVersion",
    "version",
    "id",
    "developer",
    "name",
    "description",
    "icons",
    "accentColor",
)
_LIMITS = {
    ("name", "short"): 30,
    ("name", "full"): 100,
    ("description", "short"): 80,
    ("description", "full"): 4000,
}

Pixel = tuple[int, int, int, int]


def png(width: int, height: int, pixel: Any) -> bytes:
    """An RGBA PNG of `pixel(x, y) -> (r, g, b, a)`: signature, IHDR, one zlib IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _book(x: float, y: float) -> bool:
    """An open book in the unit square: two pages with a gap down the middle."""
    return 0.18 <= y <= 0.78 and (0.12 <= x <= 0.47 or 0.53 <= x <= 0.88) and y >= 0.18 + 0.08 * abs(x - 0.5)


def color_icon(size: int = COLOR_SIZE) -> bytes:
    white, accent = (255, 255, 255, 255), (*ACCENT, 255)
    return png(size, size, lambda x, y: white if _book((x + 0.5) / size, (y + 0.5) / size) else accent)


def outline_icon(size: int = OUTLINE_SIZE) -> bytes:
    """White outline on transparent, as Teams requires: the book's edge pixels only."""

    def inside(x: int, y: int) -> bool:
        return 0 <= x < size and 0 <= y < size and _book((x + 0.5) / size, (y + 0.5) / size)

    def pixel(x: int, y: int) -> Pixel:
        edge = inside(x, y) and not all(
            inside(x + dx, y + dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))
        )
        return (255, 255, 255, 255) if edge else (255, 255, 255, 0)

    return png(size, size, pixel)


def manifest(app_id: str, *, name: str, version: str, developer: str, website: str) -> dict[str, Any]:
    """The app manifest: one bot, personal chat, teams and group chats, no files."""
    return {
        "$schema": SCHEMA_URL,
        "manifestVersion": SCHEMA_VERSION,
        "version": version,
        "id": app_id,
        "developer": {
            "name": developer,
            "websiteUrl": website,
            "privacyUrl": website,
            "termsOfUseUrl": website,
        },
        "name": {"short": name, "full": f"{name} knowledge assistant"},
        "description": {
            "short": "Answers from the company's documents, with sources.",
            "full": "Ask in a chat with the bot, or mention it in a channel: it answers from the documents "
            "you may read and cites each source. Type help for the commands.",
        },
        "icons": {"color": COLOR_ICON, "outline": OUTLINE_ICON},
        "accentColor": "#{:02X}{:02X}{:02X}".format(*ACCENT),
        "bots": [
            {
                "botId": app_id,
                "scopes": ["personal", "team", "groupChat"],
                "supportsFiles": False,
                "isNotificationOnly": False,
                "commandLists": [
                    {
                        "scopes": ["personal", "team", "groupChat"],
                        "commands": [
                            {"title": "help", "description": "What the assistant can do"},
                            {"title": "sources", "description": "The sources of the last answer"},
                        ],
                    }
                ],
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [],
    }


def validate(data: dict[str, Any]) -> list[str]:
    """What schema 1.17 would refuse in `data` (required fields, ids, versions, lengths, https URLs)."""
    problems = [f"{field} is missing" for field in _REQUIRED if field not in data]
    if data.get("manifestVersion") != SCHEMA_VERSION or data.get("$schema") != SCHEMA_URL:
        problems.append(f"manifestVersion and $schema must be {SCHEMA_VERSION}")
    if not _GUID.match(str(data.get("id", ""))):
        problems.append("id must be a GUID")
    if not _VERSION.match(str(data.get("version", ""))):
        problems.append("version must be MAJOR.MINOR.PATCH")
    for (group, key), limit in _LIMITS.items():
        if not 0 < len(str(data.get(group, {}).get(key, ""))) <= limit:
            problems.append(f"{group}.{key} must be 1-{limit} characters")
    for key, url in data.get("developer", {}).items():
        if key.endswith("Url") and not str(url).startswith("https://"):
            problems.append(f"developer.{key} must be an https URL")
    for bot in data.get("bots", []):
        if not _GUID.match(str(bot.get("botId", ""))):
            problems.append("bots[].botId must be a GUID")
    return problems


def build_package(out: Path, app_id: str | None, **fields: str) -> dict[str, Any]:
    """Write the zip to `out`; raise with the fix when the id or a field would be refused by Teams."""
    if not app_id:
        raise ConfigError(
            "KB_TEAMS_APP_ID is not set: the package names the bot by it",
            hint="register the bot (docs/operations.md, Teams) and set KB_TEAMS_APP_ID to its Application ID",
        )
    data = manifest(app_id, **fields)
    problems = validate(data)
    if problems:
        raise KBError(
            f"the Teams manifest would be refused: {'; '.join(problems)}",
            hint="KB_TEAMS_APP_ID is the Entra app's Application (client) ID, a GUID",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("manifest.json", json.dumps(data, indent=2))
        package.writestr(COLOR_ICON, color_icon())
        package.writestr(OUTLINE_ICON, outline_icon())
    return data


@teams_app.command("package")
@friendly_errors
def package(
    out: Annotated[Path, typer.Option("--out", help="The zip to write.")] = Path("halden-kb-teams.zip"),
    name: Annotated[str, typer.Option(help="The app's short name in Teams (30 characters).")] = "Halden KB",
    version: Annotated[str, typer.Option(help="The app version; raise it for each upload.")] = "1.0.0",
    developer: Annotated[str, typer.Option(help="Publisher shown in Teams.")] = "Halden IT",
    website: Annotated[
        str, typer.Option(help="https URL for the app's website, privacy and terms pages.")
    ] = "https://www.example.com/",
) -> None:
    """Build the Teams app package (manifest.json with the bot id from KB_TEAMS_APP_ID, and icons)."""
    settings = cli_settings()
    build_package(
        out, settings.teams.app_id, name=name, version=version, developer=developer, website=website
    )
    err.print(
        f"Wrote {out}: upload it in Teams (Apps -> Manage your apps -> Upload an app) or the admin centre.",
        highlight=False,
    )
