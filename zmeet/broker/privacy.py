"""Private rooms and direct messages on the broker (docs/protocol.md 3.16), a service the core
always runs beside chat.

:class:`PrivacyService` answers LOCK, KEY, INVITE, KICK, BAN, OWNER and MSG. The rules of who
may join and see a room are :class:`zmeet.chat.access.RoomAccess` (the broker's ``access``),
which chat's JOIN and INFO and the files service consult too. A kick is a ``kick`` room event
(stored and published like a ``leave``) and a KICKED direct to the nick removed; a direct
message travels the control lane only, to the recipient's session, or waits in the store
(:meth:`~zmeet.broker.store.Store.store_direct`) until its recipient next says HELLO.
"""

from __future__ import annotations

import logging
import secrets

import gevent

from .. import protocol as p
from ..chat import Rooms, check_nick
from ..chat.access import RoomAccess
from ..chat.rooms import check_room, check_text
from ..errors import Refused
from ..protocol import privacy as pp
from .service import Handler, Service
from .sessions import ClientSession
from .store import Store

log = logging.getLogger("zmeet.broker")

MAX_STORED_DIRECTS = 100
"""Direct messages the broker keeps for one offline nick; past it MSG gets 429."""

MAX_REASON_BYTES = 256
"""Longest KICK reason, in octets of UTF-8."""


class PrivacyService(Service):
    """Private rooms (owners, locks, keys, invites, kicks, bans) and direct messages.
    Handlers raise :class:`~zmeet.errors.Refused`: 403 for a nick that is not an owner, 404
    for a nick nobody has, 400, 413, 422, 429."""

    name = "privacy"

    def handlers(self) -> dict[type, Handler]:
        return {
            pp.Lock: self._lock, pp.SetKey: self._key, pp.Invite: self._invite,
            pp.Kick: self._kick, pp.Ban: self._ban, pp.AddOwner: self._owner,
            pp.SendDirect: self._msg,
        }

    @property
    def _rooms(self) -> Rooms:
        rooms = self.broker.rooms
        assert rooms is not None, "the broker is not started"
        return rooms

    @property
    def _access(self) -> RoomAccess:
        access = self.broker.access
        assert access is not None, "the broker is not started"
        return access

    @property
    def _store(self) -> Store:
        store = self.broker.store
        assert store is not None, "the broker is not started"
        return store

    # rooms ----------------------------------------------------------------------------------

    def _lock(self, session: ClientSession, req: pp.Lock) -> p.Reply:
        check_room(req.room)
        self._access.set_locked(req.room, session.nick, req.locked)
        log.info("%s %s %s", session.nick, "locked" if req.locked else "unlocked", req.room)
        return p.Ok(req_id=req.req_id)

    def _key(self, session: ClientSession, req: pp.SetKey) -> p.Reply:
        check_room(req.room)
        self._access.set_key(req.room, session.nick, req.key)
        return p.Ok(req_id=req.req_id)

    def _invite(self, session: ClientSession, req: pp.Invite) -> p.Reply:
        check_room(req.room)
        check_nick(req.nick)
        self._access.invite(req.room, session.nick, req.nick)
        self.broker.send_to_nick(req.nick, pp.Invited(room=req.room, by=session.nick))
        return p.Ok(req_id=req.req_id)

    def _owner(self, session: ClientSession, req: pp.AddOwner) -> p.Reply:
        check_room(req.room)
        check_nick(req.nick)
        self._access.add_owner(req.room, session.nick, req.nick)
        return p.Ok(req_id=req.req_id)

    def _kick(self, session: ClientSession, req: pp.Kick) -> p.Reply:
        check_room(req.room)
        check_nick(req.nick)
        check_text(req.reason, MAX_REASON_BYTES, "reason")
        self._access.check_kick(req.room, session.nick, req.nick)
        if not self._rooms.is_member(req.room, req.nick):
            raise Refused(p.ErrorCode.NOT_FOUND, f"{req.nick} is not in room {req.room!r}")
        self._remove(req.room, session.nick, req.nick, req.reason, banned=False)
        return p.Ok(req_id=req.req_id)

    def _ban(self, session: ClientSession, req: pp.Ban) -> p.Reply:
        check_room(req.room)
        check_nick(req.nick)
        self._access.ban(req.room, session.nick, req.nick, req.banned)
        if req.banned and self._rooms.is_member(req.room, req.nick):
            self._remove(req.room, session.nick, req.nick, "banned", banned=True)
        return p.Ok(req_id=req.req_id)

    def _remove(self, room: str, by: str, nick: str, reason: str, banned: bool) -> None:
        """Take ``nick`` out of ``room``: a ``kick`` event, and KICKED to its session."""
        text = f"by {by}: {reason}" if reason else f"by {by}"
        event = self._rooms.leave(room, nick, type_=pp.KICK_EVENT_TYPE, reason=text)
        self.broker.publish_events([event])
        for kicked in self.broker.sessions_of(nick):
            kicked.rooms.discard(room)
        self.broker.send_to_nick(nick, pp.Kicked(room=room, by=by, reason=reason,
                                                 banned=banned))
        log.info("%s %s %s from %s", by, "banned" if banned else "kicked", nick, room)

    # direct messages ----------------------------------------------------------------------

    def _msg(self, session: ClientSession, req: pp.SendDirect) -> p.Reply:
        check_nick(req.to)
        check_text(req.text)
        if not req.text.strip():
            raise Refused(p.ErrorCode.BAD_REQUEST, "empty message")
        message_id = secrets.token_hex(8)
        ts_ms = self.broker.clock.wall_ms()
        if self.broker.send_to_nick(req.to, pp.DirectMessage(
                id=message_id, sender=session.nick, text=req.text, ts_ms=ts_ms)):
            return pp.Sent(req_id=req.req_id, id=message_id, ts_ms=ts_ms, stored=False)
        if not self.broker.secure or self._store.nick_owner(req.to) is None:
            raise Refused(p.ErrorCode.NOT_FOUND, f"nobody is called {req.to!r} here")
        if self._store.directs_waiting(req.to) >= MAX_STORED_DIRECTS:
            raise Refused(p.ErrorCode.TOO_MANY,
                          f"{req.to} has {MAX_STORED_DIRECTS} messages waiting already")
        self._store.store_direct(req.to, message_id, session.nick, req.text, ts_ms)
        return pp.Sent(req_id=req.req_id, id=message_id, ts_ms=ts_ms, stored=True)

    def on_session_open(self, session: ClientSession) -> None:
        # after the WELCOME: the greenlet runs once the control loop has sent its batch
        gevent.spawn(self._deliver_stored, session)

    def _deliver_stored(self, session: ClientSession) -> None:
        if self.broker.sessions.get(session.routing_id) is not session:
            return
        try:
            waiting = self._store.take_directs(session.nick)
        except Exception:
            log.exception("could not read the messages waiting for %s", session.nick)
            return
        for message_id, sender, text, ts_ms in waiting:
            self.broker.send_direct(session, pp.DirectMessage(
                id=message_id, sender=sender, text=text, ts_ms=ts_ms))
        if waiting:
            log.info("delivered %d stored messages to %s", len(waiting), session.nick)
