"""Games through an in-process broker over real loopback sockets: sessions challenge, move,
resign, leave and come back, spectators subscribe; the broker judges.

Nothing sleeps: every wait is for a reply or an event, under a bounded timeout. Windows that
are a minute in real life are a fraction of a second here (GamesService settings).
"""

from __future__ import annotations

import functools
import threading

import msgpack
import pytest

from zmeet import protocol as p
from zmeet.broker.games import GAMES_DB, MAX_HISTORY_READS_PER_SESSION, GamesService, GamesStore
from zmeet.client import Session
from zmeet.errors import Refused
from zmeet.games import BOT_NAME, ArenaSettings, GameErrorCode
from zmeet.protocol import games as pg
from zmeet.protocol.limits import HEADER

pytestmark = pytest.mark.timeout(30)


def games_broker(make_broker, **settings):
    """A broker whose games service has ``settings`` (ArenaSettings fields)."""
    return make_broker(services=[functools.partial(GamesService,
                                                   settings=ArenaSettings(**settings))])


def next_state(wait_for, session: Session, game_id: str, predicate=lambda v: True,
               timeout_s: float = 5.0) -> pg.GameView:
    """The first GAME-STATE of ``game_id`` on ``session.events`` that ``predicate`` accepts."""
    items = wait_for(session, lambda i: isinstance(i, pg.GameState) and i.game.id == game_id
                     and predicate(i.game), timeout_s)
    return items[-1].game


def start_game(connect, wait_for, broker, kind="ttt", options=None, challenger="bob",
               opponent="alice", **fields):
    """Two sessions, a challenge and its acceptance; returns (challenger, opponent, game id)."""
    them = connect(opponent, broker)
    me = connect(challenger, broker)
    sent = me.request(pg.Challenge, game=kind, options=options or {}, opponent=opponent, **fields)
    assert isinstance(sent, pg.ChallengeSent) and sent.challenge_id and not sent.game_id
    offer = wait_for(them, lambda i: isinstance(i, pg.ChallengeOffer))[-1]
    assert offer.sender == challenger and offer.challenge_id == sent.challenge_id
    accepted = them.request(pg.Accept, challenge_id=offer.challenge_id)
    assert isinstance(accepted, pg.Accepted)
    for session in (me, them):
        view = next_state(wait_for, session, accepted.game_id)
        assert view.version == 1 and view.status == "playing"
    return me, them, accepted.game_id


def refused(session: Session, cls, **fields) -> Refused:
    with pytest.raises(Refused) as info:
        session.request(cls, **fields)
    return info.value


def test_a_whole_game_with_a_spectator_and_its_record(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker)
    carol = connect("carol", broker)
    carol.subscribe(pg.game_topic(game_id))  # subscribe first, then the snapshot
    snapshot = carol.request(pg.Watch, game_id=game_id).game
    assert snapshot.players == ("bob", "alice") and snapshot.turn == "bob"
    assert snapshot.options == {"size": 3, "k": 3} and snapshot.move_timeout_s == 120
    moves = [(bob, 1), (alice, 5), (bob, 2), (alice, 9), (bob, 3)]
    for session, cell in moves:
        assert isinstance(session.request(pg.MakeMove, game_id=game_id, value=cell), p.Ok)
    for session in (bob, alice):
        final = next_state(wait_for, session, game_id, lambda v: v.status == "over")
        assert [m.value for m in final.moves] == [1, 5, 2, 9, 3]
        assert (final.result, final.winner, final.reason, final.turn) == ("win", "bob", "line", "")
    seen = []
    while not seen or seen[-1].status != "over":  # the spectator gets every move live
        seen.append(next_state(wait_for, carol, game_id))
    versions = [v.version for v in seen]
    assert versions == sorted(versions) and versions[-1] == len(moves) + 1
    assert {len(v.moves) for v in seen if v.version > snapshot.version} >= {len(moves)}
    error = refused(carol, pg.MakeMove, game_id=game_id, value=4)
    assert error.code == GameErrorCode.NOT_PLAYER
    (record,) = bob.request(pg.GameHistory, limit=5).records
    assert (record.id, record.players, record.winner, record.result) == (
        game_id, ("bob", "alice"), "bob", "win")
    assert [(m.seat, m.value) for m in record.moves] == [(0, 1), (1, 5), (0, 2), (1, 9), (0, 3)]
    assert record.ended_ms >= record.started_ms > 0
    assert (broker.config.data_dir / GAMES_DB).exists()


