"""How each model version does with real users: 👍/👎 and abstention per served model, with Wilson intervals.

`feedback_by_model` reads the bot's behaviour events (a question event names the model that answered
it; feedback events point at their question), so an A/B test can be judged from `admin models`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from core.models import BehaviourEventRow, ModelVersionRow

Z95 = 1.959963984540054


@dataclass
class ModelStats:
    answers: int = 0
    abstained: int = 0
    up: int = 0
    down: int = 0


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when n is 0.

    >>> tuple(round(x, 3) for x in wilson(8, 10))
    (0.49, 0.943)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def feedback_by_model(engine: Engine) -> dict[str, ModelStats]:
    stats: dict[str, ModelStats] = {}
    model_of: dict[int, str] = {}
    with Session(engine) as session:
        questions = session.execute(
            select(col(BehaviourEventRow.id), col(BehaviourEventRow.data)).where(
                col(BehaviourEventRow.kind) == "question"
            )
        ).all()
        for event_id, data in questions:
            model = str(data.get("model") or "unknown")
            model_of[event_id] = model
            entry = stats.setdefault(model, ModelStats())
            entry.answers += 1
            entry.abstained += bool(data.get("abstained"))
        votes = session.execute(
            select(col(BehaviourEventRow.question_id), col(BehaviourEventRow.data)).where(
                col(BehaviourEventRow.kind) == "feedback"
            )
        ).all()
    for question_id, data in votes:
        voted = model_of.get(question_id or -1)
        if voted is None:
            continue
        model = voted
        value = int(data.get("value", 0))
        stats[model].up += value > 0
        stats[model].down += value < 0
    return stats


def render_versions(versions: Sequence[ModelVersionRow], stats: dict[str, ModelStats]) -> str:
    """`admin models`: every version with its figures and live feedback."""
    lines = []
    for row in versions:
        manifest, figures = row.manifest, row.manifest.get("figures", {})
        mark = f" (A/B {row.ab_share:.0%})" if row.ab_share else ""
        head = f"v{row.version} {row.served_name} {row.status}{mark}"
        if row.version:
            head += (
                f": ε={_num(manifest.get('epsilon'))}, correctness {_num(figures.get('correctness'))}, "
                f"canary {_num(figures.get('canary_exposure_bits'))} bits, by {manifest.get('requested_by')}"
            )
        s = stats.get(row.served_name)
        if s is not None and s.answers:
            rated = s.up + s.down
            low, high = wilson(s.up, rated)
            a_low, a_high = wilson(s.abstained, s.answers)
            head += (
                f"; {s.answers} answers, 👍 {s.up} 👎 {s.down} (liked {_pct(s.up, rated)}, 95% CI "
                f"{low:.0%}-{high:.0%}), abstained {_pct(s.abstained, s.answers)} "
                f"(CI {a_low:.0%}-{a_high:.0%})"
            )
        lines.append(head)
    return "\n".join(lines) if lines else "No model versions yet."


def _num(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "n/a"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "n/a"
