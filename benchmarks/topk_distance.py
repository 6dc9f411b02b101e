"""What top-k OLS costs on a real run: its matrix against the dense one, and its accuracy against dense OLS.

Per dataset and seed, two trainings through the engine's public API (a Trainer, then per epoch `start_epoch`,
`train_one_epoch`, `next_epoch`, `evaluate`):
- dense OLS, with top-k OLS losses (one per top_k) fed the same logits as shadows: after every epoch, the per-row
  L1 distance between each shadow's S and the dense S (mean and largest over the rows) and the bound the method
  card states, 2 x the row's residual mass; the trajectory is the same, so this isolates the approximation;
- top-k OLS (the smallest top_k) trained on its own: the top-1 difference to the dense run, same seed.

    .venv/bin/python -m benchmarks.topk_distance [--quick] [--datasets digits synthetic-1k] [--seeds 0 1 2]
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from olsmooth import OnlineLabelSmoothing
from olsmooth.engine.config import TrainConfig
from olsmooth.engine.trainer import Trainer

from .common import benchmark_parser, command_line, finish, grid_table, machine_info, parse_benchmark_args

TOP_K = {"digits": (2, 4), "fashion-mnist": (2, 4), "synthetic-1k": (8, 32)}
EPOCHS = {"digits": 12, "fashion-mnist": 5, "synthetic-1k": 6}
TRAIN_SUBSET = {"fashion-mnist": 10_000}


class ShadowedOLS(OnlineLabelSmoothing):
    """Dense OLS that also feeds every training batch's logits to top-k OLS shadows (statistics only)."""

    def __init__(self, num_classes: int, top_ks: Sequence[int]) -> None:
        super().__init__(num_classes)
        self.shadows = torch.nn.ModuleList(OnlineLabelSmoothing(num_classes, top_k=m) for m in top_ks)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        for shadow in self.shadows:
            shadow(logits.detach(), target)
        return super().forward(logits, target)

    def next_epoch(self) -> None:
        super().next_epoch()
        for shadow in self.shadows:
            shadow.next_epoch()


def row_distances(shadow: OnlineLabelSmoothing, dense: Tensor) -> dict[str, float]:
    """Per-row L1 between the shadow's S and the dense S: mean and largest, and the largest bound 2 x residual."""
    l1 = (shadow.soft_labels - dense).abs().sum(dim=1)
    residual = shadow.sparse_soft_labels[2]
    return {"l1_mean": float(l1.mean()), "l1_max": float(l1.max()), "bound_max": float(2 * residual.max()),
            "bound_holds": bool((l1 <= 2 * residual + 1e-5).all())}


def trainer_for(dataset: str, seed: int, epochs: int, loss_options: dict[str, Any], out: str) -> Trainer:
    cfg = TrainConfig(dataset=dataset, method="ols", loss_options=loss_options, epochs=epochs, seed=seed, threads=1,
                      workers=0, out=out, force=True, train_subset=TRAIN_SUBSET.get(dataset))
    return Trainer(cfg, log=lambda _msg: None)


def train(trainer: Trainer, epochs: int, each_epoch: Any = None) -> list[float]:
    """Train `epochs` epochs through the public API; per epoch the test top-1, after calling each_epoch(epoch)."""
    top1 = []
    for epoch in range(epochs):
        trainer.start_epoch(epoch)
        trainer.train_one_epoch()
        trainer.criterion.next_epoch()
        trainer.state.epoch = epoch + 1
        if each_epoch is not None:
            each_epoch(epoch + 1)
        top1.append(trainer.evaluate()["top1"])
    return top1


