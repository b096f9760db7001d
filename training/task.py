"""A templated reading-comprehension task over company facts, for measuring distillation honestly.

Each example is a few passages of IT, HR and finance facts about offices ("the vpn gateway for the
berlin office is gw17") and a question about one of them; the answer is a span of one passage.
Contexts are drawn at random, so a test context is never one the model saw in training: a model
can only score by reading, not by remembering. Some contexts hold a second fact of the asked kind
about another office, so the question's office must be matched too.

Canaries (`make_canaries`) are the opposite: a private answer ("the door code of the oslo vault
is 4 1 8 2 9 3") that no passage contains, so a model can only produce it by memorizing it - what
the exposure test of `training.evaluate` measures.

Everything is lower-case words separated by spaces, so a word-level tokenizer
(`build_tokenizer`) covers the whole vocabulary with no unknown token.

>>> task = FactTask(seed=0)
>>> example = task.example("doc-1")
>>> example.answer in " ".join(example.context)
True
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.types import QAExample

OFFICES = (
    "berlin paris london madrid rome vienna oslo dublin lisbon prague warsaw zurich amsterdam brussels "
    "munich hamburg milan lyon tokyo boston denver austin toronto sydney helsinki athens riga sofia"
).split()
FIRST = "anna ben clara david eva felix greta hugo ida jonas karla leo mia noah olga paul rosa sam".split()
LAST = "berg costa diaz engel fischer garcia hansen ito jansen klein lang meyer novak weber".split()
DIGITS = tuple(str(d) for d in range(10))
SMALL = tuple(str(n) for n in range(10, 61))
AMOUNTS = tuple(str(n) for n in range(100, 2001, 50))
CODES = tuple(f"gw{n}" for n in range(1, 41)) + tuple(f"r{n}" for n in range(101, 141))
NETWORKS = tuple(f"net{c}" for c in "abcdefghijklmnop")


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: its domain, how it is stated, how it is asked, and what its values look like."""

    name: str
    domain: str
    facts: tuple[str, ...]
    questions: tuple[str, ...]
    values: str  # which value pool: digits3, digits4, small, amount, gateway, room, network, person


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "vpn",
        "it",
        (
            "the vpn gateway for the {e} office is {v}",
            "{e} staff reach the vpn through gateway {v}",
            "vpn access in {e} goes through {v}",
        ),
        (
            "which vpn gateway does the {e} office use",
            "what is the vpn gateway for {e}",
            "through which gateway do {e} staff reach the vpn",
        ),
        "gateway",
    ),
    Attribute(
        "wifi",
        "it",
        (
            "the guest wifi in the {e} office is called {v}",
            "visitors in {e} join the wifi network {v}",
            "wifi for guests at {e} : {v}",
        ),
        ("what is the guest wifi called in {e}", "which wifi network do visitors in {e} join"),
        "network",
    ),
    Attribute(
        "helpdesk",
        "it",
        (
            "the it helpdesk in {e} answers on extension {v}",
            "call extension {v} for the {e} helpdesk",
            "helpdesk {e} : extension {v}",
        ),
        ("which extension does the {e} helpdesk answer on", "what is the helpdesk extension in {e}"),
        "digits3",
    ),
    Attribute(
        "printer",
        "it",
        (
            "the color printer of the {e} office stands in room {v}",
            "in {e} the printer is in room {v}",
            "printer room for {e} : {v}",
        ),
        ("in which room is the printer of the {e} office", "where is the printer in {e}"),
        "room",
    ),
    Attribute(
        "vacation",
        "hr",
        (
            "staff in the {e} office get {v} vacation days a year",
            "the {e} office grants {v} days of vacation",
            "vacation allowance in {e} : {v} days",
        ),
        (
            "how many vacation days do staff in {e} get",
            "what is the vacation allowance in the {e} office",
            "how many days of vacation does {e} grant",
        ),
        "small",
    ),
    Attribute(
        "manager",
        "hr",
        (
            "the {e} office is managed by {v}",
            "{v} is the office manager in {e}",
            "office manager {e} : {v}",
        ),
        ("who manages the {e} office", "who is the office manager in {e}"),
        "person",
    ),
    Attribute(
        "parental",
        "hr",
        (
            "parental leave in the {e} office is {v} weeks",
            "{e} parents may take {v} weeks of parental leave",
        ),
        ("how many weeks of parental leave are there in {e}", "how long is parental leave in {e}"),
        "small",
    ),
    Attribute(
        "buddy",
        "hr",
        ("new hires in {e} are welcomed by their buddy {v}", "the onboarding buddy in {e} is {v}"),
        ("who is the onboarding buddy in {e}", "which buddy welcomes new hires in {e}"),
        "person",
    ),
    Attribute(
        "expense",
        "finance",
        (
            "the expense limit in the {e} office is {v} euros",
            "{e} staff may spend up to {v} euros without approval",
            "expense limit {e} : {v} euros",
        ),
        (
            "what is the expense limit in {e}",
            "how much may {e} staff spend without approval",
            "up to how many euros can {e} staff expense",
        ),
        "amount",
    ),
    Attribute(
        "costcenter",
        "finance",
        (
            "the cost center of the {e} office is {v}",
            "book {e} costs on cost center {v}",
            "cost center for {e} : {v}",
        ),
        ("what is the cost center of the {e} office", "on which cost center are {e} costs booked"),
        "digits4",
    ),
    Attribute(
        "approver",
        "finance",
        ("invoices from {e} are approved by {v}", "{v} approves invoices for the {e} office"),
        ("who approves invoices from {e}", "who is the invoice approver for {e}"),
        "person",
    ),
    Attribute(
        "deadline",
        "finance",
        (
            "expense reports in {e} are due within {v} days",
            "{e} staff file expense reports within {v} days",
        ),
        ("within how many days are expense reports due in {e}", "when are expense reports due in {e}"),
        "small",
    ),
)

