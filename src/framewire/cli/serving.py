"""The application server and its client: serve, request."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from framewire.cli.common import (
    PORT,
    ClientCommand,
    _bind_error,
    _fail,
    ext_option,
    friendly_errors,
    host_option,
    host_port,
    json_or_text,
    log,
    log_format_option,
    log_level_option,
    main,
    parse_extensions,
    plain_hint,
    port_option,
    server_address,
    setup_logging,
    tls_client_options,
    tls_for,
    tls_server_options,
    unix_options,
)
from framewire.core.message import Message
from framewire.io.netio import describe, show_address


def _serve_reloading(app_dir: str, supervised: bool) -> None:
    # --reload: this process watches the app's folder and runs the server,
    # the same command without --reload, as a child it restarts on a change.
    if supervised:
        raise _fail("--reload is for development: not with --workers or --fd (SIGHUP reloads workers)")
    try:
        import watchfiles
    except ImportError:
        raise _fail("--reload needs watchfiles: pip install 'framewire[reload]'") from None
    import shlex

    command = [sys.executable, "-m", "framewire", *(arg for arg in sys.argv[1:] if arg != "--reload")]
    folder = os.path.abspath(app_dir)

    def changed(changes: set[tuple[Any, str]]) -> None:
        names = sorted(os.path.relpath(path, folder) for _, path in changes)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        click.echo(f"framewire: {shown} changed: restarting the server", err=True)

    click.echo(f"framewire: --reload: watching the .py files under {folder}", err=True)
    watchfiles.run_process(
        folder,
        target=shlex.join(command),
        target_type="command",
        callback=changed,
        watch_filter=watchfiles.PythonFilter(),
        debounce=400,
        sigint_timeout=15,  # past the grace: the server drains first
    )


#: ``request -n``: requests sent ahead of the answers read.
_WINDOW = 64


def _hang_up_ignored(signum: int, frame: object) -> None:
    import logging

    logging.getLogger("framewire.server").warning(
        "SIGHUP ignored: one process does not reload (serve with --workers N to reload on SIGHUP)"
    )


class _Workers(click.ParamType):  # type: ignore[type-arg]
    """``--workers``: a count, or ``auto`` (0): one per usable CPU."""

    name = "workers"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return 0
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a count of workers nor auto", param, ctx)
        if count < 0:
            self.fail(f"{count} workers: give 0 or more (or auto)", param, ctx)
        return count


WORKERS = _Workers()


def _limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One option per server setting, generated from ServerConfig's declarations."""
    from framewire.server.config import settings

    for name, kind, default, setting in reversed(settings()):
        high = None if setting.maximum == math.inf else setting.maximum
        if kind is int:
            low = int(setting.minimum) + (1 if setting.above_minimum else 0)
            option_type: click.IntRange | click.FloatRange = click.IntRange(
                low, None if high is None else int(high)
            )
        else:
            option_type = click.FloatRange(setting.minimum, high, min_open=setting.above_minimum)
        option = "--" + name.replace("_", "-")
        fn = click.option(option, type=option_type, default=default, show_default=True, help=setting.help)(fn)
    return fn


@main.command()
@host_option
@port_option
@unix_options
@click.option(
    "--app",
    "app_spec",
    default="search",
    show_default=True,
    metavar="search|echo|pubsub|conformance|MODULE:CALLABLE",
    help="The application: the guide's search demo, echo, the pubsub broker, the conformance suite's "
    "actions, or your handler (a callable Message -> Message).",
)
@click.option(
    "--app-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where a MODULE:CALLABLE app is imported from. It is searched after the standard library "
    "and the installed packages, so a file there never replaces one of theirs.",
)
@click.option(
    "--loop",
    "loop_kind",
    type=click.Choice(["epoll", "asyncio", "uvloop"]),
    default="epoll",
    show_default=True,
    help="The driver: framewire's own epoll loop (selectors where there is no epoll), asyncio, or "
    "asyncio on uvloop (pip install uvloop).",
)
@tls_server_options
@click.option(
    "--workers",
    type=WORKERS,
    default=None,
    metavar="N|auto",
    help="Run N worker processes on the one port (auto, or 0: one per CPU this process may use, "
    "counting its affinity and its cgroup's CPU limit), supervised: a worker that dies is replaced; "
    "SIGHUP replaces them one by one with the code reloaded. Without --workers, one process: it logs "
    "and ignores SIGHUP.",
)
@click.option("--fd", "listen_fd", type=click.IntRange(0), default=None, metavar="N",
              help="Serve the listening socket already open on descriptor N (systemd's LISTEN_FDS is "
              "also understood) instead of binding --host/--port.")  # fmt: skip
