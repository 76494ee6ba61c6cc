"""The clients' retry and balancing rules, without I/O: the back-off, the
members of a pool, and the choice among them (issue 17)."""

from __future__ import annotations

import random
import socket
import time

import pytest

from framewire import Retry
from framewire.client.balance import Attempts, Balancer, Member, PoolBase, expand
from framewire.client.retry import NO_RETRY, next_delay


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


def test_a_member_is_named_as_it_is_dialled() -> None:
    assert str(Member("127.0.0.1", 7000)) == "127.0.0.1:7000"
    assert str(Member("::1", 7000)) == "[::1]:7000"
    assert str(Member("unix:/run/app.sock", 0)) == "unix:/run/app.sock"


def test_expand_resolves_for_streams_keeps_ports_and_says_what_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[object, ...]] = []
    real = socket.getaddrinfo

    def spy(host: str, port: object, *args: object, **kwargs: object) -> object:
        asked.append((host, port, kwargs.get("type")))
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    members = expand(["127.0.0.1:7", "127.0.0.1:8", "127.0.0.1:7"])  # the same address twice: once
    assert [(m.host, m.port) for m in members] == [("127.0.0.1", 7), ("127.0.0.1", 8)]
    assert asked[0] == ("127.0.0.1", 7, socket.SOCK_STREAM)

    def unknown(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(
        OSError, match=r"^\[Errno -2\] cannot resolve 'nowhere.invalid': Name or service"
    ) as caught:
        expand(["nowhere.invalid:7"])
    assert caught.value.errno == socket.EAI_NONAME
    with pytest.raises(ValueError, match=r"^a pool needs at least one address$"):
        expand([])


def test_the_balancer_s_defaults_and_checks() -> None:
    member = Member("127.0.0.1", 1)
    balancer = Balancer([member])
    assert (balancer.strategy, balancer.max_failures, balancer.probe_after, balancer.max_probe_after) == (
        "round-robin", 2, 1.0, 30.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"^max_failures is at least 1$"):
        Balancer([member], max_failures=0)
    assert Balancer([member], max_failures=1).max_failures == 1


def test_a_probe_s_flag_is_cleared_by_its_outcome_and_waits_are_capped() -> None:
    a, b = Member("127.0.0.1", 1), Member("127.0.0.1", 2)
    balancer = Balancer([a, b], max_failures=1, probe_after=10.0, max_probe_after=25.0)
    balancer.failed(a, 0.0)
    assert balancer.pick(10.0) == (a, True) and a.probing is True
    balancer.failed(a, 10.0)
    assert a.probing is False and a.down_until == 30.0
    assert balancer.pick(30.0) == (a, True)
    balancer.failed(a, 30.0)
    assert a.down_until == 55.0  # doubled, but at most max_probe_after
    assert balancer.pick(55.0) == (a, True)
    balancer.succeeded(a)
    assert a.probing is False and a.healthy


def test_every_member_out_tries_the_one_due_soonest_once() -> None:
    a, b, c = (Member("127.0.0.1", port) for port in (1, 2, 3))
    balancer = Balancer([a, b, c], max_failures=1, probe_after=5.0)
    balancer.failed(b, 0.0)  # due at 5
    balancer.failed(a, 1.0)  # due at 6
    balancer.failed(c, 2.0)  # due at 7
    assert balancer.pick(3.0) == (b, True) and b.probing is True
    assert balancer.pick(3.0) == (b, True)  # still the soonest: tried anyway, rather than nothing
    balancer.failed(b, 3.0)  # now due at 13
    assert balancer.pick(3.5) == (a, True)


def test_a_pool_s_settings_reach_its_balancer_and_its_connections() -> None:
    pool = PoolBase(["127.0.0.1:1", "127.0.0.1:2"], size=1, strategy="least-in-flight", max_failures=5,
                    probe_after=0.5, timeout=3.0)  # fmt: skip
    assert pool.balancer.strategy == "least-in-flight" and pool.balancer.max_failures == 5
    assert pool.balancer.probe_after == 0.5 and [str(m) for m in pool.members] == [
        "127.0.0.1:1",
        "127.0.0.1:2",
    ]
    options = pool._client_options(pool.members[0])
    assert options.timeout == 3.0 and options.retry == NO_RETRY  # the pool fails over itself
    assert options.server_hostname == "127.0.0.1"
    one = PoolBase(["127.0.0.1:1"], size=1, timeout=3.0, keepalive=5)
    assert one._client_options(one.members[0]).keepalive == 5
    with pytest.raises(TypeError, match="timeout_override"):  # an option no client has: refused, named
        PoolBase(["127.0.0.1:1"], size=1, timeout=3.0, timeout_override=1)
    defaults = PoolBase(["127.0.0.1:1"], size=1)
    assert (defaults.timeout, defaults.balancer.max_failures, defaults.balancer.probe_after) == (10.0, 2, 1.0)
    assert defaults.balancer.strategy == "round-robin" and defaults.options.retry == Retry()
    untimed = PoolBase(["127.0.0.1:1"], size=1, timeout=None)
    assert untimed._client_options(untimed.members[0]).timeout is None
    named = PoolBase(["localhost:1"], size=1)  # issue 37: TLS checks the name given, not the address
    assert {named._client_options(m).server_hostname for m in named.members} == {"localhost"}
    unix = PoolBase(["unix:/x"], size=1)._client_options(Member("unix:/x", 0, "unix:/x"))
    assert unix.server_hostname is None
    with pytest.raises(ValueError, match=r"^a pool keeps at least one connection per member \(size >= 1\)$"):
        PoolBase(["127.0.0.1:1"], size=0)


def test_one_call_s_attempts_keep_its_deadline_and_its_last_failure() -> None:
    before = time.monotonic()
    attempts = Attempts(5.0, Retry(attempts=2, backoff=0.01))
    assert attempts.deadline is not None and before + 5.0 <= attempts.deadline <= time.monotonic() + 5.0
    left = attempts.left()
    assert left is not None and 4.0 < left <= 5.0
    assert Attempts(None, Retry()).deadline is None and Attempts(None, Retry()).left() is None
    assert Attempts(-1.0, Retry()).left() == 0.001  # past it: a little, never 0 (no timeout) or less
    refused = ConnectionRefusedError("no")
    attempts.failed(1, refused)
    assert attempts.tried == {1} and attempts.last is refused
    delay = attempts.next_round()
    assert 0.005 <= delay <= 0.01 and attempts.tried == set()  # a new round: every member again
    with pytest.raises(ConnectionRefusedError):
        attempts.next_round()  # no attempt left: the last failure
    late = Attempts(0.001, Retry(attempts=3, backoff=1.0))
    late.failed(0, refused)
    with pytest.raises(ConnectionRefusedError):
        late.next_round()  # the wait would pass the deadline


def test_retry_s_checks_and_its_growth() -> None:
    assert Retry(backoff=0.0, max_backoff=0.0).backoff == 0.0
    assert Retry(backoff=1.0, max_backoff=1.0).max_backoff == 1.0
    for bad in ({"backoff": -0.1}, {"backoff": 2.0, "max_backoff": 1.0}):
        with pytest.raises(ValueError, match=r"^Retry needs 0 <= backoff <= max_backoff$"):
            Retry(**bad)  # type: ignore[arg-type]

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b  # the longest wait each time

    assert list(Retry(attempts=5, backoff=1.0, max_backoff=100.0).delays(Top())) == [1.0, 2.0, 4.0, 8.0]


def test_next_delay_is_none_when_the_wait_reaches_the_deadline() -> None:
    now = time.monotonic()
    assert next_delay(iter([0.5]), now + 100) == 0.5
    assert next_delay(iter([0.5]), None) == 0.5
    assert next_delay(iter([]), None) is None
    assert next_delay(iter([100.0]), now + 100.0) is None  # it would end at (or past) the deadline
    assert next_delay(iter([1.0]), now - 10.0) is None  # the deadline has passed


def test_a_connection_is_retired_within_a_tenth_below_its_age() -> None:
    from framewire.client.retry import retire_at

    rng = random.Random(7)
    times = [retire_at(100.0, 10.0, rng) for _ in range(1000)]
    assert 109.0 <= min(times) < 109.2 and 109.8 < max(times) <= 110.0  # spread over the tenth
    assert retire_at(100.0, None) == float("inf")
