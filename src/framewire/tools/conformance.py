"""The conformance suite: any server of the protocol, held to the spec.

Run as ``framewire conformance HOST PORT``. Each case opens its own
connection(s), sends bytes crafted by hand (so that it can send what a
well-behaved client never would), and judges what comes back: PASS, FAIL,
or NOT-APPLICABLE (the case needs something the server did not say it has,
e.g. its application or a limit low enough to reach), with one line of why
and, for a failure, the bytes both ways.

Cases are grouped (framing, exchanges, errors, limits and time,
application) and levelled: ``guide`` cases are what the guide's own server
can be expected to pass (one request per connection, exact framing);
``strict`` adds everything else. The suite is polite: one connection at a
time, at most a few MiB per case, every wait bounded.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from framewire.core.decoder import Decoder
from framewire.core.errors import ProtocolError
from framewire.core.message import Message
from framewire.io.netio import connect, describe

__all__ = ["CASES", "Case", "Outcome", "Target", "action_request", "frame", "request_from", "run_suite"]

Status = Literal["PASS", "FAIL", "NOT-APPLICABLE"]
Level = Literal["guide", "strict"]
App = Literal["none", "echo", "search"]


@dataclasses.dataclass(frozen=True)
class Target:
    """The server under test, and what it says about itself."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    #: The application it runs (``none``: unknown; application cases are skipped).
    app: App = "none"
    #: Its message deadline in seconds (the trickle case waits this long, plus a margin).
    message_timeout: float = 30.0
    #: Its header and content limits (a case that needs to pass them is
    #: skipped when they cannot be passed politely).
    max_header_size: int = 65535
    max_content_length: int = 64 * 1024 * 1024
    #: Seconds any one wait of a case may take.
    patience: float = 5.0
    #: It says it knows framewire's extensions (ids, unordered answers,
    #: streams, cancel, describe): their cases run; else they are not applicable.
    extensions: bool = False
    #: A well-formed request to its application, as sent (``--request``,
    #: ``--action``): the cases that need "a request" send this one, and every
    #: answer to a request is judged by its framing alone, an error answer
    #: included (an App of JSON actions rightly refuses the suite's binary
    #: requests with bad-content). None: the suite's own binary requests.
    request: bytes | None = None

    def sample(self, content: bytes) -> bytes:
        """The request a case sends where any request will do: the server's
        own (:attr:`request`), else a binary one carrying ``content``."""
        return frame(content) if self.request is None else self.request


def request_from(data: bytes) -> bytes:
    """A request for :attr:`Target.request` from a file's bytes: one framed
    message as it is, or a JSON value (an action: ``{"action": ..., "value":
    ...}``) sent as ``text/json`` content. Raises ValueError, worded for
    the person who gave the file."""
    try:
        messages = Decoder(max_content_length=1 << 30).feed(data)
    except ProtocolError:
        messages = []
    if len(messages) == 1 and len(messages[0].encode()) == len(data):
        return data
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("it is neither one framed message nor a JSON value") from None
    return json_frame(value)


def action_request(action: str, value: Any) -> bytes:
    """The request ``{"action": action, "value": value}`` as ``text/json``."""
    return json_frame({"action": action, "value": value})


@dataclasses.dataclass
class Outcome:
    """What one case found."""

    status: Status
    why: str
    sent: bytes = b""
    received: bytes = b""


@dataclasses.dataclass(frozen=True)
class Case:
    """One check of the spec."""

    group: str
    name: str
    level: Level
    about: str
    run: Callable[[Target], Outcome]


# -- bytes by hand ------------------------------------------------------------------------


def frame(content: bytes, header: dict[str, Any] | None = None, **keys: Any) -> bytes:
    """A message's bytes: ``header`` (or the binary defaults, updated by
    ``keys``, ``content-length`` filled in) and ``content``, keys in the
    order given."""
    fields: dict[str, Any] = (
        dict(header)
        if header is not None
        else {
            "byteorder": "little",
            "content-type": "binary/custom-client-binary-type",
            "content-encoding": "binary",
            "content-length": len(content),
        }
    )
    for key, value in keys.items():
        fields[key.replace("_", "-")] = value
    raw = json.dumps(fields, ensure_ascii=False).encode()
    return struct.pack(">H", len(raw)) + raw + content


def json_frame(value: Any, encoding: str = "utf-8", **keys: Any) -> bytes:
    content = json.dumps(value, ensure_ascii=False).encode(encoding)
    return frame(
        content,
        {
            "byteorder": "little",
            "content-type": "text/json",
            "content-encoding": encoding,
            "content-length": len(content),
        }
        | {key.replace("_", "-"): v for key, v in keys.items()},
    )


#: Bytes a case keeps of what one connection received: more than any
#: answer of the suite needs (its largest requests are 4 MiB), so that a
#: server that streams without end costs the suite no more than this.
MAX_RECEIVED = 16 * 1024 * 1024


class _Wire:
    """One connection of a case: what is sent and received is kept (what is
    received up to :data:`MAX_RECEIVED`, past which the case stops reading)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.sent = bytearray()
        self.received = bytearray()
        self.closed = False
        self.reset = False
        self.overflowed = False
        self.sock = connect(
            target.host, target.port, target.patience, target.ssl_context, target.server_hostname, keepalive=0
        )

    def send(self, data: bytes, pieces: int = 1) -> None:
        """Send ``data``, in ``pieces`` writes (1: at once)."""
        step = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            self.sock.sendall(chunk)
            self.sent += chunk
            if pieces > 1:
                time.sleep(0.001)  # a pause between writes, so they travel apart

    def shut(self) -> None:
        """Half-close: no more requests."""
        self.sock.shutdown(socket.SHUT_WR)

    def messages(self, count: int, seconds: float | None = None) -> tuple[list[Message], str | None]:
        """Read until ``count`` messages came (or the end, or the time):
        the messages, and what went wrong, if anything."""
        decoder = Decoder(max_content_length=MAX_RECEIVED)
        out: list[Message] = []
        try:
            if self.received:
                out += decoder.feed(bytes(self.received))
        except ProtocolError as exc:
            return out, f"the server's bytes are not valid messages: {exc}"
        deadline = time.monotonic() + (seconds if seconds is not None else self.target.patience)
        while len(out) < count and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return out, f"{len(out)} of {count} answers within {self.target.patience:g} s"
            data = self._recv(left)
            if data is None:
                continue
            try:
                out += decoder.feed(data)
            except ProtocolError as exc:
                return out, f"the server's bytes are not valid messages: {exc}"
        if len(out) < count:
            if self.overflowed:
                return out, f"the server sent over {MAX_RECEIVED >> 20} MiB without {count} whole answers"
            return out, f"the connection ended after {len(out)} of {count} answers"
        return out, None

    def ends(self, seconds: float | None = None) -> bool:
        """Whether the server closes the connection within the time."""
        deadline = time.monotonic() + (seconds if seconds is not None else self.target.patience)
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._recv(left)
        return True

    def _recv(self, left: float) -> bytes | None:
        self.sock.settimeout(min(left, 0.5))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return None
        except OSError:
            self.closed = self.reset = True
            return b""
        if not data:
            self.closed = True
        room = MAX_RECEIVED - len(self.received)
        if len(data) > room:
            # Stop reading here: a server streaming without end (or one
            # message larger than any answer the suite asks for) is judged on
            # what it sent so far, and costs the suite no more memory.
            data = data[:room]
            self.closed = self.overflowed = True
        self.received += data
        return data

    def close(self) -> None:
        self.sock.close()

    def outcome(self, status: Status, why: str) -> Outcome:
        return Outcome(status, why, bytes(self.sent), bytes(self.received))


@dataclasses.dataclass
class _Checks:
    """The answers a case may expect of the server's application."""

    target: Target

    def answers(self, request: bytes, response: Message) -> str | None:
        """None if ``response`` is a right answer to ``request`` for the
        application the server runs (any valid message when unknown)."""
        app = self.target.app
        if self.target.request is not None:
            return None  # the server's own request: any valid message is an answer
        if response.is_error:
            error = response.error()
            return f"an error answer: {error.code if error else '?'}"
        if app == "none":
            return None
        (sent,) = Decoder(max_content_length=1 << 40).feed(request)
        if app == "echo":
            if (response.content, response.content_type) != (sent.content, sent.content_type):
                return "the echo application's answer is not the request's content and type"
            return None
        if sent.content_type == "text/json":
            return None  # judged by the application cases
        expected = b"First 10 bytes of request: " + sent.content[:10]
        if response.content != expected:
            return f"the demo answers binary content with {expected!r}, not {response.content[:60]!r}"
        return None


def _one(target: Target, data: bytes, pieces: int = 1, count: int = 1, shut: bool = False) -> Outcome:
    # Send, read ``count`` answers, check each against the application.
    wire = _Wire(target)
    try:
        wire.send(data, pieces)
        if shut:
            wire.shut()
        answers, problem = wire.messages(count)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        requests = _split(data)
        for request, answer in zip(requests, answers, strict=False):
            wrong = _Checks(target).answers(request, answer)
            if wrong is not None:
                return wire.outcome("FAIL", wrong)
        return wire.outcome("PASS", f"{count} valid answer{'s' if count > 1 else ''}")
    finally:
        wire.close()


def _split(data: bytes) -> list[bytes]:
    # The messages of a byte string, each as its own bytes.
    out = []
    while data:
        size = struct.unpack(">H", data[:2])[0]
        header = json.loads(data[2 : 2 + size])
        end = 2 + size + int(header["content-length"])
        out.append(data[:end])
        data = data[end:]
    return out


def _error(
    target: Target, data: bytes, code: str, *, closes: bool, shut: bool = False, then: bytes = b""
) -> Outcome:
    # One error answer with ``code``; then the connection closed (framing
    # errors) or still answering (content errors). ``then``: more bytes sent
    # in the same write, as a client still sending would (kept out of the
    # report); the close must then be orderly, with no reset.
    wire = _Wire(target)
    try:
        if then:
            try:
                wire.sock.sendall(data + then)
            except OSError as exc:
                return wire.outcome(
                    "FAIL",
                    f"sending failed ({describe(exc)}): the server closed with the client's bytes unread, "
                    "and its kernel reset the connection",
                )
            wire.sent += data
        else:
            wire.send(data)
        if shut:
            wire.shut()
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", f"expected a {code} answer: {problem}")
        error = answers[0].error() if answers[0].is_error else None
        if error is None or error.code != code:
            got = error.code if error else "a non-error answer"
            return wire.outcome("FAIL", f"expected {code}, got {got}")
        if closes and not wire.ends():
            return wire.outcome("FAIL", f"{code} must close the connection; it stayed open")
        if then and wire.reset:
            return wire.outcome("FAIL", "the answer came, then a reset instead of an orderly end")
        if not closes:
            wire.send(frame(b"still there?"))
            _, problem = wire.messages(2)
            if problem is not None:
                return wire.outcome("FAIL", f"{code} must keep the connection: {problem}")
        ending = "then an orderly end" if then else f"connection {'closed' if closes else 'kept'}"
        return wire.outcome("PASS", f"{code}, {ending}")
    finally:
        wire.close()


# -- the cases ------------------------------------------------------------------------------

CASES: list[Case] = []


def case(
    group: str, level: Level, about: str
) -> Callable[[Callable[[Target], Outcome]], Callable[[Target], Outcome]]:
    def register(run: Callable[[Target], Outcome]) -> Callable[[Target], Outcome]:
        CASES.append(Case(group, run.__name__.replace("_", "-"), level, about, run))
        return run

    return register


@case("framing", "guide", "one message sent at once gets one valid answer")
def one_message(target: Target) -> Outcome:
    return _one(target, target.sample(b"conformance"))


@case("framing", "guide", "one message sent a byte at a time")
def byte_by_byte(target: Target) -> Outcome:
    data = target.sample(b"slowly")
    return _one(target, data, pieces=len(data))


@case("framing", "guide", "split in two at every boundary: in the length, after it, in and after the header")
def split_at_boundaries(target: Target) -> Outcome:
    data = target.sample(b"boundaries")
    size = struct.unpack(">H", data[:2])[0]
    last = Outcome("PASS", "")
    for cut in (1, 2, 3, 2 + size // 2, 2 + size, 2 + size + 1):
        wire = _Wire(target)
        try:
            wire.send(data[:cut])
            time.sleep(0.02)  # the two parts travel apart
            wire.send(data[cut:])
            _, problem = wire.messages(1)
            if problem is not None:
                return wire.outcome("FAIL", f"split after byte {cut}: {problem}")
            last = wire.outcome("PASS", "6 split points, each answered")
        finally:
            wire.close()
    return last


@case("framing", "guide", "content of length 0")
def empty_content(target: Target) -> Outcome:
    return _one(target, frame(b""))


@case("framing", "guide", "content larger than 1 MiB")
def large_content(target: Target) -> Outcome:
    if target.max_content_length < 1_100_000:
        return Outcome("NOT-APPLICABLE", "the server's content limit is below 1 MiB")
    return _one(target, frame(bytes(range(256)) * 4400))


@case("framing", "guide", "header keys in another order, and an extension key")
def keys_in_any_order(target: Target) -> Outcome:
    content = b"any order"
    header = {"x-trace": "abc", "content-length": len(content), "content-encoding": "binary"}
    header |= {"byteorder": "big", "content-type": "binary/custom-client-binary-type"}
    return _one(target, frame(content, header))


@case("framing", "guide", "text content in each text encoding: utf-8, utf-16, latin-1")
def text_encodings(target: Target) -> Outcome:
    outcome = Outcome("PASS", "")
    for encoding in ("utf-8", "utf-16", "latin-1"):
        content = "héllo".encode(encoding)
        header = {"content-type": "text/plain", "content-encoding": encoding, "byteorder": "little"}
        outcome = _one(target, frame(content, header | {"content-length": len(content)}))
        if outcome.status == "FAIL":
            outcome.why = f"{encoding}: {outcome.why}"
            return outcome
    outcome.why = "utf-8, utf-16 and latin-1 each answered"
    return outcome


@case("framing", "strict", "many messages back to back in one write")
def back_to_back(target: Target) -> Outcome:
    return _one(target, b"".join(target.sample(b"%d" % i) for i in range(20)), count=20)


@case("exchanges", "strict", "keep-alive: a second request on the same connection after the first answer")
def keep_alive(target: Target) -> Outcome:
    wire = _Wire(target)
    try:
        for number in range(1, 3):
            wire.send(target.sample(b"again"))
            _, problem = wire.messages(number)
            if problem is not None:
                return wire.outcome("FAIL", f"request {number}: {problem}")
        return wire.outcome("PASS", "both answered on one connection")
    finally:
        wire.close()


@case("exchanges", "strict", "pipelining: answers come in request order")
def pipelining_order(target: Target) -> Outcome:
    data = b"".join(json_frame({"action": "search", "value": f"n{i}"}) for i in range(5))
    if target.app == "echo":
        data = b"".join(frame(b"n%d" % i) for i in range(5))
    if target.request is not None:
        data = target.request * 5  # (the order is not seen: the answers are alike)
    wire = _Wire(target)
    try:
        wire.send(data)
        answers, problem = wire.messages(5)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        if target.app == "echo" and [a.content for a in answers] != [b"n%d" % i for i in range(5)]:
            return wire.outcome("FAIL", "the answers are not in request order")
        if target.app == "search" and [a.json()["result"] for a in answers] != [
            f"No match for 'n{i}'." for i in range(5)
        ]:
            return wire.outcome("FAIL", "the answers are not in request order")
        if target.request is not None:
            return wire.outcome("PASS", "5 pipelined requests, 5 answers (alike: their order not seen)")
        return wire.outcome("PASS", "5 pipelined requests, 5 answers in order")
    finally:
        wire.close()


@case("exchanges", "strict", "half-close: requests sent, then the client's side shut, still answered")
def half_close(target: Target) -> Outcome:
    if target.ssl_context is not None:
        return Outcome("NOT-APPLICABLE", "a TLS client cannot half-close")
    return _one(target, target.sample(b"conformance") + target.sample(b"two"), count=2, shut=True)


@case("exchanges", "guide", "the guide's client: one request, one answer, the connection closed")
def guide_client(target: Target) -> Outcome:
    wire = _Wire(target)
    try:
        wire.send(target.sample(b"conformance"))
        _, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        wire.sock.close()
        return wire.outcome("PASS", "answered; the client closed")
    finally:
        wire.close()


def _still_serving(target: Target) -> str | None:
    # After an abuse: does a new connection still get answered?
    outcome = _one(target, target.sample(b"conformance"))
    return None if outcome.status == "PASS" else f"the server no longer answers: {outcome.why}"


@case("errors", "strict", "a header length of 0 is bad-header-length, then close")
def bad_header_length(target: Target) -> Outcome:
    return _error(target, b"\x00\x00", "bad-header-length", closes=True)


@case("errors", "strict", "a header that is not JSON is bad-header, then close")
def bad_header(target: Target) -> Outcome:
    return _error(target, struct.pack(">H", 9) + b"{not json", "bad-header", closes=True)


@case("errors", "strict", "a header without content-type is missing-header-key, then close")
def missing_header_key(target: Target) -> Outcome:
    header = {"byteorder": "little", "content-encoding": "binary", "content-length": 1}
    return _error(target, frame(b"x", header), "missing-header-key", closes=True)


@case("errors", "strict", "a negative content-length is bad-header-value, then close")
def bad_header_value(target: Target) -> Outcome:
    return _error(target, frame(b"", content_length=-1), "bad-header-value", closes=True)


@case("errors", "strict", "a header above the server's limit is header-too-large, then close")
def header_too_large(target: Target) -> Outcome:
    if target.max_header_size >= 65535:
        return Outcome("NOT-APPLICABLE", "the server's header limit is the most a header can be")
    padding = "x" * (target.max_header_size + 10)
    return _error(target, frame(b"", x_padding=padding), "header-too-large", closes=True)


# What a client still has on its way when its first message is refused: more
# than one read of the server's takes, less than a lingering close should drop.
_STILL_SENDING = 256 * 1024


@case("errors", "strict", "a client still sending after a framing error gets its answer and an orderly end")
def error_while_sending(target: Target) -> Outcome:
    # A server that closes with the client's bytes unread makes its kernel
    # reset the connection, and the reset can cost the client the answer.
    return _error(target, b"\x00\x00", "bad-header-length", closes=True, then=frame(b"x" * _STILL_SENDING))


@case("errors", "strict", "the stream ending mid-message is incomplete-message")
def incomplete_message(target: Target) -> Outcome:
    if target.ssl_context is not None:
        return Outcome("NOT-APPLICABLE", "a TLS client cannot half-close")
    return _error(target, frame(b"0123456789")[:-4], "incomplete-message", closes=True, shut=True)


@case("errors", "strict", "text/json content that is not JSON is bad-content, connection kept")
def bad_content(target: Target) -> Outcome:
    if target.app != "search":
        return Outcome("NOT-APPLICABLE", "only an application that reads JSON content must refuse it")
    header = {"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8"}
    return _error(target, frame(b"{oops", header | {"content-length": 5}), "bad-content", closes=False)


@case("errors", "strict", "text content with an encoding that is not a text codec is bad-encoding, kept")
def bad_encoding(target: Target) -> Outcome:
    if target.app != "search":
        return Outcome("NOT-APPLICABLE", "only an application that reads text content must refuse it")
    header = {"byteorder": "little", "content-type": "text/json", "content-encoding": "no-such-codec"}
    return _error(target, frame(b"{}", header | {"content-length": 2}), "bad-encoding", closes=False)


@case("limits and time", "strict", "a huge content-length is content-too-large before any content")
def huge_content_length(target: Target) -> Outcome:
    return _error(target, frame(b"", content_length=1 << 50), "content-too-large", closes=True)


@case("limits and time", "strict", "a peer that trickles a message is cut with timeout at the deadline")
def trickle_cut_at_deadline(target: Target) -> Outcome:
    wire = _Wire(target)
    try:
        wire.send(frame(b"0123456789")[:-5])
        answers, problem = wire.messages(1, target.message_timeout + target.patience)
        if problem is not None:
            return wire.outcome("FAIL", f"expected timeout within {target.message_timeout:g} s: {problem}")
        error = answers[0].error() if answers[0].is_error else None
        if error is None or error.code != "timeout":
            return wire.outcome("FAIL", f"expected timeout, got {error.code if error else 'an answer'}")
        if not wire.ends():
            return wire.outcome("FAIL", "timeout must close the connection; it stayed open")
        return wire.outcome("PASS", "timeout, then closed")
    finally:
        wire.close()


@case("limits and time", "strict", "a peer that never reads its answers does not stop the server")
def never_reads(target: Target) -> Outcome:
    wire = _Wire(target)
    try:
        wire.sock.settimeout(target.patience)
        data = frame(b"x" * 65536) * 64  # 4 MiB of requests, no answer read
        try:
            wire.sock.sendall(data)
            wire.sent += data
        except (TimeoutError, OSError):
            pass  # the server stopped reading (backpressure): that is allowed
        problem = _still_serving(target)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        return wire.outcome("PASS", "others are still served")
    finally:
        wire.close()


@case("application", "strict", "the echo or demo application's answers")
def application_answers(target: Target) -> Outcome:
    if target.app == "none":
        return Outcome("NOT-APPLICABLE", "the server did not say which application it runs (--app)")
    wire = _Wire(target)
    try:
        if target.app == "echo":
            requests = [frame(b"echo me"), json_frame({"action": "search", "value": "ring"})]
            wire.send(b"".join(requests))
            answers, problem = wire.messages(2)
            if problem is not None:
                return wire.outcome("FAIL", problem)
            for request, answer in zip(requests, answers, strict=True):
                wrong = _Checks(target).answers(request, answer)
                if wrong is not None:
                    return wire.outcome("FAIL", wrong)
            return wire.outcome("PASS", "binary and JSON content echoed")
        wire.send(json_frame({"action": "search", "value": "morpheus"}))
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        result = answers[0].json().get("result", "")
        if not str(result).startswith("Follow the white rabbit"):
            return wire.outcome("FAIL", f"search 'morpheus' answered {result!r}")
        return wire.outcome("PASS", "the demo's search answers as the guide's does")
    finally:
        wire.close()


# -- framewire's extensions (for servers that say they have them) ---------------------------


def _extensions(target: Target) -> Outcome | None:
    if target.extensions:
        return None
    return Outcome("NOT-APPLICABLE", "the server did not say it knows framewire's extensions (--extensions)")


@case("extensions", "strict", "a request's framewire-id is on its answer")
def id_echoed(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(frame(b"id", framewire_id="c-1") + frame(b"id", framewire_id=2))
        answers, problem = wire.messages(2)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        ids = [answer.get("framewire-id") for answer in answers]
        if ids != ["c-1", 2]:
            return wire.outcome("FAIL", f"the answers carry framewire-id {ids}, not ['c-1', 2]")
        return wire.outcome("PASS", "each answer carries its request's id")
    finally:
        wire.close()


@case("extensions", "strict", "an unordered request's answer is marked, with its id")
def unordered_marked(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(frame(b"u", framewire_id=5, framewire_unordered=True))
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        extensions = answers[0].extensions
        if extensions.get("framewire-id") != 5 or extensions.get("framewire-unordered") is not True:
            return wire.outcome("FAIL", f"the answer's extensions are {dict(extensions)}")
        return wire.outcome("PASS", "framewire-unordered: true and the id on the answer")
    finally:
        wire.close()


@case("extensions", "strict", "a cancel gets no answer of its own (an id nobody sent is ignored)")
def cancel_unknown(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(json_frame(None, framewire_cancel=424242) + frame(b"after", framewire_id=1))
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        if answers[0].get("framewire-id") != 1:
            return wire.outcome("FAIL", "the cancel was answered as a request")
        more, _ = wire.messages(2, seconds=0.3)  # (the one read, and nothing more within 0.3 s)
        if len(more) > 1:
            return wire.outcome("FAIL", "more answers came than requests were sent")
        return wire.outcome("PASS", "only the request after the cancel was answered")
    finally:
        wire.close()


@case("extensions", "strict", "framewire-describe is answered by the server, with its actions")
def describe_probe(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(json_frame(None, framewire_describe=1))
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        answer = answers[0]
        if answer.get("framewire-describe") != 1 or not answer.is_json:
            return wire.outcome("FAIL", "the answer is not the describe probe's (its extension, text/json)")
        document = answer.json()
        if not isinstance(document, dict) or not isinstance(document.get("actions"), list):
            return wire.outcome("FAIL", 'the description is not {"actions": [...]}')
        return wire.outcome("PASS", f"{len(document['actions'])} actions described")
    finally:
        wire.close()


@case("extensions", "strict", "a stream asked of an action that does not stream is one answer")
def stream_asked_once(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(frame(b"s", framewire_id=3, framewire_stream=True) + frame(b"t", framewire_id=4))
        answers, problem = wire.messages(2)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        if [a.get("framewire-id") for a in answers] != [3, 4] or answers[0].get("framewire-stream") == "item":
            return wire.outcome("FAIL", "the answers are not one for each request, in order")
        return wire.outcome("PASS", "one answer, then the next request's")
    finally:
        wire.close()


# -- running ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One case's outcome, for the reports."""

    case: Case
    outcome: Outcome
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.case.group,
            "name": self.case.name,
            "level": self.case.level,
            "about": self.case.about,
            "status": self.outcome.status,
            "why": self.outcome.why,
            "seconds": round(self.seconds, 3),
            "sent_hex": self.outcome.sent[:4096].hex() if self.outcome.status == "FAIL" else "",
            "received_hex": self.outcome.received[:4096].hex() if self.outcome.status == "FAIL" else "",
        }


def run_suite(target: Target, level: Level = "strict", only: str | None = None) -> Iterator[Result]:
    """Run the cases of ``level`` (``guide``: its cases alone) one at a time."""
    for item in CASES:
        if level == "guide" and item.level != "guide":
            continue
        if only is not None and only not in item.name:
            continue
        started = time.monotonic()
        try:
            outcome = item.run(target)
        except OSError as exc:
            outcome = Outcome("FAIL", f"the connection failed: {exc}")
        except Exception as exc:  # a server's bytes the case did not foresee
            outcome = Outcome("FAIL", f"{type(exc).__name__}: {exc}")
        yield Result(item, outcome, time.monotonic() - started)
