"""The server: its config, the sans-I/O connection engine, and the drivers
that run it (epoll)."""

from framewire.server.epoll import Server, raise_descriptor_limit

__all__ = ["Server", "raise_descriptor_limit"]
