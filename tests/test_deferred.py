"""Deferred replies (zmeet.broker.service.Deferred) on a real broker over loopback.

A test-only service answers GAMES (a request no other service of this broker handles) by
deferring, and the test replies from its own greenlet. Nothing sleeps: every wait is for a
reply or an event, under a bounded timeout.
"""

from __future__ import annotations

import gevent
import gevent.event
import gevent.queue
import pytest
import zmq

from zmeet import protocol as p
from zmeet.broker.service import Deferred, Service
from zmeet.errors import LocalProtocolError
from zmeet.protocol import games as pg

pytestmark = pytest.mark.timeout(30)


class DeferringService(Service):
    """Defers every GAMES request; the test answers through ``pending``."""

    name = "deferring"

    def __init__(self, broker) -> None:
        super().__init__(broker)
        self.pending: gevent.queue.Queue[Deferred] = gevent.queue.Queue()
        self.calls = 0

    def handlers(self):
        return {pg.ListGames: self._list}

    def _list(self, session, request):
        self.calls += 1
        deferred = self.broker.defer(session, request)
        self.pending.put(deferred)
        return deferred


@pytest.fixture
def deferring(make_broker):
    broker = make_broker(services=[DeferringService])
    (service,) = [s for s in broker.services if isinstance(s, DeferringService)]
    return broker, service


def hello(dealer, roundtrip, nick):
    welcome = roundtrip(dealer, p.encode(p.Hello(req_id=1, nick=nick)))
    assert isinstance(welcome, p.Welcome)


def next_deferred(service) -> Deferred:
    return service.pending.get(timeout=5)


def nothing_waits(dealer, roundtrip, req_id):
    """The next message on ``dealer`` is the PONG of a PING sent now: nothing came before."""
    got = roundtrip(dealer, p.encode(p.Ping(req_id=req_id)))
    assert isinstance(got, p.Pong) and got.req_id == req_id, got


def test_a_deferred_reply_sent_from_another_greenlet_reaches_the_client_once(
    deferring, raw_dealer, roundtrip, recv
):
    broker, service = deferring
    dealer = raw_dealer(broker.endpoints["control"])
    hello(dealer, roundtrip, "alice")
    request = p.encode(pg.ListGames(req_id=7))
    dealer.send_multipart(request)
    deferred = next_deferred(service)
    assert not deferred.done and deferred.req_id == 7 and deferred.session.nick == "alice"
    dealer.send_multipart(request)  # a retry while pending: not handled again, nothing sent
    nothing_waits(dealer, roundtrip, 8)
    assert service.calls == 1

    answer = pg.GameList(req_id=7, games=())
    replier = gevent.spawn(deferred.reply, answer)
    replier.get(timeout=5)
    assert deferred.done
    assert recv(dealer) == answer
    with pytest.raises(LocalProtocolError):
        deferred.reply(answer)
    with pytest.raises(LocalProtocolError):
        deferred.refuse(p.ErrorCode.BAD_REQUEST, "twice")
    assert roundtrip(dealer, request) == answer  # a retry after: the cached reply
    assert service.calls == 1
    nothing_waits(dealer, roundtrip, 9)


def test_a_deferred_refusal_is_an_error_reply(deferring, raw_dealer, roundtrip, recv):
    broker, service = deferring
    dealer = raw_dealer(broker.endpoints["control"])
    hello(dealer, roundtrip, "alice")
    dealer.send_multipart(p.encode(pg.ListGames(req_id=3)))
    deferred = next_deferred(service)
    gevent.spawn(deferred.refuse, p.ErrorCode.TOO_MANY, "not now").get(timeout=5)
    got = recv(dealer)
    assert got == p.Error(req_id=3, code=p.ErrorCode.TOO_MANY, reason="not now")
    with pytest.raises(LocalProtocolError):
        deferred.reply(pg.GameList(req_id=3, games=()))


def test_a_reply_for_another_request_is_a_local_protocol_error(deferring, raw_dealer, roundtrip):
    broker, service = deferring
    dealer = raw_dealer(broker.endpoints["control"])
    hello(dealer, roundtrip, "alice")
    dealer.send_multipart(p.encode(pg.ListGames(req_id=3)))
    deferred = next_deferred(service)
    with pytest.raises(LocalProtocolError):
        deferred.reply(pg.GameList(req_id=4, games=()))
    assert not deferred.done


