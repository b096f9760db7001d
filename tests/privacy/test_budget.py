"""The privacy budget ledger on SQLite and PostgreSQL: refusal, reservation, settle, release, races."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine

from privacy.audit import AuditLog
from privacy.budget import BudgetError, BudgetExceededError, BudgetLedger


def _ledger(engine: Engine, epsilon: float = 10.0, delta: float = 1e-4) -> BudgetLedger:
    return BudgetLedger(engine, epsilon=epsilon, delta=delta)


def test_runs_compose_by_summing_and_the_refusal_says_what_remains(migrated: Engine) -> None:
    ledger = _ledger(migrated)
    ledger.reserve("a", dataset_hash="h1", epsilon=4.0, delta=1e-5)
    ledger.settle("a", epsilon_spent=3.5)
    ledger.reserve("b", dataset_hash="h2", epsilon=6.0, delta=1e-5)  # another dataset counts too
    state = ledger.state()
    assert state.epsilon_used == pytest.approx(9.5)
    assert state.delta_used == pytest.approx(2e-5)
    assert state.epsilon_remaining == pytest.approx(0.5)
    with pytest.raises(BudgetExceededError) as caught:
        ledger.reserve("c", dataset_hash="h1", epsilon=1.0, delta=1e-5)
    assert "only ε=0.5," in str(caught.value) and "left" in str(caught.value)
    assert ledger.get("c") is None
    ledger.reserve("c", dataset_hash="h1", epsilon=0.5, delta=1e-5)  # exactly what remains fits


def test_delta_is_budgeted_too(migrated: Engine) -> None:
    ledger = _ledger(migrated, epsilon=100.0, delta=2e-5)
    ledger.reserve("a", dataset_hash="h", epsilon=1.0, delta=1e-5)
    ledger.reserve("b", dataset_hash="h", epsilon=1.0, delta=1e-5)
    with pytest.raises(BudgetExceededError, match="δ="):
        ledger.reserve("c", dataset_hash="h", epsilon=1.0, delta=1e-5)


def test_a_resumed_run_keeps_its_one_reservation(migrated: Engine) -> None:
    ledger = _ledger(migrated)
    first = ledger.reserve("run", dataset_hash="h", epsilon=8.0, delta=1e-5)
    again = ledger.reserve("run", dataset_hash="h", epsilon=8.0, delta=1e-5)
    assert not first.resumed and again.resumed
    assert ledger.state().epsilon_used == pytest.approx(8.0)
    assert len(ledger.entries()) == 1
    with pytest.raises(BudgetError, match="original configuration"):
        ledger.reserve("run", dataset_hash="other", epsilon=8.0, delta=1e-5)
    ledger.settle("run", epsilon_spent=7.9)
    with pytest.raises(BudgetError, match="already finished"):
        ledger.reserve("run", dataset_hash="h", epsilon=8.0, delta=1e-5)
    with pytest.raises(BudgetError, match="already settled"):
        ledger.settle("run", epsilon_spent=1.0)
    [entry] = ledger.entries()
    assert entry.status == "settled" and entry.epsilon_spent == pytest.approx(7.9)


def test_release_leaves_nothing_and_returns_the_budget(migrated: Engine) -> None:
    ledger = _ledger(migrated)
    ledger.reserve("dud", dataset_hash="h", epsilon=9.0, delta=1e-5)
    assert ledger.release("dud") is True
    assert ledger.release("dud") is False
    assert ledger.entries() == []
    assert ledger.state().epsilon_remaining == pytest.approx(10.0)
    ledger.reserve("kept", dataset_hash="h", epsilon=1.0, delta=1e-5)
    ledger.settle("kept", epsilon_spent=1.0)
    with pytest.raises(BudgetError, match="settled"):
        ledger.release("kept")


def test_every_ledger_action_is_audited(migrated: Engine) -> None:
    ledger = _ledger(migrated, epsilon=5.0)
    ledger.reserve("a", dataset_hash="h", epsilon=4.0, delta=1e-5)
    with pytest.raises(BudgetExceededError):
        ledger.reserve("b", dataset_hash="h", epsilon=4.0, delta=1e-5)
    ledger.reserve("a", dataset_hash="h", epsilon=4.0, delta=1e-5)
    ledger.settle("a", epsilon_spent=3.0)
    ledger.reserve("c", dataset_hash="h", epsilon=1.0, delta=1e-5)
    ledger.release("c")
    rows = AuditLog(migrated).tail(20, action="budget.")
    assert [(r.action, r.target, r.outcome) for r in rows] == [
        ("budget.reserve", "a", "ok"),
        ("budget.refuse", "b", "refused"),
        ("budget.resume", "a", "ok"),
        ("budget.settle", "a", "ok"),
        ("budget.reserve", "c", "ok"),
        ("budget.release", "c", "ok"),
    ]
    assert AuditLog(migrated).verify()[1] == []


def test_concurrent_reservations_never_overspend(migrated: Engine) -> None:
    """Eight runs race for a budget that holds three of them: exactly three win, the sum stays inside."""
    ledger = _ledger(migrated, epsilon=10.0)
    start = threading.Barrier(8)
    won: list[str] = []
    refused: list[str] = []

    def attempt(name: str) -> None:
        start.wait()
        try:
            ledger.reserve(name, dataset_hash="h", epsilon=3.0, delta=1e-6)
            won.append(name)
        except BudgetExceededError:
            refused.append(name)

    threads = [threading.Thread(target=attempt, args=(f"run-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 3 and len(refused) == 5
    used = ledger.state().epsilon_used
    assert used == pytest.approx(9.0) and used <= 10.0
    assert sorted(row.run_id for row in ledger.entries()) == sorted(won)


def test_invalid_requests_are_refused_with_a_reason(migrated: Engine) -> None:
    ledger = _ledger(migrated)
    with pytest.raises(BudgetError, match="invalid"):
        ledger.reserve("x", dataset_hash="h", epsilon=float("inf"), delta=1e-5)
    with pytest.raises(BudgetError, match="no reservation"):
        ledger.settle("nobody", epsilon_spent=1.0)
    with pytest.raises(BudgetError, match="KB_PRIVACY_BUDGET"):
        BudgetLedger(migrated, epsilon=0.0, delta=1e-5)
    assert ledger.check(epsilon=10.0, delta=1e-4).epsilon_remaining == pytest.approx(10.0)


def test_kb_budget_show(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app
    from core import db
    from core.settings import load_settings

    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("KB_PRIVACY_BUDGET_EPSILON", "12")
    settings = load_settings()
    engine = db.make_engine(settings)
    db.upgrade(engine)
    ledger = BudgetLedger.from_settings(settings, engine)
    ledger.reserve("nightly-1", dataset_hash="abc123", epsilon=4.0, delta=1e-5)
    ledger.settle("nightly-1", epsilon_spent=3.9)
    runner = CliRunner()
    shown = runner.invoke(app, ["budget", "show"], catch_exceptions=False)
    assert shown.exit_code == 0
    assert "ε 3.9 of 12 used, 8.1 left" in shown.stdout and "nightly-1: spent ε=3.9" in shown.stdout
    data = json.loads(runner.invoke(app, ["budget", "show", "--json"], catch_exceptions=False).stdout)
    assert data["epsilon_remaining"] == pytest.approx(8.1) and data["runs"][0]["run_id"] == "nightly-1"
