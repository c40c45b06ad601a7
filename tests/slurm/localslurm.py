"""A one-node SLURM cluster on localhost, for testing the workflow's SLURM profile for real.

``LocalSlurm()`` installs SLURM and MUNGE from Debian when they are missing (needs root and apt-get),
writes a ``slurm.conf`` without accounting, starts its own ``munged``, ``slurmctld`` and ``slurmd``
(socket, key, state, logs and free ports in a fresh temporary folder) and, on exit, cancels the jobs,
stops exactly those daemons and removes the config and the folder. The config has to be at SLURM's
default path (see ``SYSTEM_CONF``); one that this module did not write is never replaced, and a lock
keeps two test clusters on one machine from running at the same time.

By hand (Ctrl-C stops it)::

    python tests/slurm/localslurm.py
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEBIAN_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
REQUIRED_COMMANDS = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun"]
DAEMONS = ["munged", "slurmctld", "slurmd"]
# The executor's job step drops SLURM_CONF before its nested `srun`, which then reads the compiled-in
# default path: the config has to live there (real clusters keep it there too).
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
CONF_MARKER = "# written by tests/slurm/localslurm.py; removed when its cluster stops\n"
LOCK = Path(tempfile.gettempdir()) / "localslurm.lock"  # one local cluster per machine at a time


class SlurmUnavailable(Exception):
    """The local test cluster cannot run here: SLURM is missing and cannot be installed (not root, no
    apt-get), or the machine's own SLURM configuration occupies the default path."""


def search_path() -> str:
    """PATH with the sbin folders, where Debian puts the daemons."""
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def missing_commands() -> list[str]:
    """The SLURM/MUNGE commands not found on the search path."""
    return [name for name in REQUIRED_COMMANDS if shutil.which(name, path=search_path()) is None]


def install_if_missing(timeout: float = 300) -> None:
    """Install the Debian packages of SLURM and MUNGE unless their commands are already there."""
    if not missing_commands():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"SLURM commands {missing_commands()} are missing and cannot be installed "
                               "(needs root and apt-get): install the Debian packages "
                               f"{' '.join(DEBIAN_PACKAGES)} by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    if missing_commands():
        raise RuntimeError(f"installed {DEBIAN_PACKAGES} but still missing {missing_commands()}")


def check_system_conf_is_free() -> None:
    """Refuse to replace a SLURM configuration that this module did not write."""
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.read_text(errors="replace").startswith(CONF_MARKER):
        raise SlurmUnavailable(f"{SYSTEM_CONF} belongs to this machine's own SLURM; the local test cluster "
                               "needs that path and will not replace it")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(folder: Path, host: str, hardware: str, munge_socket: Path) -> str:
    """A one-node slurm.conf: no accounting (squeue is the only status source), no cgroups."""
    return CONF_MARKER + f"""\
ClusterName=localtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
PlugStackConfig={folder}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# finished jobs stay visible to `squeue --states=all` this long (the executor's status source)
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """A one-node SLURM cluster on localhost, started on ``__enter__`` and stopped on ``__exit__``."""

    def __init__(self, start_timeout: float = 60, lock_timeout: float = 900):
        self.folder: Path | None = None  # created on start
        self.start_timeout = start_timeout
        self.lock_timeout = lock_timeout
        self.lock = None
        self.conf = SYSTEM_CONF
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": search_path()}

    def __enter__(self) -> LocalSlurm:
        install_if_missing()
        self._acquire_lock()
        try:
            check_system_conf_is_free()
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _acquire_lock(self) -> None:
        """Wait until no other LocalSlurm on this machine runs (they share the system config path)."""
        self.lock = open(LOCK, "a")
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.lock.close()
                    held = f"another local SLURM test cluster held {LOCK} for {self.lock_timeout} s"
                    raise RuntimeError(held) from None
                time.sleep(1)

    def run(self, *command: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def _start(self) -> None:
        # munged wants every directory above its socket searchable by all, and sockets want short
        # paths: a fresh folder directly under the system temp dir satisfies both.
        self.folder = Path(tempfile.mkdtemp(prefix="localslurm-")).resolve()
        self.folder.chmod(0o755)
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(exist_ok=True)
        (self.folder / "plugstack.conf").write_text("")
        key, munge_socket = self.folder / "munge.key", self.folder / "munge.sock"
        self.run("mungekey", "--create", f"--keyfile={key}")
        host = socket.gethostname().split(".")[0]
        hardware = self.run("slurmd", "-C").stdout.splitlines()[0].split()
        hardware = " ".join(field for field in hardware if not field.startswith("NodeName="))
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(slurm_conf(self.folder, host, hardware, munge_socket))

        self._spawn("munged", ["munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
                               f"--pid-file={self.folder}/munged.pid", f"--seed-file={self.folder}/munged.seed",
                               f"--log-file={self.folder}/munged.log"])
        self._wait_for(lambda: munge_socket.exists(), "munged to create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", host])
        self._wait_for(self._node_is_idle, "the node to be idle in sinfo")

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "w")
        # a session of their own: a Ctrl-C meant for the caller does not reach them, only stop() does
        self.processes[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _node_is_idle(self) -> bool:
        done = self.run("sinfo", "--noheader", "--format=%t", check=False)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"local SLURM: gave up waiting for {what} "
                                   f"({'exited: ' + ', '.join(dead) if dead else 'timeout'}):\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        """The tail of every daemon's log, for failure messages."""
        parts = []
        for name in DAEMONS if self.folder else []:
            for path in (self.folder / f"{name}.out", self.folder / f"{name}.log"):
                if path.exists():
                    parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons this object started (newest first), remove its folder."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
            except subprocess.TimeoutExpired:
                pass
        for name in reversed(list(self.processes)):
            proc = self.processes.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        if self.conf.exists() and self.conf.read_text(errors="replace").startswith(CONF_MARKER):
            self.conf.unlink()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None


def main() -> None:
    def finish(*_):
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, finish)
    with LocalSlurm() as cluster:
        print(f"local SLURM up: config {cluster.conf}, daemon logs in {cluster.folder}; Ctrl-C stops it", flush=True)
        signal.pause()


if __name__ == "__main__":
    main()
