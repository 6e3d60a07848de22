"""Private rooms and direct messages of zmeet/1 (docs/protocol.md 3.16), registered with the
codec on import.

A room's owners (its first member, and whom an owner names) may lock it (invite-only), give it
a key, invite, kick and ban; a locked or keyed room is invisible to outsiders (INFO answers 404,
its files are not listed). A direct message goes to one nick over the control lane, never on a
PUB lane, and waits in the broker's store while its recipient is offline. The rules follow IRC's
channel modes (RFC 2811: ``+i``, ``+k``, ``+b``, KICK, INVITE) and ``PRIVMSG`` to a nick
(RFC 2812, 3.3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .codec import register
from .messages import Direct, Reply, Request

KICK_EVENT_TYPE = "kick"
"""The room event of a member removed by an owner: ``sender`` is the nick removed, ``text``
``by OWNER: REASON``. A receiver treats it as it treats ``leave`` (the member is gone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lock(Request):
    """Make ``room`` invite-only (``locked``) or open again. Owners only. Reply: OK."""

    COMMAND: ClassVar[bytes] = b"LOCK"
    room: str
    locked: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SetKey(Request):
    """Give ``room`` a key (at most 64 octets) that JOIN must present, or none with ``""``.
    Owners only. Reply: OK."""

    COMMAND: ClassVar[bytes] = b"KEY"
    room: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Invite(Request):
    """Let ``nick`` join ``room`` although it is locked or keyed (and lift a ban). Owners only.
    Reply: OK; ``nick``'s session, if online, gets INVITED."""

    COMMAND: ClassVar[bytes] = b"INVITE"
    room: str
    nick: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Kick(Request):
    """Remove ``nick`` from ``room`` (a ``kick`` event; its session gets KICKED). Owners only,
    and never an owner. Reply: OK."""

    COMMAND: ClassVar[bytes] = b"KICK"
    room: str
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ban(Request):
    """Ban ``nick`` from ``room`` (kicked if in it; JOIN refused) or, with ``banned`` false,
    lift the ban. Owners only. Reply: OK."""

    COMMAND: ClassVar[bytes] = b"BAN"
    room: str
    nick: str
    banned: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AddOwner(Request):
    """Make ``nick`` an owner of ``room`` too. Owners only. Reply: OK."""

    COMMAND: ClassVar[bytes] = b"OWNER"
    room: str
    nick: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SendDirect(Request):
    """Send ``text`` to the nick ``to`` alone (RFC 2812's PRIVMSG to a nick). Reply: SENT; the
    recipient's session gets MESSAGE now, or when it next says HELLO if it is offline. ERROR
    404 for a nick nobody registered, 429 past the stored messages a recipient may have."""

    COMMAND: ClassVar[bytes] = b"MSG"
    to: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent(Reply):
    """Reply to MSG: the message's ``id``, when the broker took it (``ts_ms``), and whether it
    was ``stored`` for an offline recipient rather than delivered at once."""

    COMMAND: ClassVar[bytes] = b"SENT"
    id: str
    ts_ms: int
    stored: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectMessage(Direct):
    """A direct message to this session's nick, from ``sender`` (the nick of the sending key;
    written ``from``)."""

    COMMAND: ClassVar[bytes] = b"MESSAGE"
    id: str
    sender: str
    text: str
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Invited(Direct):
    """``by`` invited this nick to ``room``."""

    COMMAND: ClassVar[bytes] = b"INVITED"
    room: str
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Kicked(Direct):
    """``by`` removed this nick from ``room`` (``banned`` too if so), for ``reason``. The client
    leaves the room as after LEAVE."""

    COMMAND: ClassVar[bytes] = b"KICKED"
    room: str
    by: str
    reason: str = ""
    banned: bool = False


PRIVACY_REQUESTS = (Lock, SetKey, Invite, Kick, Ban, AddOwner, SendDirect)
PRIVACY_REPLIES = (Sent,)

register(*PRIVACY_REQUESTS, *PRIVACY_REPLIES, DirectMessage, Invited, Kicked)

__all__ = [
    "KICK_EVENT_TYPE", "PRIVACY_REPLIES", "PRIVACY_REQUESTS", "AddOwner", "Ban", "DirectMessage",
    "Invite", "Invited", "Kick", "Kicked", "Lock", "Sent", "SendDirect", "SetKey",
]