def test_bad_moves_get_clear_errors_and_the_same_player_moves_again(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker)
    error = refused(alice, pg.MakeMove, game_id=game_id, value=5)
    assert error.code == GameErrorCode.NOT_YOUR_TURN and "bob is to move" in error.reason
    bob.request(pg.MakeMove, game_id=game_id, value=5)
    error = refused(alice, pg.MakeMove, game_id=game_id, value=5)
    assert error.code == GameErrorCode.ILLEGAL_MOVE and "taken" in error.reason
    error = refused(alice, pg.MakeMove, game_id=game_id, value=10)
    assert error.code == GameErrorCode.ILLEGAL_MOVE and "choose 1 to 9" in error.reason
    error = refused(alice, pg.MakeMove, game_id="nope", value=1)
    assert error.code == GameErrorCode.NOT_FOUND
    alice.request(pg.MakeMove, game_id=game_id, value=1)
    view = next_state(wait_for, bob, game_id, lambda v: len(v.moves) == 2)
    assert view.turn == "bob" and [m.value for m in view.moves] == [5, 1]
    bob.request(pg.Resign, game_id=game_id)
    view = next_state(wait_for, alice, game_id, lambda v: v.status == "over")
    assert (view.winner, view.reason) == ("alice", "resign")
    assert refused(bob, pg.MakeMove, game_id=game_id, value=9).code == GameErrorCode.GAME_OVER


def test_malformed_game_requests_are_refused_and_the_broker_goes_on(broker, connect, raw_dealer,
                                                                      roundtrip):
    dealer = raw_dealer()
    hello = roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="mallory")))
    assert isinstance(hello, p.Welcome)
    bodies = [
        (b"MOVE", {"req_id": 2, "game_id": "x", "value": "5"}),
        (b"MOVE", {"req_id": 3, "game_id": "x", "value": True}),
        (b"CHALLENGE", {"req_id": 4, "game": "ttt", "opponent": "bob"}),  # no options
        (b"CHALLENGE", {"req_id": 5, "game": "ttt", "options": {"size": "big"}}),
        (b"CHALLENGE", {"req_id": 6, "game": "ttt", "options": [], "bot": 1}),
        (b"GAMES", {"req_id": 7, "limit": 2**64 - 1}),
    ]
    for command, body in bodies:
        reply = roundtrip(dealer, [HEADER, command, msgpack.packb(body)])
        assert isinstance(reply, p.Error) and reply.code == 400 and reply.req_id == body["req_id"]
    for fields, code in [
        ({"game": "chess", "options": {}, "bot": True}, 400),
        ({"game": "ttt", "options": {"size": 2}, "bot": True}, 400),
        ({"game": "ttt", "options": {}, "opponent": "not a nick"}, 422),
        ({"game": "ttt", "options": {}, "opponent": "mallory"}, 400),
        ({"game": "ttt", "options": {}, "bot": True, "move_timeout_s": -1}, 400),
    ]:
        reply = roundtrip(dealer, p.encode(pg.Challenge(req_id=100 + code, **fields)))
        assert isinstance(reply, p.Error) and reply.code == code, (fields, reply)
    reply = roundtrip(dealer, p.encode(pg.ListGames(req_id=200, limit=0)))
    assert isinstance(reply, p.Error) and reply.code == 429
    assert isinstance(connect("bob", broker).request(pg.ListGames), pg.GameList)


