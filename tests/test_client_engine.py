"""The client engine, sans I/O: what every client does with its requests and
the server's bytes, with no sockets and a fake clock. Both clients are only
I/O around it, so these rules are theirs by construction."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framewire import Message, encode
from framewire.client.connection import PROBE, ClientConnection
from framewire.client.options import DEFAULT, ClientOptions
from framewire.core.decoder import Decoder
from framewire.core.errors import ConnectionClosed, IncompleteMessage, ProtocolError
from framewire.core.probe import DEADLINE_KEY, ID_KEY, PING_KEY


def engine(**settings: object) -> ClientConnection:
    return ClientConnection(ClientOptions(**settings), now=100.0, where="srv:1")  # type: ignore[arg-type]


def q(text: str) -> Message:
    return Message.from_bytes(text.encode())


def sent(data: bytes) -> list[Message]:
    return Decoder().feed(data)


def echo_of(data: bytes) -> bytes:
    """What a framewire echo server answers: each request back, ids and pings included."""
    return b"".join(encode(m) for m in sent(data))


def test_requests_are_tagged_as_the_options_say_and_only_so() -> None:
    plain = engine()
    assert [m.extensions for m in sent(plain.send([q("a")], ["x"], 110.0, 100.0))] == [{}]
    tagged = engine(ids=True, deadlines=True)
    first, second = sent(tagged.send([q("a"), q("b")], ["x", "x"], 102.5, 100.0))
    assert (first.get(ID_KEY), second.get(ID_KEY)) == (1, 2)
    assert first.get(DEADLINE_KEY) == pytest.approx(2500)
    (ping,) = sent(tagged.ping())
    assert ping.get(PING_KEY) == 3  # the same sequence: ids and pings never collide
    assert tagged.in_flight == 3


def test_answers_go_to_their_owners_in_request_order() -> None:
    conn = engine(ids=True)
    data = conn.send([q("a"), q("b")], ["first", "second"], None, 100.0) + conn.ping("pinger")
    answered = conn.receive(echo_of(data), 101.0)
    assert [(owner, m.content) for owner, m in answered] == [
        ("first", b"a"),
        ("second", b"b"),
        ("pinger", b"null"),
    ]
    assert conn.failure is None and conn.in_flight == 0 and conn.last_used == 101.0


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=12))
def test_any_split_of_the_answers_gives_the_same_answers(cuts: list[int]) -> None:
    conn = engine(ids=True)
    stream = echo_of(conn.send([q(str(i) * i) for i in range(6)], list(range(6)), None, 100.0))
    got: list[tuple[object, Message]] = []
    start = 0
    for cut in cuts:
        got += conn.receive(stream[start : start + cut], 100.0)
        start = min(len(stream), start + cut)
    got += conn.receive(stream[start:], 100.0)
    assert [(owner, m.content) for owner, m in got] == [(i, (str(i) * i).encode()) for i in range(6)]
    assert conn.failure is None


def test_an_answer_nobody_asked_for_fails_the_connection_after_those_owed() -> None:
    conn = engine()
    data = conn.send([q("a")], ["only"], None, 100.0)
    answered = conn.receive(echo_of(data) + encode(q("extra")), 100.0)
    assert [owner for owner, _ in answered] == ["only"]
    assert isinstance(conn.failure, ProtocolError)
    assert str(conn.failure) == "protocol-error: srv:1 sent an answer nobody asked for"
    assert conn.take_failed() == [] and not conn.reusable(100.0)
    with pytest.raises(ProtocolError):
        conn.send([q("b")], ["late"], None, 100.0)  # a failed connection takes nothing more


def test_a_wrong_id_fails_the_call_it_was_for_and_every_call_after_it() -> None:
    conn = engine(ids=True)
    conn.send([q("a"), q("b")], ["first", "second"], None, 100.0)
    assert conn.receive(encode(q("a")), 100.0) == []  # no framewire-id on it
    assert str(conn.failure) == (
        "protocol-error: the answer to request 1 carries framewire-id None: the connection is out of step"
    )
    assert conn.take_failed() == ["first", "second"]


def test_a_ping_answered_otherwise_is_a_protocol_error() -> None:
    conn = engine()
    conn.ping("pinger")
    assert conn.receive(encode(q("not an echo")), 100.0) == []
    assert str(conn.failure) == "protocol-error: the reply to a ping is not the server's echo of it"
    assert conn.take_failed() == ["pinger"]


def test_an_end_of_stream_under_calls_is_a_close_before_answering_and_says_why_over_tls() -> None:
    import ssl

    conn = engine()
    conn.send([q("a")], ["waiting"], None, 100.0)
    conn.receive(b"", 100.0)
    assert isinstance(conn.failure, ConnectionClosed)
    assert str(conn.failure) == "srv:1 closed the connection before answering"
    assert conn.take_failed() == ["waiting"]
    tls = engine(ssl_context=ssl.create_default_context())
    tls.send([q("a")], ["waiting"], None, 100.0)
    tls.receive(b"", 100.0)
    assert "requires a client certificate" in str(tls.failure)


def test_a_cut_in_the_middle_of_an_answer_is_an_incomplete_message() -> None:
    conn = engine()
    conn.send([q("a")], ["waiting"], None, 100.0)
    conn.receive(encode(q("abcdef"))[:-2], 100.0)
    conn.receive(b"", 100.0)
    assert isinstance(conn.failure, IncompleteMessage)


def test_a_loss_is_a_reset_in_words_and_the_first_failure_is_the_one_kept() -> None:
    conn = engine()
    conn.send([q("a")], ["waiting"], None, 100.0)
    conn.lost(OSError(104, "Connection reset by peer"))
    assert isinstance(conn.failure, ConnectionResetError)
    assert str(conn.failure) == "srv:1 reset the connection ([Errno 104] Connection reset by peer)"
    conn.lost(None)  # what comes after changes nothing
    assert isinstance(conn.failure, ConnectionResetError)
    assert conn.abandon() == ["waiting"]


def test_abandon_fails_every_call_with_a_close_of_the_client_s_own() -> None:
    conn = engine()
    conn.send([q("a"), q("b")], ["one", "two"], None, 100.0)
    assert conn.abandon() == ["one", "two"]
    assert str(conn.failure) == "srv:1: the connection was closed by this client"


def test_a_heartbeat_is_due_after_idleness_and_never_while_answers_are_owed() -> None:
    off = engine()
    assert off.heartbeat_in(1e9) == math.inf
    conn = engine(heartbeat=5)
    assert conn.heartbeat_in(103.0) == pytest.approx(2.0)
    conn.send([q("a")], ["x"], None, 104.0)
    assert conn.heartbeat_in(200.0) == 5  # owed: looked at again a heartbeat later
    conn.receive(echo_of(encode(q("a"))), 106.0)
    assert conn.heartbeat_in(111.0) == 0  # idle since 106: due now
    conn.fail(ConnectionClosed("gone"))
    assert conn.heartbeat_in(200.0) == math.inf


def test_a_connection_old_enough_is_replaced_only_once_nothing_is_owed() -> None:
    conn = engine(max_connection_age=10)
    assert 109.0 <= conn.retire_at <= 110.0
    assert conn.reusable(108.9) and not conn.reusable(110.0)
    conn.send([q("a")], ["x"], None, 100.0)
    assert conn.reusable(200.0)  # answers owed: it stays until they come
    forever = engine(max_connection_age=None)
    assert forever.reusable(1e12)


def test_probes_without_a_named_owner_are_owed_to_probe() -> None:
    conn = engine()
    data = conn.ping()
    assert conn.owes(PROBE)
    assert [owner for owner, _ in conn.receive(echo_of(data), 100.0)] == [PROBE]


def test_the_options_are_checked_when_made_and_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^timeout must be > 0, not 0$"):
        ClientOptions(timeout=0)
    with pytest.raises(ValueError, match=r"^max_connection_age must be > 0, not -1$"):
        ClientOptions(max_connection_age=-1)
    with pytest.raises(TypeError, match=r"^ids must be True or False, not 'yes'$"):
        ClientOptions(ids="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^ssl_context must be an ssl.SSLContext"):
        ClientOptions(ssl_context="tls")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'ssl'"):
        ClientOptions(ssl=None)  # type: ignore[call-arg]
    options = ClientOptions(timeout=None, connect_timeout=3)
    assert options.connect_limit == 3 and ClientOptions(timeout=4).connect_limit == 4
    assert options.seconds(DEFAULT) is None and options.seconds(2.0) == 2.0 and options.seconds(None) is None
    assert ClientOptions.of(options, {}) is options
    assert ClientOptions.of(options, {"ids": True}).ids and ClientOptions.of(None, {"ids": True}).ids
    assert repr(DEFAULT) == "DEFAULT"
