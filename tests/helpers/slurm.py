"""A real single-node SLURM cluster on 127.0.0.1 for tests (Debian ``slurm-wlm`` + ``munge``).

Settings that work on these machines (see DESIGN.md §5): cgroup plugins fail, so
``proctrack/linuxproc`` + ``task/none``; ``select/cons_tres`` with ``DefMemPerCPU`` so jobs share
the node; controller and node on 127.0.0.1 with ``slurmd -N <name>``; no accounting (so every wait
on a job must be bounded by the caller). Each cluster gets fresh state/spool dirs and ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NODE = "stnode"
PARTITION = "debug"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "scancel")


class SlurmUnavailable(RuntimeError):
    """The cluster could not be started (the reason is the message)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(*cmd: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def ensure_munge() -> None:
    """Start ``munged`` (as the munge user, or ``--force`` as root) unless it already answers."""
    if _run("sh", "-c", "munge -n | unmunge").returncode == 0:
        return
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    started = _run("runuser", "-u", "munge", "--", "munged")
    if started.returncode != 0:
        started = _run("munged", "--force")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _run("sh", "-c", "munge -n | unmunge").returncode == 0:
            return
        time.sleep(0.5)
    raise SlurmUnavailable(f"munged did not start: {started.stderr.strip() or started.stdout.strip()}")


class LocalSlurm:
    """Start ``slurmctld`` + ``slurmd`` in ``root``; ``env`` holds ``SLURM_CONF`` for clients.

    Args:
        root: empty directory for config, state, spool and logs.
        cpus: CPUs the node advertises.
        memory_mb: memory the node advertises.
    """

    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 4000) -> None:
        self.root, self.cpus, self.memory_mb = root, cpus, memory_mb
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[subprocess.Popen] = []

    def write_conf(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(f"""\
ClusterName=steerabletest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 60) -> None:
        """Start both daemons and wait until the node is idle.

        Raises:
            SlurmUnavailable: with the reason (missing binaries, daemon exit, node never idle).
        """
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
        ensure_munge()
        self.write_conf()
        log = (self.root / "daemons.out").open("w")
        self.daemons.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=self.env,
                                             stdout=log, stderr=subprocess.STDOUT))
        self.daemons.append(subprocess.Popen(["slurmd", "-D", "-N", NODE, "-f", str(self.conf)], env=self.env,
                                             stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if any(d.poll() is not None for d in self.daemons):
                raise SlurmUnavailable(f"a SLURM daemon exited: {self.log_tail()}")
            state = _run("sinfo", "-h", "-N", "-o", "%T", env=self.env).stdout.strip()
            if state.startswith("idle"):
                return
            if state.startswith(("down", "drain")):
                _run("scontrol", "update", f"nodename={NODE}", "state=resume", env=self.env)
            time.sleep(1)
        raise SlurmUnavailable(f"node not idle after {timeout:.0f}s (state {state!r}): {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = ""
        for name in ("slurmctld.log", "slurmd.log", "daemons.out"):
            path = self.root / name
            if path.exists():
                text += f"\n--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:])
        return text

    def stop(self) -> None:
        """Cancel jobs first (job processes outlive slurmd), then stop the daemons."""
        if self.conf.exists() and shutil.which("scancel"):
            _run("scancel", "--full", "--partition", PARTITION, env=self.env)
            time.sleep(1)
        for daemon in reversed(self.daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=5)
        self.daemons.clear()