def test_challenges_that_end_without_a_game(make_broker, connect, wait_for):
    broker = games_broker(make_broker, challenge_expiry_s=0.3)
    bob = connect("bob", broker)
    error = refused(bob, pg.Challenge, game="ttt", options={}, opponent="alice")
    assert error.code == GameErrorCode.NOT_FOUND and "alice is not online" in error.reason
    alice = connect("alice", broker)
    sent = bob.request(pg.Challenge, game="ttt", options={}, opponent="alice")
    assert 0 < sent.expires_in_ms <= 300
    wait_for(alice, lambda i: isinstance(i, pg.ChallengeOffer))
    alice.request(pg.Decline)
    ended = wait_for(bob, lambda i: isinstance(i, pg.ChallengeEnded))[-1]
    assert (ended.challenge_id, ended.reason, ended.by) == (sent.challenge_id, "declined", "alice")
    sent = bob.request(pg.Challenge, game="guess", options={}, opponent="alice")
    for session in (bob, alice):  # not answered: both hear it expired
        ended = wait_for(session, lambda i: isinstance(i, pg.ChallengeEnded))[-1]
        assert (ended.challenge_id, ended.reason) == (sent.challenge_id, "expired")
    sent = bob.request(pg.Challenge, game="ttt", options={}, opponent="alice")
    alice.close()  # BYE: the challenged left
    ended = wait_for(bob, lambda i: isinstance(i, pg.ChallengeEnded))[-1]
    assert (ended.challenge_id, ended.reason) == (sent.challenge_id, "offline")
    assert refused(bob, pg.Accept).code == GameErrorCode.NOT_FOUND


def test_a_challenge_to_someone_who_challenged_you_accepts_it(broker, connect, wait_for):
    alice = connect("alice", broker)
    bob = connect("bob", broker)
    bob.request(pg.Challenge, game="ttt", options={"size": 4}, opponent="alice")
    sent = alice.request(pg.Challenge, game="ttt", options={}, opponent="bob")
    assert sent.game_id and not sent.challenge_id
    view = next_state(wait_for, alice, sent.game_id)
    assert view.players == ("bob", "alice") and view.options["size"] == 4


def test_a_player_who_does_not_move_in_time_loses(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker, move_timeout_s=1)
    bob.request(pg.MakeMove, game_id=game_id, value=5)
    view = next_state(wait_for, bob, game_id, lambda v: v.status == "over", timeout_s=5)
    assert (view.winner, view.reason) == ("bob", "time")


def test_disconnect_is_announced_and_the_win_can_be_claimed(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker)
    assert refused(alice, pg.Claim, game_id=game_id).code == GameErrorCode.ILLEGAL_MOVE
    bob.close()
    view = next_state(wait_for, alice, game_id, lambda v: v.away == ("bob",))
    assert view.status == "paused" and view.time_left_ms == 0
    alice.request(pg.Claim, game_id=game_id)
    view = next_state(wait_for, alice, game_id, lambda v: v.status == "over")
    assert (view.winner, view.reason) == ("alice", "claim")


def test_a_reconnected_player_gets_the_full_state_and_the_game_resumes(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker)
    bob.request(pg.MakeMove, game_id=game_id, value=5)
    alice.request(pg.MakeMove, game_id=game_id, value=1)
    next_state(wait_for, bob, game_id, lambda v: len(v.moves) == 2)
    bob.close()
    next_state(wait_for, alice, game_id, lambda v: v.status == "paused")
    bob2 = connect("bob", broker)  # a new session under the same nick
    view = next_state(wait_for, bob2, game_id)  # unasked: the broker saw bob come back
    assert view.status == "playing" and view.turn == "bob" and view.away == ()
    assert [m.value for m in view.moves] == [5, 1] and view.time_left_ms > 0
    next_state(wait_for, alice, game_id, lambda v: v.status == "playing")
    bob2.request(pg.MakeMove, game_id=game_id, value=9)
    assert [m.value for m in next_state(wait_for, alice, game_id,
                                        lambda v: len(v.moves) == 3).moves] == [5, 1, 9]


def test_a_player_who_does_not_come_back_in_time_loses(make_broker, connect, wait_for):
    broker = games_broker(make_broker, reconnect_window_s=0.3)
    bob, alice, game_id = start_game(connect, wait_for, broker)
    alice.close()
    view = next_state(wait_for, bob, game_id, lambda v: v.status == "over")
    assert (view.winner, view.reason) == ("bob", "disconnect")


