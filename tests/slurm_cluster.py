"""A real single-node SLURM cluster for tests: private munged + slurmctld + slurmd in a temp dir.

Nothing is faked: the tests submit with the real ``sbatch`` and watch with the real
``squeue``/``scontrol``. Works as root without systemd or cgroups (proctrack/linuxproc,
task/none). SLURM's ports (6817/6818) are fixed, so a lock file serialises clusters on one
machine. Installs the Debian packages when missing (CI runs as root with apt), and raises
:class:`SlurmUnavailable` (the fixture turns it into a skip) when that is impossible.

Standalone use, to poke at a cluster by hand::

    python tests/slurm_cluster.py    # prints SLURM_CONF=...; Ctrl-C stops the daemons
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel", "srun",
            "munged", "mungekey"]
PORTS = (6817, 6818)  # slurmctld, slurmd
LOCK_PATH = Path(tempfile.gettempdir()) / "ladder-slurm-cluster.lock"
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM is not installed and cannot be installed here (the fixture skips)."""


def _missing() -> list[str]:
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [b for b in BINARIES if shutil.which(b, path=sbin) is None]


def _which(name: str) -> str:
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=sbin)
    if path is None:
        raise SlurmUnavailable(f"{name} not found on PATH (or /usr/sbin)")
    return path


