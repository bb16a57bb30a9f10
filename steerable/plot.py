"""Plots of a finished (or running) run: ``python -m steerable.plot run_dir=<hydra run dir> [options]``.

Writes ``learning_curves.png``, ``kernel_slices.png`` and ``kernel_rotation.png`` into
``<run_dir>/plots/`` (see :mod:`steerable.run_plots`) and prints their paths.

Options (``key=value``): ``ckpt_path`` (default: the run's best ``epoch_*.ckpt``, else
``last.ckpt``), ``layer`` (index or module name of the implicit conv, default 0), ``entries``
(how many kernel entries to show, default 3), ``seed`` (group element of the rotation panel).
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from steerable.run_plots import plot_run

OPTIONS = {"run_dir": None, "ckpt_path": None, "layer": 0, "entries": 3, "seed": 0}


def main(argv: list[str] | None = None) -> None:
    """``python -m steerable.plot run_dir=… [ckpt_path=…] [layer=…] [entries=…] [seed=…]``."""
    args = OmegaConf.from_dotlist(list(sys.argv[1:] if argv is None else argv))
    unknown = set(args) - set(OPTIONS)
    if unknown or args.get("run_dir") is None:
        problem = f"unknown option(s) {sorted(unknown)}" if unknown else "run_dir=… is required"
        print(f"error: {problem}; usage: python -m steerable.plot run_dir=<dir> "
              f"[ckpt_path=<file>] [layer=0] [entries=3] [seed=0]", file=sys.stderr)
        sys.exit(2)
    options = {**OPTIONS, **OmegaConf.to_container(args)}
    try:
        for path in plot_run(**options):
            print(path)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
