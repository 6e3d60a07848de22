"""Who may join and read a room: owners, invite-only rooms, room keys, bans (docs/protocol.md
3.16), without I/O.

:class:`RoomAccess` keeps each room's :class:`Access` (its owners, whether it is locked, the
hash of its key, who is invited and who is banned), loads it from the store the first time a
room is asked about and hands every change to ``save``; the broker's chat and privacy services
ask it before they let a nick in or show a room. It follows IRC's channel modes (RFC 2811:
``+i`` invite-only, ``+k`` key, ``+b`` ban, channel operators), with owners in place of
operators: a room's first member owns it, and owners may name more owners.

Nicks, not sessions: a nick belongs to a key (docs/protocol.md 3.4.1), so owning a room,
being invited and being banned follow the person across connections and broker restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import Refused
from ..protocol import ErrorCode

MAX_ROOM_KEY_BYTES = 64
"""Longest room key (``/key SECRET``), in octets of UTF-8."""

MAX_LISTED = 256
"""Most nicks a room keeps invited, banned or as owners each (a bounded list, as IRC servers
bound ban lists)."""

KEY_ITERATIONS = 1000
"""PBKDF2-HMAC-SHA256 rounds of a stored room key (RFC 8018): about 0.3 ms on the hub per JOIN
of a room with a key. A room key is a shared password like an IRC channel key, not an
account's: the hash keeps it out of a copied store's plain text, and flood limits, not the
hash's cost, stop guessing over the network."""


@dataclass
class Access:
    """One room's access rules. ``key_hash`` is ``salt$scrypt`` in hex, empty for no key."""

    owners: list[str] = field(default_factory=list)
    locked: bool = False
    key_hash: str = ""
    invited: list[str] = field(default_factory=list)
    banned: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"owners": self.owners, "locked": self.locked,
                           "key_hash": self.key_hash, "invited": self.invited,
                           "banned": self.banned})

    @classmethod
    def from_json(cls, text: str) -> Access:
        data = json.loads(text)
        return cls(owners=list(data.get("owners", [])), locked=bool(data.get("locked")),
                   key_hash=str(data.get("key_hash", "")),
                   invited=list(data.get("invited", [])), banned=list(data.get("banned", [])))

    @property
    def private(self) -> bool:
        """Whether outsiders may not see the room (invite-only, or with a key)."""
        return self.locked or bool(self.key_hash)


def hash_key(secret: str) -> str:
    """``salt$hash`` (hex) of a room key: PBKDF2-HMAC-SHA256, 16 random octets of salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, KEY_ITERATIONS)
    return f"{salt.hex()}${digest.hex()}"


def key_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` is the key whose :func:`hash_key` is ``stored`` (constant time)."""
    salt, _, digest = stored.partition("$")
    try:
        got = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), bytes.fromhex(salt),
                                  KEY_ITERATIONS)
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


