"""Redis with credentials. A Redis Cluster whose nodes take a password and speak only TLS (redis.cluster_nodes as
``rediss://:password@host:port?ssl_ca_certs=...``): the gateway finds the slot map, loads its
scripts on every master and enforces exact limits on every shard; with a wrong password it
refuses to start. A Sentinel group whose data nodes take a password (redis.sentinel.password):
the gateway finds the master through the sentinels and enforces exact limits on it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from app.config import parse_config
from app.gateway import Gateway
from app.store.slots import key_slot
from tests.redis_topologies import Node, _binary, cluster_port
from tests.support import BackendServer, GatewayThread, wait_for

pytestmark = pytest.mark.redis

PASSWORD = "s3cret-cluster"


def _tls_material(root: Path) -> tuple[Path, list[str]]:
    """A CA of trustme's and a certificate for 127.0.0.1 written under ``root``: the CA file, and
    the redis-server options that serve the certificate (clients are not asked for one)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(root / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(root / "cert.pem")
    cert.private_key_pem.write_to_path(root / "key.pem")
    return root / "ca.pem", ["--tls-cert-file", str(root / "cert.pem"), "--tls-key-file", str(root / "key.pem"),
                             "--tls-ca-cert-file", str(root / "ca.pem"), "--tls-auth-clients", "no"]


def _redis_cli(port: int, *words: str, ca: Path | None = None, password: str | None = None,
               check: bool = False, timeout: float = 10) -> str:
    """redis-cli's output for ``words`` on the node at ``port`` (over TLS when ``ca`` is given)."""
    tls = ["--tls", "--cacert", str(ca)] if ca is not None else []
    auth = ["-a", password, "--no-auth-warning"] if password else []
    return subprocess.run([_binary("redis-cli"), *tls, *auth, "-p", str(port), *words],
                          capture_output=True, timeout=timeout, text=True, check=check).stdout


def _running(group: TlsPasswordCluster | PasswordSentinelGroup) -> Iterator[Any]:
    """A module fixture's body: the group started for the module, stopped after it."""
    try:
        yield group.start()
    finally:
        group.stop()


def _five_of_seven_admitted(raw: dict[str, Any], clients: list[str]) -> None:
    """Through a gateway on ``raw``: ready, and for each client exactly 5 of 7 requests admitted."""
    with GatewayThread(parse_config(raw, {})) as gateway, httpx.Client(base_url=gateway.url) as client:
        assert client.get("/_gateway/ready").json()["status"] == "ready"
        for name in clients:
            statuses = [client.get("/api/x", headers={"X-Client-ID": name}).status_code for _ in range(7)]
            assert statuses == [200] * 5 + [429] * 2, name


class TlsPasswordCluster:
    """3 masters, no replicas, TLS only (no plain port), a password on every node and on the bus."""

    def __init__(self, root: Path) -> None:
        self.ca, tls = _tls_material(root)
        self.ports = [cluster_port() for _ in range(3)]
        self.nodes = [Node(root, [
            "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes", *tls,
            "--requirepass", PASSWORD, "--masterauth", PASSWORD,
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"],
            port=port) for port in self.ports]
        for node in self.nodes:
            node.port_args = ["--port", "0"]  # TLS only

    def cli(self, port: int, *words: str) -> str:
        # 60 s: `--cluster create` goes through it too.
        return _redis_cli(port, *words, ca=self.ca, password=PASSWORD, check=True, timeout=60)

    def start(self) -> TlsPasswordCluster:
        for node in self.nodes:
            node.start(wait=False)  # they speak TLS only: waited for with redis-cli --tls below
        for port in self.ports:
            wait_for(lambda p=port: self._answers(p), timeout=10, what=f"TLS redis-server on {port}")
        self.cli(self.ports[0], "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                 "--cluster-replicas", "0", "--cluster-yes")
        wait_for(lambda: all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.ports),
                 timeout=20, what="the TLS cluster to agree")
        return self

    def _answers(self, port: int) -> bool:
        try:
            return "PONG" in self.cli(port, "PING")
        except subprocess.CalledProcessError:
            return False

    def seeds(self, password: str) -> list[str]:
        return [f"rediss://:{password}@127.0.0.1:{port}?ssl_ca_certs={self.ca}" for port in self.ports]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPasswordCluster]:
    yield from _running(TlsPasswordCluster(tmp_path_factory.mktemp("tls-cluster")))


def _config(seeds: list[str], backend: BackendServer) -> dict[str, object]:
    return {
        "redis": {"cluster_nodes": seeds, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "router": {"routes": [{"path": "/api/*", "target": backend.url}]},
        "cache": {"enabled": False},
        "rate_limiter": {"default": {"requests_per_minute": 5, "requests_per_hour": None},
                         "client_id_trusted_from": ["127.0.0.0/8"]},
    }


def test_limits_are_exact_on_every_shard_of_a_cluster_with_a_password_and_tls(
        tls_cluster: TlsPasswordCluster, backend: BackendServer) -> None:
    clients = [f"user{i}" for i in range(5)]
    # `--cluster create` gives 3 masters the slots in thirds: these clients' tags fall in each.
    assert {key_slot(f"x:{{{c}}}") * 3 // 16384 for c in clients} == {0, 1, 2}
    _five_of_seven_admitted(_config(tls_cluster.seeds(PASSWORD), backend), clients)


async def test_a_wrong_password_refuses_to_start(tls_cluster: TlsPasswordCluster, backend: BackendServer) -> None:
    """Refused by every node: the gateway does not start (so it never serves with limits off), and
    says why."""
    gateway = Gateway(parse_config(_config(tls_cluster.seeds("wrong"), backend), {}))
    try:
        with pytest.raises(Exception, match="invalid username-password pair"):
            await gateway.start()
    finally:
        await gateway.close()


class PasswordSentinelGroup:
    """1 master and 1 replica that take a password, and 3 sentinels (without one) that know it."""

    def __init__(self, root: Path) -> None:
        auth = ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
        self.master = Node(root, auth)
        self.replica = Node(root, [*auth, "--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [Node(root, ["--sentinel"], config=(
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 2\n"
            f"sentinel auth-pass mymaster {PASSWORD}\n"
            "sentinel down-after-milliseconds mymaster 1000\n")) for _ in range(3)]

    ca: Path | None = None  # the CA to reach the nodes with over TLS; None: plain TCP

    def cli(self, node: Node, *words: str, password: str | None = PASSWORD) -> str:
        return _redis_cli(node.port, *words, ca=self.ca, password=password)

    def start(self) -> PasswordSentinelGroup:
        for node in (self.master, self.replica, *self.sentinels):
            node.start(wait=False)  # a password or TLS: waited for with redis-cli below
        wait_for(lambda: "master_link_status:up" in self.cli(self.replica, "INFO", "replication"), timeout=20,
                 what="the replica to replicate")
        wait_for(lambda: all("num-slaves" in self.cli(s, "SENTINEL", "master", "mymaster", password=None)
                             and "s_down" not in self.cli(s, "SENTINEL", "master", "mymaster", password=None)
                             for s in self.sentinels), timeout=20, what="the sentinels to watch the master")
        return self

    def stop(self) -> None:
        for node in (self.master, self.replica, *self.sentinels):
            node.stop()


@pytest.fixture(scope="module")
def password_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordSentinelGroup]:
    yield from _running(PasswordSentinelGroup(tmp_path_factory.mktemp("password-sentinel")))


def test_limits_are_exact_on_a_sentinel_group_with_a_password(password_sentinel: PasswordSentinelGroup,
                                                               backend: BackendServer) -> None:
    raw = _config([], backend)
    raw["redis"] = {"sentinel": {"nodes": [s.address for s in password_sentinel.sentinels], "master": "mymaster",
                                 "password": PASSWORD}, "prefix": f"t{uuid.uuid4().hex[:8]}"}
    _five_of_seven_admitted(raw, ["alice"])
    # The counts are on the master, which took the password.
    assert "keys=" in password_sentinel.cli(password_sentinel.master, "INFO", "keyspace")


class TlsSentinelGroup(PasswordSentinelGroup):
    """The same group, with every node, sentinels included, speaking only TLS."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ca, tls = _tls_material(root)
        for node in (self.master, self.replica, *self.sentinels):
            node.args = [*node.args, *tls, "--tls-replication", "yes", "--tls-port", str(node.port)]
            node.port_args = ["--port", "0"]


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSentinelGroup]:
    yield from _running(TlsSentinelGroup(tmp_path_factory.mktemp("tls-sentinel")))


def test_limits_are_exact_on_a_sentinel_group_over_tls(tls_sentinel: TlsSentinelGroup, backend: BackendServer) -> None:
    raw = _config([], backend)
    nodes = [f"rediss://127.0.0.1:{s.port}?ssl_ca_certs={tls_sentinel.ca}" for s in tls_sentinel.sentinels]
    raw["redis"] = {"sentinel": {"nodes": nodes, "master": "mymaster", "password": PASSWORD},
                    "prefix": f"t{uuid.uuid4().hex[:8]}"}
    _five_of_seven_admitted(raw, ["bob"])
    assert "keys=" in tls_sentinel.cli(tls_sentinel.master, "INFO", "keyspace")
