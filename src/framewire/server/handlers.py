"""Running the application's handler: inline, on threads, or on an event loop.

A handler is any callable ``Message -> Message``, or ``(Message, Peer) ->
Message`` when it has a second parameter (who sent the request: see
:class:`~framewire.server.peer.Peer`); it may also return an
awaitable (``async def`` handlers, :class:`~framewire.server.app.App`
actions written with ``async def``), which runs on an asyncio event loop of
the server's own. With ``threads=0`` (the default, and the fastest) sync
handlers run inline on the server's thread; with ``threads=N`` they run on
a pool of N threads, so a handler that waits (a database, a device) holds
only its own connection's answers, never the other connections.

Answers that come later are posted back to the driver's thread (a queue
and a wake-up): the connection engine puts them in request order. Work
waiting for a handler is bounded server-wide (``max_queued``), and shared
fairly between connections: the pool's threads take the connections' work
in turn (round-robin, one request each), and once ``max_queued`` requests
wait, only a connection holding less than its share (``max_queued``
divided by the connections with work waiting) is still given a place, so
one client pipelining slow requests cannot make every other client's
request ``server-busy``. The rest get ``server-busy`` at once. (So at most
twice ``max_queued`` requests wait: the greedy connections' and the
others' shares.)

The pool's threads and the loop's thread are daemon threads: a handler stuck
for ever cannot keep the process alive once the server has stopped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from framewire.core.errors import DeadlineExceeded, ServerBusy
from framewire.core.message import Message
from framewire.core.probe import deadline_ms
from framewire.server.app import takes_peer
from framewire.server.engine import LATER, ServerConnection, Slot
from framewire.server.peer import Cancel, Context
from framewire.server.streams import Stream, as_stream, is_stream

__all__ = ["Dispatcher", "LoopDispatcher"]

log = logging.getLogger("framewire.server")

# (The result is whatever the handler returned or raised: the engine checks it.)
Completion = tuple[ServerConnection, Slot, object]
#: A request for the thread pool: its connection, slot, deadline and cancel
#: flag; or, in place of the request, the next batch of the slot's stream
#: to take (:data:`_PULL`) or a stream's source to stop.
_Job = tuple[ServerConnection, Slot, "Message | Stream | str", "float | None", Cancel]
_PULL = "pull"


async def _guarded(awaitable: Awaitable[Any], deadline: float | None) -> Any:
    # Every async handler runs inside this. An exception that is not an
    # Exception (SystemExit, KeyboardInterrupt, GeneratorExit) would end the
    # event loop's run_forever, and with it every async handler of the
    # server: it is returned instead, and the engine answers it as what the
    # handler raised (handler-error). A cancellation stays a cancellation.
    # An async handler runs until its request's deadline, not beyond: the
    # client has stopped waiting by then (gRPC's rule for deadlines).
    try:
        if deadline is None:
            return await awaitable
        left = deadline - time.monotonic()
        if left <= 0:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started, on purpose: no warning
            raise DeadlineExceeded("The request waited past its deadline for its handler.")
        scope = asyncio.timeout(left)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise DeadlineExceeded("The handler was still at work at the request's deadline.") from None
            raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit) as exc:
        return exc


class _FairQueue:
    """The pool's work, one queue per connection, taken in turn: a worker
    takes one request of the first connection in the ring, which then goes
    to the back of it if it has more. ``None`` (from :meth:`close`) ends a
    worker."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._ring: collections.OrderedDict[ServerConnection, collections.deque[_Job]] = (
            collections.OrderedDict()
        )
        self._closing = 0

    def put(self, job: _Job) -> None:
        conn = job[0]
        with self._ready:
            jobs = self._ring.get(conn)
            if jobs is None:
                jobs = self._ring[conn] = collections.deque()
            jobs.append(job)
            self._ready.notify()

    def get(self) -> _Job | None:
        with self._ready:
            while not self._ring and not self._closing:
                self._ready.wait()
            if self._closing:
                self._closing -= 1
                return None
            conn, jobs = next(iter(self._ring.items()))
            job = jobs.popleft()
            if jobs:
                self._ring.move_to_end(conn)
            else:
                del self._ring[conn]
            return job

    def close(self, workers: int) -> None:
        with self._ready:
            self._closing += workers
            self._ready.notify_all()


#: Seconds a stopping server waits for the handlers' event loop to stop.
_LOOP_STOP_WAIT = 1.0


def _run_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    # The handlers' event loop, on a thread of its own; closed when stopped.
    try:
        loop.run_forever()
    finally:
        loop.close()


def _deadline(request: Message) -> float | None:
    # framewire-deadline (milliseconds left when sent) as a monotonic time,
    # counted from now: the request has just been read.
    ms = deadline_ms(request._header.extensions)
    return None if ms is None else time.monotonic() + ms / 1000


def _context(request: Message, conn: ServerConnection, cancel: Cancel | None = None) -> Context:
    return Context(request, conn.peer_info(), _deadline(request), cancel)


def description(handler: Callable[..., Any]) -> bytes:
    """What a server answers ``framewire-describe`` with: the handler's own
    ``describe()`` (an :class:`~framewire.server.app.App`'s), or no actions."""
    from framewire import __version__  # noqa: PLC0415

    describe = getattr(handler, "describe", None)
    if callable(describe):
        try:
            return orjson.dumps(describe())
        except Exception:
            log.exception("the application's describe() failed: describe lists no actions")
    return orjson.dumps({"framewire": __version__, "actions": []})


class Dispatcher:
    """Calls the handler for a driver's connections (:meth:`bind` each)."""

    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        threads: int,
        max_queued: int,
        wake: Callable[[], None],
    ) -> None:
        self.handler = handler
        # Decided once: a handler with a second parameter is given the peer.
        self._with_peer = takes_peer(handler)
        self.threads = threads
        self.max_queued = max_queued
        self._wake = wake
        self._done: collections.deque[Completion] = collections.deque()
        #: Requests handed to the pool or the loop and not yet answered.
        self.outstanding = 0
        # The same, per connection (only those with some): for the shares.
        self._held: dict[ServerConnection, int] = {}
        # Work under way, for the log of a forced stop: slot -> (peer, since).
        self._running: dict[Slot, tuple[str, float]] = {}
        self._jobs = _FairQueue()
        self._workers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()  # workers may need the loop at once
        #: The server's Metrics, when they are on.
        self.metrics: Any = None
        self._busy = Message.for_error(
            ServerBusy(f"The server has {max_queued} requests waiting for a handler; try again later.")
        )
        #: What ``framewire-describe`` is answered with.
        self.description = description(handler)

    # -- the driver's side ------------------------------------------------------

    def bind(self, conn: ServerConnection) -> None:
        """Give ``conn`` its way of answering: the handler itself when it runs
        inline (no call layer on the hot path), else the thread pool."""
        streams = (self._pull, self._close)
        if self.threads:
            conn.bind(functools.partial(self._submit, conn), None, self.description, streams)
            return
        call = self.handler
        if self._with_peer:
            handler = self.handler
            call = lambda request: handler(request, _context(request, conn))  # noqa: E731
        conn.bind(call, self._adopt, self.description, streams)

    def _full(self, conn: ServerConnection) -> bool:
        # Past max_queued, a connection below its share still gets a place
        # (see the module's text): the greedy one is refused, not the others.
        if self.outstanding < self.max_queued:
            return False
        held = self._held
        share = self.max_queued // (len(held) + (conn not in held))
        return held.get(conn, 0) >= share

    def _submit(self, conn: ServerConnection, request: Message) -> object:
        # Threads: the request waits for a worker; its slot keeps its place.
        if self._full(conn):
            conn.count_error(ServerBusy.code)
            return self._busy
        slot = conn.reserve()
        cancel = Cancel()
        slot.cancel = cancel.set  # the connection sets it if its peer leaves
        self._started(conn, slot)
        if len(self._workers) < self.threads:
            self._add_worker()
        self._jobs.put((conn, slot, request, _deadline(request), cancel))
        return LATER

    def _adopt(self, conn: ServerConnection, request: Message, result: object) -> object:
        # An inline handler returned something else than a Message: an
        # awaitable runs on the event loop; a stream is taken in batches
        # (see _pull); anything else is for the engine to refuse.
        if is_stream(result):
            slot = conn.reserve()
            conn.stream_later(slot, as_stream(result))
            return LATER
        if not inspect.isawaitable(result):
            return result
        return self._schedule(conn, request, result)

    # -- streams ----------------------------------------------------------------------

    def _pull(self, conn: ServerConnection, slot: Slot) -> None:
        # The next batch of ``slot``'s stream, where its action runs: on the
        # event loop (async sources), the pool (with threads), else here and
        # now; it comes back as a completion, as a later answer does, so the
        # other connections get their turn between batches.
        state = slot.stream
        assert state is not None
        source = state.source
        self._started(conn, slot)
        if source.feed is not None:
            # A subscription: its batch comes from the publish that makes
            # it (any thread), straight to the completions.
            source.feed(lambda result: self._post(conn, slot, result))  # type: ignore[arg-type]
        elif source.is_async:
            self._on_loop(conn, slot, source.apull(), None)
        elif self.threads:
            if len(self._workers) < self.threads:
                self._add_worker()
            self._jobs.put((conn, slot, _PULL, None, Cancel()))
        else:
            try:
                batch: object = source.pull()
            except BaseException as exc:
                batch = exc
            self._post(conn, slot, batch)  # type: ignore[arg-type]

    def _close(self, conn: ServerConnection, slot: Slot) -> None:
        # Stop ``slot``'s stream's source on the thread that takes it.
        state = slot.stream
        if state is None:
            return
        source = state.source
        if source.feed is not None:
            source.close()  # (a subscription: closed from any thread; its pull ends)
        elif source.is_async:
            loop = self._event_loop()
            loop.call_soon_threadsafe(lambda: loop.create_task(_aclose(source)))
        elif self.threads:
            self._jobs.put((conn, slot, source, None, Cancel()))  # (the slot may be done with it by then)
        else:
            _close_quietly(source)

    def completed(self) -> list[Completion]:
        """The answers that came since the last call (on the driver's thread)."""
        done: list[Completion] = []
        while self._done:
            conn, slot, result = self._done.popleft()
            self._finished(conn, slot)
            done.append((conn, slot, result))
        return done

    def _finished(self, conn: ServerConnection, slot: Slot) -> None:
        # On the driver's thread, as _started.
        self.outstanding -= 1
        if self.metrics is not None:
            self.metrics.handler_queue.dec()
        held = self._held
        left = held[conn] - 1
        if left:
            held[conn] = left
        else:
            del held[conn]
        entry = self._running.pop(slot, None)
        if entry is not None and self.metrics is not None and slot.stream is None:
            self.metrics.observe(time.monotonic() - entry[1], slot.action)  # (not each batch of a stream)

    def still_running(self, now: float) -> list[str]:
        """Who the handlers still at work serve, and for how long."""
        return [f"{peer} ({now - since:.1f} s)" for peer, since in self._running.values()]

    def close(self) -> None:
        """Stop the workers and the loop (work still running is abandoned)."""
        self._jobs.close(len(self._workers))
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            # The loop closes itself once stopped (see _event_loop); waited
            # for, briefly, so that it is not left to the interpreter's exit,
            # where closing it fails on a half torn-down selector. A handler
            # stuck in a blocking call keeps it running: then it is abandoned.
            thread.join(_LOOP_STOP_WAIT)

    # -- work that answers later ---------------------------------------------------

    def _started(self, conn: ServerConnection, slot: Slot) -> None:
        self.outstanding += 1
        if self.metrics is not None:
            self.metrics.handler_queue.inc()
        self._held[conn] = self._held.get(conn, 0) + 1
        self._running[slot] = (conn.peer, time.monotonic())

    def _schedule(self, conn: ServerConnection, request: Message, awaitable: Awaitable[Any]) -> object:
        # An awaitable from an inline handler, on the driver's thread.
        if self._full(conn):
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never awaited, on purpose: no warning
            conn.count_error(ServerBusy.code)
            return self._busy
        slot = conn.reserve()
        self._started(conn, slot)
        self._on_loop(conn, slot, awaitable, _deadline(request))
        return LATER

    def _on_loop(
        self,
        conn: ServerConnection,
        slot: Slot,
        awaitable: Awaitable[Any],
        deadline: float | None,
        flag: Cancel | None = None,
    ) -> None:
        loop = self._event_loop()
        future = asyncio.run_coroutine_threadsafe(_guarded(awaitable, deadline), loop)
        # The peer leaving (or a cancel) cancels the task, on the loop's
        # thread; the answer, a CancelledError, is then dropped. From a pool
        # thread, the flag the server may already hold is told too: the hook
        # is written before the flag is read, and the flag set before the
        # hook is read, so one of the two sides sees the other.
        slot.cancel = future.cancel
        if flag is not None:
            flag.hook = future.cancel
            if flag.cancelled:
                future.cancel()

        def done(_: Any) -> None:
            try:
                result: Message | BaseException = future.result()
            except BaseException as exc:
                result = exc
            self._post(conn, slot, result)

        future.add_done_callback(done)

    def _post(self, conn: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        # From a worker or the loop's thread: deque.append is atomic.
        self._done.append((conn, slot, result))
        self._wake()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_until_stopped, args=(loop,), name="framewire-handlers-loop", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def _stream_job(self, conn: ServerConnection, slot: Slot) -> None:
        # On a worker: a stream's next batch; one pull at a time per source
        # (two workers must not run one generator, nor a close beside it).
        state = slot.stream
        if state is None:
            self._post(conn, slot, ConnectionAbortedError("the stream has ended"))  # dropped
            return
        source = state.source
        with source.lock:
            if source.closed:
                self._post(conn, slot, ConnectionAbortedError("the stream was closed"))  # dropped
                return
            try:
                batch: object = source.pull()
            except BaseException as exc:
                batch = exc
        self._post(conn, slot, batch)  # type: ignore[arg-type]

    def _add_worker(self) -> None:
        number = len(self._workers) + 1
        worker = threading.Thread(target=self._work, name=f"framewire-handler-{number}", daemon=True)
        self._workers.append(worker)
        worker.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            conn, slot, request, deadline, cancel = job
            if isinstance(request, Stream):  # a stream's source to stop
                with request.lock:
                    _close_quietly(request)
                continue
            if isinstance(request, str):  # _PULL
                self._stream_job(conn, slot)
                continue
            assert isinstance(request, Message)
            if cancel.cancelled:
                self._post(conn, slot, ConnectionAbortedError("the client left"))  # dropped
                continue
            if deadline is not None and time.monotonic() >= deadline:
                late = DeadlineExceeded("The request waited past its deadline for a handler.")
                self._post(conn, slot, late)
                continue
            try:
                result = (
                    self.handler(request, Context(request, conn.peer_info(), deadline, cancel))
                    if self._with_peer
                    else self.handler(request)
                )
            except BaseException as exc:
                self._post(conn, slot, exc)
                continue
            if result.__class__ is not Message and inspect.isawaitable(result):
                self._on_loop(conn, slot, result, deadline, cancel)
            else:
                self._post(conn, slot, result)


def _close_quietly(source: Stream) -> None:
    # A source stopped on request: what its finally blocks raise is logged.
    try:
        source.close()
    except Exception:
        log.exception("a stream's source raised while it was being closed")


async def _aclose(source: Stream) -> None:
    # An async source, once the pull under way (cancelled) has unwound.
    for _ in range(8):
        try:
            await source.aclose()
            return
        except RuntimeError:  # still running: its pull is unwinding
            await asyncio.sleep(0)
        except Exception:
            log.exception("a stream's source raised while it was being closed")
            return


class LoopDispatcher(Dispatcher):
    """The dispatcher of an event loop server: coroutines run on that loop,
    answers from the pool come back with ``call_soon_threadsafe``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[..., None], **kwargs: Any) -> None:
        super().__init__(wake=lambda: None, **kwargs)
        self._server_loop = loop
        self._deliver = deliver

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        return self._server_loop

    def _post(self, conn: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        # RuntimeError: the loop is closed, the server has stopped, and the
        # answer has nowhere to go.
        with contextlib.suppress(RuntimeError):
            self._server_loop.call_soon_threadsafe(self._arrived, conn, slot, result)

    def _arrived(self, conn: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        self._finished(conn, slot)
        self._deliver(conn, slot, result)