CANARY_FACT = "the door code of the {e} vault is {v}"
CANARY_QUESTION = "what is the door code of the {e} vault"
CANARY_DIGITS = 6
STRUCTURE = ("context", ":", "question", "?", "answer", ".")


def value(pool: str, rng: random.Random) -> str:
    """A random value of one pool; multi-word values (digits, names) make multi-token answers."""
    if pool == "digits3":
        return " ".join(rng.choice(DIGITS) for _ in range(3))
    if pool == "digits4":
        return " ".join(rng.choice(DIGITS) for _ in range(4))
    if pool == "small":
        return rng.choice(SMALL)
    if pool == "amount":
        return rng.choice(AMOUNTS)
    if pool == "gateway":
        return rng.choice(CODES[:40])
    if pool == "room":
        return rng.choice(CODES[40:])
    if pool == "network":
        return rng.choice(NETWORKS)
    if pool == "person":
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    raise ValueError(f"unknown value pool {pool!r}")


def vocabulary() -> list[str]:
    """Every word the task can produce, in a fixed order (the tokenizer's ids follow it)."""
    words: list[str] = list(STRUCTURE)
    texts = [CANARY_FACT, CANARY_QUESTION]
    for attribute in ATTRIBUTES:
        texts += [*attribute.facts, *attribute.questions]
    for text in texts:
        words += [w for w in text.split() if w not in ("{e}", "{v}")]
    words += [*OFFICES, *FIRST, *LAST, *DIGITS, *SMALL, *AMOUNTS, *CODES, *NETWORKS]
    return list(dict.fromkeys(words))


def question_domain(question: str) -> str | None:
    """The domain ("it", "hr", "finance") of a question the task asked, None for any other text.

    >>> question_domain("what is the vpn gateway for helsinki")
    'it'
    """
    for attribute in ATTRIBUTES:
        for template in attribute.questions:
            head, _, tail = template.partition("{e}")
            rest = question[len(head) :]
            if question.startswith(head) and rest.endswith(tail) and rest[: len(rest) - len(tail)] in OFFICES:
                return attribute.domain
    return None


