"""The :class:`GameClient` over an in-process broker on real loopback sockets: each typed method
sends its request and returns the protocol's reply, and a refusal is a RequestRefused with the
broker's code.

Nothing sleeps: every wait is for a reply or an event, under a bounded timeout.
"""

from __future__ import annotations

import functools

import pytest

from zmeet.broker.games import GamesService
from zmeet.client import GameClient, Session
from zmeet.errors import RemoteProtocolError, RequestRefused
from zmeet.games import BOT_NAME, ArenaSettings, GameErrorCode
from zmeet.protocol import games as pg

pytestmark = pytest.mark.timeout(30)


def next_state(wait_for, session: Session, game_id: str, predicate=lambda v: True,
               timeout_s: float = 5.0) -> pg.GameView:
    """The first GAME-STATE of ``game_id`` on ``session.events`` that ``predicate`` accepts."""
    items = wait_for(session, lambda i: isinstance(i, pg.GameState) and i.game.id == game_id
                     and predicate(i.game), timeout_s)
    return items[-1].game


def players(connect, broker, challenger: str = "bob", opponent: str = "alice"):
    """Two connected sessions and their game clients: (me, my client, them, their client)."""
    them = connect(opponent, broker)
    me = connect(challenger, broker)
    return me, GameClient(me), them, GameClient(them)


def start_game(connect, wait_for, broker, **challenge_fields):
    """``bob`` challenges ``alice`` to tic-tac-toe through GameClient and she accepts."""
    bob, bob_games, alice, alice_games = players(connect, broker)
    sent = bob_games.challenge("ttt", "alice", **challenge_fields)
    assert isinstance(sent, pg.ChallengeSent) and sent.challenge_id and not sent.game_id
    assert sent.expires_in_ms > 0
    offer = wait_for(alice, lambda i: isinstance(i, pg.ChallengeOffer))[-1]
    assert (offer.challenge_id, offer.sender, offer.game) == (sent.challenge_id, "bob", "ttt")
    accepted = alice_games.accept(offer.challenge_id)
    assert isinstance(accepted, pg.Accepted) and accepted.game_id
    for session in (bob, alice):
        assert next_state(wait_for, session, accepted.game_id).status == "playing"
    return bob, bob_games, alice, alice_games, accepted.game_id


def test_a_whole_game_watched_listed_and_stored(broker, connect, wait_for):
    bob, bob_games, alice, alice_games, game_id = start_game(connect, wait_for, broker)
    carol = connect("carol", broker)
    carol_games = GameClient(carol)
    snapshot = carol_games.watch(game_id)
    assert isinstance(snapshot, pg.GameSnapshot) and snapshot.game.players == ("bob", "alice")
    assert carol_games.watching == {game_id}
    running = carol_games.list()
    assert isinstance(running, pg.GameList) and [v.id for v in running.games] == [game_id]
    assert carol_games.list(nick="dave").games == ()
    for games, cell in [(bob_games, 1), (alice_games, 5), (bob_games, 2), (alice_games, 9),
                        (bob_games, 3)]:
        assert games.move(game_id, cell) is None
    final = next_state(wait_for, bob, game_id, lambda v: v.status == "over")
    assert (final.winner, final.reason) == ("bob", "line")
    watched = next_state(wait_for, carol, game_id, lambda v: v.status == "over")
    assert watched.version > snapshot.game.version  # published to the spectator
    carol_games.unwatch(game_id)
    assert carol_games.watching == set()
    records = carol_games.history(nick="bob", limit=5)
    assert isinstance(records, pg.GameRecords)
    (record,) = records.records
    assert (record.id, record.winner, [m.value for m in record.moves]) == (
        game_id, "bob", [1, 5, 2, 9, 3])


def test_refusals_carry_the_brokers_code(broker, connect, wait_for):
    bob, bob_games, alice, alice_games, game_id = start_game(connect, wait_for, broker)
    cases = [
        (lambda: alice_games.move(game_id, 5), GameErrorCode.NOT_YOUR_TURN),
        (lambda: bob_games.move(game_id, 10), GameErrorCode.ILLEGAL_MOVE),
        (lambda: bob_games.move("nope", 1), GameErrorCode.NOT_FOUND),
        (lambda: alice_games.claim(game_id), GameErrorCode.ILLEGAL_MOVE),  # bob is here
        (lambda: bob_games.rematch(game_id), GameErrorCode.ILLEGAL_MOVE),  # not over yet
        (lambda: bob_games.challenge("ttt", "nobody"), GameErrorCode.NOT_FOUND),
        (lambda: bob_games.challenge("chess", bot=True), GameErrorCode.BAD_REQUEST),
        (lambda: bob_games.accept(), GameErrorCode.NOT_FOUND),
        (lambda: bob_games.decline("nope"), GameErrorCode.NOT_FOUND),
        (lambda: bob_games.snapshot("nope"), GameErrorCode.NOT_FOUND),
        (lambda: bob_games.list(limit=0), GameErrorCode.TOO_MANY),
        (lambda: bob_games.history(limit=1001), GameErrorCode.TOO_MANY),
    ]
    for call, code in cases:
        with pytest.raises(RequestRefused) as info:
            call()
        assert info.value.code == code, (info.value.code, info.value.reason)
        assert info.value.reason
    with pytest.raises(RequestRefused):
        bob_games.watch("nope")
    assert bob_games.watching == set()  # a refused watch leaves nothing subscribed
    bob_games.resign(game_id)
    view = next_state(wait_for, alice, game_id, lambda v: v.status == "over")
    assert (view.winner, view.reason) == ("alice", "resign")
    with pytest.raises(RequestRefused) as info:
        bob_games.move(game_id, 9)
    assert info.value.code == GameErrorCode.GAME_OVER


