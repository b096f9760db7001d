"""The command grammar: text in, one Command out. Anything that is not a command is a question.

>>> parse("digest daily")
Digest(cadence='daily')
>>> parse("how do I reset my password?")
Ask(text='how do I reset my password?')
>>> parse("digest hourly").message
'`digest` takes daily, weekly, off or now; for example `digest weekly`.'
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

MAX_TOPIC_CHARS = 100
CADENCES = ("daily", "weekly", "off", "now")
ADMIN_VERBS = ("ingest", "sync", "retrain", "status", "budget", "models", "rollback", "ab")
FLAGS = {"retrain": ("dry-run",), "sync": ("full",)}  # options that take no value
MAX_EPOCHS = 50
RETRAIN_OPTIONS = ("epsilon", "epochs", "dry-run")

Cadence = Literal["daily", "weekly", "off", "now"]


@dataclass(frozen=True, slots=True)
class Ask:
    text: str


@dataclass(frozen=True, slots=True)
class Help:
    """`help`: the command list."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    topic: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topic: str


@dataclass(frozen=True, slots=True)
class Digest:
    cadence: Cadence


@dataclass(frozen=True, slots=True)
class Feedback:
    comment: str


@dataclass(frozen=True, slots=True)
class Admin:
    """`admin <verb> [args]`; `options` are the `--name value` pairs (a flag's is "yes"), `args` the rest.

    `actor` is who asked (platform-qualified), filled in by the conversation before a hook runs.
    """

    verb: str
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    actor: str = ""


@dataclass(frozen=True, slots=True)
class Invalid:
    """A command with bad arguments; `message` tells the user how to write it."""

    message: str
    admin_verb: str | None = None


Command = Ask | Help | Subscribe | Unsubscribe | Digest | Feedback | Admin | Invalid

HELP_TEXT = """Ask me anything about our documents, or use a command:
• `ask <question>`: the same as just asking
• `subscribe <topic>` / `unsubscribe <topic>`: news about a topic in your digest
• `digest daily|weekly|off|now`: how often you get the digest, or one right now
• `feedback <text>`: tell the team what worked or what did not
• `admin ingest|sync|retrain|status|budget|models|rollback|ab`: for admins
  (`admin retrain [--epsilon E] [--epochs N] [--dry-run]`, `admin rollback <version>`,
  `admin ab <version> <share>`)"""


def parse(text: str) -> Command:
    words = text.strip().split(maxsplit=1)
    if not words:
        return Help()
    head, rest = words[0].casefold(), (words[1].strip() if len(words) > 1 else "")
    if head == "help" and not rest:
        return Help()
    if head == "ask":
        return Ask(rest) if rest else Invalid("`ask` needs a question, like `ask how do I join the VPN?`")
    if head in ("subscribe", "unsubscribe"):
        return _topic(head, rest)
    if head == "digest":
        if rest.casefold() not in CADENCES:
            return Invalid("`digest` takes daily, weekly, off or now; for example `digest weekly`.")
        cadence: Cadence = rest.casefold()  # type: ignore[assignment]
        return Digest(cadence)
    if head == "feedback":
        if not rest:
            return Invalid("Tell me what to pass on, for example `feedback the VPN page is out of date`.")
        return Feedback(rest)
    if head == "admin":
        return _admin(rest)
    return Ask(text.strip())


def _topic(head: str, rest: str) -> Command:
    topic = " ".join(rest.split()).casefold()
    if not topic:
        return Invalid(f"`{head}` needs a topic, for example `{head} vpn`.")
    if len(topic) > MAX_TOPIC_CHARS:
        return Invalid(f"A topic can be at most {MAX_TOPIC_CHARS} characters long.")
    return Subscribe(topic) if head == "subscribe" else Unsubscribe(topic)


def _admin(rest: str) -> Command:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        return Invalid(f"I could not read that admin command ({exc}); check the quotes.")
    if not words or words[0].casefold() not in ADMIN_VERBS:
        verbs = ", ".join(f"`admin {v}`" for v in ADMIN_VERBS)
        return Invalid(f"Admin commands are: {verbs}.", words[0].casefold()[:50] if words else "(none)")
    verb, args, options = words[0].casefold(), [], {}
    tail = iter(words[1:])
    for word in tail:
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            if name in FLAGS.get(verb, ()) and not value:
                options[name] = "yes"
                continue
            if verb == "retrain" and name not in RETRAIN_OPTIONS:
                return Invalid(
                    f"`admin retrain` takes --epsilon, --epochs and --dry-run, not --{name}.", verb
                )
            if not value:
                value = next(tail, "")
            if not name or not value:
                return Invalid(f"The option `{word}` needs a value, like `--{name or 'epochs'} 3`.", verb)
            options[name] = value
        else:
            args.append(word)
    problem = _check_admin(verb, options) or _check_args(verb, args)
    if problem:
        return Invalid(problem, verb)
    return Admin(verb, tuple(args), options)


def _check_admin(verb: str, options: dict[str, str]) -> str | None:
    """Catch bad numbers here so that nothing downstream gets `--epsilon -1`."""
    if verb != "retrain":
        return None
    for name, value in options.items():
        if name == "dry-run":
            continue
        if name not in ("epsilon", "epochs"):
            return f"`admin retrain` takes --epsilon, --epochs and --dry-run, not --{name}."
        try:
            number = float(value) if name == "epsilon" else int(value)
        except ValueError:
            return f"--{name} must be a number, not {value!r}."
        if not number > 0 or number != number or number == float("inf"):
            return f"--{name} must be greater than 0 (got {value})."
        if name == "epochs" and number > MAX_EPOCHS:
            return f"--epochs can be at most {MAX_EPOCHS} (got {value}): more would overfit and spend ε."
    return None


def _check_args(verb: str, args: list[str]) -> str | None:
    """`rollback <version>` and `ab <version> <share>`: whole numbers and a share between 0 and 0.5."""
    if verb == "rollback" and (len(args) != 1 or not args[0].isdigit()):
        return "Say which version: `admin rollback <version>` (`admin models` lists them)."
    if verb == "ab":
        if len(args) != 2 or not args[0].isdigit():
            return "Say which version and share: `admin ab <version> <share>`, e.g. `admin ab 3 0.1`."
        try:
            share = float(args[1].rstrip("%")) / (100 if args[1].endswith("%") else 1)
        except ValueError:
            return f"The share must be a number between 0 and 0.5, not {args[1]!r}."
        if not 0 <= share <= 0.5:
            return f"The share must be between 0 and 0.5 (got {args[1]})."
    return None