def test_rematch_swaps_colours(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker)
    assert refused(bob, pg.Rematch, game_id=game_id).code == GameErrorCode.ILLEGAL_MOVE
    alice.request(pg.Resign, game_id=game_id)
    sent = alice.request(pg.Rematch, game_id=game_id)
    assert sent.challenge_id and not sent.game_id
    offer = wait_for(bob, lambda i: isinstance(i, pg.ChallengeOffer))[-1]
    assert offer.rematch_of == game_id and offer.seat == 1 and offer.sender == "alice"
    again = bob.request(pg.Rematch, game_id=game_id)
    assert again.game_id
    view = next_state(wait_for, alice, again.game_id)
    assert view.players == ("alice", "bob") and view.turn == "alice"
    assert view.rematch_of == game_id


def test_the_bot_plays_3x3_and_does_not_lose(broker, connect, wait_for):
    bob = connect("bob", broker)
    sent = bob.request(pg.Challenge, game="ttt", options={}, bot=True)
    assert sent.game_id and not sent.challenge_id
    view = next_state(wait_for, bob, sent.game_id)
    assert view.players == ("bob", BOT_NAME) and view.turn == "bob"
    for _ in range(5):
        taken = {m.value for m in view.moves}
        bob.request(pg.MakeMove, game_id=view.id, value=min(set(range(1, 10)) - taken))
        count = len(view.moves) + 2
        view = next_state(wait_for, bob, view.id,
                          lambda v, c=count: len(v.moves) >= c or v.status == "over", timeout_s=10)
        if view.status == "over":
            break
    assert view.status == "over" and view.winner in (BOT_NAME, "")
    again = bob.request(pg.Rematch, game_id=view.id)
    view = next_state(wait_for, bob, again.game_id, lambda v: len(v.moves) == 1, timeout_s=10)
    assert view.players == (BOT_NAME, "bob") and view.turn == "bob"  # the bot opened as X


def test_guess_against_the_broker_hides_the_number(broker, connect, wait_for):
    carol = connect("carol", broker)
    sent = carol.request(pg.Challenge, game="guess", options={}, bot=True)
    view = next_state(wait_for, carol, sent.game_id, lambda v: v.turn == "carol")
    assert view.players == (BOT_NAME, "carol") and view.moves[0].value == 0  # hidden
    low, high, notes = 1, 100, []
    while view.status != "over" and len(notes) < 5:
        carol.request(pg.MakeMove, game_id=view.id, value=(low + high) // 2)
        count = len(view.moves) + 1
        view = next_state(wait_for, carol, view.id, lambda v, c=count: len(v.moves) == c)
        move = view.moves[-1]
        notes.append(move.note)
        if move.note == "LOW":
            low = move.value + 1
        elif move.note == "HIGH":
            high = move.value - 1
    assert view.status == "over" and set(notes) <= {"LOW", "HIGH", "WIN"}
    secret = view.moves[0].value
    assert 1 <= secret <= 100  # shown at the end
    assert (view.winner == "carol") == (notes[-1] == "WIN")


def test_guess_between_two_nicks_the_picker_sees_the_number(broker, connect, wait_for):
    bob, alice, game_id = start_game(connect, wait_for, broker, kind="guess")
    watcher = connect("watcher", broker)
    watcher.subscribe(pg.game_topic(game_id))
    watcher.request(pg.Watch, game_id=game_id)
    # the challenger guesses; the challenged (alice) picks
    assert refused(bob, pg.MakeMove, game_id=game_id, value=5).code == GameErrorCode.NOT_YOUR_TURN
    alice.request(pg.MakeMove, game_id=game_id, value=64)
    assert next_state(wait_for, alice, game_id, lambda v: v.turn == "bob").moves[0].value == 64
    assert next_state(wait_for, bob, game_id, lambda v: v.turn == "bob").moves[0].value == 0
    assert next_state(wait_for, watcher, game_id, lambda v: v.turn == "bob").moves[0].value == 0
    bob.request(pg.MakeMove, game_id=game_id, value=64)
    view = next_state(wait_for, watcher, game_id, lambda v: v.status == "over")
    assert (view.winner, view.reason, view.moves[-1].note) == ("bob", "guessed", "WIN")


def test_running_games_are_listed_and_history_survives_a_restart(make_broker, connect, wait_for,
                                                                 tmp_path):
    broker = make_broker()
    bob, alice, game_id = start_game(connect, wait_for, broker)
    listed = connect("lister", broker).request(pg.ListGames)
    assert [g.id for g in listed.games] == [game_id]
    assert [g.id for g in bob.request(pg.ListGames, nick="alice").games] == [game_id]
    assert bob.request(pg.ListGames, nick="nobody").games == ()
    bob.request(pg.Resign, game_id=game_id)
    next_state(wait_for, alice, game_id, lambda v: v.status == "over")
    assert bob.request(pg.ListGames).games == ()
    (games,) = [s for s in broker.services if isinstance(s, GamesService)]
    assert games.stats() == {"games_running": 0, "challenges_open": 0}
    broker.stop()
    again = make_broker()  # same data_dir
    reader = connect("reader", again)
    (record,) = reader.request(pg.GameHistory, nick="alice").records
    assert (record.id, record.winner, record.reason) == (game_id, "alice", "resign")
    assert reader.request(pg.GameHistory, nick="carol").records == ()


def test_game_history_does_not_park_the_control_loop_while_the_store_is_slow(
    make_broker, raw_dealer, roundtrip, recv
):
    """GAME-HISTORY reads in the games store's thread; while that thread is held (a slow disk),
    the same client's next request is answered first, and the history comes when it is free."""
    broker = make_broker()
    (games,) = [s for s in broker.services if isinstance(s, GamesService)]
    dealer = raw_dealer(broker.endpoints["control"])
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="reader"))), p.Welcome)
    slow_disk = threading.Event()
    held = games._store_thread.spawn(slow_disk.wait, 10)  # the store thread is busy until set
    try:
        dealer.send_multipart(p.encode(pg.GameHistory(req_id=2, limit=5)))
        pong = roundtrip(dealer, p.encode(p.Ping(req_id=3)))
        assert isinstance(pong, p.Pong) and pong.req_id == 3  # before the history's reply
    finally:
        slow_disk.set()
    held.get(timeout=5)
    assert recv(dealer) == pg.GameRecords(req_id=2, records=())


