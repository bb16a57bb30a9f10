"""A CSV logger that keeps a run's history across resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its directory already holds files, so a run
resumed in its own run dir (``resume=auto`` / ``ckpt_path=last``) loses the learning curves of
every epoch before the interruption. :class:`ResumableCSVLogger` keeps them: it appends to the
existing file, and on its first write drops old rows from steps the resumed run is about to log
again (work done after the checkpoint and lost with the kill).

It is the ``logger=csv`` default (``conf/logger/csv.yaml``; same arguments as Lightning's).
"""

from __future__ import annotations

import csv

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
            self._drop_rows_from(min(int(row["step"]) for row in self.metrics))
            self._resumed = False
        super().save()

    def _drop_rows_from(self, step: int) -> None:
        """Rewrite ``metrics.csv`` without rows logged at ``step`` or later (atomically)."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = reader.fieldnames or self.metrics_keys
            rows = [row for row in reader if not row.get("step") or int(float(row["step"])) < step]
        with atomic_write(self.metrics_file_path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` whose ``metrics.csv`` survives a resume (see module doc)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
