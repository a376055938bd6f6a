"""The test topologies themselves: what the cluster and Sentinel tests stand on."""

from __future__ import annotations

import pytest

from tests.redis_topologies import RedisClusterProcesses, SentinelProcesses

pytestmark = pytest.mark.redis


def test_the_cluster_has_three_masters_each_with_a_replica(redis_cluster: RedisClusterProcesses) -> None:
    masters = redis_cluster.masters_now()
    assert len(masters) == 3
    assert sum(end - start + 1 for ranges in masters.values() for start, end in ranges) == 16384
    for node in redis_cluster.nodes:
        assert redis_cluster.info(node)["cluster_state"] == "ok"
        assert node.port != 6379
    for address in masters:
        with redis_cluster.node_at(address).client() as client:
            assert client.info("replication")["connected_slaves"] == 1


def test_the_sentinels_agree_on_a_master_with_a_replica(redis_sentinel: SentinelProcesses) -> None:
    master = redis_sentinel.data_node(redis_sentinel.master_address())
    with master.client() as client:
        assert client.info("replication")["role"] == "master"
        assert client.info("replication")["connected_slaves"] == 1
    assert all(node.port != 6379 for node in redis_sentinel.nodes)
