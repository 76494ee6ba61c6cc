"""The blocking client's contract, call by call, against scripted servers
(and the asyncio client's, where a test says so).

Each scripted server runs one behaviour per connection it accepts, in
order, so a test says exactly what the server did and when. What the client
did is read where a person or a server sees it: the answers, the errors'
sentences, the log, and what reaches the server (ids, deadlines, pings,
resets). These tests are fast, and part of the mutation selection
(docs/mutation.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import random
import select
import socket
import ssl
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import CLIENTS, make_client, read_messages, tls
from framewire import Message, Retry
from framewire.client import Client
from framewire.core import limits
from framewire.core.decoder import Decoder
from framewire.core.errors import ConnectionClosed, ErrorResponse, ProtocolError
from framewire.core.probe import DEADLINE_KEY, ID_KEY, PING_KEY

pytestmark = pytest.mark.timeout(30)


class Scripted:
    """A server that runs ``behaviours[i](self, conn)`` on its i-th accepted
    connection. ``seen`` holds the requests its behaviours read, ``done[i]``
    is set once connection i is closed, and an exception in its thread
    fails the test that started it."""

    def __init__(
        self, behaviours: list[Behaviour], context: ssl.SSLContext | None, more: Behaviour | None
    ) -> None:
        self.behaviours = behaviours
        self.more = more  # the behaviour of any connection after those, until the end
        self.context = context
        self.seen: list[Message] = []
        self.go = threading.Event()  # a test's signal to a behaviour
        self.done = [threading.Event() for _ in behaviours]
        self.resets = 0  # connections the client ended with a reset
        self.stopping = False
        self.errors: list[BaseException] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            for number in itertools.count():
                behaviour = self.behaviours[number] if number < len(self.behaviours) else self.more
                if behaviour is None:
                    return
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    if self.stopping:
                        return  # the test is over: the listener was shut down
                    raise
                if number >= len(self.done):
                    self.done.append(threading.Event())
                self._run(number, behaviour, conn)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)

    def _run(self, number: int, behaviour: Behaviour, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            behaviour(self, conn)
        finally:
            conn.close()
            self.done[number].set()

    def wait_closed(self, number: int) -> None:
        assert self.done[number].wait(10), f"the server's connection {number} did not end within 10 s"


Behaviour = Callable[[Scripted, socket.socket], object]


@contextmanager
def scripted(
    *behaviours: Behaviour, context: ssl.SSLContext | None = None, more: Behaviour | None = None
) -> Iterator[Scripted]:
    server = Scripted(list(behaviours), context, more)
    server.thread.start()
    try:
        yield server
    finally:
        server.stopping = True
        server.go.set()
        with contextlib.suppress(OSError):
            server.listener.shutdown(socket.SHUT_RDWR)  # wakes its accept()
        server.listener.close()
        server.thread.join(10)
        assert not server.thread.is_alive(), "the scripted server did not finish"
    assert not server.errors, server.errors


def until_closed(server: Scripted, conn: socket.socket) -> None:
    """Read (and drop) until the client closes; count a reset."""
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        server.resets += 1


def hang_up(server: Scripted, conn: socket.socket) -> None:
    """Close at once, reading nothing."""


def echo(count: int | None = None, *, then: Behaviour = until_closed) -> Behaviour:
    """Answer each request with itself (ids and pings included, as a
    framewire server's echo does): ``count`` of them (None: all), then ``then``."""

    def behaviour(server: Scripted, conn: socket.socket) -> None:
        decoder = Decoder()
        answered = 0
        while count is None or answered < count:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                server.resets += 1
                return
            if not data:
                return
            for message in decoder.feed(data):
                server.seen.append(message)
                conn.sendall(message.encode())
                answered += 1
        then(server, conn)

    return behaviour


def read(count: int, *, then: Behaviour = until_closed) -> Behaviour:
    """Read ``count`` requests, answer none, then ``then``."""

    def behaviour(server: Scripted, conn: socket.socket) -> None:
        server.seen += read_messages(conn, count)
        then(server, conn)

    return behaviour


def or_reset(behaviour: Behaviour) -> Behaviour:
    """``behaviour``, on a connection the client may abort under it (a call
    out of time closes its connection with a reset)."""

    def wrapped(server: Scripted, conn: socket.socket) -> None:
        with contextlib.suppress(ConnectionResetError):
            behaviour(server, conn)

    return wrapped


def readable(client: Client) -> None:
    """Wait until the client's connection has something to read (an answer,
    or the server's close)."""
    assert client._sock is not None
    ready, _, _ = select.select([client._sock], [], [], 10)
    assert ready, "nothing reached the client within 10 s"


def q(text: str = "q") -> Message:
    return Message.from_bytes(text.encode())


@contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose listener's accept queue is full: a connect to it hangs
    (the kernel drops its SYN) until the connecting side gives up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # the one queued
            yield port


@contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but never listening: every connect to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def counting_retry(attempts: int, waits: list[float]) -> Retry:
    """A retry rule of ``attempts`` with 50 ms waits, each recorded in ``waits``."""

    class Counting(Retry):
        def delays(self, rng: random.Random | None = None) -> Iterator[float]:
            for delay in Retry.delays(self, rng):
                waits.append(delay)
                yield delay

    return Counting(attempts=attempts, backoff=0.05, max_backoff=0.05)


def lines(caplog: Any, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "framewire.client" and r.levelno == level]


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_documented_defaults_and_the_settings_given_are_kept(kind: str) -> None:
    client = make_client(
        kind,
    )
    assert (client.host, client.port, client.timeout, client.check) == ("127.0.0.1", 65432, 10.0, True)
    assert (client.keepalive, client.ids, client.deadlines, client.heartbeat) == (
        limits.KEEPALIVE,
        False,
        False,
        0.0,
    )
    assert client.connect_timeout is None and client.ssl_context is None and client.source_address is None
    context = ssl.create_default_context()
    given = make_client(
        kind, "::1", 7, ssl_context=context, source_address=("::1", 0), connect_timeout=3, deadlines=True
    )
    assert (given.ssl_context, given.source_address, given.connect_timeout) == (context, ("::1", 0), 3)
    assert given.deadlines is True


@pytest.mark.parametrize("limit", ["max_header_size", "max_content_length"])
@pytest.mark.parametrize("kind", CLIENTS)
def test_the_answer_limits_hold_on_every_connection(kind: str, limit: str) -> None:
    big = Message.from_bytes(b"x" * 200, extensions={"pad": "y" * 200})
    code = "header-too-large" if limit == "max_header_size" else "content-too-large"

    def too_big(server: Scripted, conn: socket.socket) -> None:
        read_messages(conn, 1)
        conn.sendall(big.encode())
        until_closed(server, conn)

    with scripted(too_big, too_big) as server:
        options: dict[str, Any] = {limit: 150}
        client = make_client(kind, "127.0.0.1", server.port, **options)
        for _ in range(2):  # the first connection, then the one opened after the error closed it
            with pytest.raises(ProtocolError) as info:
                client.request(q())
            assert info.value.code == code
        client.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_no_timeout_at_all(kind: str) -> None:
    with scripted(echo()) as server, make_client(kind, "127.0.0.1", server.port, timeout=None) as client:
        assert client.request(q("a")).content == b"a"
        assert [m.content for m in client.request_many([q("b"), q("c")])] == [b"b", b"c"]


# -- ids, deadlines, pings -----------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_ids_count_from_one_across_requests_batches_and_pings(kind: str) -> None:
    with scripted(echo()) as server, make_client(kind, "127.0.0.1", server.port, ids=True) as client:
        client.request(q())
        client.request_many([q(), q()])
        assert client.ping() >= 0
        client.request(q())
    assert [m.get(ID_KEY) for m in server.seen] == [1, 2, 3, None, 5]
    assert server.seen[3].get(PING_KEY) == 4  # a ping's sequence is the next number too


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_deadline_tells_the_server_the_time_left_and_nothing_else(kind: str) -> None:
    with scripted(echo(), echo()) as server:
        options: dict[str, Any] = {"unordered": False, "timeout": 5}  # (ids would be more than the deadline)
        with make_client(kind, "127.0.0.1", server.port, deadlines=True, **options) as client:
            client.request(q())
            client.request_many([q()], timeout=2)
        with make_client(kind, "127.0.0.1", server.port, deadlines=False, **options) as client:
            client.request(q())
    first, batch, plain = server.seen
    assert 4000 < first.get(DEADLINE_KEY) <= 5000 and 1000 < batch.get(DEADLINE_KEY) <= 2000
    assert first.get(ID_KEY) is None and plain.get(DEADLINE_KEY) is None and plain.get(ID_KEY) is None


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_ping_whose_reply_is_not_its_echo_is_a_protocol_error(kind: str) -> None:
    def answers_otherwise(server: Scripted, conn: socket.socket) -> None:
        read_messages(conn, 1)
        conn.sendall(q("not a ping").encode())
        until_closed(server, conn)

    with scripted(answers_otherwise) as server, make_client(kind, "127.0.0.1", server.port) as client:
        with pytest.raises(
            ProtocolError, match=r"^protocol-error: the reply to a ping is not the server.s echo of it$"
        ):
            client.ping()
        server.wait_closed(0)
    assert server.resets == 1  # aborted: nothing more is read from that stream


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_answer_with_the_wrong_id_is_refused_in_words(kind: str) -> None:
    def without_ids(server: Scripted, conn: socket.socket) -> None:
        read_messages(conn, 1)
        conn.sendall(q().encode())
        until_closed(server, conn)

    with scripted(without_ids) as server, make_client(kind, "127.0.0.1", server.port, ids=True) as client:
        message = "the answer to request 1 carries framewire-id None: the connection is out of step"
        with pytest.raises(ProtocolError, match=rf"^protocol-error: {message}$"):
            client.request(q())


# -- connecting ----------------------------------------------------------------------------


def test_a_connection_the_server_closed_while_idle_is_replaced(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, "framewire.client")
    with scripted(hang_up, echo(1, then=hang_up), echo(1, then=hang_up), echo()) as server:
        client = Client("127.0.0.1", server.port).connect()
        server.wait_closed(0)
        readable(client)
        assert client.request(q("after connect")).content == b"after connect"
        server.wait_closed(1)
        readable(client)
        client.send(q("after send"))
        assert client.receive().content == b"after send"
        server.wait_closed(2)
        readable(client)
        assert client.request_many([q("after receive")])[0].content == b"after receive"
        client.close()
    assert (
        lines(caplog, logging.DEBUG)
        == [f"127.0.0.1:{server.port} closed the idle connection: opening a new one"] * 3
    )


def test_answers_still_owed_are_never_taken_for_an_idle_close() -> None:
    def two_answers_apart(server: Scripted, conn: socket.socket) -> None:
        first, second = read_messages(conn, 2)
        conn.sendall(first.encode())
        assert server.go.wait(10)
        conn.sendall(second.encode())
        echo()(server, conn)

    with scripted(two_answers_apart) as server, Client("127.0.0.1", server.port) as client:
        client.send(q("1"))
        client.send(q("2"))
        assert client.receive().content == b"1"
        server.go.set()
        readable(client)  # the second answer is waiting: the connection is not idle
        client.send(q("3"))
        assert [client.receive().content for _ in range(2)] == [b"2", b"3"]


def test_each_answer_goes_to_the_call_it_answers() -> None:
    def all_at_once(server: Scripted, conn: socket.socket) -> None:
        requests = read_messages(conn, 4)
        conn.sendall(b"".join(m.encode() for m in requests))
        echo()(server, conn)

    with scripted(all_at_once) as server, Client("127.0.0.1", server.port) as client:
        client.send(q("1"), q("2"), q("3"), q("4"))
        assert client.receive().content == b"1"
        # A call made while answers to send() are owed gets its own; those
        # wait for receive(), in order.
        assert [m.content for m in client.request_many([q("5")])] == [b"5"]
        assert client.request(q("6")).content == b"6"
        assert [client.receive().content for _ in range(3)] == [b"2", b"3", b"4"]


@pytest.mark.parametrize(
    ("options", "call_timeout", "named"),
    [
        ({"timeout": 2, "connect_timeout": 0.2}, None, r"0\.2"),
        ({"timeout": 0.2}, None, r"0\.2"),
        ({"timeout": 2, "connect_timeout": 2}, 0.3, r"0\.(29\d*|3)"),
        ({"timeout": 2, "connect_timeout": 0.2}, 2, r"0\.2"),
        ({"timeout": None}, 0.3, r"0\.(29\d*|3)"),
    ],
    ids=["connect_timeout", "timeout", "the call's", "connect_timeout in a call", "no client timeout"],
)
@pytest.mark.parametrize("kind", CLIENTS)
def test_a_connect_that_hangs_fails_at_the_timeout_that_applies(
    kind: str, options: dict[str, Any], call_timeout: float | None, named: str
) -> None:
    with full_backlog() as port:
        client = Client("127.0.0.1", port, **options)
        with pytest.raises(
            TimeoutError, match=rf"^\[Errno 110\] no answer from 127\.0\.0\.1:{port} within {named} s$"
        ):
            if call_timeout is None:
                client.connect()
            else:
                client.request(q(), timeout=call_timeout)


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_ping_has_the_call_s_timeout_for_its_connect_and_its_answer(kind: str) -> None:
    with full_backlog() as port:
        with pytest.raises(TimeoutError, match=r"within 0\.(29\d*|3) s$"):
            make_client(kind, "127.0.0.1", port, timeout=2).ping(timeout=0.3)
    with scripted(read(1)) as server, make_client(kind, "127.0.0.1", server.port, timeout=5) as client:
        with pytest.raises(
            TimeoutError, match=rf"^\[Errno 110\] no answer from 127\.0\.0\.1:{server.port} within 0\.2 s$"
        ):
            client.ping(timeout=0.2)
    with scripted(echo()) as server, make_client(kind, "127.0.0.1", server.port, timeout=5) as client:
        assert 0 <= client.ping() <= 5  # a round trip, within the call's timeout
        assert client.ping(timeout=None) >= 0  # no bound at all


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_source_address_and_the_server_name_are_used(kind: str) -> None:
    peers: list[str] = []

    def note_peer(server: Scripted, conn: socket.socket) -> None:
        peers.append(conn.getpeername()[0])
        echo()(server, conn)

    with scripted(note_peer) as server:
        with make_client(kind, "127.0.0.1", server.port, source_address=("127.0.0.2", 0)) as client:
            client.request(q())
    assert peers == ["127.0.0.2"]

    def refused_handshake(server: Scripted, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client refuses the certificate
            tls().server().wrap_socket(conn, server_side=True)

    with scripted(refused_handshake) as server:
        client = make_client(
            kind, "127.0.0.1", server.port, ssl_context=tls().client(), server_hostname="elsewhere.example"
        )
        with pytest.raises(OSError, match="not valid for this host name"):
            client.connect()


def test_a_send_s_connect_is_bounded_by_the_client_s_timeout() -> None:
    with full_backlog() as port:
        client = Client("127.0.0.1", port, timeout=0.3, connect_timeout=2)
        with pytest.raises(TimeoutError, match=r"within 0\.(29\d*|3) s$"):
            client.send(q())


@pytest.mark.parametrize("kind", CLIENTS)
def test_refused_connects_are_tried_again_within_the_call_s_deadline(kind: str) -> None:
    with refused_port() as port:
        waits: list[float] = []
        with pytest.raises(ConnectionRefusedError, match="nothing is listening"):
            make_client(kind, "127.0.0.1", port, retry=counting_retry(3, waits)).connect()
        assert len(waits) == 2  # three attempts
        waits.clear()
        client = make_client(kind, "127.0.0.1", port, retry=counting_retry(100, waits))
        # Refused on the last attempt, or the deadline came during the wait
        # before the next one (a slow machine): either ends the call.
        with pytest.raises((ConnectionRefusedError, TimeoutError)) as info:
            client.request(q(), timeout=0.3)  # 50 ms apart: a few attempts, not a hundred
        if isinstance(info.value, TimeoutError):
            assert "before the call's deadline" in str(info.value)
        assert 2 <= len(waits) <= 15


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_wait_between_attempts_that_would_pass_the_deadline_is_not_taken(kind: str) -> None:
    # The next attempt would come 2.5 to 5 s later (equal jitter), after the
    # call's deadline: the call ends at once with the refusal it met.
    with refused_port() as port:
        client = make_client(kind, "127.0.0.1", port, retry=Retry(attempts=2, backoff=5, max_backoff=5))
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError, match="nothing is listening"):
            client.request(q(), timeout=1)
        assert time.monotonic() - started < 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_call_with_no_time_left_does_not_try_to_connect(kind: str) -> None:
    # Nothing listens on the port: an attempt would be refused. A call whose
    # deadline has already come ends on the deadline, before any attempt.
    with refused_port() as port:
        with pytest.raises(TimeoutError) as info:
            make_client(kind, "127.0.0.1", port).request(q(), timeout=0)
    assert info.value.errno == errno.ETIMEDOUT
    assert info.value.strerror == f"no connection to 127.0.0.1:{port} before the call's deadline"


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_a_deadline_passed_in_a_back_off_wait_names_the_refusal_as_its_cause(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The retry rule's clock runs a second late, so it allows a wait that
    # outlasts the call's deadline, as a sleep that overslept on a loaded
    # machine would. The call ends on its deadline, and the refusal that led
    # to the wait is the timeout's cause.
    from framewire.client import retry
    from framewire.client.aio import AioClient

    monkeypatch.setattr(retry, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() - 1.0))
    rule = Retry(attempts=3, backoff=0.3, max_backoff=0.3)  # waits of 0.15 to 0.3 s

    async def aio_request(port: int) -> None:
        await AioClient("127.0.0.1", port, retry=rule).request(q(), timeout=0.1)

    with refused_port() as port:
        with pytest.raises(TimeoutError) as info:
            if kind == "blocking":
                Client("127.0.0.1", port, retry=rule).request(q(), timeout=0.1)
            else:
                asyncio.run(aio_request(port))
    assert info.value.errno == errno.ETIMEDOUT
    assert (info.value.strerror or "").startswith(f"no connection to 127.0.0.1:{port} ")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_refused_connect_succeeds_once_the_server_is_up(kind: str) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    served: list[socket.socket] = []

    class ListenAtFirstWait(Retry):
        def delays(self, rng: random.Random | None = None) -> Iterator[float]:
            for delay in Retry.delays(self, rng):
                if not served:
                    holder.listen()
                    served.append(holder)
                yield delay

    try:
        client = make_client(
            kind, "127.0.0.1", port, retry=ListenAtFirstWait(attempts=3, backoff=0.01, max_backoff=0.01)
        )
        client.connect()
        conn, _ = holder.accept()
        conn.close()
        client.close()
    finally:
        holder.close()


# -- requests lost with their connection --------------------------------------------------


@pytest.mark.parametrize("call", ["request", "request_many"])
@pytest.mark.parametrize("kind", CLIENTS)
def test_a_lost_idempotent_request_is_sent_again_and_logged(kind: str, call: str, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, "framewire.client")
    with scripted(read(1, then=hang_up), echo()) as server:
        client = make_client(kind, "127.0.0.1", server.port, retry=counting_retry(3, []))
        if call == "request":
            assert client.request(q("again"), idempotent=True).content == b"again"
        else:
            assert client.request_many([q("again")], idempotent=True)[0].content == b"again"
        client.close()
    assert [m.content for m in server.seen] == [b"again", b"again"]
    (line,) = lines(caplog, logging.DEBUG)
    assert line.startswith("connection lost under an idempotent request (127.0.0.1:")
    assert line.endswith("): sending it again")


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_lost_request_is_not_sent_again_past_the_call_s_deadline(kind: str) -> None:
    waits: list[float] = []
    with scripted(more=or_reset(read(1, then=hang_up))) as server:
        client = make_client(kind, "127.0.0.1", server.port, retry=counting_retry(100, waits))
        with pytest.raises((ConnectionClosed, TimeoutError)):  # lost, or out of time to try again
            client.request(q(), timeout=0.3, idempotent=True)
        assert 1 <= len(waits) <= 15  # about 40 ms apart for 0.3 s: not a hundred
    with refused_port() as port:  # the retries use the deadline up
        client = make_client(kind, "127.0.0.1", port, retry=counting_retry(100, []))
        with pytest.raises((ConnectionRefusedError, TimeoutError)) as info:
            client.request(q(), timeout=0.2)
        if isinstance(info.value, TimeoutError):
            assert str(info.value) == (
                f"[Errno 110] no connection to 127.0.0.1:{port} before the call's deadline"
            )


# -- timeouts and aborts -----------------------------------------------------------------


def test_a_request_the_server_does_not_read_times_out_in_sending() -> None:
    # More than the kernel's buffers hold: sendall itself must time out.
    big = Message.from_bytes(b"x" * (32 * 1024 * 1024))

    def never_reads(server: Scripted, conn: socket.socket) -> None:
        assert server.go.wait(20)

    with (
        scripted(never_reads, never_reads) as server,
        Client("127.0.0.1", server.port, timeout=0.3) as client,
    ):
        with pytest.raises(
            TimeoutError, match=rf"^\[Errno 110\] no answer from 127\.0\.0\.1:{server.port} within 0\.3 s$"
        ):
            client.send(big)
        assert client._sock is None  # aborted: half a message went out on it
        with pytest.raises(TimeoutError, match=r"within 0\.2 s$"):
            client.request(big, timeout=0.2)


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_failed_call_resets_its_connection(kind: str) -> None:
    with scripted(read(1)) as server, make_client(kind, "127.0.0.1", server.port, timeout=0.2) as client:
        with pytest.raises(TimeoutError):
            client.request(q())
        server.wait_closed(0)
    assert server.resets == 1


def test_receive_without_a_connection_says_so() -> None:
    client = Client("127.0.0.1", 9)
    with pytest.raises(ConnectionClosed, match=r"^127\.0\.0\.1:9: no connection to receive from$"):
        client.receive()


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
def test_a_big_batch_against_a_server_that_writes_as_it_reads(secure: bool) -> None:
    # 32 MiB each way, more than the kernel buffers: a client that sent all
    # before reading would deadlock with this server, which blocks in its
    # writes when its answers are not read.
    many = [Message.from_bytes(bytes([i % 251]) * 65536) for i in range(512)]
    context = tls().server() if secure else None
    options: dict[str, Any] = (
        {"ssl_context": tls().client(), "server_hostname": "localhost"} if secure else {}
    )
    with (
        scripted(echo(), context=context) as server,
        Client("127.0.0.1", server.port, timeout=20, **options) as client,
    ):
        answers = client.request_many(many)
        assert [a.content for a in answers] == [m.content for m in many]


def test_a_read_that_would_block_after_a_readiness_event_waits_again(monkeypatch: Any) -> None:
    # A TLS record only partly arrived makes the socket readable, and its
    # read raise SSLWantReadError: the batch waits for the rest rather than
    # ending with the answers it has. The first read is made to block so.
    real = Client._recv_all
    blocked: list[socket.socket] = []

    def partly_arrived(sock: socket.socket) -> bytes:
        if not blocked:
            blocked.append(sock)
            raise ssl.SSLWantReadError("the rest of the record has not come")
        return real(sock)

    monkeypatch.setattr(Client, "_recv_all", staticmethod(partly_arrived))
    with scripted(echo()) as server, Client("127.0.0.1", server.port) as client:
        assert [m.content for m in client.request_many([q("a"), q("b")])] == [b"a", b"b"]
    assert blocked


def test_close_twice_and_close_an_unused_client() -> None:
    Client().close()
    with scripted(echo()) as server:
        client = Client("127.0.0.1", server.port, heartbeat=60).connect()
        client.close()
        client.close()


# -- the heartbeat ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_heartbeat_pings_an_idle_connection_at_its_pace(kind: str) -> None:
    pings: list[float] = []
    three = threading.Event()

    def count_pings(server: Scripted, conn: socket.socket) -> None:
        decoder = Decoder()
        while data := conn.recv(65536):
            for message in decoder.feed(data):
                pings.append(message.get(PING_KEY))
                conn.sendall(message.encode())
                if len(pings) == 3:
                    three.set()

    # (A close while a ping's echo is on its way aborts: an answer is owed.)
    with scripted(or_reset(count_pings)) as server:
        client = make_client(kind, "127.0.0.1", server.port, heartbeat=0.05).connect()
        assert three.wait(2.5), "three pings did not come at a 50 ms pace"
        client.close()
    assert pings[:3] == [1, 2, 3]


def test_no_ping_while_answers_are_owed() -> None:
    early: list[bool] = []

    def answer_late(server: Scripted, conn: socket.socket) -> None:
        (request,) = read_messages(conn, 1)
        assert server.go.wait(10)
        early.append(bool(select.select([conn], [], [], 0)[0]))  # anything sent while owed?
        conn.sendall(request.encode())
        echo(1, then=hang_up)(server, conn)  # the ping that comes once the answer was taken

    with scripted(answer_late) as server:
        client = Client("127.0.0.1", server.port, heartbeat=0.05)
        client.send(q("owed"))  # connects: the heartbeat starts with an answer owed
        threading.Event().wait(0.3)  # six heartbeats' worth, during which none may ping
        server.go.set()
        assert client.receive().content == b"owed"
        server.wait_closed(0)  # it answered the first ping, then closed
        client.close()
    assert early == [False]
    assert [m.get(PING_KEY) for m in server.seen] == [1]


class Heard(logging.Handler):
    """Sets ``event`` when the client logs at ``level``."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.event = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.event.set()


@contextmanager
def heard(level: int) -> Iterator[Heard]:
    handler = Heard(level)
    logger = logging.getLogger("framewire.client")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_failed_heartbeat_closes_the_connection_and_says_so(kind: str) -> None:
    with heard(logging.INFO) as log, scripted(read(1, then=hang_up), echo()) as server:
        client = make_client(kind, "127.0.0.1", server.port, heartbeat=0.05, timeout=5).connect()
        assert log.event.wait(10), "the heartbeat's failure was not logged within 10 s"
        (line,) = log.lines
        assert line.startswith(f"heartbeat to 127.0.0.1:{server.port} failed (") and line.endswith(
            "): connection closed"
        )
        assert client.request(q("next")).content == b"next"  # the next call opens a new one
        client.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_heartbeat_s_ping_has_the_client_s_timeout_or_at_least_a_second(kind: str) -> None:
    for timeout, named in [(0.3, "0.3"), (None, "1")]:
        with heard(logging.INFO) as log, scripted(read(1)) as server:
            client = make_client(kind, "127.0.0.1", server.port, heartbeat=0.05, timeout=timeout).connect()
            assert log.event.wait(10), "the heartbeat's failure was not logged within 10 s"
            (line,) = log.lines
            assert line == (
                f"heartbeat to 127.0.0.1:{server.port} failed ([Errno 110] no answer from"
                f" 127.0.0.1:{server.port} within {named} s): connection closed"
            )
            client.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_connection_in_use_is_not_pinged_and_an_idle_one_is(kind: str) -> None:
    pinged = threading.Event()

    def note_pings(server: Scripted, conn: socket.socket) -> None:
        decoder = Decoder()
        while data := conn.recv(65536):
            for message in decoder.feed(data):
                server.seen.append(message)
                conn.sendall(message.encode())
                if message.get(PING_KEY) is not None:
                    pinged.set()

    # (A close while the ping's echo is on its way aborts: answers are owed.)
    with scripted(or_reset(note_pings)) as server:
        client = make_client(kind, "127.0.0.1", server.port, heartbeat=1.0).connect()
        for _ in range(30):  # a call every 50 ms for 1.5 s: never a second idle
            client.request(q())
            assert not pinged.wait(0.05), "a connection in use was pinged"
        assert pinged.wait(10), "the connection, idle at last, was not pinged"
        client.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_tls_a_close_before_answering_names_the_likely_cause(kind: str) -> None:
    context = tls().server()
    with scripted(read(1, then=hang_up), context=context) as server:
        client = make_client(
            kind, "127.0.0.1", server.port, ssl_context=tls().client(), server_hostname="localhost"
        )
        with pytest.raises(ConnectionClosed) as info:
            client.request(q())
    assert str(info.value) == (
        f"127.0.0.1:{server.port} closed the connection before answering (a TLS server that requires"
        " a client certificate closes like this when it is missing or refused)"
    )


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_error_response_to_request_is_raised_with_it(kind: str) -> None:
    def errs(server: Scripted, conn: socket.socket) -> None:
        read_messages(conn, 1)
        conn.sendall(Message.error_response("bad-content", "no").encode())
        until_closed(server, conn)

    with scripted(errs) as server, make_client(kind, "127.0.0.1", server.port) as client:
        with pytest.raises(ErrorResponse) as info:
            client.request(q())
        assert info.value.code == "bad-content"


# -- issue 37: a hung server, answers nobody asked for ------------------------------


def hold(server: Scripted, conn: socket.socket) -> None:
    """Read nothing at all, answer nothing, until the test is over."""
    server.go.wait(20)
    with contextlib.suppress(OSError):
        conn.recv(1)


def test_the_asyncio_client_recovers_from_a_hung_server_with_bounded_buffers() -> None:
    from framewire.client.aio import _WRITE_HIGH, AioClient

    big = Message.from_bytes(b"x" * 200_000)
    biggest = [0]

    async def main(server: Scripted) -> Message:
        client = AioClient("127.0.0.1", server.port, timeout=0.3)

        async def one() -> None:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                await client.request(big)
            if client._transport is not None:
                biggest[0] = max(biggest[0], client._transport.get_write_buffer_size())

        await asyncio.gather(*(one() for _ in range(100)))
        assert not client.in_flight  # no future left queued
        server.go.set()  # the hung connection ends (the scripted server serves one at a time)
        answer = await client.request(q("after"), timeout=10)  # a new connection
        await client.close()
        return answer

    with scripted(or_reset(hold), more=echo()) as server:
        answer = asyncio.run(main(server))
    assert answer.content == b"after"
    assert biggest[0] <= _WRITE_HIGH + len(big.encode())


def doubled(server: Scripted, conn: socket.socket) -> None:
    """Answer each request with itself and then a message nobody asked for."""
    decoder = Decoder()
    with contextlib.suppress(ConnectionResetError):
        while data := conn.recv(65536):
            for message in decoder.feed(data):
                conn.sendall(message.encode() + q("unsolicited").encode())


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_an_answer_nobody_asked_for_is_never_taken_for_the_next_call(kind: str, caplog: Any) -> None:
    from framewire.client.aio import AioClient

    async def aio_calls(port: int) -> list[bytes]:
        async with AioClient("127.0.0.1", port, timeout=10) as client:
            return [(await client.request(q(text))).content for text in ("one", "two", "three")]

    with scripted(doubled, doubled, doubled, more=doubled) as server:
        if kind == "blocking":
            with Client("127.0.0.1", server.port, timeout=10) as client:
                contents = [client.request(q(text)).content for text in ("one", "two", "three")]
        else:
            contents = asyncio.run(aio_calls(server.port))
    assert contents == [b"one", b"two", b"three"]


@pytest.mark.parametrize(
    "raised",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        TimeoutError("timed out"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        BrokenPipeError(errno.EPIPE, "broken pipe"),
        socket.gaierror(socket.EAI_NONAME, "unknown"),
        FileNotFoundError(errno.ENOENT, "no file"),
        ssl.SSLError(1, "bad"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_a_translated_socket_error_keeps_the_original_as_its_cause(raised: OSError) -> None:
    # As trio does: the sentence for a person, and the error that led to it.
    from framewire.io.netio import translated

    with pytest.raises(OSError) as info, translated("127.0.0.1", 1, 1.0):
        raise raised
    assert info.value is not raised and info.value.__cause__ is raised


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_refused_call_names_the_refusal_as_its_cause(kind: str) -> None:
    with refused_port() as port, pytest.raises(ConnectionRefusedError) as info:
        make_client(kind, "127.0.0.1", port, retry=Retry(attempts=1)).request(q())
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
