"""`kb budget`: the differential-privacy budget that training runs spend (privacy/budget.py)."""

from __future__ import annotations

import typer

from app.support import JsonOption, cli_settings, friendly_errors, migrated_engine, out, print_json

budget_app = typer.Typer(help="The privacy budget of DP training runs.", no_args_is_help=True)


@budget_app.command("show")
@friendly_errors
def budget_show(as_json: JsonOption = False) -> None:
    """The configured (ε, δ) budget, what runs have spent or reserved of it, and each run's entry."""
    from privacy.budget import BudgetLedger

    settings = cli_settings()
    engine = migrated_engine(settings)
    ledger = BudgetLedger.from_settings(settings, engine)
    state, entries = ledger.state(), ledger.entries()
    if as_json:
        print_json(
            {
                "epsilon_total": state.epsilon_total,
                "delta_total": state.delta_total,
                "epsilon_used": state.epsilon_used,
                "delta_used": state.delta_used,
                "epsilon_remaining": state.epsilon_remaining,
                "delta_remaining": state.delta_remaining,
                "runs": [row.model_dump() for row in entries],
            }
        )
        return
    out.print(f"Privacy budget: {state.describe()}", highlight=False, markup=False)
    for row in entries:
        spent = f"spent ε={row.epsilon_spent:.4g}" if row.epsilon_spent is not None else "reserved"
        out.print(
            f"  {row.run_id}: {spent} (planned ε={row.epsilon_planned:.4g}, δ={row.delta:.3g}) "
            f"on dataset {row.dataset_hash[:12]} at {row.reserved_at:%Y-%m-%d %H:%M}",
            highlight=False,
            markup=False,
        )
