"""The netstat view of framewire's sockets on this host.

psutil lists the TCP sockets with their states and owning processes; the
queue sizes (Recv-Q, Send-Q) come from /proc/net/tcp and /proc/net/tcp6,
which psutil does not read. Without root, psutil cannot name the process of
a socket that belongs to another user: those rows show "-".
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["SocketRow", "framewire_pids", "list_sockets", "render"]


@dataclass(frozen=True)
class SocketRow:
    """One TCP socket, as netstat shows it."""

    local: str
    remote: str
    state: str
    recv_q: int | None
    send_q: int | None
    pid: int | None
    program: str


def _hex_address(text: str, family: int) -> tuple[str, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if family == socket.AF_INET:
        address = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        address = socket.inet_ntop(socket.AF_INET6, words)
    return address, int(port, 16)


def _queues() -> dict[tuple[tuple[str, int], tuple[str, int]], tuple[int, int]]:
    """(local, remote) -> (Recv-Q, Send-Q), from /proc/net/tcp{,6} (Linux only)."""
    queues = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        try:
            lines = path.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local = _hex_address(fields[1], family)
            remote = _hex_address(fields[2], family)
            tx, rx = (int(part, 16) for part in fields[4].split(":"))
            queues[(local, remote)] = (rx, tx)
    return queues


def framewire_pids() -> set[int]:
    """Processes running framewire (the command, or ``python -m framewire``)."""
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(os.path.basename(part) == "framewire" or part == "framewire" for part in cmdline[:3]):
            pids.add(proc.pid)
    return pids


def list_sockets(port: int | None = None, pids: set[int] | None = None) -> list[SocketRow]:
    """TCP sockets with ``port`` at either end (any process), or else those of
    framewire processes and their peers on this host."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied as exc:  # macOS without root
        raise PermissionError("listing sockets needs root on this system (psutil: access denied)") from exc
    queues = _queues()
    if port is None:
        own = framewire_pids() if pids is None else pids
        ports = {_ends(c)[0][1] for c in connections if c.pid in own}
        wanted = [c for c in connections if c.pid in own or {e[1] for e in _ends(c)} & ports]
    else:
        wanted = [c for c in connections if port in {e[1] for e in _ends(c)}]
    names: dict[int, str] = {}
    rows = []
    for c in wanted:
        local, remote = _ends(c)
        recv_q, send_q = queues.get((local, remote), (None, None))
        program = "-"
        if c.pid is not None:
            if c.pid not in names:
                try:
                    names[c.pid] = psutil.Process(c.pid).name()
                except psutil.Error:
                    names[c.pid] = "?"
            program = names[c.pid]
        rows.append(
            SocketRow(
                local=_join(*local),
                remote=_join(*remote) if c.raddr else _join(remote[0], "*"),
                state=c.status if c.status != psutil.CONN_NONE else "-",
                recv_q=recv_q,
                send_q=send_q,
                pid=c.pid,
                program=program,
            )
        )
    order = {"LISTEN": 0, "ESTABLISHED": 1}
    rows.sort(key=lambda r: (order.get(r.state, 2), r.local, r.remote))
    return rows


def _ends(c: Any) -> tuple[tuple[str, int], tuple[str, int]]:
    """(local, remote) addresses of a psutil connection; remote is the wildcard if none."""
    local = (c.laddr.ip, c.laddr.port)
    if c.raddr:
        return local, (c.raddr.ip, c.raddr.port)
    return local, ("0.0.0.0" if c.family == socket.AF_INET else "::", 0)


def _join(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render(rows: list[SocketRow]) -> str:
    """The rows as a netstat-like table."""
    header = ("Local Address", "Foreign Address", "State", "Recv-Q", "Send-Q", "PID/Program")
    table = [
        (
            r.local,
            r.remote,
            r.state,
            "-" if r.recv_q is None else str(r.recv_q),
            "-" if r.send_q is None else str(r.send_q),
            f"{r.pid}/{r.program}" if r.pid is not None else "-",
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *table, strict=False)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in (header, *table)]  # fmt: skip
    return "\n".join(lines)
