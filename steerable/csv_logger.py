"""A CSV logger that keeps a run's history across resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its directory already holds files, so a run
resumed in its own run dir (``resume=auto`` / ``ckpt_path=last``) loses the learning curves of
every epoch before the interruption. :class:`ResumableCSVLogger` keeps them: it appends to the
existing file, and on its first write drops old rows from steps the resumed run is about to log
again (work done after the checkpoint and lost with the kill); a run that only tests (``train=false``,
or a finished run re-run) replaces the old test rows and keeps the learning curves.

It is the ``logger=csv`` default (``conf/logger/csv.yaml``; same arguments as Lightning's).
"""

from __future__ import annotations

import csv
from collections.abc import Callable

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from steerable.io_utils import atomic_write


class ResumingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing ``metrics.csv``."""

    def _check_log_dir_exists(self) -> None:
        self._resumed = self._fs.isfile(self.metrics_file_path)
        if self._resumed:
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = sorted(csv.DictReader(handle).fieldnames or [])

    def save(self) -> None:
        if self._resumed and self.metrics:
            if all(_test_only(row) for row in self.metrics):  # a test of the run (train=false, finished
                self._keep_rows(lambda row: not _test_only(row))  # run): replaces the old test rows only
            else:  # training resumed: drop what was logged after the checkpoint, lost with the kill
                step = min(int(row["step"]) for row in self.metrics)
                self._keep_rows(lambda row: not row.get("step") or int(float(row["step"])) < step)
            self._resumed = False
        super().save()

    def _keep_rows(self, keep: Callable[[dict[str, str]], bool]) -> None:
        """Rewrite ``metrics.csv`` with only the rows ``keep`` accepts (atomically)."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = reader.fieldnames or self.metrics_keys
            rows = [row for row in reader if keep(row)]
        with atomic_write(self.metrics_file_path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


def _test_only(row: dict) -> bool:
    """Whether a metrics row holds test metrics only (besides ``step``/``epoch``)."""
    keys = [k for k, v in row.items() if k not in ("step", "epoch") and v not in ("", None)]
    return bool(keys) and all(k.startswith("test/") for k in keys)


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` whose ``metrics.csv`` survives a resume (see module doc)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
