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
from framewire.tools.rules import RULES, SECTIONS

__all__ = [
    "CASES",
    "Case",
    "Outcome",
    "Target",
    "action_request",
    "frame",
    "request_from",
    "rule_lines",
    "run_suite",
]

Status = Literal["PASS", "FAIL", "NOT-APPLICABLE"]
Level = Literal["guide", "strict"]
App = Literal["none", "echo", "search", "conformance", "pubsub"]


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
    #: It expects a PROXY protocol header first, from the suite's address
    #: (``--proxy-protocol``): the PROXY cases run.
    proxy_protocol: bool = False
    #: Its connection limit, when small enough to reach politely (the
    #: server-busy case opens this many connections, and one more).
    max_connections: int | None = None
    #: Its idle timeout in seconds, when short enough to wait for.
    idle_timeout: float | None = None

    def sample(self, content: bytes) -> bytes:
        """The request a case sends where any request will do: the server's
        own (:attr:`request`), else a binary one carrying ``content``."""
        if self.request is not None:
            return self.request
        if self.app == "pubsub":  # a broker takes its actions alone
            return action_request(
                "publish", {"topic": "conformance.sample", "value": content.decode("latin-1")}
            )
        return frame(content)


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
    #: The numbers of the rules of docs/protocol.md it checks (tools/rules.py).
    rules: tuple[str, ...] = ()


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

    def __init__(self, target: Target, proxy: bytes | None = None) -> None:
        self.target = target
        self.sent = bytearray()
        self.received = bytearray()
        self.closed = False
        self.reset = False
        self.overflowed = False
        self.sock = connect(
            target.host, target.port, target.patience, target.ssl_context, target.server_hostname, keepalive=0
        )
        # A server that expects a PROXY header first gets one (``proxy``:
        # these bytes instead; b"": none, for the cases about the header).
        if proxy is None and target.proxy_protocol:
            proxy = PROXY_V1
        if proxy:
            self.send(proxy)

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
        if self.target.request is not None or app == "pubsub":
            # The server's own request (or a broker's publish): any valid
            # message is an answer, the refusal of the suite's binary
            # requests included.
            return None
        if response.is_error:
            error = response.error()
            return f"an error answer: {error.code if error else '?'}"
        if app == "none":
            return None
        (sent,) = Decoder(max_content_length=1 << 40).feed(request)
        if app == "conformance" and sent.content_type == "text/json":
            return None  # its actions' answers are judged by their own cases
        if app in ("echo", "conformance"):
            if (response.content, response.content_type) != (sent.content, sent.content_type):
                return "the echo application's answer is not the request's content and type"
            return None
        if sent.content_type == "text/json":
            return None  # judged by the application cases
        expected = b"First 10 bytes of request: " + sent.content[:10]
        if response.content != expected:
            return f"the demo answers binary content with {expected!r}, not {response.content[:60]!r}"
        return None


#: The PROXY header the suite sends a server that expects one (--proxy-protocol).
PROXY_V1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 65432\r\n"


def _one(
    target: Target,
    data: bytes,
    pieces: int = 1,
    count: int = 1,
    shut: bool = False,
    proxy: bytes | None = None,
) -> Outcome:
    # Send, read ``count`` answers, check each against the application.
    wire = _Wire(target, proxy)
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


def _error_form(answer: Message) -> str | None:
    # §5.1: an error answer is text/json in utf-8, {"error": {"code", "message"}}.
    if (answer.content_type, answer.content_encoding) != ("text/json", "utf-8"):
        got = f"{answer.content_type} in {answer.content_encoding}"
        return f"an error answer must be text/json in utf-8, not {got}"
    body = answer.json()
    inner = body.get("error") if isinstance(body, dict) else None
    if (
        not isinstance(inner, dict)
        or not isinstance(inner.get("code"), str)
        or not isinstance(inner.get("message"), str)
    ):
        return 'an error answer\'s content must be {"error": {"code": ..., "message": ...}}'
    return None


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
        wrong = _error_form(answers[0])
        if wrong is not None:
            return wire.outcome("FAIL", wrong)
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
    group: str, level: Level, about: str, rules: tuple[str, ...]
) -> Callable[[Callable[[Target], Outcome]], Callable[[Target], Outcome]]:
    unknown = [rule for rule in rules if rule not in RULES]
    if unknown or not rules:
        raise ValueError(f"a case names rules of docs/protocol.md: {unknown or 'none'}")

    def register(run: Callable[[Target], Outcome]) -> Callable[[Target], Outcome]:
        CASES.append(Case(group, run.__name__.replace("_", "-"), level, about, run, rules))
        return run

    return register


@case("framing", "guide", "one message sent at once gets one valid answer", ("1.1", "1.3", "3.4"))
def one_message(target: Target) -> Outcome:
    return _one(target, target.sample(b"conformance"))


@case("framing", "guide", "one message sent a byte at a time", ("1.4",))
def byte_by_byte(target: Target) -> Outcome:
    data = target.sample(b"slowly")
    return _one(target, data, pieces=len(data))


@case(
    "framing",
    "guide",
    "split in two at every boundary: in the length, after it, in and after the header",
    ("1.4",),
)
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


@case("framing", "guide", "content of length 0", ("1.3",))
def empty_content(target: Target) -> Outcome:
    return _one(target, frame(b""))


@case("framing", "guide", "content larger than 1 MiB", ("1.3",))
def large_content(target: Target) -> Outcome:
    if target.max_content_length < 1_100_000:
        return Outcome("NOT-APPLICABLE", "the server's content limit is below 1 MiB")
    return _one(target, frame(bytes(range(256)) * 4400))


@case("framing", "guide", "header keys in another order, and an extension key", ("2.4", "2.5"))
def keys_in_any_order(target: Target) -> Outcome:
    content = b"any order"
    header = {"x-trace": "abc", "content-length": len(content), "content-encoding": "binary"}
    header |= {"byteorder": "big", "content-type": "binary/custom-client-binary-type"}
    return _one(target, frame(content, header))


@case("framing", "guide", "text content in each text encoding: utf-8, utf-16, latin-1", ("2.3",))
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


@case("framing", "strict", "many messages back to back in one write", ("1.4", "3.1"))
def back_to_back(target: Target) -> Outcome:
    return _one(target, b"".join(target.sample(b"%d" % i) for i in range(20)), count=20)


@case(
    "exchanges",
    "strict",
    "keep-alive: a second request on the same connection after the first answer",
    ("3.2",),
)
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


@case("exchanges", "strict", "pipelining: answers come in request order", ("3.1", "3.2"))
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


@case(
    "exchanges", "strict", "half-close: requests sent, then the client's side shut, still answered", ("3.3",)
)
def half_close(target: Target) -> Outcome:
    if target.ssl_context is not None:
        return Outcome("NOT-APPLICABLE", "a TLS client cannot half-close")
    return _one(target, target.sample(b"conformance") + target.sample(b"two"), count=2, shut=True)


@case("exchanges", "guide", "the guide's client: one request, one answer, the connection closed", ("3.2",))
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


@case("errors", "strict", "a header length of 0 is bad-header-length, then close", ("1.1", "5.1"))
def bad_header_length(target: Target) -> Outcome:
    return _error(target, b"\x00\x00", "bad-header-length", closes=True)


@case("errors", "strict", "a header that is not JSON is bad-header, then close", ("1.2", "5.1"))
def bad_header(target: Target) -> Outcome:
    return _error(target, struct.pack(">H", 9) + b"{not json", "bad-header", closes=True)


@case("errors", "strict", "a header without content-type is missing-header-key, then close", ("2.1", "5.1"))
def missing_header_key(target: Target) -> Outcome:
    header = {"byteorder": "little", "content-encoding": "binary", "content-length": 1}
    return _error(target, frame(b"x", header), "missing-header-key", closes=True)


@case("errors", "strict", "a negative content-length is bad-header-value, then close", ("2.2", "5.1"))
def bad_header_value(target: Target) -> Outcome:
    return _error(target, frame(b"", content_length=-1), "bad-header-value", closes=True)


@case("errors", "strict", "a header above the server's limit is header-too-large, then close", ("5.4",))
def header_too_large(target: Target) -> Outcome:
    if target.max_header_size >= 65535:
        return Outcome("NOT-APPLICABLE", "the server's header limit is the most a header can be")
    padding = "x" * (target.max_header_size + 10)
    return _error(target, frame(b"", x_padding=padding), "header-too-large", closes=True)


# What a client still has on its way when its first message is refused: more
# than one read of the server's takes, less than a lingering close should drop.
_STILL_SENDING = 256 * 1024


@case(
    "errors",
    "strict",
    "a client still sending after a framing error gets its answer and an orderly end",
    ("5.2",),
)
def error_while_sending(target: Target) -> Outcome:
    # A server that closes with the client's bytes unread makes its kernel
    # reset the connection, and the reset can cost the client the answer.
    return _error(target, b"\x00\x00", "bad-header-length", closes=True, then=frame(b"x" * _STILL_SENDING))


@case("errors", "strict", "the stream ending mid-message is incomplete-message", ("5.8",))
def incomplete_message(target: Target) -> Outcome:
    if target.ssl_context is not None:
        return Outcome("NOT-APPLICABLE", "a TLS client cannot half-close")
    return _error(target, frame(b"0123456789")[:-4], "incomplete-message", closes=True, shut=True)


@case(
    "errors", "strict", "text/json content that is not JSON is bad-content, connection kept", ("5.6", "5.3")
)
def bad_content(target: Target) -> Outcome:
    if target.app not in ("search", "conformance"):
        return Outcome("NOT-APPLICABLE", "only an application that reads JSON content must refuse it")
    header = {"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8"}
    return _error(target, frame(b"{oops", header | {"content-length": 5}), "bad-content", closes=False)


@case(
    "errors",
    "strict",
    "text content with an encoding that is not a text codec is bad-encoding, kept",
    ("2.3", "5.3"),
)
def bad_encoding(target: Target) -> Outcome:
    if target.app not in ("search", "conformance"):
        return Outcome("NOT-APPLICABLE", "only an application that reads text content must refuse it")
    header = {"byteorder": "little", "content-type": "text/json", "content-encoding": "no-such-codec"}
    return _error(target, frame(b"{}", header | {"content-length": 2}), "bad-encoding", closes=False)


@case("limits and time", "strict", "a huge content-length is content-too-large before any content", ("5.5",))
def huge_content_length(target: Target) -> Outcome:
    return _error(target, frame(b"", content_length=1 << 50), "content-too-large", closes=True)


@case(
    "limits and time",
    "strict",
    "a peer that trickles a message is cut with timeout at the deadline",
    ("5.7",),
)
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


@case("limits and time", "strict", "a peer that never reads its answers does not stop the server", ("3.2",))
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


@case("application", "strict", "the echo, demo, conformance or broker application's answers", ("6.1", "7.1"))
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
        if target.app == "conformance":
            wire.send(frame(b"echo me") + _action("echo", {"x": [1]}))
            answers, problem = wire.messages(2)
            if problem is not None:
                return wire.outcome("FAIL", problem)
            if answers[0].content != b"echo me" or answers[1].json() != {"result": {"x": [1]}}:
                return wire.outcome(
                    "FAIL", "binary content is not echoed, or the echo action's result is not its value"
                )
            return wire.outcome("PASS", "binary content echoed, the echo action answered")
        if target.app == "pubsub":
            wire.send(target.sample(b"nobody listens"))
            answers, problem = wire.messages(1)
            if problem is not None:
                return wire.outcome("FAIL", problem)
            if answers[0].is_error or answers[0].json() != {"result": None}:
                return wire.outcome("FAIL", 'a publish is not answered {"result": null}')
            return wire.outcome("PASS", "a publish answered")
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


@case("extensions", "strict", "a request's framewire-id is on its answer", ("8.2",))
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


@case("extensions", "strict", "an unordered request's answer is marked, with its id", ("8.5",))
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


@case("extensions", "strict", "a cancel gets no answer of its own (an id nobody sent is ignored)", ("8.7",))
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


@case("extensions", "strict", "framewire-describe is answered by the server, with its actions", ("8.4",))
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


@case("extensions", "strict", "a stream asked of an action that does not stream is one answer", ("8.6",))
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


# -- header edge cases ---------------------------------------------------------------------------


def _raw_frame(header: str, content: bytes) -> bytes:
    # A header written by hand (a key twice, a number in any form).
    raw = header.encode()
    return struct.pack(">H", len(raw)) + raw + content


def _all_refused(target: Target, datas: list[tuple[str, bytes]], code: str) -> Outcome:
    # Each of ``datas`` on its own connection is ``code``, then a close.
    last = Outcome("PASS", "")
    for label, data in datas:
        last = _error(target, data, code, closes=True)
        if last.status != "PASS":
            last.why = f"{label}: {last.why}"
            return last
    last.why = f"{len(datas)} forms, each {code}, then closed"
    return last


_BINARY_KEYS = (
    '"byteorder": "little", "content-type": "binary/custom-client-binary-type", "content-encoding": "binary"'
)


@case(
    "header",
    "strict",
    "content-length as a fraction, an exponent, a string or true is bad-header-value",
    ("2.2",),
)
def content_length_forms(target: Target) -> Outcome:
    forms = ["1.0", "1e0", '"1"', "true", "null", "-0.5"]
    return _all_refused(
        target,
        [
            (f"content-length {form}", _raw_frame(f'{{{_BINARY_KEYS}, "content-length": {form}}}', b"x"))
            for form in forms
        ],
        "bad-header-value",
    )


@case(
    "header",
    "strict",
    "an empty content-type, a numeric encoding or byteorder middle is bad-header-value",
    ("2.3", "2.4"),
)
def header_value_forms(target: Target) -> Outcome:
    base = {
        "byteorder": "little",
        "content-type": "binary/x",
        "content-encoding": "binary",
        "content-length": 1,
    }
    bad: list[tuple[str, Any]] = [("content-type", ""), ("content-encoding", 5), ("byteorder", "middle")]
    return _all_refused(
        target,
        [(f"{key} {value!r}", frame(b"x", base | {key: value})) for key, value in bad],
        "bad-header-value",
    )


@case("header", "strict", "a header that is a JSON array, not UTF-8, or holds NaN is bad-header", ("1.2",))
def header_not_an_object(target: Target) -> Outcome:
    forms = [
        ("an array", struct.pack(">H", 3) + b"[1]"),
        ("not UTF-8", struct.pack(">H", 8) + b'{"\xff": 1}'),
        ("NaN", _raw_frame(f'{{{_BINARY_KEYS}, "content-length": 0, "x": NaN}}', b"")),
    ]
    return _all_refused(target, forms, "bad-header")


@case("header", "strict", "extension values of every JSON type are kept, never refused", ("2.5",))
def extension_values(target: Target) -> Outcome:
    header: dict[str, Any] = {
        "byteorder": "little",
        "content-type": "binary/custom-client-binary-type",
        "content-encoding": "binary",
    }
    header |= {
        "x-null": None,
        "x-true": True,
        "x-number": -1.5e3,
        "x-text": "é",
        "x-list": [1, [2]],
        "x-object": {"a": {}},
    }
    return _one(target, frame(b"typed", header | {"content-length": 5}))


@case("header", "strict", "a key given twice keeps its last value", ("2.6",))
def duplicate_keys(target: Target) -> Outcome:
    # content-length 999 and then 3: the message is 3 bytes long; a server
    # that kept the first value would wait for 996 more, and not answer.
    data = _raw_frame(f'{{{_BINARY_KEYS}, "content-length": 999, "content-length": 3}}', b"abc")
    return _one(target, data)


@case("header", "strict", "a TLS hello on a plain port is bad-header at once, not a wait", ("2.7",))
def hello_on_plain_port(target: Target) -> Outcome:
    if target.ssl_context is not None:
        return Outcome("NOT-APPLICABLE", "the address is TLS")
    # The first bytes of a TLS ClientHello: a header length of 5635, then a
    # byte that cannot begin a JSON object. Only those: waiting for 5635
    # more would never end.
    wire = _Wire(target)
    try:
        wire.send(b"\x16\x03\x01\x02\x00\x01")
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", f"expected bad-header at once: {problem}")
        error = answers[0].error()
        # (header-too-large is as right, from a server whose limit is below 5635)
        if error is None or error.code not in ("bad-header", "header-too-large"):
            return wire.outcome("FAIL", f"expected bad-header, got {error.code if error else 'an answer'}")
        return wire.outcome("PASS", f"{error.code} at once")
    finally:
        wire.close()


@case(
    "exchanges",
    "strict",
    "a connection idle past the server's idle timeout is closed without a response",
    ("3.5",),
)
def idle_closed(target: Target) -> Outcome:
    if target.idle_timeout is None or target.idle_timeout > 30:
        return Outcome("NOT-APPLICABLE", "no idle timeout of 30 s or less was given (--idle-timeout)")
    wire = _Wire(target)
    try:
        if not wire.ends(target.idle_timeout + target.patience):
            return wire.outcome("FAIL", f"still open {target.idle_timeout + target.patience:g} s later")
        if wire.received:
            return wire.outcome("FAIL", "the server sent something before closing an idle connection")
        return wire.outcome("PASS", "closed, with nothing sent")
    finally:
        wire.close()


# -- transports --------------------------------------------------------------------------------


@case("transports", "strict", "inside TLS: two messages pipelined, sent in two halves", ("4.1",))
def tls_framing(target: Target) -> Outcome:
    if target.ssl_context is None:
        return Outcome("NOT-APPLICABLE", "the address is not TLS (--tls / --tls-ca)")
    data = target.sample(b"inside TLS")
    return _one(target, data + data, pieces=2, count=2)


@case("transports", "strict", "a TLS handshake that stalls is closed within the message deadline", ("4.2",))
def tls_handshake_stall(target: Target) -> Outcome:
    if target.ssl_context is None:
        return Outcome("NOT-APPLICABLE", "the address is not TLS (--tls / --tls-ca)")
    with socket.create_connection((target.host, target.port), timeout=target.patience) as sock:
        sock.sendall(b"\x16\x03\x01")  # a handshake begun, and never gone on with
        sock.settimeout(target.message_timeout + target.patience)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            return Outcome(
                "FAIL", f"the handshake was still open after {target.message_timeout + target.patience:g} s"
            )
        except OSError:
            pass  # a reset is a close too
    return Outcome("PASS", "closed within the deadline")


# -- errors the application causes (the conformance app's actions) ----------------------------


def _conformance_app(target: Target) -> Outcome | None:
    if target.app == "conformance":
        return None
    return Outcome("NOT-APPLICABLE", "the server does not run the conformance app (--app conformance)")


def _action(action: str, value: Any, **keys: Any) -> bytes:
    return json_frame({"action": action, "value": value}, **keys)


@case(
    "application errors", "strict", "an action that raises is handler-error, connection kept", ("5.10", "5.1")
)
def handler_error(target: Target) -> Outcome:
    if (skip := _conformance_app(target)) is not None:
        return skip
    return _error(target, _action("fail", None), "handler-error", closes=False)


@case("application errors", "strict", "an action the application does not have is unknown-action", ("5.11",))
def unknown_action(target: Target) -> Outcome:
    if (skip := _conformance_app(target)) is not None:
        return skip
    return _error(target, _action("no-such-action", None), "unknown-action", closes=False)


@case("application errors", "strict", "a value that does not fit a typed action is invalid-value", ("5.12",))
def invalid_value(target: Target) -> Outcome:
    if (skip := _conformance_app(target)) is not None:
        return skip
    return _error(target, _action("typed", "not an integer"), "invalid-value", closes=False)


@case(
    "application errors",
    "strict",
    "an application's own code, with details, keeps the connection",
    ("5.13", "5.3"),
)
def application_code(target: Target) -> Outcome:
    if (skip := _conformance_app(target)) is not None:
        return skip
    outcome = _error(target, _action("code", [1, "two"]), "conformance-code", closes=False)
    if outcome.status == "PASS":
        answer = Decoder(max_content_length=MAX_RECEIVED).feed(outcome.received)[0]
        details = answer.json()["error"].get("details")
        if details != {"value": [1, "two"]}:
            return Outcome(
                "FAIL",
                f"the error's details are {details!r}, not the value given",
                outcome.sent,
                outcome.received,
            )
        outcome.why = "conformance-code with its details, connection kept"
    return outcome


