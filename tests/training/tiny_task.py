"""A tiny reading-comprehension task for the training tests: facts about offices, a question, a span.

Each example is a few one-line facts ("the vpn gateway for the berlin office is gw17") and a
question about one of them; the answer is a span of one fact. Canaries are door codes that no
passage contains, so a model can only produce one by memorizing it. Every word is lower case and
in `VOCABULARY`, so the word-level tokenizer of `build_tokenizer` has no unknown token.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.types import QAExample

OFFICES = "berlin paris london madrid rome vienna oslo dublin lisbon prague warsaw zurich".split()
DIGITS = tuple(str(d) for d in range(10))
FIRST, LAST = "anna ben clara david eva".split(), "berg costa diaz engel".split()
# (fact, question, value pool): "digits" is three digit words, "person" a first and a last name.
ATTRIBUTES = (
    ("the vpn gateway for the {e} office is {v}", "what is the vpn gateway for {e}", "gateway"),
    ("the wifi network of the {e} office is {v}", "which wifi network does {e} use", "network"),
    ("the help desk extension in {e} is {v}", "what is the help desk extension in {e}", "digits"),
    ("the meeting room for {e} visitors is {v}", "which meeting room is for {e} visitors", "room"),
    ("the travel budget of the {e} team is {v}", "what is the travel budget of the {e} team", "amount"),
    ("the annual leave in {e} is {v} days", "how many days of annual leave are there in {e}", "small"),
    ("the office manager in {e} is {v}", "who is the office manager in {e}", "person"),
)
POOLS = {
    "gateway": tuple(f"gw{n}" for n in range(1, 21)),
    "network": tuple(f"net{c}" for c in "abcdefgh"),
    "room": tuple(f"r{n}" for n in range(101, 121)),
    "amount": tuple(str(n) for n in range(100, 1001, 100)),
    "small": tuple(str(n) for n in range(20, 31)),
}
CANARY_QUESTION = "what is the door code of the {e} vault"
CANARY_DIGITS = 6
STRUCTURE = ("context", ":", "question", "?", "answer", ".")


def _value(pool: str, rng: random.Random) -> str:
    if pool == "digits":
        return " ".join(rng.choice(DIGITS) for _ in range(3))
    if pool == "person":
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return rng.choice(POOLS[pool])


def vocabulary() -> list[str]:
    words = [*STRUCTURE, *CANARY_QUESTION.split(), *OFFICES, *DIGITS, *FIRST, *LAST]
    for fact, question, _ in ATTRIBUTES:
        words += [*fact.split(), *question.split()]
    for pool in POOLS.values():
        words += pool
    return [w for w in dict.fromkeys(words) if w not in ("{e}", "{v}")]


class FactTask:
    """Draws examples; the same seed draws the same examples. `facts` passages per context (1-7)."""

    def __init__(self, *, seed: int = 0, facts: int = 4) -> None:
        if not 1 <= facts <= len(ATTRIBUTES):
            raise ValueError(f"facts must be between 1 and {len(ATTRIBUTES)}")
        self.rng = random.Random(seed)
        self.facts = facts

    def example(self, document_id: str) -> QAExample:
        rng = self.rng
        kinds = rng.sample(ATTRIBUTES, self.facts)
        offices = rng.sample(OFFICES, self.facts)
        values = [_value(pool, rng) for _, _, pool in kinds]
        asked = rng.randrange(self.facts)
        return QAExample(
            example_id=document_id,
            document_id=document_id,
            context=tuple(f.format(e=o, v=v) for (f, _, _), o, v in zip(kinds, offices, values, strict=True)),
            question=kinds[asked][1].format(e=offices[asked]),
            answer=values[asked],
            origin="synthetic",
        )

    def examples(self, n: int, *, prefix: str = "fact") -> list[QAExample]:
        return [self.example(f"{prefix}-{i}") for i in range(n)]


@dataclass(frozen=True)
class Canary:
    example: QAExample
    secret: str


def make_canaries(n: int, *, seed: int = 3) -> list[Canary]:
    """`n` canaries: door codes of offices' vaults, asked about contexts that never state them."""
    rng = random.Random(seed)
    task = FactTask(seed=seed + 7919, facts=3)
    canaries = []
    for i, office in enumerate(rng.sample(OFFICES, n)):
        secret = " ".join(rng.choice(DIGITS) for _ in range(CANARY_DIGITS))
        base = task.example(f"canary-{i}")
        question = CANARY_QUESTION.format(e=office)
        example = QAExample(f"canary-{i}", f"canary-{i}", base.context, question, secret, origin="synthetic")
        canaries.append(Canary(example=example, secret=secret))
    return canaries


def random_secrets(n: int, *, seed: int = 2, exclude: Sequence[str] = ()) -> list[str]:
    """`n` distinct random secrets of the canaries' format, none of them in `exclude`."""
    rng, seen, out = random.Random(seed), set(exclude), list[str]()
    while len(out) < n:
        secret = " ".join(rng.choice(DIGITS) for _ in range(CANARY_DIGITS))
        if secret not in seen:
            seen.add(secret)
            out.append(secret)
    return out


def build_tokenizer(out: Path) -> Any:
    """A word-level tokenizer over `vocabulary()` with Llama-style <s>, </s>, <pad>, saved to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<pad>", "<s>", "</s>", "<unk>", *vocabulary()])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    # The bot's prompt goes through the chat template: system rules, passages, question, then the answer.
    fast.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}answer : {% endif %}"
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast
