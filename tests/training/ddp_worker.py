"""A distillation run in its own process: one rank under `torchrun --nproc_per_node 2`, or alone.

Trains the tiny student with DPDDP over gloo, then writes this rank's final weights checksum and ε
to OUT/rank-R.json. Rank 0 alone holds the budget ledger (a SQLite file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch
    import torch.distributed as dist

    parser = argparse.ArgumentParser()
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--run", default="ddp")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pause-after", type=int, default=0, help="sleep after this step, to be killed")
    args = parser.parse_args()
    warnings.simplefilter("error")
    torch.set_num_threads(1)
    distributed = "RANK" in os.environ  # started by torchrun
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0

    from tests.training.students import load_student, synthetic_examples, worker_config
    from training.distill import StepInfo, distill

    ledger = None
    if rank == 0:
        from core import db
        from core.settings import load_settings
        from privacy.budget import BudgetLedger

        engine = db.make_engine(load_settings(database_url=args.database, data_dir=args.out / "var"))
        ledger = BudgetLedger(engine, epsilon=10.0, delta=1e-4)
    model = load_student(args.student)
    examples = synthetic_examples(32, vocab=model.config.vocab_size)
    config = worker_config(args.out, mode=args.mode, epochs=args.epochs)

    def pause(info: StepInfo) -> None:
        print(f"step {info.step}", flush=True)
        if info.step == args.pause_after:
            time.sleep(600)  # the test kills this process here

    result = distill(
        model, examples, config, ledger=ledger, dataset_hash="h", run_name=args.run, pad_id=0, on_step=pause
    )
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    report = {
        "rank": rank,
        "weights": digest.hexdigest(),
        "epsilon": result.epsilon_spent,
        "steps": result.steps,
        "world_size": result.extra["world_size"],
        "mode": result.extra["grad_sample_mode"],
    }
    if distributed:
        report["noise_ratio"] = noise_probe()
    (args.out / f"rank-{rank}.json").write_text(json.dumps(report))
    if distributed:
        dist.destroy_process_group()


def noise_probe(width: int = 256, per_rank: int = 8) -> float:
    """One DP step on zero gradients with SGD(lr=1): the update is the noise alone, averaged over the batch.

    Returns its standard deviation over sigma * C / (global expected batch): 1.0 when the noise is
    added once for all ranks, sqrt(world) when every rank adds its own.
    """
    import torch
    from torch import nn

    from training import dp

    class ZeroLoss(nn.Module):
        reduction = "mean"

        def forward(self, output: torch.Tensor) -> torch.Tensor:
            per_sample = 0.0 * output.sum(-1)
            return per_sample if self.reduction == "none" else per_sample.mean()

    world = torch.distributed.get_world_size()
    model = nn.Linear(width, width, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    rows = [torch.randn(width) for _ in range(per_rank * world)]
    sampler = dp.PoissonSampler(
        len(rows), sample_rate=1.0, steps=1, seed=0, rank=torch.distributed.get_rank(), world_size=world
    )
    loader = torch.utils.data.DataLoader(rows, batch_sampler=sampler)  # type: ignore[arg-type, var-annotated]
    plan = dp.PrivacyPlan(1.0, 1e-5, 1.0, 1.0, 1, 1, "rdp")
    private = dp.make_private(model, optimizer, loader, ZeroLoss(), plan, max_grad_norm=1.0, mode="hooks")
    for batch in private.data_loader:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "Full backward hook is firing", UserWarning
            )  # inputs need no grad
            private.criterion(private.module(batch)).backward()
        private.optimizer.step()
    return float(model.weight.detach().std()) * len(rows) / (plan.noise_multiplier * 1.0)


if __name__ == "__main__":
    main()