@case(
    "limits and time",
    "strict",
    "past the connection limit, a connection gets server-busy and is closed",
    ("5.9",),
)
def server_busy(target: Target) -> Outcome:
    limit = target.max_connections
    if limit is None or limit > 64:
        return Outcome("NOT-APPLICABLE", "no connection limit of 64 or less was given (--max-connections)")
    held: list[_Wire] = []
    try:
        for _ in range(limit):
            wire = _Wire(target)
            held.append(wire)
            wire.send(target.sample(b"held"))
            _, problem = wire.messages(1)
            if problem is not None:
                return wire.outcome("FAIL", f"a connection within the limit: {problem}")
        outcome = _error(target, target.sample(b"one too many"), "server-busy", closes=True)
        if outcome.status == "PASS":
            outcome.why = f"{limit} held, the next one server-busy and closed"
        return outcome
    finally:
        for wire in held:
            wire.close()
        _settled(target)


def _settled(target: Target) -> None:
    # Until the server has seen the held connections go (their closes are
    # on their way), a new one may still be refused: wait, within the
    # patience, for one to be answered, so the next case starts clean.
    deadline = time.monotonic() + target.patience
    while time.monotonic() < deadline and _still_serving(target) is not None:
        time.sleep(0.05)


# -- extensions the conformance app makes observable ----------------------------------------------


