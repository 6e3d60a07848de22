"""What the broker knows of each connected client, and its reply cache.

A module of its own so that the broker core (:mod:`.server`), its services
(:mod:`.service`, :mod:`.chat`, :mod:`.games`, :mod:`.files`) and its media lane can all name a
:class:`ClientSession` without importing one another.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

REPLY_CACHE_SIZE = 64
"""Replies remembered per session, so a retried ``req_id`` gets its first reply."""


@dataclass
class ClientSession:
    """What the broker knows of one connected client (keyed by control routing id).

    ``last_seen`` is the monotonic time (seconds, the broker's clock) of its last request or
    media frame. ``key`` is the CURVE public key (Z85) of the client that holds it, the ZAP
    ``User-Id`` of its connections (empty on an insecure broker): only a connection with that
    key is served as this session, on the control lane and the media lane.
    """

    routing_id: bytes
    nick: str
    media_token: bytes
    last_seen: float
    key: str = ""
    rooms: set[str] = field(default_factory=set)
    """The rooms this session joined. A nick is in a room while any of its sessions is: one
    person (one key) may hold a nick on several connections at once (docs/protocol.md 3.6)."""
    replies: OrderedDict[int, Any] = field(default_factory=OrderedDict)
    """Per ``req_id``, the reply frames sent (``list[bytes]``), or the
    :class:`~zmeet.broker.service.Deferred` still pending; at most REPLY_CACHE_SIZE, oldest
    forgotten first."""

    def __post_init__(self) -> None:
        self.key_bytes = self.key.encode("ascii")
        """``key`` as the octets libzmq gives a frame's ``User-Id`` (the media lane's check)."""

    def remember(self, req_id: int, reply: Any) -> None:
        """Put ``reply`` (frames, or a pending Deferred) in the reply cache under ``req_id``,
        forgetting the oldest past REPLY_CACHE_SIZE."""
        self.replies[req_id] = reply
        if len(self.replies) > REPLY_CACHE_SIZE:
            self.replies.popitem(last=False)
