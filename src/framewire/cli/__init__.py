"""The ``framewire`` command line: one module per family of commands.

Every failure a person can cause (a port in use, nothing listening, a bad
option) ends as one line on stderr and a non-zero exit, never a traceback.
Each command imports the tools it needs when it runs: ``framewire serve``
loads neither psutil nor dpkt.
"""

from __future__ import annotations

from framewire.cli import bench, conformance, demo, guide, pubsub, security, serving, wire
from framewire.cli.common import main

__all__ = ["bench", "conformance", "demo", "guide", "main", "pubsub", "security", "serving", "wire"]
