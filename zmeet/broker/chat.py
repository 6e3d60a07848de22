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
from ..protocol.limits import MAX_HISTORY
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
        self, routing_id: bytes, session: ClientSession | None, req: p.Hello
    ) -> p.Reply:
        """HELLO from ``routing_id`` (with its ``session``, None for a new client): WELCOME.
        A new nick ends the old session first; a refused one leaves it alone. Raises Refused
        NICK_IN_USE, INVALID_NAME."""
        rooms = self._rooms
        if session is not None and session.nick != req.nick:
            holder = rooms.holder(req.nick)
            if holder is not None and holder != routing_id:  # keep the old session on refusal
                raise Refused(p.ErrorCode.NICK_IN_USE, f"nick {req.nick!r} is in use")
            check_nick(req.nick)
            self.broker.end_session(session, "leave", "new nick")
            session = None
        rooms.claim_nick(req.nick, routing_id)  # raises NICK_IN_USE, INVALID_NAME
        if session is None:
            session = self.broker.open_session(routing_id, req.nick)
            log.info("%s connected (%s)", req.nick, req.client or "unknown client")
        return p.Welcome(
            req_id=req.req_id,
            nick=req.nick,
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
        event = rooms.join(req.room, nick)
        if event is not None:
            self.broker.publish_events([event])
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
