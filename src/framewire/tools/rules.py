"""The numbered rules of the protocol, as docs/protocol.md states them.

Each rule is marked in that page by its number (``§2.5``), and each has
at least one conformance case that names it, so a failure points at the rule
broken (as h2spec's cases point at the sections of RFC 7540).
``framewire conformance --list`` prints them with their cases.
"""

from __future__ import annotations

__all__ = ["RULES", "SECTIONS"]

#: The sections of docs/protocol.md that hold rules, by number.
SECTIONS: dict[str, str] = {
    "1": "A message",
    "2": "The header",
    "3": "Exchanges",
    "4": "Transports",
    "5": "Errors",
    "6": "The guide's demo application",
    "7": "The echo application",
    "8": "Extensions framewire defines",
    "9": "Behind a load balancer: the PROXY protocol",
}

#: Rule number -> the rule, in one line.
RULES: dict[str, str] = {
    "1.1": "the header length is 2 bytes, big-endian, from 2 to 65535; 0 and 1 are bad-header-length",
    "1.2": "the header is UTF-8 holding one JSON object; anything else is bad-header",
    "1.3": "the content is exactly content-length bytes, 0 included",
    "1.4": "the same messages are decoded however the bytes are split or joined",
    "2.1": "content-length, content-type, content-encoding and byteorder are required: missing-header-key",
    "2.2": "content-length is a JSON integer of 0 or more; any other form is bad-header-value",
    "2.3": "content-type and content-encoding are non-empty strings; text types carry a text codec",
    "2.4": 'byteorder is "little" or "big"',
    "2.5": "other keys are extensions: kept, of any JSON type, never refused; keys in any order",
    "2.6": "a key given twice keeps its last value",
    "2.7": "a header whose first byte cannot begin an object may be refused at once (bad-header)",
    "3.1": "each request gets exactly one response, in the order of the requests",
    "3.2": "requests may be pipelined, and a connection kept for many, or used for one",
    "3.3": "after the client shuts its sending side, everything is still answered, then closed",
    "3.4": "every response is a valid message",
    "3.5": "a connection idle longer than the server's idle timeout is closed without a response",
    "4.1": "inside TLS the framing is exactly that of the bare stream",
    "4.2": "a TLS handshake must end within the message deadline, else the connection is closed",
    "5.1": "an error is a text/json message with status error and {error: {code, message}}",
    "5.2": "a framing error is answered once, then the connection ends in order, even while the peer sends",
    "5.3": "an error in one message's content is answered and the connection kept",
    "5.4": "a header above the receiver's limit is header-too-large",
    "5.5": "a content-length above the receiver's limit is content-too-large, before any content",
    "5.6": "text/json content that is not JSON is bad-content",
    "5.7": "a message not finished within the message deadline is timeout, then close",
    "5.8": "a stream ending inside a message is incomplete-message",
    "5.9": "a server at its connection limit answers server-busy and closes",
    "5.10": "an application that fails on a request answers handler-error",
    "5.11": "an action an application of actions does not have is unknown-action",
    "5.12": "a value that does not fit a typed action is invalid-value, with details",
    "5.13": "an application's own codes keep the connection; an error may carry details",
    "6.1": "the demo answers as the guide's app-server.py does",
    "7.1": "the echo application answers each request with its own content, type and encoding",
    "8.1": "framewire-ping is answered by the server with the probe's content and extension",
    "8.2": "framewire-id is copied onto the request's answer, error answers included",
    "8.3": "a request whose framewire-deadline has passed may be answered timeout, the connection kept",
    "8.4": "framewire-describe is answered with the actions the server offers",
    "8.5": "framewire-unordered answers may come early, marked, with their id",
    "8.6": "framewire-stream: true gets items, then an end; an action that does not stream answers once",
    "8.7": "framewire-cancel gets no answer; the request it names is answered cancelled",
    "8.8": "a broker streams each event published to a topic to that topic's subscribers",
    "9.1": "a PROXY header (version 1 or 2) from a trusted address gives the peer's address",
    "9.2": "a connection that should start with a PROXY header and does not is closed without a response",
}
