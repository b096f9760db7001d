"""`kb redact`: personal data and secrets out of a text, as a destination's policy says."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.support import JsonOption, cli_settings, friendly_errors, print_json


@friendly_errors
def redact(
    destination: Annotated[
        str, typer.Option(help="Whose policy: logs (everything), training, index or external_prompt.")
    ] = "logs",
    pseudonyms: Annotated[bool, typer.Option(help="Numbered placeholders: [EMAIL_1], [EMAIL_2]…")] = False,
    as_json: JsonOption = False,
) -> None:
    """Redact personal data and secrets: text on standard input, redacted text on standard output."""
    from privacy.redaction import RedactionPolicy, policy_for

    settings = cli_settings()
    policy = policy_for(
        destination, index_kinds=settings.privacy.index_kinds, prompt_kinds=settings.privacy.prompt_kinds
    )
    if pseudonyms:
        policy = RedactionPolicy(policy.destination, policy.kinds, pseudonyms=True)
    result = policy.redactor().redact(sys.stdin.read())
    if as_json:
        print_json({"text": result.text, "counts": result.counts})
    else:
        sys.stdout.write(result.text)
