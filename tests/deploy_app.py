"""The application the deployment tests serve: who asked, who answered.

Served as ``framewire serve --app deploy_app:whoami`` from the tests folder.
A request whose content is a number of seconds is answered after that long
(a request in flight when the server is told to stop).
"""

from __future__ import annotations

import os
import time

from framewire import Message
from framewire.server.peer import Context


def whoami(request: Message, peer: Context) -> Message:
    try:
        delay = float(request.content or b"0")
    except ValueError:
        delay = 0.0
    if 0 < delay <= 5:
        time.sleep(delay)
    return Message.from_json({"peer": peer.address, "pid": os.getpid()})
