"""Every limit framewire enforces, as named defaults in one place.

Each value here is the default of a matching argument (of :class:`Decoder`,
:class:`Server`, ...) and of a ``framewire serve`` option; docs/limits.md
lists them with what a peer sees when it breaks one.
"""

from __future__ import annotations

#: Largest JSON header accepted, in bytes. 65535 is the most the 2-byte
#: length field can express, so by default only the field itself limits it.
MAX_HEADER_SIZE = 65535

#: Largest ``content-length`` accepted, in bytes (64 MiB). Checked as soon as
#: the header is parsed, before any content byte is buffered.
MAX_CONTENT_LENGTH = 64 * 1024 * 1024

#: Seconds from the first byte of a message to its last (an absolute
#: deadline, so a peer trickling one byte at a time cannot hold a connection).
MESSAGE_TIMEOUT = 30.0

#: Seconds a connection may sit with no partial message and nothing pending
#: before the server closes it.
IDLE_TIMEOUT = 300.0

#: Connections a server holds at once; the next one gets ``server-busy``.
MAX_CONNECTIONS = 10_000

#: Bytes of queued responses per connection above which the server stops
#: reading from that connection until the peer drains them.
HIGH_WATER = 1024 * 1024

#: Requests received but not yet answered per connection above which the
#: server stops reading from that connection.
MAX_IN_FLIGHT = 1024

#: Seconds a connection closed after an error answer (a framing error, a
#: message deadline) keeps reading, and dropping, what its peer still sends.
#: Closing a socket with unread bytes makes the kernel send a reset instead
#: of a FIN, and a reset can cost the peer the answer (its send fails before
#: it reads). 0: close at once.
LINGER_TIME = 2.0

#: Seconds of silence from the peer that end a lingering close early where
#: the server cannot half-close (asyncio's TLS transport): its peer sees no
#: end until the close, so a peer that has stopped sending is not kept
#: waiting for the whole LINGER_TIME. Elsewhere the peer has its FIN at once.
LINGER_QUIET = 0.2

#: Bytes read and dropped in that time at most; past it the connection is
#: closed (a peer streaming a huge refused content is not read to its end).
LINGER_BYTES = 1024 * 1024

#: Connections refused with server-busy (beyond MAX_CONNECTIONS) that may
#: linger at once, like an error answer's close: a client sends its request
#: as soon as it is connected, and closing with it unread would reset. Past
#: this many a refusal closes at once: a flood of connections must not hold
#: more than a bounded number of descriptors beyond the limit.
MAX_REFUSING = 64

#: Seconds the server gives in-flight requests on SIGTERM/SIGINT.
GRACE = 10.0

#: Seconds between the server's INFO summaries (connections, requests and
#: errors in the interval; nothing when nothing happened). Each connection's
#: own lines are at DEBUG: one INFO line per connection cost more than the
#: rest of a short connection's work.
LOG_SUMMARY = 10.0

#: Headers up to this size are remembered, parsed and validated, by their
#: exact bytes: most peers repeat the same few headers.
HEADER_CACHE_MAX_SIZE = 512

#: Bytes the parse cache that a server shares among its connections may
#: hold (keys, parsed headers and their extensions, counted); past it the
#: cache starts over.
HEADER_CACHE_BYTES = 4 * 1024 * 1024

#: Bytes the parse cache of a decoder made without one (a client's) may hold.
DECODER_CACHE_BYTES = 64 * 1024

#: Bytes the server's cache of encoded response headers may hold (responses
#: without extensions, by content type, encoding, byte order and length).
RESPONSE_CACHE_BYTES = 1024 * 1024

#: Bytes asked of the kernel per ``recv``. Not larger: CPython allocates the
#: whole size for every call before shrinking it, and at 256 KiB that costs
#: more than the system call itself.
RECV_SIZE = 64 * 1024