@click.option(
    "--metrics",
    "metrics_at",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve Prometheus metrics (text format) on this address (HOST defaults to 127.0.0.1).",
)
@click.option(
    "--proxy-protocol",
    is_flag=True,
    help="Every connection begins with a PROXY protocol header (v1 or v2) naming the real client: "
    "for servers behind HAProxy, nginx stream, Envoy, a cloud balancer.",
)
@click.option("--trusted-proxies", default="127.0.0.0/8,::1/128", show_default=True, metavar="CIDR[,CIDR...]",
              help="Who may send PROXY headers: addresses or networks, and uid:N for a user connecting "
                   "to a Unix socket (the server's own user and root always may); connections from "
                   "elsewhere are closed.")  # fmt: skip
@click.option("--access-log", is_flag=True,
              help="An INFO line per request on the framewire.access logger: peer, action, outcome, "
                   "duration, bytes in and out, request id.")  # fmt: skip
@click.option("--slow-subscriber", type=click.Choice(["drop", "disconnect"]), default="drop",
              show_default=True,
              help="A subscriber whose queue is full (--subscriber-queue) loses its oldest events, the "
                   "gap marked, or its subscription ends with server-busy.")  # fmt: skip
@click.option("--hub", "hub_url", metavar="redis://HOST:PORT/DB", default=None,
              help="Publish and subscribe through Redis: every worker and host on that Redis is one hub "
                   "(pip install 'framewire[redis]').")  # fmt: skip
@click.option("--reload", is_flag=True,
              help="For development: restart the server when a .py file under --app-dir changes "
                   "(pip install 'framewire[reload]'). Not with --workers or --fd.")  # fmt: skip
