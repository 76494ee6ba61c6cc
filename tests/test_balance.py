"""The clients' retry and balancing rules, without I/O: the back-off, the
members of a pool, and the choice among them (issue 17)."""

from __future__ import annotations

import random
import socket

import pytest

from framewire import Retry
from framewire.client.balance import Balancer, Member, expand


def test_the_backoff_grows_with_jitter_up_to_its_cap() -> None:
    delays = list(Retry(attempts=6, backoff=0.1, max_backoff=0.4).delays(random.Random(7)))
    assert len(delays) == 5
    for delay, base in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert base / 2 <= delay <= base  # equal jitter: half fixed, half random
    assert len(set(delays)) == 5  # random within each step
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    assert list(Retry(attempts=1).delays()) == []


def test_a_name_with_several_addresses_is_one_member_each() -> None:
    found = {info[4][0] for info in socket.getaddrinfo("localhost", 7, type=socket.SOCK_STREAM)}
    members = expand(["localhost:7", ("127.0.0.1", 7), "unix:/tmp/x.sock"])
    assert {m.host for m in members if m.port == 7} == found | {"127.0.0.1"}
    assert members[-1].host == "unix:/tmp/x.sock"
    with pytest.raises(ValueError, match="HOST:PORT"):
        expand(["nohost"])


def test_the_balancer_takes_failing_members_out_and_probes_them_back() -> None:
    a, b, c = (Member("127.0.0.1", port) for port in (1, 2, 3))
    balancer = Balancer([a, b, c], max_failures=2, probe_after=1.0)
    picks = [balancer.pick(0.0) for _ in range(6)]
    assert [p[0].port for p in picks if p] == [2, 3, 1, 2, 3, 1] and not any(p[1] for p in picks if p)
    assert not balancer.failed(b, 0.0)  # one failure: still in
    assert balancer.failed(b, 0.0)  # two in a row: out for probe_after
    assert {balancer.pick(0.5)[0].port for _ in range(4)} == {1, 3}  # type: ignore[index]
    assert balancer.pick(1.0) == (b, True)  # due: handed out once, to be probed
    assert balancer.pick(1.0)[0] is not b  # type: ignore[index]  # the probe is under way
    assert balancer.failed(b, 1.0) and b.down_until == 3.0  # a failed probe doubles the wait
    assert balancer.pick(3.0) == (b, True)
    balancer.succeeded(b)
    assert b.healthy and b.failures == 0
    assert balancer.pick(3.0, exclude={0, 1, 2}) is None


def test_least_in_flight_prefers_the_idle_member_and_all_out_still_tries() -> None:
    a, b = Member("127.0.0.1", 1), Member("127.0.0.1", 2)
    balancer = Balancer([a, b], "least-in-flight", max_failures=1)
    a.in_flight = 3
    assert all(balancer.pick(0.0) == (b, False) for _ in range(3))
    balancer.failed(a, 0.0)
    balancer.failed(b, 0.0)
    assert balancer.pick(0.1) in {(a, True), (b, True)}  # every member out: try one anyway
    with pytest.raises(ValueError, match="strategy"):
        Balancer([a], "random")  # type: ignore[arg-type]
