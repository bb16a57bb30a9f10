"""Per-trajectory position MSE of N-body checkpoints on the validation and test splits.

    python experiments/peers/per_trajectory.py CKPT [CKPT ...]

For each checkpoint (written by ``steerable.train``): mean and median over trajectories, the worst
trajectory's MSE, the share of the split's MSE that its worst 1 % of trajectories carry, and the mean
without them.
"""

from __future__ import annotations

import argparse

import torch
from torch_geometric.loader import DataLoader

from steerable.checkpoint import load_checkpoint
from steerable.data.nbody import NBodyDataModule


def summary(errors: torch.Tensor) -> str:
    worst = errors.sort(descending=True).values
    k = len(worst) // 100
    return (f"mean {errors.mean():.5f} median {errors.median():.5f} worst {worst[0]:.4g} worst-1% share "
            f"{worst[:k].sum() / worst.sum():.2f} mean without them {worst[k:].mean():.5f}")


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    for path in paths:
        task, cfg = load_checkpoint(path)
        data = NBodyDataModule(cfg.dataset.data_dir, progress=False, n_train=cfg.dataset.n_train,
                               n_val=cfg.dataset.n_val, n_test=cfg.dataset.n_test, seed=cfg.dataset.seed)
        data.setup()
        parts = []
        for split in ("val", "test"):
            errors = []
            with torch.no_grad():
                for batch in DataLoader(data.datasets[split], batch_size=500):
                    per_particle = ((task.model(batch) - batch.y) ** 2).mean(-1)
                    errors.append(per_particle.view(batch.num_graphs, -1).mean(-1))
            parts.append(f"{split}: {summary(torch.cat(errors))}")
        print(f"{cfg.model._target_.rsplit('.', 1)[-1]} {path}\n  " + "\n  ".join(parts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="steerable.train checkpoints")
    main(parser.parse_args().checkpoints)