#: Bytes asked of the kernel by the first read after a large content read in
#: place: the next message is likely large too, and this read takes its
#: header and little more, so that its content too is read in place nearly
#: from its first byte. (With RECV_SIZE, up to 64 KiB of it would come in
#: the read's chunk and be copied into the content's buffer.) The next read
#: is RECV_SIZE again.
READ_AFTER_LARGE = 4 * 1024

#: A read that returns at least this many bytes (or all it asked for) is
#: followed by another before the driver goes back to its poller, while a
#: message is coming in and nothing is owed to the peer: the peer is most
#: likely still sending, and the next read finds more (see
#: ``ServerConnection.read_again``), which the 1 MiB row gains from.
#: Smaller messages come in reads below it and pay one comparison.
READ_ON = 64 * 1024

#: Bytes a driver reads from one connection in one poller turn at most, by
#: the reads :data:`READ_ON` adds: one peer streaming a large content does
#: not keep the loop from the others for longer than this takes to copy
#: (about 2 ms on the machine measured).
READ_TURN = 4 * 1024 * 1024
#: The most bytes read from one TLS peer in one turn of the loop, records
#: read on with answers owed (see ServerConnection.read_again): one busy TLS
#: peer does not starve the others.
READ_TURN_RECORDS = 256 * 1024

#: Contents of at least this many bytes are read in place: into one buffer
#: the size of the content, made when the rest of it is read, which becomes
#: the request's content with no copy (smaller ones are read in RECV_SIZE
#: chunks, and a content of several chunks is joined). 0: never.
LARGE_CONTENT = 128 * 1024

#: Bytes a server sets aside at once, across its connections, for large
#: contents being read in place. The buffer is made before the bytes come,
#: so this bounds what peers announcing large contents without sending them
#: can make the server hold; past it, contents are read in chunks (the
#: memory then grows only with bytes that actually arrive).
LARGE_CONTENT_MEMORY = 64 * 1024 * 1024

#: Requests waiting for (or running in) a handler on the thread pool or the
#: event loop, across the server; beyond it a request is answered with
#: ``server-busy`` at once and its connection stays open.
MAX_QUEUED = 1024

#: Microseconds the server's loop may keep polling for work before it
#: sleeps, adapted to the traffic (io.poller.BusyPoll): it polls only while
#: work keeps coming within this long of the loop going idle, so sparse
#: traffic costs no polling. 0: never.
BUSY_POLL = 100

#: Sync handlers run inline, on the server's own thread, by default (the
#: fastest); a positive number runs them on a pool of that many threads.
THREADS = 0

#: Bytes a connection may send before its PROXY protocol header is complete
#: (with ``proxy_protocol``): a version 2 header with TLVs fits many times.
PROXY_HEADER_MAX = 4096

#: Seconds a connection may be silent before TCP keepalive probes check that
#: its peer still exists (a half-open connection: the peer's host vanished
#: without a FIN). Then a probe every KEEPALIVE_INTERVAL seconds, and after
#: KEEPALIVE_PROBES unanswered, the kernel resets the connection. 0: off.
KEEPALIVE = 60.0
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6

#: Events one subscriber may have waiting (its client reads slower than they
#: are published): past it the oldest are dropped and the gap is marked
#: (``framewire-dropped``), or, with ``--slow-subscriber disconnect``, its
#: subscription ends with server-busy.
SUBSCRIBER_QUEUE = 1000

#: Bytes of those events' JSON one subscriber may have waiting: past it the
#: oldest go the same way (the newest event is kept whatever its size, so a
#: subscriber holds at most this or one event, itself within the content
#: limit).
SUBSCRIBER_QUEUE_BYTES = 1024 * 1024

#: Publishes a Redis hub holds for sending at most (Redis slower than the
#: publishers): past it, publish fails with server-busy, never waits.
HUB_OUTBOX = 10_000


#: Seconds an inline handler may hold the server's loop (the requests of
#: one read answered) before a warning names its actions: every connection
#: waits that long (asyncio's own slow-callback warning is at 0.1 s).
SLOW_HANDLER = 0.25
#: At most one such warning in this many seconds.
SLOW_HANDLER_QUIET = 10.0
