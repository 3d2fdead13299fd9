"""Routing of ``/recommend``: the producers' partitioner, the group's owners, the one hop."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from stream_app.routing import (
    NO_OWNER,
    advertised_url,
    murmur2,
    owners,
    partition_for,
    route,
    same_url,
)
from stream_app.settings import Settings


def test_murmur2_equals_aiokafkas_on_random_and_edge_keys() -> None:
    rng = random.Random(7)
    keys = [b"", b"a", b"\xff" * 3, b"\x00" * 4, "ünïcødé-ユーザー".encode()]
    keys += [rng.randbytes(rng.randrange(0, 64)) for _ in range(3000)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


@pytest.mark.parametrize("n", [1, 2, 6, 7, 1000])
def test_partition_equals_aiokafkas_default_partitioner(n: int) -> None:
    partitioner = DefaultPartitioner()
    parts = list(range(n))
    for i in range(500):
        key = f"user-{i}".encode()
        assert partition_for(key, n) == partitioner(key, parts, parts)


def test_partition_matches_the_java_client() -> None:
    # org.apache.kafka.clients.producer.internals.DefaultPartitioner over 1000 partitions
    # (the vectors kafka-python checks its partitioner against)
    java = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    assert {k: partition_for(k, 1000) for k in java} == java


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        partition_for(b"u", 0)


def test_owners_from_the_group_distribution() -> None:
    dist = {
        "http://10.0.0.1:6066": {"clicks": [0, 2], "purchases": [0, 2]},
        "http://10.0.0.2:6066": {"clicks": [1], "purchases": [1]},
    }
    assert owners(dist, "clicks") == {
        0: "http://10.0.0.1:6066",
        2: "http://10.0.0.1:6066",
        1: "http://10.0.0.2:6066",
    }
    assert owners(dist, "other") == {}


def test_a_partition_claimed_twice_has_no_owner() -> None:
    dist = {"http://a:1": {"clicks": [0, 1]}, "http://b:1": {"clicks": [1]}}
    assert owners(dist, "clicks") == {0: "http://a:1"}


def _user_on(partition: int, n: int = 6) -> str:
    return next(f"u{i}" for i in range(10_000) if partition_for(f"u{i}".encode(), n) == partition)


def test_route_answers_here_for_an_owned_partition() -> None:
    user = _user_on(3)
    r = route(user, partitions=6, owned={3}, owner_of={}, self_url="http://me:1", forwarded=False)
    assert (r.partition, r.forward_to, r.fallback) == (3, None, None)


def test_route_forwards_to_the_owner_once() -> None:
    user = _user_on(4)
    owner_of = {4: "http://other:6066/"}
    r = route(
        user, partitions=6, owned={0}, owner_of=owner_of, self_url="http://me:1", forwarded=False
    )
    assert (r.forward_to, r.fallback) == ("http://other:6066", None)
    # a request that was already forwarded is never forwarded again
    again = route(
        user, partitions=6, owned={0}, owner_of=owner_of, self_url="http://me:1", forwarded=True
    )
    assert (again.forward_to, again.fallback) == (None, NO_OWNER)


def test_route_without_an_owner_falls_back() -> None:
    user = _user_on(5)
    r = route(user, partitions=6, owned=set(), owner_of={}, self_url="http://me:1", forwarded=False)
    assert (r.forward_to, r.fallback) == (None, NO_OWNER)
    # the group still names this worker, but its consumer no longer holds the partition
    stale = route(
        user,
        partitions=6,
        owned=set(),
        owner_of={5: "HTTP://me:1/"},
        self_url="http://me:1",
        forwarded=False,
    )
    assert (stale.forward_to, stale.fallback) == (None, NO_OWNER)


def test_same_url() -> None:
    assert same_url("http://A:1/", "http://a:1")
    assert not same_url("http://a:1", "http://a:2")


def test_advertised_url_is_the_pods_address_not_loopback() -> None:
    assert advertised_url(Settings(advertised_host="10.1.2.3", web_port=6066)) == (
        "http://10.1.2.3:6066"
    )
    assert advertised_url(Settings(advertised_host="fd00::7", web_port=80)) == "http://[fd00::7]:80"
    assert advertised_url(Settings(advertised_host="worker-1.svc", web_port=1)) == (
        "http://worker-1.svc:1"
    )
    # unset: a specific bind address is reachable as such; every interface falls to loopback
    assert advertised_url(Settings(web_bind="192.168.1.5", web_port=9)) == "http://192.168.1.5:9"
    assert advertised_url(Settings(web_bind="0.0.0.0", web_port=9)) == "http://127.0.0.1:9"


def test_advertised_host_comes_from_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDSTREAM_ADVERTISED_HOST", "10.9.8.7")
    monkeypatch.setenv("COLDSTREAM_WEB_PORT", "7000")
    assert advertised_url(Settings()) == "http://10.9.8.7:7000"