class RoomAccess:
    """Every room's :class:`Access`, loaded with ``load(room) -> str | None`` (the JSON
    :meth:`Access.to_json` wrote, or None for a room never configured) and written back with
    ``save(room, json)``. Methods raise :class:`~zmeet.errors.Refused`: NOT_MEMBER (403) for a
    nick that may not do what it asks, NOT_FOUND (404) for a private room an outsider asks
    about, BAD_REQUEST, TOO_MANY, MESSAGE_TOO_LARGE."""

    def __init__(self, load: Callable[[str], str | None],
                 save: Callable[[str, str], None]) -> None:
        self._load = load
        self._save = save
        self._cache: dict[str, Access] = {}

    def of(self, room: str) -> Access:
        """Room ``room``'s rules (loaded once; rooms with none get the open default)."""
        access = self._cache.get(room)
        if access is None:
            text = self._load(room)
            access = Access.from_json(text) if text else Access()
            if len(self._cache) >= 4096:  # a cache, not the truth: the store has it
                self._cache.clear()
            self._cache[room] = access
        return access

    def _write(self, room: str, access: Access) -> None:
        self._save(room, access.to_json())

    # reads ------------------------------------------------------------------------------------

    def is_owner(self, room: str, nick: str) -> bool:
        return nick in self.of(room).owners

    def may_see(self, room: str, nick: str, is_member: bool) -> bool:
        """Whether ``nick`` may see ``room``'s name, members, topic, history and files: a
        member, an owner, an invited nick, or anyone for a room that is not private."""
        access = self.of(room)
        return (is_member or not access.private or nick in access.owners
                or nick in access.invited)

    def check_join(self, room: str, nick: str, key: str) -> None:
        """Raise Refused NOT_MEMBER unless ``nick`` may join ``room`` with ``key``: not banned;
        if locked, invited or an owner; if it has a key, the key (owners and invited nicks need
        none)."""
        access = self.of(room)
        if nick in access.banned:
            raise Refused(ErrorCode.NOT_MEMBER, f"you are banned from room {room!r}")
        trusted = nick in access.owners or nick in access.invited
        if access.locked and not trusted:
            raise Refused(ErrorCode.NOT_MEMBER,
                          f"room {room!r} is invite-only: ask one of its owners for /invite")
        if access.key_hash and not trusted and not key_matches(key, access.key_hash):
            raise Refused(ErrorCode.NOT_MEMBER, f"room {room!r} needs its key: /join {room} KEY"
                          if not key else f"wrong key for room {room!r}")

    # changes ---------------------------------------------------------------------------------

    def joined(self, room: str, nick: str) -> None:
        """``nick`` is in ``room``: it owns the room if nobody does (its creator)."""
        access = self.of(room)
        if not access.owners:
            access.owners.append(nick)
            self._write(room, access)

    def _owned(self, room: str, by: str) -> Access:
        access = self.of(room)
        if by not in access.owners:
            raise Refused(ErrorCode.NOT_MEMBER, f"only an owner of room {room!r} may do that")
        return access

    def set_locked(self, room: str, by: str, locked: bool) -> None:
        access = self._owned(room, by)
        access.locked = locked
        self._write(room, access)

    def set_key(self, room: str, by: str, secret: str) -> None:
        """Set (or, with ``""``, remove) ``room``'s key."""
        access = self._owned(room, by)
        if len(secret.encode("utf-8", "replace")) > MAX_ROOM_KEY_BYTES:
            raise Refused(ErrorCode.MESSAGE_TOO_LARGE,
                          f"a room key is at most {MAX_ROOM_KEY_BYTES} octets")
        access.key_hash = hash_key(secret) if secret else ""
        self._write(room, access)

    def invite(self, room: str, by: str, nick: str) -> None:
        access = self._owned(room, by)
        _add(access.invited, nick, "invited")
        if nick in access.banned:
            access.banned.remove(nick)
        self._write(room, access)

    def ban(self, room: str, by: str, nick: str, banned: bool) -> None:
        access = self._owned(room, by)
        if banned:
            if nick in access.owners:
                raise Refused(ErrorCode.BAD_REQUEST, f"{nick} owns room {room!r}")
            _add(access.banned, nick, "banned")
            if nick in access.invited:
                access.invited.remove(nick)
        elif nick in access.banned:
            access.banned.remove(nick)
        self._write(room, access)

    def add_owner(self, room: str, by: str, nick: str) -> None:
        access = self._owned(room, by)
        _add(access.owners, nick, "owners")
        self._write(room, access)

    def check_kick(self, room: str, by: str, nick: str) -> None:
        """Raise unless ``by`` may remove ``nick`` from ``room`` (an owner; never an owner)."""
        access = self._owned(room, by)
        if nick in access.owners:
            raise Refused(ErrorCode.BAD_REQUEST, f"{nick} owns room {room!r}")


def _add(names: list[str], nick: str, what: str) -> None:
    if nick in names:
        return
    if len(names) >= MAX_LISTED:
        raise Refused(ErrorCode.TOO_MANY, f"at most {MAX_LISTED} nicks {what}")
    names.append(nick)


__all__ = ["KEY_ITERATIONS", "MAX_LISTED", "MAX_ROOM_KEY_BYTES", "Access", "RoomAccess", "hash_key",
           "key_matches"]