@_limit_options
@log_level_option
@log_format_option
@friendly_errors
def serve(
    host: str,
    port: int,
    unix: str | None,
    unix_mode: int | None,
    app_spec: str,
    app_dir: str,
    loop_kind: str,
    log_level: str,
    log_format: str,
    access_log: bool,
    ssl_context: Any,
    workers: int | None,
    listen_fd: int | None,
    metrics_at: str | None,
    proxy_protocol: bool,
    trusted_proxies: str,
    slow_subscriber: str,
    hub_url: str | None,
    reload: bool,
    **limit_values: Any,
) -> None:
    """The application server: answers every request with its app.

    Keep-alive and pipelining; handlers inline, on --threads N, or async def;
    clean shutdown on Ctrl-C or SIGTERM.

    \b
    Example:
      framewire serve --port 65432 --app search
      framewire request 127.0.0.1 65432 search morpheus     (from a second terminal)

    \b
    Where: --host 127.0.0.1 (default), --host ::1, --host :: (IPv6 and IPv4),
    or --unix PATH. TLS: --tls-cert and --tls-key (framewire certs DIR makes
    a development set), and --tls-client-ca for mutual TLS.
    """
    from framewire.server import raise_descriptor_limit
    from framewire.server.config import ServerConfig
    from framewire.server.hub import Hub
    from framewire.server.loading import load_handler

    if reload:
        _serve_reloading(app_dir, workers is not None or listen_fd is not None)
        return
    if listen_fd is None:
        listen_fd = _socket_activation()
    setup_logging(log_level, with_pid=workers is not None or listen_fd is not None, log_format=log_format)
    if unix is not None:
        host = f"unix:{unix}"
    elif unix_mode is not None:
        raise _fail("--unix-mode goes with --unix", 2)
    if ":" in app_spec:
        # Only a user's app adds a folder to the path, and at its end: a
        # resource.py or tempfile.py there must not run in place of the
        # standard module the server imports later (as the server's user).
        folder = os.path.abspath(app_dir)
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        handler = load_handler(app_spec)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    if loop_kind == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise _fail("--loop uvloop needs uvloop: pip install uvloop", 2) from None
    try:
        config = ServerConfig(
            **limit_values,
            proxy_protocol=proxy_protocol,
            access_log=access_log,
            trusted_proxies=tuple(t for t in trusted_proxies.split(",") if t.strip()),
            slow_subscriber=slow_subscriber,
            hub=hub_url,
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    if hub_url is not None:
        if not isinstance(getattr(handler, "hub", None), Hub):
            raise _fail(f"--hub is for an App's hub: the {app_spec} app has none", 2)
        try:
            import redis  # noqa: F401
        except ImportError:
            raise _fail("--hub needs redis-py: pip install 'framewire[redis]'", 2) from None
    if proxy_protocol and ssl_context is not None:
        from framewire.server.state import PROXY_AND_TLS

        raise _fail(PROXY_AND_TLS, 2)
    # Each connection is a descriptor: make room for the connection limit.
    wanted = config.max_connections + 64
    have = raise_descriptor_limit(wanted)
    if have < wanted:
        log.warning(
            "the descriptor limit is %d, below the %d that --max-connections %d needs; "
            "past it, accepts pause until descriptors free up (raise it with ulimit -n)",
            have,
            wanted,
            config.max_connections,
        )
    # A request to try, for the applications whose requests we know.
    hint = {
        "search": ["request {target} search morpheus"],
        "echo": ["request {target} --text hello"],
        "pubsub": ["subscribe {target} news", "publish {target} news hello    (from a third terminal)"],
        "conformance": ["conformance {target} --app conformance --extensions"],
    }.get(app_spec)

    def ready(bound_host: str, bound_port: int) -> None:
        where = bound_host if unix is not None else show_address((bound_host, bound_port))
        secure = " over TLS" if ssl_context is not None else ""
        banner = f"framewire: serving the {app_spec} app on {where}{secure} (Ctrl-C to stop)."
        if hint is not None:
            # A wildcard is where one listens, not where one connects.
            reach = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bound_host, bound_host)
            target = bound_host if unix is not None else f"{reach} {bound_port}"
            tls = " --tls-ca CA.pem" if ssl_context is not None else ""
            tries = [f"\n  {_command_name()} {line.format(target=target + tls)}" for line in hint]
            banner += " Try:" + "".join(tries)
        if log_format == "json":
            log.info("%s", banner.replace("\n ", ""))  # every line of stderr a JSON object
        else:
            click.echo(banner, err=True)

    sock = None
    if listen_fd is not None and workers is not None:
        # --workers on an inherited listener (systemd's socket activation, or
        # --fd): the supervisor runs the workers on it, and reloads them.
        from framewire.io.netio import adopt_listener

        try:
            inherited = adopt_listener(listen_fd)
        except OSError as exc:
            raise _fail(describe(exc), 2) from None
        from framewire.server.workers import usable_cpus

        count = workers or usable_cpus()
        _supervise(host, port, unix_mode, count, config.grace, app_spec, ssl_context, metrics_at, inherited)
        return
    if listen_fd is not None:
        import signal

        from framewire.io.netio import adopt_listener
        from framewire.server.workers import follow_supervisor, notify_ready

        follow_supervisor()
        try:
            sock = adopt_listener(listen_fd)
        except OSError as exc:
            raise _fail(describe(exc), 2) from None
        # A worker ignores the hang-up its terminal may send: reloading is
        # the supervisor's, which replaces it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        announce = ready

        def ready(bound_host: str, bound_port: int) -> None:
            if not os.environ.get("FRAMEWIRE_READY_FD"):
                announce(bound_host, bound_port)
            notify_ready()

    elif workers is not None:
        from framewire.server.workers import usable_cpus

        count = workers or usable_cpus()
        _supervise(host, port, unix_mode, count, config.grace, app_spec, ssl_context, metrics_at)
        return
    else:
        # One process has no workers to replace: a hang-up (a closed
        # terminal, an operator's reload habit) is logged and ignored rather
        # than ending the server with exit 129.
        import signal

        signal.signal(signal.SIGHUP, _hang_up_ignored)
    metrics = _metrics(handler, metrics_at, worker=listen_fd is not None)
    if loop_kind == "epoll":
        from framewire.server import Server

        server = Server(handler, host, port, config=config, ssl_context=ssl_context, unix_mode=unix_mode,
                        sock=sock, metrics=metrics)  # fmt: skip
        try:
            server.bind()
        except OSError as exc:
            raise _bind_error(exc, host, port) from None
        server.serve_forever(handle_signals=True, on_ready=lambda: ready(*server.address))
        return
    from framewire.server import aiorun

    try:
        aiorun.run(handler, host, port, config, use_uvloop=loop_kind == "uvloop", ssl_context=ssl_context,
                unix_mode=unix_mode, sock=sock, metrics=metrics,
                on_ready=lambda s: ready(*s.address))  # fmt: skip
    except OSError as exc:
        raise _bind_error(exc, host, port) from None


def _command_name() -> str:
    # The command as the person can type it: "framewire" when it is on the
    # PATH, else the path of the one running (".venv/bin/framewire").
    import shutil

    running = sys.argv[0]
    if os.path.basename(running) == "framewire":
        found = shutil.which("framewire")
        if found is not None and os.path.realpath(found) == os.path.realpath(running):
            return "framewire"
        relative = os.path.relpath(running)
        return running if relative.startswith("..") else relative
    return "framewire" if shutil.which("framewire") else f"{os.path.basename(sys.executable)} -m framewire"


def _socket_activation() -> int | None:
    # systemd's socket activation: the first passed descriptor is 3.
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return 3


def _metrics(handler: Any, metrics_at: str | None, *, worker: bool) -> Any:
    # The server's metrics; served here, unless this is a worker whose
    # supervisor serves the sum of all of them.
    if metrics_at is None:
        return None
    from framewire.server.metrics import MULTIPROCESS_ENV, Metrics, serve_metrics

    try:
        where_ = host_port(metrics_at, "127.0.0.1")
    except click.BadParameter as exc:
        raise _fail(f"--metrics: {exc.message}", 2) from None
    metrics = Metrics(handler)
    if not (worker and os.environ.get(MULTIPROCESS_ENV)):
        try:
            bound = serve_metrics(where_)
        except OSError as exc:
            raise _bind_error(exc, where_[0], where_[1]) from None
        log.info("metrics on http://%s/metrics", show_address(bound))
    return metrics


def _supervise(
    host: str,
    port: int,
    unix_mode: int | None,
    count: int,
    grace: float,
    app_spec: str,
    ssl_context: Any,
    metrics_at: str | None,
    inherited: socket.socket | None = None,
) -> None:
    import tempfile

    from framewire.io.netio import listen, listen_unix, remove_unix, unix_file, unix_path, where
    from framewire.server.workers import Supervisor, worker_command

    folder = None
    on_exit = None
    on_restart = None
    if metrics_at is not None:
        from framewire.server.metrics import MULTIPROCESS_ENV, serve_metrics

        # Each worker writes its figures here; this process serves their sum.
        folder = tempfile.TemporaryDirectory(prefix="framewire-metrics-")
        os.environ[MULTIPROCESS_ENV] = folder.name
        from prometheus_client import multiprocess

        def on_exit(pid: int) -> None:
            multiprocess.mark_process_dead(pid, folder.name)  # type: ignore[no-untyped-call]

        # The series exist, at zero, from the first scrape: this process
        # writes them too, before any worker has (else the first scrapes
        # would answer an empty page, which reads as a target with nothing).
        from prometheus_client import CollectorRegistry

        from framewire.server.metrics import Metrics

        supervisor_metrics = Metrics(None, registry=CollectorRegistry())
        on_restart = supervisor_metrics.worker_restarts.inc

        try:
            where_ = host_port(metrics_at, "127.0.0.1")
            bound = serve_metrics(where_, folder.name)
        except click.BadParameter as exc:
            raise _fail(f"--metrics: {exc.message}", 2) from None
        except OSError as exc:
            raise _bind_error(exc, where_[0], where_[1]) from None
        log.info("metrics of every worker on http://%s/metrics", show_address(bound))

    if inherited is not None:
        listener, owned = inherited, None  # the socket's file, if any, is its owner's (systemd's)
        path = None if inherited.family != socket.AF_UNIX else inherited.getsockname()
    else:
        path = unix_path(host)
        try:
            listener = listen_unix(path, unix_mode) if path is not None else listen(host, port)
        except OSError as exc:
            raise _bind_error(exc, host, port) from None
        owned = unix_file(listener)
    if path is not None:
        shown = f"unix:{path}"
    else:
        shown = where(listener.getsockname()[0], listener.getsockname()[1])
    secure = " over TLS" if ssl_context is not None else ""
    click.echo(f"framewire: serving the {app_spec} app on {shown}{secure} with {count} workers "
               "(Ctrl-C to stop, SIGHUP to reload).", err=True)  # fmt: skip
    try:
        Supervisor(
            worker_command(sys.argv[1:]), listener, count, grace, on_exit=on_exit, on_restart=on_restart
        ).run()
    finally:
        listener.close()
        remove_unix(owned)
        if folder is not None:
            folder.cleanup()


def _build_request(action: str | None, value: str | None, json_text: str | None, text: str | None,
                   file: Path | None) -> Message:  # fmt: skip
    chosen = [
        name
        for name, given in (("--json", json_text), ("--text", text), ("--file", file))
        if given is not None
    ]
    if len(chosen) > 1:
        raise click.UsageError(f"give only one of {', '.join(chosen)}")
    if chosen and action is not None:
        given = " ".join(part for part in (action, value) if part is not None)
        raise click.UsageError(f"give either ACTION VALUE ({given}) or {chosen[0]}, not both")
    if json_text is not None:
        try:
            return Message.from_json(json.loads(json_text))
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
    if text is not None:
        return Message.from_text(text)
    if file is not None:
        return Message.from_bytes(file.read_bytes(), content_type="binary/custom-client-binary-type")
    if action is None or value is None:
        raise click.UsageError("give ACTION and VALUE, or one of --json, --text, --file")
    if action == "search":
        return Message.from_json({"action": "search", "value": value})
    return Message.from_bytes((action + value).encode(), content_type="binary/custom-client-binary-type")


def _show(response: Message) -> str:
    if response.is_json:
        body = response.json()
        try:
            if isinstance(body, dict) and set(body) == {"result"}:
                result = body["result"]
                return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
            return json.dumps(body, ensure_ascii=False, indent=2)
        except (RecursionError, ValueError):
            return response.text()  # too deep to write back as JSON: as sent
    if response.is_text:
        return response.text()
    return repr(response.content)


@main.command(cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.argument("action", required=False)
@click.argument("value", required=False)
@click.option("--json", "json_text", metavar="JSON", help="Send this JSON as text/json content.")
@click.option("--text", metavar="TEXT", help="Send this text as text/plain (utf-8) content.")
@click.option("--file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Send this file's bytes as binary content.")  # fmt: skip
@click.option("--count", "-n", type=click.IntRange(1), default=1, show_default=True,
              help="Send N copies pipelined on one connection.")  # fmt: skip
@click.option("--show-header", is_flag=True, help="Print each response's header too.")
@click.option("--raw", is_flag=True, help="Write each response's content bytes to stdout, as they are.")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds for the whole exchange."
)
@ext_option
@tls_client_options
@friendly_errors
def request(
    host: str,
    port: int,
    action: str | None,
    value: str | None,
    json_text: str | None,
    text: str | None,
    file: Path | None,
    count: int,
    show_header: bool,
    raw: bool,
    timeout: float,
    ext: tuple[str, ...],
    tls: tuple[Any, str | None] | None,
) -> None:
    """The guide's application client: send a request, print the response.

    `search VALUE` sends the text/json search request; any other ACTION sends
    binary content ACTION+VALUE.

    \b
    Examples:
      framewire request 127.0.0.1 65432 search morpheus
      framewire request 127.0.0.1 65432 binary "some bytes"
      framewire request 127.0.0.1 65432 --json '{"action": "search", "value": "ring"}' --show-header
      framewire request 127.0.0.1 65432 search ring --ext framewire-id=7 --show-header

    \b
    The server: HOST PORT (HOST a name, 127.0.0.1, ::1), or unix:PATH alone.
    TLS: --tls, or --tls-ca CA.pem for a server whose CA is not the system's.
      framewire request unix:/tmp/framewire.sock search ring
      framewire request localhost 65432 --tls-ca certs/ca.pem search ring
    """
    from framewire.client import Client

    host, port = server_address(host, port)
    message = _build_request(action, value, json_text, text, file)
    extensions = parse_extensions(ext)
    if extensions is not None:
        message = Message(
            message.content, message.content_type, message.content_encoding, extensions=extensions
        )
    context, name = tls_for(host, tls)
    client = Client(host, port, timeout=timeout, check=False, ssl_context=context, server_hostname=name)
    failed = shown = 0

    def show(response: Message) -> None:
        nonlocal failed, shown
        shown += 1
        if show_header:
            try:
                click.echo(json.dumps(response.header, ensure_ascii=False))
            except (RecursionError, ValueError):  # too deep to write back: as sent
                click.echo(response.wire_parts()[0][2:].decode("utf-8", "backslashreplace"))
        if response.is_error:
            failed += 1
            error = response.error()
            assert error is not None
            click.echo(f"error from the server: {error.code}: {error.message}", err=True)
        elif raw:
            sys.stdout.buffer.write(response.content)
            sys.stdout.buffer.flush()
        else:
            click.echo(_show(response))

    with plain_hint(tls, lambda: shown), client:
        if count == 1:
            show(client.request(message))
        else:
            # Pipelined, at most _WINDOW ahead of the answers, each printed as
            # it comes: a server that closes after one answer (the guide's)
            # has that answer shown before the one line that says why the
            # rest did not come.
            sent = 0
            for received in range(count):
                while sent < count and sent - received < _WINDOW:
                    client.send(message)
                    sent += 1
                show(client.receive())
    if failed:
        raise click.exceptions.Exit(1)


@main.command("call", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.argument("action")
@click.argument("value", required=False)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the answer."
)
@ext_option
@click.option("--stream", "streaming", is_flag=True,
              help="The action streams: print each item as it comes (--timeout: per item).")  # fmt: skip
@tls_client_options
@friendly_errors
def call(
    host: str,
    port: int,
    action: str,
    value: str | None,
    timeout: float,
    ext: tuple[str, ...],
    streaming: bool,
    tls: Any,
) -> None:
    """Call an action of a JSON application: {"action": ACTION, "value": VALUE}.

    VALUE is read as JSON when it is JSON ('[1, 2]', '3', 'true', '"007"'),
    else sent as a string; without VALUE, the value is null. Prints the
    result (JSON, unless it is a string). An error response prints its code,
    message and details on stderr and exits 1.

    \b
    Examples:
      framewire call 127.0.0.1 65432 add '[1, 2]'          (prints 3)
      framewire call 127.0.0.1 65432 search ring
      framewire call 127.0.0.1 65432 put '{"key": "a", "value": 1}' --ext token=s3cret
      framewire call 127.0.0.1 65432 tail 100 --stream
      framewire call unix:/tmp/app.sock get mykey
    """
    from framewire.client import Client
    from framewire.core.errors import ErrorResponse

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    parsed = None if value is None else json_or_text(value)
    extensions = parse_extensions(ext)
    client = Client(host, port, timeout=timeout, ssl_context=context, server_hostname=name)
    try:
        with plain_hint(tls), client:
            if streaming:
                for item in client.stream(action, parsed, extensions=extensions):
                    click.echo(_result_text(item))
                    sys.stdout.flush()  # each item as it comes, into a pipe too
                return
            result = client.call(action, parsed, extensions=extensions)
    except ErrorResponse as exc:
        details = "" if exc.details is None else f" (details: {json.dumps(exc.details, ensure_ascii=False)})"
        click.echo(f"framewire: {action} failed: {exc.code}: {exc.message}{details}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(_result_text(result))


def _result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False)
    except (RecursionError, ValueError):
        return repr(result)


@main.command("describe", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.option("--json", "as_json", is_flag=True, help="Print the whole description, as JSON.")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the answer."
)
@tls_client_options
@friendly_errors
def describe_command(host: str, port: int, as_json: bool, timeout: float, tls: Any) -> None:
    """What a server offers: each action, its doc and the types of its value
    and result (framewire-describe).

    \b
    Examples:
      framewire describe 127.0.0.1 65432
      framewire describe 127.0.0.1 65432 --json > api.json
    """
    from framewire.client import Client

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    client = Client(host, port, timeout=timeout, ssl_context=context, server_hostname=name)
    with plain_hint(tls), client:
        document = client.describe()
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
        return
    actions = [a for a in document["actions"] if isinstance(a, dict)]
    version = document.get("framewire", "?")
    click.echo(f"framewire {version} at {client.where}: {len(actions)} action{'s' * (len(actions) != 1)}")
    rows = [("ACTION", "VALUE", "RESULT", "DOC")]
    for action in actions:
        doc = str(action.get("doc") or "").splitlines()
        rows.append(
            (
                str(action.get("name", "?")),
                _schema_text(action.get("value")),
                _schema_text(action.get("result")),
                doc[0] if doc else "",
            )
        )
    if len(rows) == 1:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])


def _schema_text(schema: Any, depth: int = 0) -> str:
    """A JSON Schema, in a few characters: ``int``, ``list[str]``, ``Item``, ``any``."""
    if not isinstance(schema, dict) or not schema or depth > 4:
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    for union in ("anyOf", "oneOf"):
        if isinstance(schema.get(union), list):
            return " | ".join(_schema_text(s, depth + 1) for s in schema[union])
    kind = schema.get("type")
    names = {"integer": "int", "string": "str", "number": "float", "boolean": "bool", "null": "None",
             "object": "dict"}  # fmt: skip
    if kind == "array":
        return f"list[{_schema_text(schema.get('items'), depth + 1)}]"
    if isinstance(kind, str):
        return names.get(kind, kind)
    if "enum" in schema:
        return "enum"
    return "any"