def test_one_session_may_not_queue_game_history_reads_without_limit(
    make_broker, raw_dealer, roundtrip, recv
):
    """GAME-HISTORY waits for the one store thread: past MAX_HISTORY_READS_PER_SESSION
    waiting reads, one session's next is refused TOO_MANY at once (a flood of them must not
    grow the broker's memory or hold everyone else's reads), and the waiting ones are answered
    when the thread is free."""
    broker = make_broker()
    (games,) = [s for s in broker.services if isinstance(s, GamesService)]
    dealer = raw_dealer(broker.endpoints["control"])
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="reader"))), p.Welcome)
    slow_disk = threading.Event()
    held = games._store_thread.spawn(slow_disk.wait, 10)  # the store thread is busy until set
    waiting = list(range(10, 10 + MAX_HISTORY_READS_PER_SESSION))
    try:
        for req_id in waiting:
            dealer.send_multipart(p.encode(pg.GameHistory(req_id=req_id, limit=5)))
        refused = roundtrip(dealer, p.encode(pg.GameHistory(req_id=99, limit=5)))
        assert isinstance(refused, p.Error) and refused.req_id == 99
        assert refused.code == p.ErrorCode.TOO_MANY
    finally:
        slow_disk.set()
    held.get(timeout=5)
    assert [recv(dealer) for _ in waiting] == [
        pg.GameRecords(req_id=req_id, records=()) for req_id in waiting]
    # room again once they are answered
    assert roundtrip(dealer, p.encode(pg.GameHistory(req_id=100, limit=5))) == pg.GameRecords(
        req_id=100, records=())


def _store_with_a_game_of_mallory(data, sql: str) -> None:
    """games.sqlite3 in ``data`` with one finished game of mallory's, then ``sql`` run on it
    (a row the broker did not write as it is)."""
    store = GamesStore(data / GAMES_DB)
    store.add([pg.GameRecord(id="g1", kind="tictactoe", players=("mallory", "bob"), options={},
                             moves=(), result="draw", winner="", reason="full", started_ms=1,
                             ended_ms=2)])
    store._db.execute(sql)
    store.close()


