"""Real Redis topologies for the tests, from the ``redis-server`` and ``redis-cli`` binaries: a Redis
Cluster of 3 masters and 3 replicas, and a Sentinel group (1 master, 1 replica, 3 sentinels).

Each node runs on a free port with a directory of its own, no persistence, and short failure
timeouts (1 s) so that failovers happen within the tests' time. A killed node can be started again
on its port and directory: a cluster node rejoins as a replica of whoever took its slots, a Sentinel
group's old master is turned into a replica by the sentinels.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support import free_port, wait_for

# Short enough that a killed master is replaced in about 2 s, long enough not to flap on a busy machine.
NODE_TIMEOUT_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()


def cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too: the ephemeral range the
    system hands out would put the bus beyond 65535."""
    while True:
        port = random.randrange(20000, 30000)
        if port not in _handed_out and _bindable(port) and _bindable(port + 10000):
            _handed_out.add(port)  # not bound until its node starts: never hand it out twice
            return port


def _binary(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return exe


class Node:
    """One redis-server process (a cluster node, a data node or a sentinel)."""

    def __init__(self, root: Path, args: list[str], port: int | None = None, config: str | None = None) -> None:
        self.port = port or free_port()
        self.dir = root / str(self.port)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.config = config  # a config file's text (sentinels rewrite theirs, so it must be a file)
        # How the port is given: a TLS-only node has "--port 0" here and its --tls-port in ``args``.
        self.port_args = ["--port", str(self.port)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def start(self, wait: bool = True) -> Node:
        """``wait``: until it answers a plain PING; a node behind TLS or a password is waited for
        by its caller, who knows how to reach it."""
        head = [_binary("redis-server")]
        if self.config is not None:
            path = self.dir / "node.conf"
            if not path.exists():  # restarted: keep what the process wrote into it
                path.write_text(self.config)
            head.append(str(path))
        self.proc = subprocess.Popen(
            [*head, *self.port_args, "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
             "--logfile", str(self.dir / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            wait_for(self.pings, timeout=10, what=f"redis-server on {self.port}")
        return self

    def pings(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def kill(self) -> None:
        """SIGKILL: no goodbye to the others, as a crashed machine."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class _Topology:
    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.nodes: list[Node] = []

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterProcesses(_Topology):
    """3 masters + 3 replicas, made a cluster by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3, replicas_each: int = 1) -> None:
        super().__init__("apigw-cluster-")
        self.masters = masters
        self.replicas_each = replicas_each
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica always stands for election, however long its link was down in a test.
                "--cluster-replica-validity-factor", "0",
                # One lost shard must not stop the others (the README recommends the same).
                "--cluster-require-full-coverage", "no"]
        self.nodes = [Node(self.root, args, port=cluster_port()) for _ in range(masters * (1 + replicas_each))]

    @property
    def seeds(self) -> list[str]:
        return [node.address for node in self.nodes]

    def start(self) -> RedisClusterProcesses:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [_binary("redis-cli"), "--cluster", "create", *self.seeds,
                 "--cluster-replicas", str(self.replicas_each), "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def node_at(self, address: str) -> Node:
        return next(node for node in self.nodes if node.address == address)

    @staticmethod
    def info(node: Node) -> dict[str, str]:
        """CLUSTER INFO of one node, as text fields."""
        with node.client() as client:
            raw = client.execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def masters_now(self, via: Node | None = None) -> dict[str, list[tuple[int, int]]]:
        """Each master's address and its slot ranges, as a running node sees them."""
        asker = via or next(node for node in self.nodes if node.running)
        with asker.client() as client:
            slots = client.execute_command("CLUSTER SLOTS")
        owners: dict[str, list[tuple[int, int]]] = {}
        for start, end, master, *_ in slots:
            host = master[0].decode() if isinstance(master[0], bytes) else master[0]
            owners.setdefault(f"{host}:{master[1]}", []).append((int(start), int(end)))
        return owners

    def master_of_slot(self, slot: int) -> Node:
        for address, ranges in self.masters_now().items():
            if any(start <= slot <= end for start, end in ranges):
                return self.node_at(address)
        raise LookupError(f"no master serves slot {slot}")

    def _healthy(self) -> bool:
        running = [node for node in self.nodes if node.running]
        for node in running:
            if self.info(node).get("cluster_state") != "ok":
                return False
        masters = self.masters_now()
        if any(self.masters_now(via=node) != masters for node in running):
            return False  # not every node has heard of the last change yet
        if len(masters) != self.masters or sum(e - s + 1 for r in masters.values() for s, e in r) != 16384:
            return False
        # Every running replica has caught up with a master (so that a kill loses nothing acked long ago).
        for node in running:
            with node.client() as client:
                replication = client.info("replication")
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(self, timeout: float = 30) -> None:
        try:
            wait_for(self._healthy, timeout=timeout, interval=0.1, what="cluster_state:ok on every node")
        except TimeoutError as error:
            # What each node believes, for whoever reads the failure: a stuck failover, a slot that
            # no master claims, a node that never heard of the last change.
            raise TimeoutError(f"{error}\n{self.views()}") from None

    def views(self) -> str:
        """CLUSTER NODES as each running node sees it."""
        lines = []
        for node in self.nodes:
            if not node.running:
                lines.append(f"{node.address}: not running")
                continue
            try:
                with node.client() as client:
                    raw = client.execute_command("CLUSTER", "NODES")
            except (OSError, redis.RedisError) as failure:  # a node that cannot answer says so here
                lines.append(f"{node.address}: {failure!r}")
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            lines.append(f"{node.address} sees:\n{text.strip()}")
        return "\n".join(lines)

    def restart(self, node: Node) -> None:
        """Start a killed node again: it rejoins (as a replica when its slots were taken over)."""
        node.start()
        self.wait_healthy()


class SentinelProcesses(_Topology):
    """1 master, 1 replica, 3 sentinels watching them under ``master_name``."""

    def __init__(self, master_name: str = "mymaster") -> None:
        super().__init__("apigw-sentinel-")
        self.master_name = master_name
        self.master = Node(self.root, [])
        self.replica = Node(self.root, ["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [
            Node(self.root, ["--sentinel"], config=(
                f"sentinel monitor {master_name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {master_name} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {master_name} 5000\n"
                f"sentinel parallel-syncs {master_name} 1\n"))
            for _ in range(3)]
        self.nodes = [self.master, self.replica, *self.sentinels]

    @property
    def sentinel_addresses(self) -> list[str]:
        return [node.address for node in self.sentinels]

    def start(self) -> SentinelProcesses:
        try:
            for node in self.nodes:
                node.start()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def master_address(self) -> str:
        """The master as the sentinels name it (the majority of them that answer)."""
        answers: dict[str, int] = {}
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with sentinel.client() as client:
                host, port = client.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
            address = f"{host.decode()}:{int(port)}"
            answers[address] = answers.get(address, 0) + 1
        return max(answers, key=lambda a: answers[a])

    def data_node(self, address: str) -> Node:
        return next(node for node in (self.master, self.replica) if node.address == address)

    def _healthy(self) -> bool:
        master = self.data_node(self.master_address())
        with master.client() as client:
            replication = client.info("replication")
        if replication["role"] != "master" or replication.get("connected_slaves", 0) < 1:
            return False
        # The replica itself replicating (after a failover the old master stays a master for a
        # while, though the sentinels already count it as a replica): else the next failover
        # finds no good replica and is aborted.
        replica = next(node for node in (self.master, self.replica) if node.address != master.address)
        with replica.client() as client:
            replication = client.info("replication")
        if replication["role"] != "slave" or replication.get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.execute_command("SENTINEL", "master", self.master_name)
            fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
            fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
            if int(fields["num-other-sentinels"]) < len(self.sentinels) - 1 or int(fields["num-slaves"]) < 1:
                return False
            if b"s_down" in fields["flags"] or b"o_down" in fields["flags"]:
                return False
        return True

    def wait_healthy(self, timeout: float = 30) -> None:
        wait_for(self._healthy, timeout=timeout, interval=0.1, what="sentinels agreeing on a master with a replica")

    def failover(self) -> str:
        """Ask the sentinels for a failover; the new master's address once they all name it."""
        old = self.master_address()
        deadline = time.monotonic() + 40
        # Asked again while none happened: a sentinel refuses one (INPROG, NOGOODSLAVE) or aborts it
        # when the replica is not ready yet, and says so only in its log.
        while self.master_address() == old:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new master 40 s after asking the sentinels to fail {old} over")
            with contextlib.suppress(redis.ResponseError), self.sentinels[0].client() as client:
                client.execute_command("SENTINEL", "failover", self.master_name)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: self.master_address() != old, timeout=8, interval=0.05, what="a new master")
        return self.master_address()