@case("extensions", "strict", "framewire-ping is answered with the probe's content and extension", ("8.1",))
def ping_echoed(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(frame(b"are you there", framewire_ping=7))
        answers, problem = wire.messages(1)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        if answers[0].get("framewire-ping") != 7 or answers[0].content != b"are you there":
            return wire.outcome("FAIL", "the answer is not the probe's content with framewire-ping 7")
        return wire.outcome("PASS", "the probe came back")
    finally:
        wire.close()


@case(
    "extensions",
    "strict",
    "a request whose framewire-deadline has passed is timeout, connection kept",
    ("8.3",),
)
def deadline_passed(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    late = frame(b"too late", framewire_deadline=0)
    if target.request is not None:
        late = _with_keys(target.request, framewire_deadline=0)
    return _error(target, late, "timeout", closes=False)


def _with_keys(request: bytes, **keys: Any) -> bytes:
    # ``request`` with extension keys added to its header.
    size = struct.unpack(">H", request[:2])[0]
    header = json.loads(request[2 : 2 + size])
    header.update({key.replace("_", "-"): value for key, value in keys.items()})
    return frame(request[2 + size :], header)


@case("extensions", "strict", "a stream: items with the id, then an end", ("8.6",))
def stream_items(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None or (skip := _conformance_app(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(_action("stream", 3, framewire_id=9, framewire_stream=True))
        answers, problem = wire.messages(4)
        if problem is not None:
            return wire.outcome("FAIL", problem)
        marks = [(a.get("framewire-id"), a.get("framewire-stream")) for a in answers]
        if marks != [(9, "item")] * 3 + [(9, "end")]:
            return wire.outcome("FAIL", f"the answers are marked {marks}, not three items and an end of id 9")
        if [a.json().get("result") for a in answers[:3]] != [0, 1, 2]:
            return wire.outcome("FAIL", "the items are not 0, 1, 2")
        return wire.outcome("PASS", "3 items, then the end")
    finally:
        wire.close()


@case("extensions", "strict", "a cancelled request is answered cancelled; the connection goes on", ("8.7",))
def cancelled(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None or (skip := _conformance_app(target)) is not None:
        return skip
    wire = _Wire(target)
    try:
        wire.send(_action("slow", 5, framewire_id=11, framewire_unordered=True))
        wire.send(json_frame(None, framewire_cancel=11) + _action("echo", "after", framewire_id=12))
        answers, problem = wire.messages(2, min(4.0, target.patience))
        if problem is not None:
            return wire.outcome(
                "FAIL",
                f"expected the cancelled answer and the next one before the slow action ends: {problem}",
            )
        by_id = {a.get("framewire-id"): a for a in answers}
        error = by_id[11].error() if 11 in by_id else None
        if error is None or error.code != "cancelled":
            return wire.outcome(
                "FAIL", f"request 11 was answered {error.code if error else 'without cancelled'}"
            )
        if 12 not in by_id:
            return wire.outcome("FAIL", "the request after the cancel was not answered")
        return wire.outcome("PASS", "cancelled, and the next request answered")
    finally:
        wire.close()


@case("extensions", "strict", "a broker streams an event published to a topic to its subscriber", ("8.8",))
def broker_delivers(target: Target) -> Outcome:
    if (skip := _extensions(target)) is not None:
        return skip
    if target.app != "pubsub":
        return Outcome("NOT-APPLICABLE", "the server does not run a broker (--app pubsub)")
    topic = "conformance.broker"
    subscriber = _Wire(target)
    publisher = _Wire(target)
    try:
        subscriber.send(_action("subscribe", topic, framewire_id=1, framewire_stream=True))
        # Published until the subscriber has an item: the subscription is
        # in place at some point after its request, and nothing says when.
        deadline = time.monotonic() + target.patience
        sent = 0
        answers: list[Message] = []
        while not answers and time.monotonic() < deadline:
            publisher.send(_action("publish", {"topic": topic, "value": sent}))
            sent += 1
            answers, _ = subscriber.messages(1, 0.1)
        _, problem = publisher.messages(sent)
        if problem is not None:
            return publisher.outcome("FAIL", f"the publishes were not answered: {problem}")
        if not answers:
            return subscriber.outcome(
                "FAIL", f"no event came within {target.patience:g} s of {sent} publishes"
            )
        item = answers[0]
        if (item.get("framewire-id"), item.get("framewire-stream")) != (1, "item"):
            return subscriber.outcome("FAIL", "the event is not a stream item with the subscription's id")
        result = item.json().get("result") if item.is_json else None
        if (
            not isinstance(result, dict)
            or result.get("topic") != topic
            or not isinstance(result.get("value"), int)
        ):
            return subscriber.outcome(
                "FAIL", f'the item is not {{"result": {{"topic": {topic!r}, "value": N}}}}'
            )
        return subscriber.outcome("PASS", "the event came to the subscriber as an item of its stream")
    finally:
        subscriber.close()
        publisher.close()


# -- the PROXY protocol ---------------------------------------------------------------------------


def _proxy(target: Target) -> Outcome | None:
    if target.proxy_protocol:
        return None
    return Outcome("NOT-APPLICABLE", "the server did not say it expects a PROXY header (--proxy-protocol)")


_PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@case("proxy", "strict", "a PROXY header, version 1 and version 2, then requests answered", ("9.1",))
def proxy_header(target: Target) -> Outcome:
    if (skip := _proxy(target)) is not None:
        return skip
    addresses = (
        socket.inet_aton("192.0.2.1") + socket.inet_aton("192.0.2.2") + struct.pack(">HH", 40000, 65432)
    )
    v2 = _PROXY_V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(addresses)) + addresses
    for label, header in (("version 1", PROXY_V1), ("version 2", v2)):
        outcome = _one(target, target.sample(b"behind a balancer"), proxy=header)
        if outcome.status != "PASS":
            outcome.why = f"{label}: {outcome.why}"
            return outcome
    return Outcome("PASS", "answered after a version 1 and a version 2 header")


@case(
    "proxy",
    "strict",
    "a connection that should start with a PROXY header and does not is closed unanswered",
    ("9.2",),
)
def proxy_missing(target: Target) -> Outcome:
    if (skip := _proxy(target)) is not None:
        return skip
    wire = _Wire(target, proxy=b"")
    try:
        wire.send(target.sample(b"no header"))
        if not wire.ends():
            return wire.outcome("FAIL", "the connection stayed open")
        if wire.received:
            return wire.outcome("FAIL", "the server answered a connection without its PROXY header")
        return wire.outcome("PASS", "closed without a response")
    finally:
        wire.close()


#: The groups, in the order the cases run and the reports show them.
GROUPS = (
    "framing",
    "header",
    "exchanges",
    "transports",
    "errors",
    "application errors",
    "limits and time",
    "application",
    "extensions",
    "proxy",
)
CASES.sort(key=lambda item: GROUPS.index(item.group))


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
            "rules": list(self.case.rules),
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


def rule_lines() -> list[str]:
    """``--list``: each section and rule of docs/protocol.md, with the
    cases that check it (a rule with none says so)."""
    lines = []
    for section, title in SECTIONS.items():
        lines.append(f"§{section} {title}")
        for number, rule in RULES.items():
            if number.split(".")[0] != section:
                continue
            cases = [item.name for item in CASES if number in item.rules]
            lines.append(f"  §{number:<5} {rule}")
            lines.append(f"         cases: {', '.join(cases) if cases else 'NONE'}")
    return lines