def test_a_game_history_row_it_cannot_read_is_an_error_and_the_store_serves_on(
    make_broker, tmp_path, raw_dealer, roundtrip
):
    """A row of games.sqlite3 that is not what the broker wrote (moves that are not JSON) makes
    that GAME-HISTORY an ERROR 500; the store greenlet lives on, and the next read works."""
    data = tmp_path / "broker-data"
    _store_with_a_game_of_mallory(data, "UPDATE games SET moves = 'not json'")
    broker = make_broker(data_dir=data)
    dealer = raw_dealer(broker.endpoints["control"])
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="reader"))), p.Welcome)
    bad = roundtrip(dealer, p.encode(pg.GameHistory(req_id=2, limit=5, nick="mallory")))
    assert isinstance(bad, p.Error) and bad.code == p.ErrorCode.INTERNAL_ERROR
    good = roundtrip(dealer, p.encode(pg.GameHistory(req_id=3, limit=5, nick="alice")))
    assert good == pg.GameRecords(req_id=3, records=())


def test_a_new_nick_on_the_same_connection_leaves_no_game_history_read_behind(
    make_broker, raw_dealer, roundtrip, recv, monkeypatch
):
    """A HELLO with a new nick ends the session: its waiting GAME-HISTORY reads go with it (their
    replies would be dropped), so changing nick cannot dodge the per-session limit: the store
    reads only for the session still there."""
    reads: list[str] = []
    recent = GamesStore.recent

    def spy(self, limit, nick=""):  # a spy on the real store's reads
        reads.append(nick)
        return recent(self, limit, nick)

    monkeypatch.setattr(GamesStore, "recent", spy)
    broker = make_broker()
    (games,) = [s for s in broker.services if isinstance(s, GamesService)]
    dealer = raw_dealer(broker.endpoints["control"])
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="r0"))), p.Welcome)
    slow_disk = threading.Event()
    held = games._store_thread.spawn(slow_disk.wait, 10)
    req_id = 10
    try:
        for n in range(1, 6):
            for _ in range(MAX_HISTORY_READS_PER_SESSION):
                dealer.send_multipart(p.encode(pg.GameHistory(req_id=req_id, limit=5)))
                req_id += 1
            welcome = roundtrip(dealer, p.encode(p.Hello(req_id=req_id, nick=f"r{n}")))
            req_id += 1
            assert isinstance(welcome, p.Welcome)
        # only the reads of the session now at this connection are waiting (none): so it may
        # queue its own full share, and the next is refused
        for _ in range(MAX_HISTORY_READS_PER_SESSION):
            dealer.send_multipart(p.encode(pg.GameHistory(req_id=req_id, limit=5)))
            req_id += 1
        refused = roundtrip(dealer, p.encode(pg.GameHistory(req_id=req_id, limit=5)))
        assert isinstance(refused, p.Error) and refused.code == p.ErrorCode.TOO_MANY
    finally:
        slow_disk.set()
    held.get(timeout=5)
    answered = [recv(dealer) for _ in range(MAX_HISTORY_READS_PER_SESSION)]
    assert all(isinstance(a, pg.GameRecords) for a in answered), answered
    # the ended sessions' reads never ran, but for at most the one the store greenlet had
    # already handed to the held thread when the first new nick came
    assert MAX_HISTORY_READS_PER_SESSION <= len(reads) <= MAX_HISTORY_READS_PER_SESSION + 1


def test_a_game_history_reply_the_protocol_cannot_carry_is_an_error_and_the_store_serves_on(
    make_broker, tmp_path, raw_dealer, roundtrip
):
    """A stored game whose options hold a number msgpack cannot carry (2**64, valid JSON): that
    GAME-HISTORY is ERROR 500, a retry gets the same, and the next read is answered."""
    data = tmp_path / "broker-data"
    _store_with_a_game_of_mallory(data, f"UPDATE games SET options = '{{\"n\": {2**64}}}'")
    broker = make_broker(data_dir=data)
    dealer = raw_dealer(broker.endpoints["control"])
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="reader"))), p.Welcome)
    request = p.encode(pg.GameHistory(req_id=2, limit=5, nick="mallory"))
    bad = roundtrip(dealer, request)
    assert isinstance(bad, p.Error) and bad.code == p.ErrorCode.INTERNAL_ERROR
    assert roundtrip(dealer, request) == bad  # the retry: the cached answer
    good = roundtrip(dealer, p.encode(pg.GameHistory(req_id=3, limit=5, nick="alice")))
    assert good == pg.GameRecords(req_id=3, records=())
