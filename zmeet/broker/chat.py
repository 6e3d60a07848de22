"""Chat on the broker: the requests of docs/protocol.md, "Chat", as a service like the others.

:class:`ChatService` drives the chat domain (:class:`zmeet.chat.Rooms`, the broker's
``rooms``) with HELLO, PING, JOIN, LEAVE, SAY, HISTORY, INFO, TOPIC and BYE. The broker core
keeps the sessions, the dispatch, the reply cache, group commit and heartbeats; it runs this
service always (chat is what a session is: HELLO opens one) and asks it for HELLO, the one
request that comes without a session.

Room events go through the core's :meth:`~zmeet.broker.service.BrokerCore.publish_events`
(stored, then published, then the reply). JOIN, HISTORY and INFO read the store: they first
commit what the batch holds, so that what they read includes it.
"""

from __future__ import annotations

import logging

from .. import protocol as p
from ..chat import Rooms, check_nick, check_room
from ..errors import Refused
from ..keys import fingerprint
from ..protocol.limits import (
    MAX_HISTORY,
    MAX_NICKS_PER_KEY,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_KEY,
)
from .service import Handler, Service
from .sessions import ClientSession
from .store import Store

log = logging.getLogger("zmeet.broker")


class ChatService(Service):
    """Chat requests (docs/protocol.md, "Chat"). Handlers raise :class:`~zmeet.errors.Refused`
    with the codes the protocol gives each request."""

    name = "chat"

    def handlers(self) -> dict[type, Handler]:
        return {
            p.Ping: self._ping, p.Say: self._say, p.Join: self._join, p.Leave: self._leave,
            p.History: self._history, p.Info: self._info, p.SetTopic: self._set_topic,
            p.Bye: self._bye,
        }

    @property
    def _rooms(self) -> Rooms:
        rooms = self.broker.rooms
        assert rooms is not None, "the broker is not started"
        return rooms

    @property
    def _store(self) -> Store:
        store = self.broker.store
        assert store is not None, "the broker is not started"
        return store

    def hello(
        self, routing_id: bytes, session: ClientSession | None, req: p.Hello, key: str = ""
    ) -> p.Reply:
        """HELLO from ``routing_id`` (with its ``session``, None for a new client), whose
        connection's CURVE key is ``key`` (Z85; empty on an insecure broker): WELCOME.

        A nick belongs to the key that first said HELLO with it (registered in the store);
        another key is refused NICK_REGISTERED. Its own key may hold it on several connections
        at once, each a session (one person on several terminals); ``req.resume`` naming one
        of them moves that session to this connection instead (a client that reconnected).
        On an insecure broker a nick is held by one connection: another gets NICK_IN_USE
        unless it resumes. A new nick ends the old session first; a refused one leaves it
        alone. Raises Refused
        NICK_IN_USE, NICK_REGISTERED, INVALID_NAME, NO_SESSION (a secure lane without a key).
        A key keeps its MAX_NICKS_PER_KEY most recently used nicks registered."""
        rooms, broker = self._rooms, self.broker
        secure = broker.secure
        if secure and (not key or key == "?"):
            raise Refused(p.ErrorCode.NO_SESSION, "this connection has no CURVE key")
        check_nick(req.nick)
        owner = self._store.nick_owner(req.nick) if secure else None
        if owner is not None and owner != key:
            raise Refused(p.ErrorCode.NICK_REGISTERED,
                          f"nick {req.nick!r} is registered to another key "
                          f"({fingerprint(owner)}); choose another nick")
        if session is not None and session.nick == req.nick:
            return self._welcome(req, session)  # HELLO again: the same session
        person = key if secure else routing_id  # who holds a nick: a key, or a connection
        holder = rooms.holder(req.nick)
        if holder is not None and holder != person:
            # insecure: another connection holds it; it may be this client's own, resumed
            held = broker.sessions.get(holder) if isinstance(holder, bytes) else None
            if (session is None and req.resume and req.resume == holder and held is not None
                    and held.key == key):
                broker.move_session(held, routing_id)
                return self._welcome(req, held)
            raise Refused(p.ErrorCode.NICK_IN_USE, f"nick {req.nick!r} is in use")
        if secure and holder == person and session is None and req.resume:
            held = broker.sessions.get(req.resume)
            if held is not None and held.key == key and held.nick == req.nick:
                broker.move_session(held, routing_id)  # this client, on a new connection
                return self._welcome(req, held)
        if secure:
            in_use = frozenset(s.nick for s in broker.sessions_of_key(key))
            if not self._store.register_nick(req.nick, key, broker.clock.wall_ms(),
                                             MAX_NICKS_PER_KEY, in_use):
                raise Refused(p.ErrorCode.NICK_REGISTERED,
                              f"nick {req.nick!r} is registered to another key")
            if owner is None:
                log.info("nick %s registered to key %s", req.nick, fingerprint(key))
        if session is None:
            if len(broker.sessions) >= MAX_SESSIONS:
                raise Refused(p.ErrorCode.TOO_MANY,
                              f"the broker serves at most {MAX_SESSIONS} sessions; try later")
            if secure and len(broker.sessions_of_key(key)) >= MAX_SESSIONS_PER_KEY:
                raise Refused(p.ErrorCode.TOO_MANY, f"this key holds {MAX_SESSIONS_PER_KEY} "
                              "sessions already: close one")
        if session is not None:  # a new nick: the old session ends first
            broker.end_session(session, "leave", "new nick")
        rooms.claim_nick(req.nick, person)  # raises INVALID_NAME; a no-op for its holder
        session = broker.open_session(routing_id, req.nick, key)
        log.info("%s connected (%s)%s", req.nick, req.client or "unknown client",
                 " on another connection" if len(broker.sessions_of(req.nick)) > 1 else "")
        return self._welcome(req, session)

    def _welcome(self, req: p.Hello, session: ClientSession) -> p.Welcome:
        return p.Welcome(
            req_id=req.req_id,
            nick=session.nick,
            epoch=self.broker.epoch,
            endpoints=dict(self.broker.endpoints),
            limits=self.broker.limits(),
            media_token=session.media_token,
        )

    def _ping(self, session: ClientSession, req: p.Ping) -> p.Reply:
        return p.Pong(req_id=req.req_id, ts_ms=self.broker.clock.wall_ms())

    def _say(self, session: ClientSession, req: p.Say) -> p.Reply:
        event = self._rooms.say(req.room, session.nick, req.text)
        self.broker.publish_events([event])
        log.debug("chat %s#%d from %s", req.room, event.seq, session.nick)
        return p.Posted(req_id=req.req_id, room=req.room, seq=event.seq, id=event.id,
                        ts_ms=event.ts_ms)

    def _join(self, session: ClientSession, req: p.Join) -> p.Reply:
        rooms, nick = self._rooms, session.nick
        self.broker.commit()  # the history read below must include this batch's events
        count = self.broker.config.history if req.history < 0 else req.history
        if count > MAX_HISTORY:
            raise Refused(p.ErrorCode.TOO_MANY, f"history is limited to {MAX_HISTORY}")
        access = self.broker.access
        assert access is not None
        if not rooms.is_member(req.room, nick):
            rooms.room(req.room)  # validates the name first
            access.check_join(req.room, nick, req.key)  # 403: banned, invite-only, key
        event = rooms.join(req.room, nick)
        session.rooms.add(req.room)
        if event is not None:
            self.broker.publish_events([event])
            access.joined(req.room, nick)  # its first member owns it
            log.info("%s joined %s", nick, req.room)
        room = rooms.room(req.room)
        return p.Joined(
            req_id=req.req_id,
            room=room.name,
            topic=room.topic,
            members=tuple(room.members),
            last_seq=room.last_seq,
            history=tuple(self._store.recent_chat(room.name, count)),
        )

    def _leave(self, session: ClientSession, req: p.Leave) -> p.Reply:
        session.rooms.discard(req.room)
        if any(req.room in other.rooms for other in self.broker.sessions_of(session.nick)
               if other is not session):
            return p.Ok(req_id=req.req_id)  # the nick stays: another of its sessions is in it
        self.broker.publish_events([self._rooms.leave(req.room, session.nick)])
        log.info("%s left %s", session.nick, req.room)
        return p.Ok(req_id=req.req_id)

    def _history(self, session: ClientSession, req: p.History) -> p.Reply:
        rooms = self._rooms
        self.broker.commit()  # what the store returns must include this batch's events
        check_room(req.room)
        if not rooms.is_member(req.room, session.nick):
            raise Refused(p.ErrorCode.NOT_MEMBER, f"join room {req.room!r} first")
        if req.after_seq < 0:
            raise Refused(p.ErrorCode.BAD_REQUEST, "after_seq must be 0 or more")
        if not 0 <= req.limit <= MAX_HISTORY:
            raise Refused(p.ErrorCode.TOO_MANY, f"limit must be 0 to {MAX_HISTORY}")
        return p.Events(req_id=req.req_id, room=req.room,
                        events=tuple(self._store.after(req.room, req.after_seq, req.limit)))

    def _info(self, session: ClientSession, req: p.Info) -> p.Reply:
        self.broker.commit()  # the message count must include this batch's events
        room = self._rooms.peek(req.room)
        access = self.broker.access
        assert access is not None
        if not access.may_see(room.name, session.nick,
                              self._rooms.is_member(room.name, session.nick)):
            # a private room looks to outsiders as a room nobody ever used
            return p.RoomInfo(req_id=req.req_id, room=room.name, topic="", members=(),
                              message_count=0, last_seq=0)
        return p.RoomInfo(req_id=req.req_id, room=room.name, topic=room.topic,
                          members=tuple(room.members),
                          message_count=self._store.chat_count(room.name),
                          last_seq=room.last_seq)

    def _set_topic(self, session: ClientSession, req: p.SetTopic) -> p.Reply:
        self.broker.publish_events([self._rooms.set_topic(req.room, session.nick, req.topic)])
        return p.Ok(req_id=req.req_id)

    def _bye(self, session: ClientSession, req: p.Bye) -> p.Reply:
        self.broker.end_session(session, "leave", "quit")
        return p.Ok(req_id=req.req_id)
