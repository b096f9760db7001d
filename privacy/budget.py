"""The differential-privacy budget ledger: what every training run may spend, and what it spent.

A DP training run on the company's data spends privacy: (ε, δ). The ledger records, per run id,
the (ε, δ) the run spent against the hash of the dataset it trained on, and refuses a run that
would push the total over the configured budget (KB_PRIVACY_BUDGET_EPSILON, _DELTA) before the
run starts, with a message that says what remains.

Life of a run's entry:

    ledger = BudgetLedger.from_settings(settings, engine)
    ledger.reserve("run-42", dataset_hash=h, epsilon=8.0, delta=1e-5)   # before training; may refuse
    ...train...                                                         # a kill leaves the reservation
    ledger.reserve("run-42", dataset_hash=h, epsilon=8.0, delta=1e-5)   # the resumed run: same entry
    ledger.settle("run-42", epsilon_spent=7.97)                         # at the end: what was spent
    ledger.release("run-43")                                            # a run that spent nothing

Composition: basic (sequential) composition over ALL runs, whatever dataset each used: the total
spent is (Σ ε_i, Σ δ_i). Why this one:
- It holds for any sequence of (ε_i, δ_i)-DP runs, including runs chosen adaptively after looking
  at earlier results (an admin retrains because the last model was weak), with no assumption on
  the mechanisms; PRV/RDP composition across runs would be tighter only for many runs and needs
  every run's full privacy curve with identical sampling, which heterogeneous runs do not share.
- Summing across dataset hashes is deliberately conservative: every dataset is rebuilt from the
  same knowledge base and the same employees' questions, so one person's records appear in many
  runs even when the hashes differ. The hash is recorded so an auditor can see which data each
  run used (and a future, finer policy could group by it), not to split the budget.
- It is what an auditor can check by adding up a column.

A reservation counts its planned ε until it is settled, so two runs starting at once cannot both
take the last of the budget. Every change first updates the one row of `privacy_ledger_lock`: a
row lock on PostgreSQL and the database write lock on SQLite, held until the change commits.
Every ledger action is also written to the audit log.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlmodel import Session, col

from core.db import session_scope
from core.models import PrivacyLedgerLockRow, PrivacyLedgerRow, utcnow
from core.settings import Settings
from privacy.audit import AuditLog
from privacy.errors import PrivacyError

RESERVED, SETTLED = "reserved", "settled"
_SLACK = 1e-9  # float noise when a run asks for exactly what remains


class BudgetError(PrivacyError):
    """The ledger was asked for something it cannot do."""


class BudgetExceededError(BudgetError):
    """A run would spend more than what remains of the privacy budget."""


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The budget, what runs have taken of it (settled plus reserved), and what remains."""

    epsilon_total: float
    delta_total: float
    epsilon_used: float
    delta_used: float
    runs_settled: int
    runs_reserved: int

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.epsilon_total - self.epsilon_used)

    @property
    def delta_remaining(self) -> float:
        return max(0.0, self.delta_total - self.delta_used)

    def describe(self) -> str:
        return (
            f"ε {self.epsilon_used:.4g} of {self.epsilon_total:.4g} used, {self.epsilon_remaining:.4g} left; "
            f"δ {self.delta_used:.3g} of {self.delta_total:.3g} used, {self.delta_remaining:.3g} left "
            f"({self.runs_settled} runs settled, {self.runs_reserved} reserved)"
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """A run's claim on the budget. `resumed` is True when the run id already held it (a restart)."""

    run_id: str
    dataset_hash: str
    epsilon: float
    delta: float
    resumed: bool


def _count(row: PrivacyLedgerRow) -> float:
    """What one entry takes of the ε budget: its plan while reserved, its real spend once settled."""
    if row.status == SETTLED and row.epsilon_spent is not None:
        return row.epsilon_spent
    return row.epsilon_planned


class BudgetLedger:
    """The privacy budget over all training runs; safe to use from many processes at once."""

    def __init__(
        self, engine: Engine, *, epsilon: float, delta: float, audit: AuditLog | None = None
    ) -> None:
        if not (epsilon > 0 and math.isfinite(epsilon)) or not 0 < delta < 1:
            raise BudgetError(
                f"invalid privacy budget ε={epsilon}, δ={delta}",
                hint="set KB_PRIVACY_BUDGET_EPSILON > 0 and 0 < KB_PRIVACY_BUDGET_DELTA < 1",
            )
        self.engine = engine
        self.epsilon = epsilon
        self.delta = delta
        self.audit = audit if audit is not None else AuditLog(engine)

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> BudgetLedger:
        return cls(
            engine, epsilon=settings.privacy.budget_epsilon, delta=settings.privacy.budget_delta,
            audit=AuditLog.from_settings(settings, engine),
        )  # fmt: skip

    # --- reading ---

    def state(self) -> BudgetState:
        with Session(self.engine) as session:
            return self._state(session)

    def entries(self) -> list[PrivacyLedgerRow]:
        with Session(self.engine) as session:
            query = select(PrivacyLedgerRow).order_by(col(PrivacyLedgerRow.reserved_at))
            return list(session.execute(query).scalars().all())

    def get(self, run_id: str) -> PrivacyLedgerRow | None:
        with Session(self.engine) as session:
            return session.get(PrivacyLedgerRow, run_id)

    def check(self, *, epsilon: float, delta: float, run_id: str | None = None) -> BudgetState:
        """Raise BudgetExceededError unless (ε, δ) fits in what remains; a dry run, nothing is locked.

        `run_id`'s own reservation, if any, is counted as available to it (a resumed run).
        """
        with Session(self.engine) as session:
            state = self._state(session, excluding=run_id)
        self._refuse_unless_fits(state, epsilon, delta, run_id or "(check)")
        return state

    # --- changing ---

    def reserve(
        self,
        run_id: str,
        *,
        dataset_hash: str,
        epsilon: float,
        delta: float,
        actor: str = "training",
        privacy_unit: str = "",
        details: dict[str, Any] | None = None,
        fingerprint: str = "",
    ) -> Reservation:
        """Claim (ε, δ) for `run_id` before it trains, or raise BudgetExceededError saying what remains.

        Calling it again for a run id that holds a reservation (the run was killed and resumes from
        its checkpoint) returns that reservation: the planned ε is counted once, not twice. The
        resumed run must be the same run: same ε, δ, dataset and, when given, the same
        `fingerprint` (a digest of its hyper-parameters); anything else is refused.
        """
        self._check_request(run_id, epsilon, delta, dataset_hash)
        if fingerprint:
            details = {**(details or {}), "fingerprint": fingerprint}
        try:
            reservation = self._reserve(run_id, dataset_hash, epsilon, delta, actor, privacy_unit, details)
        except BudgetExceededError as exc:
            # Audited after the lock's transaction ended: on SQLite the audit write needs that lock.
            self._audit("budget.refuse", run_id, actor=actor, outcome="refused", reason=exc.message)
            raise
        action = "budget.resume" if reservation.resumed else "budget.reserve"
        self._audit(action, run_id, actor=actor, epsilon=epsilon, delta=delta, dataset_hash=dataset_hash)
        return reservation

    def _reserve(
        self,
        run_id: str,
        dataset_hash: str,
        epsilon: float,
        delta: float,
        actor: str,
        privacy_unit: str,
        details: dict[str, Any] | None,
    ) -> Reservation:
        with self._locked() as session:
            existing = session.get(PrivacyLedgerRow, run_id)
            if existing is not None:
                reservation = self._resume(existing, dataset_hash, epsilon, delta, details or {})
            else:
                state = self._state(session)
                self._refuse_unless_fits(state, epsilon, delta, run_id)
                session.add(
                    PrivacyLedgerRow(
                        run_id=run_id,
                        dataset_hash=dataset_hash,
                        status=RESERVED,
                        epsilon_planned=epsilon,
                        delta=delta,
                        actor=actor[:200],
                        privacy_unit=privacy_unit[:200],
                        details=dict(details or {}),
                        reserved_at=utcnow(),
                    )
                )
                reservation = Reservation(run_id, dataset_hash, epsilon, delta, resumed=False)
        return reservation

    def settle(self, run_id: str, *, epsilon_spent: float, details: dict[str, Any] | None = None) -> None:
        """Replace `run_id`'s reservation by the ε it really spent (at the end of training)."""
        if not (epsilon_spent >= 0 and math.isfinite(epsilon_spent)):
            raise BudgetError(f"cannot settle run {run_id!r} with ε={epsilon_spent}")
        with self._locked() as session:
            row = session.get(PrivacyLedgerRow, run_id)
            if row is None:
                raise BudgetError(
                    f"run {run_id!r} has no reservation to settle", hint="reserve before training"
                )
            if row.status == SETTLED:
                raise BudgetError(f"run {run_id!r} was already settled at ε={row.epsilon_spent}")
            over = epsilon_spent > row.epsilon_planned + _SLACK
            row.status, row.epsilon_spent, row.settled_at = SETTLED, epsilon_spent, utcnow()
            row.details = {**row.details, **(details or {}), "over_reservation": over}
            planned, actor = row.epsilon_planned, row.actor
        # The truth is recorded even above the reservation (hiding spent ε would be worse); the
        # training loop stops before that can happen, so an "over" outcome means a bug to look at.
        outcome = "over reservation" if over else "ok"
        self._audit(
            "budget.settle", run_id, actor=actor, outcome=outcome, epsilon=epsilon_spent, planned=planned
        )

    def release(self, run_id: str) -> bool:
        """Drop the reservation of a run that spent nothing (it failed before its first private step).

        The ledger keeps no entry for such a run; the audit log keeps the story. Returns whether
        there was a reservation to drop. A settled entry is never released.
        """
        with self._locked() as session:
            row = session.get(PrivacyLedgerRow, run_id)
            if row is None:
                return False
            if row.status == SETTLED:
                raise BudgetError(f"run {run_id!r} is settled: its spent ε stays in the ledger")
            session.delete(row)
            actor = row.actor
        self._audit("budget.release", run_id, actor=actor)
        return True

    # --- inside ---

    @contextmanager
    def _locked(self) -> Iterator[Session]:
        """A transaction that holds the ledger lock from its first statement to its commit."""
        with session_scope(self.engine) as session:
            bumped = session.execute(
                update(PrivacyLedgerLockRow)
                .where(col(PrivacyLedgerLockRow.id) == 1)
                .values(version=col(PrivacyLedgerLockRow.version) + 1)
            )
            if getattr(bumped, "rowcount", 1) != 1:
                raise BudgetError("the privacy ledger's lock row is missing", hint="run `kb db upgrade`")
            yield session

    def _state(self, session: Session, *, excluding: str | None = None) -> BudgetState:
        rows = session.execute(select(PrivacyLedgerRow)).scalars().all()
        rows = [row for row in rows if row.run_id != excluding]
        return BudgetState(
            epsilon_total=self.epsilon,
            delta_total=self.delta,
            epsilon_used=sum(_count(row) for row in rows),
            delta_used=sum(row.delta for row in rows),
            runs_settled=sum(row.status == SETTLED for row in rows),
            runs_reserved=sum(row.status == RESERVED for row in rows),
        )

    def _refuse_unless_fits(self, state: BudgetState, epsilon: float, delta: float, run_id: str) -> None:
        if epsilon <= state.epsilon_remaining + _SLACK and delta <= state.delta_remaining * (1 + 1e-9):
            return
        raise BudgetExceededError(
            f"run {run_id!r} asks for ε={epsilon:.4g}, δ={delta:.3g} but the privacy budget has only "
            f"ε={state.epsilon_remaining:.4g}, δ={state.delta_remaining:.3g} left ({state.describe()})",
            hint="train with a smaller ε, or have the data owner raise KB_PRIVACY_BUDGET_EPSILON/_DELTA",
        )

    def _resume(
        self, row: PrivacyLedgerRow, dataset_hash: str, epsilon: float, delta: float, details: dict[str, Any]
    ) -> Reservation:
        if row.status == SETTLED:
            raise BudgetError(
                f"run {row.run_id!r} already finished and spent ε={row.epsilon_spent}",
                hint="start a new run under a new name",
            )
        if (
            row.dataset_hash != dataset_hash
            or not math.isclose(row.epsilon_planned, epsilon)
            or not (math.isclose(row.delta, delta))
        ):
            raise BudgetError(
                f"run {row.run_id!r} holds a reservation for ε={row.epsilon_planned}, δ={row.delta} on "
                f"dataset {row.dataset_hash[:12]}, not ε={epsilon}, δ={delta} on {dataset_hash[:12]}",
                hint="resume it with its original configuration and data, or start a new run name",
            )
        held, asked = row.details.get("fingerprint"), details.get("fingerprint")
        if held and asked and held != asked:
            raise BudgetError(
                f"run {row.run_id!r} resumes with other hyper-parameters than it reserved "
                f"ε={row.epsilon_planned} "
                "for: the noise was calibrated for the original ones",
                hint="resume it with its original configuration, or start a new run name",
            )
        return Reservation(row.run_id, row.dataset_hash, row.epsilon_planned, row.delta, resumed=True)

    @staticmethod
    def _check_request(run_id: str, epsilon: float, delta: float, dataset_hash: str) -> None:
        if not run_id or len(run_id) > 200:
            raise BudgetError(f"invalid run id {run_id!r}", hint="use 1 to 200 characters")
        if not (epsilon > 0 and math.isfinite(epsilon)) or not 0 < delta < 1:
            raise BudgetError(f"run {run_id!r} asks for an invalid (ε={epsilon}, δ={delta})")
        if not dataset_hash or len(dataset_hash) > 128:
            raise BudgetError(f"run {run_id!r} names no valid dataset hash", hint="pass 1 to 128 characters")

    def _audit(
        self, action: str, run_id: str, *, actor: str = "training", outcome: str = "ok", **params: Any
    ) -> None:
        self.audit.record(actor, action, target=run_id, outcome=outcome, params=params)
