"""A real two-node SLURM cluster on one machine: each node is a network namespace of its own.

Three namespaces made here, joined by a bridge in the root namespace (10.77.0.0/24):
``ladder-ctl`` runs slurmctld (10.77.0.254), ``ladder-n0`` and ``ladder-n1`` each run a slurmd
for nodes ``n0`` (10.77.0.1) and ``n1`` (10.77.0.2) on interface ``ladder0``. The nodes have
separate network stacks, so a multi-node rung's ranks reach each other over the bridge exactly
as across machines; clients (sbatch, scontrol) run in the root namespace and reach the
controller through the bridge's own address (10.77.0.253). No SLURM port is opened in the root
namespace, so this cluster never collides with :class:`LocalSlurmCluster` (6817/6818 there):
both can run at once, in one pytest session too; its own lock file serialises two-node clusters.
Nothing global is edited (no /etc/hosts): SLURM reaches the nodes by ``NodeAddr``.

Each node has a second interface, ``ladder1`` (:data:`WRONG_IFNAME`, 10.78.0.x), that reaches no
other node, and its own hostname (``n0``, ``n1``: a UTS namespace) that resolves to that wrong
address (its own /etc/hosts, bind-mounted in a mount namespace): as on a cluster whose hostnames
resolve to the management network while the rung must meet on another. gloo binds the hostname's
address unless told its interface; the rendered job derives it on each node from the route to
MASTER_ADDR (ladder/sweep/slurm_script.py), so a rung completes only if that works.

Needs root (CAP_NET_ADMIN) and iproute2; :class:`SlurmUnavailable` (a skip) otherwise.
Standalone: ``python tests/slurm_multinode.py`` prints SLURM_CONF=...; Ctrl-C tears it down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # standalone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.slurm_cluster import (PARTITION, LocalSlurmCluster, SlurmUnavailable, _which,
                                 ensure_installed, main)

BRIDGE = "ladder-br0"
CTL_NS = "ladder-ctl"
IFNAME = "ladder0"  # the interface inside every namespace
WRONG_IFNAME = "ladder1"  # a second interface per node, connected to nothing; the hostname's
WRONG_SUBNET = "10.78.0"
SUBNET = "10.77.0"
HOST_ADDR = f"{SUBNET}.253"  # the root namespace on the bridge (clients)
CTL_ADDR = f"{SUBNET}.254"
NODES = {"n0": ("ladder-n0", f"{SUBNET}.1"), "n1": ("ladder-n1", f"{SUBNET}.2")}
MULTINODE_LOCK = Path(tempfile.gettempdir()) / "ladder-slurm-multinode.lock"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([_which("ip"), *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _in(ns: str) -> list[str]:
    """Run in namespace ``ns``'s network only: ``ip netns exec`` would also remount /sys,
    hiding the cgroup mounts slurmd reads."""
    return [_which("nsenter"), f"--net=/run/netns/{ns}", "--"]


def namespace_pids(ns: str) -> list[int]:
    r = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def namespace_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


class TwoNodeSlurmCluster(LocalSlurmCluster):
    """Controller + two slurmd nodes in namespaces of their own; use like LocalSlurmCluster."""

    lock_path = MULTINODE_LOCK

    def __init__(self, cpus: int = 2, **kwargs):
        super().__init__(cpus=cpus, **kwargs)
        self._net_up = False

    def start(self) -> "TwoNodeSlurmCluster":
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("network namespaces for the nodes need root")
        self._acquire_lock()
        try:
            self._delete_network()  # left over by a killed run (the lock says none is live)
            self._make_network()
            self.root = Path(tempfile.mkdtemp(prefix="ladder-slurm2-"))
            for d in ("state", "spool", "log", "run"):
                (self.root / d).mkdir()
            for node in NODES:
                (self.root / "spool" / node).mkdir()
            self._start_munge()
            self._write_conf()
            log = self.root / "log"
            self._spawn("slurmctld", [*_in(CTL_NS), _which("slurmctld"), "-D", "-i", "-f",
                                      str(self.conf)], log / "slurmctld.out")
            for i, (node, (ns, _)) in enumerate(NODES.items()):
                hosts = self.root / f"hosts-{node}"  # the node's hostname on its wrong interface
                hosts.write_text(f"127.0.0.1 localhost\n{WRONG_SUBNET}.{i + 1} {node}\n")
                node_setup = (f'mount --bind "$1" /etc/hosts && hostname {node} && exec "$2" -D -N {node} '
                              f'-f "$3"')
                self._spawn(f"slurmd-{node}", [*_in(ns), _which("unshare"), "--mount", "--uts", "--",
                                               "sh", "-c", node_setup, "node-setup", str(hosts),
                                               _which("slurmd"), str(self.conf)], log / f"slurmd-{node}.out")
            self.wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_idle(self, timeout: float = 90) -> None:
        try:
            super().wait_idle(timeout)
        except RuntimeError as e:
            logs = "\n".join(f"slurmd-{n}:\n{self.log(f'slurmd-{n}')}" for n in NODES)
            raise RuntimeError(f"{e}\n{logs}") from None

    def _cleanup(self) -> None:
        if self._net_up:
            self._delete_network()

    # ------------------------------------------------------------------ network
    def _make_network(self) -> None:
        try:
            _ip("netns", "add", CTL_NS)
        except (RuntimeError, SlurmUnavailable) as e:
            raise SlurmUnavailable(f"cannot create a network namespace: {e}") from None
        self._net_up = True
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{HOST_ADDR}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for i, (ns, addr) in enumerate([(CTL_NS, CTL_ADDR), *NODES.values()]):
            if ns != CTL_NS:
                _ip("netns", "add", ns)
            veth = f"ladder-v{i}"
            _ip("link", "add", veth, "type", "veth", "peer", "name", IFNAME, "netns", ns)
            _ip("link", "set", veth, "master", BRIDGE, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", IFNAME)
            _ip("-n", ns, "link", "set", IFNAME, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            if ns != CTL_NS:  # the wrong network: a veth pair within the node, reaching nothing
                _ip("-n", ns, "link", "add", WRONG_IFNAME, "type", "veth", "peer", "name", f"{WRONG_IFNAME}p")
                _ip("-n", ns, "addr", "add", f"{WRONG_SUBNET}.{i}/24", "dev", WRONG_IFNAME)
                _ip("-n", ns, "link", "set", WRONG_IFNAME, "up")
                _ip("-n", ns, "link", "set", f"{WRONG_IFNAME}p", "up")

    def _delete_network(self) -> None:
        """Kill what still runs in our namespaces (only this cluster's processes can), delete
        them and the bridge (its veth ends go with the namespaces)."""
        for ns in [CTL_NS, *(ns for ns, _ in NODES.values())]:
            if not Path(f"/run/netns/{ns}").exists():
                continue
            for _ in range(20):
                pids = namespace_pids(ns)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.2)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", BRIDGE, check=False)
        self._net_up = False

    # ------------------------------------------------------------------ config
    def _conf_lines(self) -> list[str]:
        r = self.root
        assert r is not None
        mine = ("SlurmctldHost=", "SlurmdSpoolDir=", "SlurmdPidFile=", "SlurmdLogFile=",
                "NodeName=", "PartitionName=")
        lines = [line for line in super()._conf_lines() if not line.startswith(mine)]
        nodes = ",".join(NODES)
        return [
            f"SlurmctldHost=localhost({CTL_ADDR})",  # "localhost" matches any hostname
            f"SlurmdSpoolDir={r / 'spool' / '%n'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd-%n.pid'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            *lines,
            *(f"NodeName={node} NodeAddr={addr} CPUs={self.cpus} "
              f"RealMemory={self.real_memory_mb} State=UNKNOWN"
              for node, (_, addr) in NODES.items()),
            f"PartitionName={PARTITION} Nodes={nodes} Default=YES MaxTime=INFINITE State=UP",
        ]


def two_node_cluster_fixture():
    """Fixture body: a two-node cluster. Clients get ``cluster.env`` explicitly (SLURM_CONF is
    not exported: the single-node session cluster may be up in the same process)."""
    import pytest

    cluster = TwoNodeSlurmCluster()
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(f"no two-node SLURM cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(TwoNodeSlurmCluster))
