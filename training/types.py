"""The training package's data contract, read top to bottom as the data flows:

QAExample (text, from the knowledge base: training.data)
  -> TeacherSignal (the teacher's answer and top-k log-probabilities: training.teacher)
  -> TrainExample (token ids, answer mask, sparse teacher distribution: training.data.tokenize)
  -> distill(student, examples, DistillConfig) -> DistillResult (training.distill, training.dp)

Teacher and student share one tokenizer (teacher token ids index the student's logits directly),
or a byte-level student's tokens receive the teacher's rows where both tokenizations agree
(training.crosstok, through `tokenize(..., teacher_tokenizer=...)`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Origin = Literal["generated", "feedback", "paraphrase", "synthetic"]
LossKind = Literal["forward_kl", "reverse_kl", "jsd"]
SparseSupport = Literal["renormalize", "tail"]  # what a top-k teacher's unseen tail becomes (losses)
GradSampleMode = Literal["auto", "ghost", "hooks"]

PRIVACY_UNIT = "one training example (a question with its context passages and answer)"


@dataclass(frozen=True)
class QAExample:
    """One (context passages, question) -> answer example, already redacted.

    `document_id` is the split key: train, validation and test never share a document.
    """

    example_id: str
    document_id: str
    context: tuple[str, ...]
    question: str
    answer: str
    origin: Origin = "generated"
    # Short strings a right answer holds (a teacher-written question's span from its passage); empty
    # where the example has none (templated, rated): then the answer itself is the reference.
    accept: tuple[str, ...] = ()


@dataclass(frozen=True)
class TeacherSignal:
    """The teacher's answer to one example and, at each answer token, its top-k log-probabilities.

    `top_ids[i]` and `top_logprobs[i]` describe the distribution the teacher sampled `token_ids[i]`
    from. A local transformers teacher may give `full_logits_path` (an .npy of [answer_len, vocab])
    instead of top-k.
    """

    example_id: str
    model: str
    answer: str
    token_ids: tuple[int, ...]
    top_ids: tuple[tuple[int, ...], ...]
    top_logprobs: tuple[tuple[float, ...], ...]
    full_logits_path: str | None = None


@dataclass(frozen=True)
class TrainExample:
    """One tokenized example for the student: prompt + answer ids, and where the answer starts.

    The loss is taken on positions `answer_start .. len(input_ids) - 1` only. `top_ids` and
    `top_logprobs` (one row per answer token, or empty for cross-entropy only) are the teacher's
    sparse distribution at those positions.
    """

    input_ids: tuple[int, ...]
    answer_start: int
    top_ids: tuple[tuple[int, ...], ...] = ()
    top_logprobs: tuple[tuple[float, ...], ...] = ()


@dataclass
class DistillConfig:
    """Everything one distillation run needs; saved as JSON with every checkpoint."""

    out_dir: Path
    epochs: int = 3
    lr: float = 1e-3  # the peak of the schedule: linear warm-up over `warmup` of the steps, then decay
    warmup: float = 0.1
    bf16: bool = True  # autocast on a GPU with bf16; the CPU trains in fp32 unless cpu_bf16
    # Autocast on the CPU too: about twice as fast where the CPU has bf16 instructions (AVX512-BF16,
    # AMX), slower where it emulates them, so it is the caller's choice (training.runtime.cpu_has_bf16).
    cpu_bf16: bool = False
    batch_size: int = 64  # logical batch (the expected batch under Poisson sampling)
    max_physical_batch: int = 16  # what fits in memory at once (BatchMemoryManager)
    max_len: int = 256
    temperature: float = 3.0
    alpha: float = 0.7  # weight of the distillation term; 1 - alpha goes to cross-entropy
    loss: LossKind = "forward_kl"
    jsd_beta: float = 0.5
    sparse: SparseSupport = "tail"  # a top-k teacher's tail: kept as one entry, or dropped (losses)
    epsilon: float | None = 8.0  # None trains without differential privacy
    delta: float | None = None  # None: 1 / N**1.1, capped at 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    grad_sample_mode: GradSampleMode = "auto"
    # "auto" takes "hooks" (one backward pass) when a physical batch's per-example gradients fit in this
    # many MiB, ghost clipping (a second backward pass, no per-example gradients) when they do not.
    per_example_grad_budget_mb: int = 4096
    lora_rank: int = 0  # 0: full fine-tuning; > 0: LoRA adapters of this rank (peft)
    lora_targets: tuple[str, ...] = ()  # the projections LoRA adapts; () every one present (dp.LORA_TARGETS)
    seed: int | None = None  # None: secure mode (OS entropy); a seed makes the run reproducible, NOT private
    checkpoint_every: int = 50  # optimizer steps
    device: str = "cpu"
    max_noise_multiplier: float = 10.0  # a target ε needing more noise than this is refused (training.dp)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data


@dataclass
class DistillResult:
    """What a run did and spent; `epsilon_spent` is what the budget ledger records."""

    steps: int
    epochs: float
    epsilon_spent: float | None
    delta: float | None
    train_time_s: float
    mean_step_time_s: float
    peak_memory_bytes: int
    final_loss: float
    checkpoint_dir: Path
    privacy_unit: str = PRIVACY_UNIT
    extra: dict[str, Any] = field(default_factory=dict)