def test_decline_and_accept_the_oldest_of_a_game(broker, connect, wait_for):
    bob, bob_games, alice, alice_games = players(connect, broker)
    sent = bob_games.challenge("guess", "alice")
    wait_for(alice, lambda i: isinstance(i, pg.ChallengeOffer))
    assert alice_games.decline(game="guess") is None
    ended = wait_for(bob, lambda i: isinstance(i, pg.ChallengeEnded))[-1]
    assert (ended.challenge_id, ended.reason, ended.by) == (sent.challenge_id, "declined", "alice")
    sent = bob_games.challenge("ttt", "alice", options={"size": 4, "k": 3}, move_timeout_s=30)
    offer = wait_for(alice, lambda i: isinstance(i, pg.ChallengeOffer))[-1]
    assert (offer.options, offer.move_timeout_s) == ({"size": 4, "k": 3}, 30)
    with pytest.raises(RequestRefused):
        alice_games.accept(game="guess")  # none of that game waits
    game_id = alice_games.accept(game="ttt").game_id
    view = next_state(wait_for, bob, game_id)
    assert view.options["size"] == 4 and view.move_timeout_s == 30


def test_claim_while_the_opponent_is_away(broker, connect, wait_for):
    bob, bob_games, alice, alice_games, game_id = start_game(connect, wait_for, broker)
    bob.close()
    next_state(wait_for, alice, game_id, lambda v: v.away == ("bob",))
    alice_games.claim(game_id)
    view = next_state(wait_for, alice, game_id, lambda v: v.status == "over")
    assert (view.winner, view.reason) == ("alice", "claim")


def test_the_bot_starts_at_once_and_a_rematch_swaps_seats(broker, connect, wait_for):
    dave = connect("dave", broker)
    games = GameClient(dave)
    sent = games.challenge("ttt", bot=True)
    assert sent.game_id and not sent.challenge_id
    view = next_state(wait_for, dave, sent.game_id)
    assert view.players == ("dave", BOT_NAME)
    games.resign(sent.game_id)
    next_state(wait_for, dave, sent.game_id, lambda v: v.status == "over")
    again = games.rematch(sent.game_id)
    assert isinstance(again, pg.ChallengeSent) and again.game_id
    view = next_state(wait_for, dave, again.game_id)
    assert view.players == (BOT_NAME, "dave") and view.rematch_of == sent.game_id


def test_a_rematch_between_nicks(broker, connect, wait_for):
    bob, bob_games, alice, alice_games, game_id = start_game(connect, wait_for, broker)
    alice_games.resign(game_id)
    next_state(wait_for, bob, game_id, lambda v: v.status == "over")
    asked = alice_games.rematch(game_id)
    assert asked.challenge_id and not asked.game_id
    offer = wait_for(bob, lambda i: isinstance(i, pg.ChallengeOffer))[-1]
    assert offer.rematch_of == game_id
    started = bob_games.rematch(game_id)
    assert started.game_id
    assert next_state(wait_for, alice, started.game_id).players == ("alice", "bob")


def test_settings_come_from_the_games_service(make_broker, connect, wait_for):
    broker = make_broker(services=[functools.partial(
        GamesService, settings=ArenaSettings(challenge_expiry_s=0.3))])
    bob, bob_games, alice, alice_games = players(connect, broker)
    sent = bob_games.challenge("ttt", "alice")
    assert 0 < sent.expires_in_ms <= 300
    ended = wait_for(bob, lambda i: isinstance(i, pg.ChallengeEnded))[-1]
    assert (ended.challenge_id, ended.reason) == (sent.challenge_id, "expired")


def test_a_reply_of_the_wrong_kind_is_a_protocol_error(broker, connect):
    session = connect("erin", broker)
    games = GameClient(session)
    with pytest.raises(RemoteProtocolError, match="GAMES got GAME-LIST, not ACCEPTED"):
        games._ask(pg.ListGames, pg.Accepted)