def measure(dataset: str, seed: int, epochs: int) -> dict[str, Any]:
    """The shadowed dense run and the top-k run of one dataset and seed."""
    top_ks = TOP_K[dataset]
    with tempfile.TemporaryDirectory() as folder:
        dense = trainer_for(dataset, seed, epochs, {}, f"{folder}/dense")
        dense.criterion = ShadowedOLS(dense.bundle.num_classes, top_ks)
        distances: list[dict[str, Any]] = []

        def record(epoch: int) -> None:
            for m, shadow in zip(top_ks, dense.criterion.shadows):
                distances.append({"epoch": epoch, "top_k": m,
                                  **row_distances(shadow, dense.criterion.soft_labels)})

        dense_top1 = train(dense, epochs, record)
        sparse = trainer_for(dataset, seed, epochs, {"top_k": top_ks[0]}, f"{folder}/sparse")
        sparse_top1 = train(sparse, epochs)
    return {"dataset": dataset, "seed": seed, "num_classes": dense.bundle.num_classes, "epochs": epochs,
            "distances": distances, "dense_top1": dense_top1, "sparse_top1": sparse_top1, "sparse_top_k": top_ks[0]}


def render(payload: dict[str, Any]) -> str:
    """Per dataset, top_k and epoch, over the seeds: the mean of the mean row L1, the largest row L1 and bound;
    then each seed's final top-1 of both runs."""
    lines = ["# Top-k OLS against dense OLS on real runs", "",
             f"- Command: `{payload['command']}`",
             "- L1: per-row L1 distance between top-k S and dense S on the same trajectory (shadow losses fed the "
             "dense run's logits); mean row L1 averaged over the seeds, max row L1 and the bound (2 x a row's "
             "residual) the largest over rows and seeds", ""]
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for result in payload["results"]:
        for d in result["distances"]:
            groups.setdefault((result["dataset"], d["top_k"], d["epoch"]), []).append(d)
    rows = [[name, m, epoch, len(ds), f"{np.mean([d['l1_mean'] for d in ds]):.4f}",
             f"{max(d['l1_max'] for d in ds):.4f}", f"{max(d['bound_max'] for d in ds):.4f}",
             "yes" if all(d["bound_holds"] for d in ds) else "NO"] for (name, m, epoch), ds in groups.items()]
    lines.append(grid_table(["dataset", "top_k", "epoch", "seeds", "mean row L1", "max row L1", "max bound",
                             "within bound"], rows))
    lines += ["", "Final test top-1 (%), dense OLS and top-k OLS trained separately, same seed:", ""]
    acc = []
    for result in payload["results"]:
        d, s = result["dense_top1"][-1], result["sparse_top1"][-1]
        acc.append([result["dataset"], result["seed"], result["sparse_top_k"], f"{d:.2f}", f"{s:.2f}", f"{s - d:+.2f}"])
    lines.append(grid_table(["dataset", "seed", "top_k", "dense top-1", "top-k top-1", "difference"], acc))
    by_dataset: dict[str, list[float]] = {}
    for result in payload["results"]:
        by_dataset.setdefault(result["dataset"], []).append(result["sparse_top1"][-1] - result["dense_top1"][-1])
    lines += [""] + [f"- {name}: mean top-1 difference {np.mean(v):+.2f} points over {len(v)} seed(s)"
                     for name, v in by_dataset.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__spec__.name, __doc__, quick="digits, one seed, 3 epochs", device="unused (CPU)",
                              threads=1)
    parser.add_argument("--datasets", nargs="+", default=["digits", "synthetic-1k"], choices=sorted(TOP_K))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parse_benchmark_args(parser, argv)
    datasets, seeds = (["digits"], [0]) if args.quick else (args.datasets, args.seeds)
    payload: dict[str, Any] = {"benchmark": "topk_distance", "command": command_line(argv, __spec__.name),
                               "machine": machine_info(), "results": []}
    for dataset in datasets:
        for seed in seeds:
            print(f"topk distance: {dataset} seed {seed} ...", file=sys.stderr, flush=True)
            payload["results"].append(measure(dataset, seed, 3 if args.quick else EPOCHS[dataset]))
    return finish(args.out, "topk_distance", payload, render)


if __name__ == "__main__":
    sys.exit(main())