def test_events_made_before_a_deferred_reply_are_stored_first(
    deferring, connect, raw_dealer, roundtrip, recv, wait_for, chat
):
    broker, service = deferring
    bob = connect("bob", broker)
    bob.join("lobby")
    dealer = raw_dealer(broker.endpoints["control"])
    hello(dealer, roundtrip, "alice")
    assert isinstance(roundtrip(dealer, p.encode(p.Join(req_id=2, room="lobby"))), p.Joined)
    dealer.send_multipart(p.encode(pg.ListGames(req_id=3)))
    deferred = next_deferred(service)

    def work_then_reply():
        # as a service's own greenlet would: post a room event, then answer
        event = broker.rooms.post("lobby", "chat", "alice", "made by the deferred work")
        broker.publish_events([event])
        deferred.reply(pg.GameList(req_id=3, games=()))
        return event

    event = gevent.spawn(work_then_reply).get(timeout=5)
    assert recv(dealer) == pg.GameList(req_id=3, games=())
    assert event in broker.store.after("lobby", event.seq - 1, 10)  # stored before the reply
    wait_for(bob, chat("made by the deferred work", "lobby"))


def test_the_deferred_reply_of_an_ended_session_is_dropped(deferring, raw_dealer, roundtrip, recv):
    broker, service = deferring
    dealer = raw_dealer(broker.endpoints["control"])
    hello(dealer, roundtrip, "alice")
    dealer.send_multipart(p.encode(pg.ListGames(req_id=3)))
    deferred = next_deferred(service)
    assert roundtrip(dealer, p.encode(p.Bye(req_id=4))) == p.Ok(req_id=4)
    gevent.spawn(deferred.reply, pg.GameList(req_id=3, games=())).get(timeout=5)
    assert deferred.done
    hello(dealer, roundtrip, "alice")  # a new session: the old reply does not come to it
    nothing_waits(dealer, roundtrip, 5)


def test_deferred_replies_from_other_greenlets_never_stall_the_control_loop(
    deferring, raw_dealer, roundtrip, recv
):
    """Many deferred replies sent from other greenlets between requests: each request is still
    answered (a raw send that took the ZMQ_FD edge would leave the control greenlet asleep)."""
    broker, service = deferring
    dealer = raw_dealer(broker.endpoints["control"])
    hello(dealer, roundtrip, "alice")
    for n in range(50):
        req_id = 100 + 2 * n
        dealer.send_multipart(p.encode(pg.ListGames(req_id=req_id)))
        deferred = next_deferred(service)
        dealer.send_multipart(p.encode(p.Ping(req_id=req_id + 1)))
        gevent.spawn(deferred.reply, pg.GameList(req_id=req_id, games=())).get(timeout=5)
        got = {recv(dealer, 5).req_id, recv(dealer, 5).req_id}
        assert got == {req_id, req_id + 1}
    assert dealer.poll(0, zmq.POLLIN) == 0


class ParkingService(Service):
    """A handler that waits (what no handler may do): it holds the control loop in its batch
    until the test releases it, to show that other greenlets' sends do not wait for it."""

    name = "parking"

    def __init__(self, broker) -> None:
        super().__init__(broker)
        self.parked = gevent.event.Event()
        self.release = gevent.event.Event()

    def handlers(self):
        return {pg.ListGames: self._park}

    def _park(self, session, request):
        self.parked.set()
        self.release.wait(5)
        return pg.GameList(req_id=request.req_id, games=())


def test_other_greenlets_sends_are_never_held_by_the_control_loops_batch(
    make_broker, connect, raw_dealer, roundtrip, recv, wait_for, chat
):
    broker = make_broker(services=[ParkingService])
    (service,) = [s for s in broker.services if isinstance(s, ParkingService)]
    bob = connect("bob", broker)
    bob.join("lobby")
    carol = raw_dealer(broker.endpoints["control"])
    hello(carol, roundtrip, "carol")
    alice = raw_dealer(broker.endpoints["control"])
    hello(alice, roundtrip, "alice")
    alice.send_multipart(p.encode(pg.ListGames(req_id=5)))
    assert service.parked.wait(5)  # the control greenlet is inside its batch now
    try:
        broker.publish_events([broker.rooms.post("lobby", "chat", "bob", "while parked")])
        wait_for(bob, chat("while parked", "lobby"))
        demand = p.MediaDemand(room="lobby", kinds=())
        broker.send_direct(broker.session_of("carol"), demand)
        assert recv(carol) == demand
    finally:
        service.release.set()
    assert recv(alice) == pg.GameList(req_id=5, games=())


def test_a_deferred_hands_its_one_reply_to_the_broker():
    """No sockets: a Deferred calls its broker's send once, with the reply, and refuses more."""
    from zmeet.broker.sessions import ClientSession

    sent = []
    session = ClientSession(b"r", "alice", b"m", 0.0)
    deferred = Deferred(session, pg.ListGames(req_id=4),
                        lambda d, reply: sent.append((d, reply)))
    assert (deferred.req_id, deferred.done) == (4, False)
    assert "pending" in repr(deferred)
    deferred.refuse(p.ErrorCode.TOO_MANY, "later")
    assert sent == [(deferred, p.Error(req_id=4, code=p.ErrorCode.TOO_MANY, reason="later"))]
    assert deferred.done and "done" in repr(deferred)
    with pytest.raises(LocalProtocolError):
        deferred.reply(pg.GameList(req_id=4, games=()))
    assert len(sent) == 1