class FactTask:
    """Draws examples of the task; the same seed draws the same examples.

    `facts` passages per context, each a different kind of fact, except that with probability
    `distractor_p` one more fact of the asked kind about another office is added. `domains` limits the
    kinds of fact to some domains ("it", "hr", "finance"): a public start that never saw the company's
    finance facts has to learn them from the private data.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        facts: int = 4,
        distractor_p: float = 0.25,
        domains: Sequence[str] | None = None,
    ) -> None:
        known = sorted({a.domain for a in ATTRIBUTES})
        unknown = sorted(set(domains or ()) - set(known))
        if unknown:
            raise ValueError(f"unknown domains {unknown}; known: {known}")
        self.attributes = tuple(a for a in ATTRIBUTES if domains is None or a.domain in domains)
        if facts < 1 or facts > len(self.attributes):
            raise ValueError(f"facts must be between 1 and {len(self.attributes)} for these domains")
        self.rng = random.Random(seed)
        self.facts = facts
        self.distractor_p = distractor_p

    def _fact(self, attribute: Attribute, office: str, answer: str) -> str:
        return self.rng.choice(attribute.facts).format(e=office, v=answer)

    def example(self, document_id: str, *, example_id: str | None = None) -> QAExample:
        rng = self.rng
        kinds = rng.sample(self.attributes, self.facts)
        offices = rng.sample(OFFICES, self.facts + 1)
        passages = [self._fact(a, o, value(a.values, rng)) for a, o in zip(kinds, offices, strict=False)]
        asked = rng.randrange(self.facts)
        attribute, office = kinds[asked], offices[asked]
        answer = value(attribute.values, rng)
        passages[asked] = self._fact(attribute, office, answer)
        if rng.random() < self.distractor_p:
            other = value(attribute.values, rng)
            passages.insert(rng.randrange(len(passages) + 1), self._fact(attribute, offices[-1], other))
        question = rng.choice(attribute.questions).format(e=office)
        return QAExample(
            example_id=example_id or document_id,
            document_id=document_id,
            context=tuple(passages),
            question=question,
            answer=answer,
            origin="synthetic",
        )

    def examples(self, n: int, *, prefix: str = "fact") -> list[QAExample]:
        """`n` examples, each from its own context (its own "document")."""
        return [self.example(f"{prefix}-{i}") for i in range(n)]

    def stream(self, *, prefix: str = "fact") -> Iterator[QAExample]:
        i = 0
        while True:
            yield self.example(f"{prefix}-{i}")
            i += 1


@dataclass(frozen=True)
class Canary:
    """A secret inserted into training data: the example that carries it and the secret's format."""

    example: QAExample
    secret: str
    digits: int = CANARY_DIGITS


def make_canaries(n: int, *, seed: int = 1, facts: int = 3) -> list[Canary]:
    """`n` canaries, each a door code of another office's vault, absent from its own passages.

    The passages are ordinary facts, so the only way to answer is to have memorized the secret.
    """
    rng = random.Random(seed)
    task = FactTask(seed=seed + 7919, facts=facts, distractor_p=0.0)
    canaries = []
    for i, office in enumerate(rng.sample(OFFICES, n)):
        secret = " ".join(rng.choice(DIGITS) for _ in range(CANARY_DIGITS))
        base = task.example(f"canary-{i}")
        example = QAExample(
            example_id=f"canary-{i}",
            document_id=f"canary-{i}",
            context=base.context,
            question=CANARY_QUESTION.format(e=office),
            answer=secret,
            origin="synthetic",
        )
        canaries.append(Canary(example=example, secret=secret))
    return canaries


def random_secrets(
    n: int, *, digits: int = CANARY_DIGITS, seed: int = 2, exclude: Sequence[str] = ()
) -> list[str]:
    """`n` distinct random secrets of the canaries' format, none of them in `exclude`."""
    rng = random.Random(seed)
    space = 10**digits
    if n > space - len(exclude):
        raise ValueError(f"only {space} secrets of {digits} digits exist")
    seen = set(exclude)
    out: list[str] = []
    while len(out) < n:
        secret = " ".join(rng.choice(DIGITS) for _ in range(digits))
        if secret not in seen:
            seen.add(secret)
            out.append(secret)
    return out


def build_tokenizer(out: Path) -> Any:
    """A word-level tokenizer over `vocabulary()` with Llama-style <s>, </s>, <pad>, saved to `out`.

    vLLM and transformers load it like any model's tokenizer; every task word is one token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {word: i for i, word in enumerate([*specials, *vocabulary()])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Joins words with spaces; without a decoder transformers cannot turn ids back into text.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast
