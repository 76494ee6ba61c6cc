"""The clients: blocking, and many non-blocking connections on one selector."""

from framewire.client.blocking import Client

__all__ = ["Client"]
