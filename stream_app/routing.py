"""Which worker answers ``GET /recommend/{user_id}``: the owner of the user's partition.

A user's session lives only in the worker that owns the user's input partition, so with N
replicas behind one Service an answer from "whichever pod the Service picked" would be a
popularity answer N-1 times in N. Every worker therefore routes:

* **the partition** of a user is the one every producer writes the user's events to:
  Kafka's default partitioner on the key bytes (``user_id`` in UTF-8), murmur2 as in the
  Java client and aiokafka's ``DefaultPartitioner`` (:func:`partition_for`; a unit test
  compares it with aiokafka's, an integration test with where the broker put the records);
* **the owner** comes from the consumer group's assignment: Faust's partition assignor
  gives every member the whole group's assignment together with each member's advertised
  URL (``app.router.external_topics_metadata()``: ``{url: {topic: [partitions]}}``; the
  worker's ``canonical_url``, from ``Settings.advertised_host``, see :func:`advertised_url`).
  Faust's own router and table views stay off (``stream_app.app``);
* **one hop**: a worker that does not own the partition forwards the request to the owner,
  with :data:`HOP_HEADER` set and a timeout (``Settings.route_timeout_s``); a forwarded
  request is always answered where it lands. When the owner cannot be reached, or no member
  owns the partition (a rebalance), the answer is a local popularity answer whose
  ``fallback`` says why (:data:`OWNER_UNREACHABLE`, :data:`NO_OWNER`).

Pure functions and one small value type: the web view (:mod:`stream_app.web`) does the I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from stream_app.settings import Settings

HOP_HEADER = "X-Coldstream-Forwarded-By"
"""Set on a forwarded ``/recommend`` request (the sender's URL): the receiver answers it
itself, never forwards it again (one hop)."""

OWNER_UNREACHABLE = "owner_unreachable"
"""``fallback``: the owner of the user's partition did not answer in time."""
NO_OWNER = "no_owner"
"""``fallback``: no member owns the user's partition right now (rebalance, group not joined)."""
OVERLOADED = "overloaded"
"""``fallback``: too many rankings are queued on this worker (``recommend_max_pending``)."""

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as an unsigned 32-bit value (``Utils.murmur2`` of the Java
    client, the hash of aiokafka's ``DefaultPartitioner``)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length - length % 4
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a keyed record lands on with Kafka's default partitioner:
    ``toPositive(murmur2(key)) % partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def advertised_url(settings: Settings) -> str:
    """The URL other workers reach this worker's web server at: ``advertised_host`` (a pod
    sets it to its IP through the downward API), else the bound address when it is a
    specific one, else ``127.0.0.1`` (one machine)."""
    host = settings.advertised_host
    if not host:
        host = settings.web_bind if settings.web_bind not in ("0.0.0.0", "::", "") else None
    host = host or "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:  # a host name
        pass
    return f"http://{host}:{settings.web_port}"


def owners(distribution: Mapping[str, Mapping[str, Sequence[int]]], topic: str) -> dict[int, str]:
    """``partition -> owner URL`` of ``topic`` from a Faust host-to-partition map
    (``{url: {topic: [partitions]}}``). A partition claimed by two URLs (two members that
    advertise the same address: a misconfiguration) has no owner."""
    out: dict[int, str] = {}
    clash: set[int] = set()
    for url, topics in distribution.items():
        for p in topics.get(topic, ()):
            if p in out and out[p] != url:
                clash.add(p)
            out[p] = str(url)
    for p in clash:
        del out[p]
    return out


def same_url(a: str, b: str) -> bool:
    """Whether two advertised URLs name the same web server (trailing slash and case of the
    scheme and host do not matter)."""
    return a.rstrip("/").lower() == b.rstrip("/").lower()


@dataclass(frozen=True, slots=True)
class Route:
    """Where to answer one request: here (``forward_to is None``) or at ``forward_to``;
    ``fallback``: answer here from popularity, for that reason."""

    partition: int
    forward_to: str | None = None
    fallback: str | None = None


def route(
    user_id: str,
    *,
    partitions: int,
    owned: Collection[int],
    owner_of: Mapping[int, str],
    self_url: str,
    forwarded: bool,
) -> Route:
    """Decide where ``user_id``'s request is answered.

    ``owned``: the partitions of this worker's current assignment; ``owner_of``: the group's
    assignment (:func:`owners`); ``forwarded``: the request came from another worker."""
    p = partition_for(user_id.encode("utf-8"), partitions)
    if p in owned:
        return Route(p)
    if forwarded:  # one hop: the sender thought this worker owned it (stale after a rebalance)
        return Route(p, fallback=NO_OWNER)
    owner = owner_of.get(p)
    if owner is None or same_url(owner, self_url):
        # nobody, or this worker according to an assignment it no longer holds
        return Route(p, fallback=NO_OWNER)
    return Route(p, forward_to=owner.rstrip("/"))