def ensure_installed() -> None:
    """Install SLURM + munge from Debian packages when missing; ``apt-get update`` only if the
    first attempt fails (a fresh image's package lists may be stale or empty)."""
    missing = _missing()
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"SLURM binaries missing ({', '.join(missing)}) and no apt-get "
                               f"to install {' '.join(PACKAGES)}")
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"SLURM binaries missing ({', '.join(missing)}); installing "
                               f"{' '.join(PACKAGES)} needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", *PACKAGES]
    r = subprocess.run(install, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, text=True)
        r = subprocess.run(install, env=env, capture_output=True, text=True)
    if r.returncode != 0 or _missing():
        raise SlurmUnavailable(f"could not install {' '.join(PACKAGES)} "
                               f"(apt-get exit {r.returncode}): {r.stderr.strip()[-2000:]}")


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class LocalSlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager).

    ``env`` is the environment for client commands (``SLURM_CONF`` points at this cluster);
    jobs inherit it because sbatch exports the submitting environment.
    """

    def __init__(self, cpus: int = 2, real_memory_mb: int = 1000, kill_wait_s: int = 5,
                 lock_timeout_s: float = 900.0):
        self.cpus = cpus
        self.real_memory_mb = real_memory_mb
        self.kill_wait_s = kill_wait_s
        self.lock_timeout_s = lock_timeout_s
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ paths / env
    @property
    def conf(self) -> Path:
        assert self.root is not None
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> str:
        """A daemon's log (slurmctld, slurmd, munged) for failure messages."""
        assert self.root is not None
        p = self.root / "log" / f"{name}.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else f"({p} missing)"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalSlurmCluster":
        ensure_installed()
        self._acquire_lock()
        try:
            busy = [p for p in PORTS if _port_in_use(p)]
            if busy:
                raise RuntimeError(f"ports {busy} already in use: another SLURM cluster runs on "
                                   f"this machine (SLURM's ports are fixed); stop it first")
            # Short path: the munge socket must fit in sun_path (108 bytes).
            self.root = Path(tempfile.mkdtemp(prefix="ladder-slurm-"))
            for d in ("state", "spool", "log", "run"):
                (self.root / d).mkdir()
            self._start_munge()
            self._write_conf()
            log = self.root / "log"
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)],
                        log / "slurmctld.out")
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)],
                        log / "slurmd.out")
            self.wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel this cluster's jobs, stop the daemons by PID, release the lock."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run([_which("scancel"), "--user", str(os.getuid())], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + self.kill_wait_s + 10
            while time.monotonic() < deadline and self.squeue_ids():
                time.sleep(0.5)
        # slurmds first (however many), then the controller, munge last: they need it
        for name in [*(n for n in self.procs if n not in ("slurmctld", "munged")),
                     "slurmctld", "munged"]:
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self._cleanup()
        if self.root is not None and os.environ.get("LADDER_KEEP_SLURM_DIR") != "1":
            shutil.rmtree(self.root, ignore_errors=True)
        self._release_lock()

    def __enter__(self) -> "LocalSlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``cluster.run("scontrol", "show", "job")``)."""
        r = subprocess.run([_which(args[0]), *args[1:]], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def squeue_ids(self) -> list[str]:
        r = self.run("squeue", "--noheader", "--array", "--format=%i", check=False)
        return r.stdout.split() if r.returncode == 0 else []

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the node is up and idle (daemons talk, munge works)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log(name)}")
            r = self.run("sinfo", "--noheader", "--format=%T", check=False, timeout=10)
            last = (r.stdout + r.stderr).strip()
            if r.returncode == 0 and last == "idle":
                return
            time.sleep(0.3)
        raise RuntimeError(f"SLURM node not idle after {timeout}s (sinfo: {last!r})\n"
                           f"slurmctld:\n{self.log('slurmctld')}\nslurmd:\n{self.log('slurmd')}")

    def expedite_requeued(self, delay_s: int = 3) -> list[str]:
        """Make requeued jobs eligible in ``delay_s`` seconds instead of SLURM's ~120 s
        (BeginTime), as an operator may; the tests do so to stay fast. Not sooner: a job
        restarted within the second of its requeue is refused ("Job credential revoked")."""
        r = self.run("squeue", "--noheader", "--array", "--states=PENDING", "--format=%i %r %S",
                     check=False)
        ids = []
        for line in r.stdout.splitlines():
            job_id, reason, start = (line.split() + ["", "", ""])[:3]
            if reason != "BeginTime":
                continue
            try:
                wait = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) - time.time()
            except ValueError:
                continue
            if wait > delay_s + 2:
                self.run("scontrol", "update", f"JobId={job_id}", f"StartTime=now+{delay_s}",
                         check=False)
                ids.append(job_id)
        return ids

    def wait_jobs_gone(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.squeue_ids():
                return
            time.sleep(0.5)
        raise TimeoutError(f"jobs still queued after {timeout}s: {self.squeue_ids()}")

    # ------------------------------------------------------------------ internals
    lock_path = LOCK_PATH

    def _cleanup(self) -> None:
        """What a subclass set up besides the daemons, undone before the lock is released."""

    def _acquire_lock(self) -> None:
        self._lock_fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                    raise RuntimeError(f"another test SLURM cluster holds {self.lock_path} "
                                       f"for over {self.lock_timeout_s:.0f}s")
                time.sleep(1)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _spawn(self, name: str, argv: list[str], out: Path) -> None:
        with open(out, "ab") as f:
            self.procs[name] = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env,
                                                start_new_session=True)

    def _start_munge(self) -> None:
        assert self.root is not None
        key = self.root / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True,
                       capture_output=True)
        key.chmod(0o600)
        self._spawn("munged", [
            _which("munged"), "-F", "--force", f"--socket={self.munge_socket}",
            f"--key-file={key}", f"--pid-file={self.root / 'run' / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'state' / 'munged.seed'}",
        ], self.root / "log" / "munged.out")
        deadline = time.monotonic() + 10
        while not Path(self.munge_socket).exists():
            if self.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start:\n{self.log('munged')}")
            time.sleep(0.05)

    @property
    def munge_socket(self) -> str:
        assert self.root is not None
        return str(self.root / "munge.sock")

    def _write_conf(self) -> None:
        self.conf.write_text("\n".join(self._conf_lines()) + "\n")

    def _conf_lines(self) -> list[str]:
        r = self.root
        assert r is not None
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
        lines = [
            "ClusterName=ladder-test",
            "SlurmctldHost=localhost",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"SlurmctldPort={PORTS[0]}",
            f"SlurmdPort={PORTS[1]}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "JobRequeue=1",
            f"KillWait={self.kill_wait_s}",
            "MinJobAge=600",
            "InactiveLimit=0",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.real_memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        return lines


def slurm_cluster_fixture():
    """Session fixture body: one cluster for all SLURM tests, SLURM_CONF exported meanwhile."""
    import pytest

    cluster = LocalSlurmCluster()
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(f"no SLURM: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


try:  # a fixture when imported by tests/conftest.py (once: it is session-scoped)
    import pytest as _pytest

    slurm_cluster = _pytest.fixture(scope="session", name="slurm_cluster")(slurm_cluster_fixture)
except ImportError:  # standalone use without pytest
    pass


def main(cluster_class=None) -> int:
    """Start a cluster, print its SLURM_CONF, stop it on Ctrl-C (also tests/slurm_multinode.py).
    Signals are blocked only once the daemons run: they inherit the mask, and daemons started
    with SIGTERM blocked would each sit out stop()'s grace period before being killed."""
    cluster = (cluster_class or LocalSlurmCluster)()
    os.environ["LADDER_KEEP_SLURM_DIR"] = os.environ.get("LADDER_KEEP_SLURM_DIR", "0")
    cluster.start()
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        print(f"export SLURM_CONF={cluster.conf}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
