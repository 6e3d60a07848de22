"""Games without sockets: the rules of tic-tac-toe and guess-the-number, the bot, and the game
machinery (challenges, clocks, disconnects, rematches) with a fake clock."""

from __future__ import annotations

import random
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmeet.games import (
    BOT_NAME,
    GAMES,
    Arena,
    ArenaSettings,
    GameError,
    GameErrorCode,
    GameOver,
    Guess,
    IllegalMove,
    Move,
    NotYourTurn,
    Outcome,
    Table,
    TicTacToe,
    bot,
)
from zmeet.games.arena import BotTurn, Changed, Closed, Finished, Offered
from zmeet.games.guess import HIGH, LOW, PICK, WIN, bounds
from zmeet.games.tictactoe import (
    MAX_SIZE,
    MIN_K,
    MIN_SIZE,
    board_from_moves,
    lines,
    render,
    wins_at,
)
from zmeet.games.tictactoe import winner as board_winner

SIZES_AND_K = [(n, k) for n in range(MIN_SIZE, MAX_SIZE + 1) for k in range(MIN_K, n + 1)]


# --- tic-tac-toe rules ---------------------------------------------------------------------


@pytest.mark.parametrize(("size", "k"), SIZES_AND_K)
def test_every_win_line_of_every_board_size_wins(size, k):
    runs = lines(size, k)
    span = size - k + 1
    assert len(runs) == 2 * size * span + 2 * span * span  # rows, columns, both diagonals
    assert len(set(runs)) == len(runs)
    for run in runs:
        assert len(run) == k and len(set(run)) == k
        coords = [divmod(i, size) for i in run]
        steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(coords, coords[1:], strict=False)}
        assert len(steps) == 1 and steps <= {(0, 1), (1, 0), (1, 1), (1, -1)}  # straight
        game = TicTacToe({"size": size, "k": k})
        fillers = iter(i for i in range(size * size) if i not in run)
        for n, cell in enumerate(run):
            assert game.outcome is None
            game.play(0, cell + 1)
            if n < k - 1:
                game.play(1, next(fillers) + 1)
        assert game.outcome == Outcome(0, "line"), (size, k, run)
        assert board_winner(game.board, size, k) == 1
        assert all(wins_at(game.board, size, k, i) for i in run)


@pytest.mark.parametrize(("size", "k"), [(3, 3), (4, 3), (5, 4), (10, 5)])
def test_k_minus_one_in_a_row_does_not_win(size, k):
    for run in lines(size, k):
        cells = [0] * (size * size)
        for i in run[:-1]:
            cells[i] = 2
        assert board_winner(cells, size, k) == 0
        assert not any(wins_at(cells, size, k, i) for i in run[:-1])


def test_full_board_without_a_line_is_a_draw():
    game = TicTacToe()
    for seat, cell in enumerate([1, 5, 9, 2, 8, 7, 3, 6, 4]):
        game.play(seat % 2, cell)
    assert game.outcome == Outcome(None, "full")
    assert game.turn is None


def test_bad_moves_change_nothing_and_the_same_player_moves_again():
    game = TicTacToe()
    game.play(0, 5)
    before = (game.board, list(game.moves))
    with pytest.raises(IllegalMove, match="cell 5 is taken by X"):
        game.play(1, 5)
    for cell in (0, -1, 10, 2**62):
        with pytest.raises(IllegalMove, match="does not exist: choose 1 to 9"):
            game.play(1, cell)
    with pytest.raises(NotYourTurn):
        game.play(0, 1)
    assert (game.board, game.moves) == before and game.turn == 1
    game.play(1, 1)
    for cell in (3, 2, 7):  # X: 5 3 7, a diagonal
        game.play(game.turn, cell)
    assert game.outcome == Outcome(0, "line")
    with pytest.raises(GameOver):
        game.play(game.turn or 0, 4)
    with pytest.raises(GameOver):
        game.end(0, "resign")


@pytest.mark.parametrize("options", [{"size": 2}, {"size": 11}, {"k": 4}, {"size": 5, "k": 2},
                                     {"depth": 3}, {"size": True}])
def test_bad_options_are_refused(options):
    with pytest.raises(GameError) as info:
        TicTacToe(options)
    assert info.value.code == GameErrorCode.BAD_REQUEST


def test_board_is_drawn_as_the_seeds_draw_it():
    assert render([0] * 9, 3) == " 1 | 2 | 3\n-----------\n 4 | 5 | 6\n-----------\n 7 | 8 | 9"
    game = TicTacToe()
    for cell in (8, 4):
        game.play(game.turn, cell)
    assert render(game.board, 3).splitlines()[2] == " O | 5 | 6"
    big = render([1] + [0] * 15, 4).splitlines()
    assert big[0] == " X  | 2  | 3  | 4"
    assert big[1] == "-" * 19 and big[6] == " 13 | 14 | 15 | 16"


def test_board_from_moves_replays_a_game():
    game = TicTacToe({"size": 4, "k": 3})
    for cell in (6, 7, 11, 1, 16):
        game.play(game.turn, cell)
    assert board_from_moves(4, game.moves) == game.board
    assert game.outcome == Outcome(0, "line")  # 6, 11, 16


# --- guess-the-number ----------------------------------------------------------------------


def test_guess_hints_and_win():
    game = Guess()
    assert game.turn == 0
    with pytest.raises(NotYourTurn):
        game.play(1, 50)
    assert game.play(0, 42) == Move(0, 42, PICK)
    assert [game.play(1, g).note for g in (50, 25, 42)] == [HIGH, LOW, WIN]
    assert game.outcome == Outcome(1, "guessed")


def test_guess_runs_out_of_tries_as_in_the_seeds():
    game = Guess()
    game.play(0, 99)
    for n in range(1, 6):
        assert game.tries_left == 6 - n
        assert game.play(1, n).note == LOW
    assert game.outcome == Outcome(0, "tries")
    with pytest.raises(GameOver):
        game.play(1, 99)


def test_guess_numbers_out_of_range_are_illegal():
    game = Guess({"low": 10, "high": 20, "tries": 3})
    with pytest.raises(IllegalMove, match="choose 10 to 20"):
        game.play(0, 21)
    game.play(0, 15)
    with pytest.raises(IllegalMove):
        game.play(1, 9)
    assert game.tries_left == 3
    with pytest.raises(GameError):
        Guess({"low": 0})
    with pytest.raises(GameError):
        Guess({"tries": 0})


def test_the_secret_is_hidden_from_the_guesser_and_spectators_until_the_end():
    game = Guess()
    game.play(0, 7)
    game.play(1, 50)
    assert game.visible_moves(0)[0].value == 7
    assert game.visible_moves(1)[0] == Move(0, 0, PICK)
    assert game.visible_moves(None)[0].value == 0
    assert game.visible_moves(None)[1] == Move(1, 50, HIGH)
    game.end(0, "resign")
    assert game.visible_moves(None)[0].value == 7


def test_guess_bot_halves_the_range_and_always_finds_it_in_seven_tries():
    for secret in range(1, 101):
        game = Guess({"tries": 7})
        game.play(0, secret)
        while game.outcome is None:
            low, high = bounds(game.options, game.moves)
            value = game.bot_move(1, random.Random(0), 0)
            assert low <= value <= high
            game.play(1, value)
        assert game.outcome == Outcome(1, "guessed"), secret
    picks = {Guess().bot_move(0, random.Random(seed), 0) for seed in range(50)}
    assert picks <= set(range(1, 101)) and len(picks) > 10


# --- the bot -------------------------------------------------------------------------------


@cache
def _value(cells: tuple[int, ...], to_move: int) -> int:
    """Exact minimax value of a 3 x 3 position for the side to move: 1 win, 0 draw, -1 loss."""
    if board_winner(cells, 3, 3):
        return -1  # the side that just moved won
    if all(cells):
        return 0
    return max(-_value(cells[:i] + (to_move,) + cells[i + 1:], 3 - to_move)
               for i in range(9) if not cells[i])


@cache
def _worst_for_bot(cells: tuple[int, ...], to_move: int, bot_mark: int) -> int:
    """The bot's result (1, 0, -1) against the opponent's best replies, every reply tried."""
    won = board_winner(cells, 3, 3)
    if won:
        return 1 if won == bot_mark else -1
    if all(cells):
        return 0
    if to_move == bot_mark:
        cell = bot.best_move(cells, 3, 3, bot_mark)
        assert not cells[cell - 1]
        return _worst_for_bot(cells[:cell - 1] + (bot_mark,) + cells[cell:], 3 - to_move, bot_mark)
    return min(_worst_for_bot(cells[:i] + (to_move,) + cells[i + 1:], 3 - to_move, bot_mark)
               for i in range(9) if not cells[i])


def test_bot_plays_3x3_perfectly_from_every_reachable_position():
    """Exhaustive: from every position the bot is to move in, it gets the game's true value
    against every line of replies: it never loses what is not lost and wins what is won."""
    seen, stack, checked = set(), [((0,) * 9, 1)], 0
    while stack:
        cells, to_move = stack.pop()
        if (cells, to_move) in seen or board_winner(cells, 3, 3) or all(cells):
            continue
        seen.add((cells, to_move))
        assert _worst_for_bot(cells, to_move, to_move) == _value(cells, to_move), cells
        checked += 1
        stack.extend((cells[:i] + (to_move,) + cells[i + 1:], 3 - to_move)
                     for i in range(9) if not cells[i])
    assert checked == 4520  # every non-final position reachable in play


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), bot_mark=st.sampled_from([1, 2]))
def test_bot_never_loses_on_3x3_from_any_reachable_position(data, bot_mark):
    cells = [0] * 9
    to_move = 1
    for _ in range(data.draw(st.integers(0, 8), label="opening moves")):
        free = [i for i in range(9) if not cells[i]]
        if board_winner(cells, 3, 3) or not free:
            break
        cells[data.draw(st.sampled_from(free), label="opening")] = to_move
        to_move = 3 - to_move
    start = (tuple(cells), to_move)
    if board_winner(cells, 3, 3) or all(cells):
        return
    value = _value(*start) if to_move == bot_mark else -_value(*start)
    while not board_winner(cells, 3, 3) and not all(cells):
        if to_move == bot_mark:
            cell = bot.best_move(cells, 3, 3, bot_mark) - 1
        else:
            cell = data.draw(st.sampled_from([i for i in range(9) if not cells[i]]), label="reply")
        assert not cells[cell]
        cells[cell] = to_move
        to_move = 3 - to_move
    won = board_winner(cells, 3, 3)
    result = 0 if not won else (1 if won == bot_mark else -1)
    if value >= 0:  # a position not already lost: the bot does not lose it
        assert result >= 0, (start, cells)
    if value == 1:  # a won position: the bot wins it
        assert result == 1, (start, cells)


def test_bot_takes_a_win_and_blocks_a_loss_on_large_boards():
    size, k = 7, 4
    cells = [0] * 49
    for i in (8, 9, 10):  # X: 9 10 11 (1-based) in row 2
        cells[i] = 1
    cells[40] = cells[41] = cells[30] = 2
    assert bot.best_move(cells, size, k, 1, 2000) in (8, 12)  # completes four
    assert bot.best_move(cells, size, k, 2, 2000) in (8, 12)  # blocks it


def test_bot_is_deterministic_bounded_and_legal():
    cells = [0] * 25
    cells[12] = 1
    first = bot.best_move(cells, 5, 4, 2, 3000)
    assert first == bot.best_move(cells, 5, 4, 2, 3000)
    assert not cells[first - 1]
    assert 1 <= bot.best_move(cells, 5, 4, 2, 1) <= 25  # a tiny budget still gives a move
    with pytest.raises(ValueError):
        bot.best_move([1, 2] * 4 + [1], 3, 3, 1)


def test_bot_does_not_lose_to_random_play_on_5x5_four_in_a_row():
    rng = random.Random(4)
    for game_no in range(6):
        game = TicTacToe({"size": 5, "k": 4})
        bot_seat = game_no % 2
        while game.outcome is None:
            if game.turn == bot_seat:
                game.play(bot_seat, bot.best_move(game.board, 5, 4, bot_seat + 1, 1500))
            else:
                game.play(game.turn, rng.choice([i + 1 for i, v in enumerate(game.board) if not v]))
        assert game.outcome.winner in (bot_seat, None), (game_no, game.moves)


# --- the machinery -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """An arena with a fake clock and a set of online nicks."""

    def __init__(self, **settings) -> None:
        self.clock = FakeClock()
        self.online = {"alice", "bob", "carol"}
        self.arena = Arena(clock=self.clock, wall_ms=lambda: int(self.clock.now * 1000),
                           is_online=self.online.__contains__, rng=random.Random(7),
                           settings=ArenaSettings(**settings))

    def later(self, seconds: float) -> list:
        self.clock.now += seconds
        self.arena.tick()
        return self.arena.drain()

    def start(self, kind="ttt", challenger="bob", opponent="alice", **kwargs) -> Table:
        challenge = self.arena.challenge(challenger, kind, opponent, {}, kwargs.pop("timeout", 120))
        table = self.arena.accept(opponent, challenge.id)
        self.arena.drain()
        return table


def effects_of(effects, cls):
    return [e for e in effects if isinstance(e, cls)]


def test_challenge_offer_accept_and_the_challenger_plays_x_first():
    w = World()
    challenge = w.arena.challenge("bob", "ttt", "alice", {"size": 4}, 30)
    (offer,) = effects_of(w.arena.drain(), Offered)
    assert offer.challenge is challenge and challenge.opponent_seat == 1
    table = w.arena.accept("alice")
    effects = w.arena.drain()
    (closed,) = effects_of(effects, Closed)
    assert (closed.reason, closed.notify, closed.game_id, closed.by) == (
        "accepted", ("bob",), table.id, "alice")
    assert effects.index(closed) < effects.index(effects_of(effects, Changed)[0])
    assert table.players == ("bob", "alice") and table.game.turn == 0
    assert table.game.options == {"size": 4, "k": 3} and table.version == 1
    assert w.arena.time_left_s(table) == 30


def test_decline_expiry_and_offline_end_a_challenge():
    w = World(challenge_expiry_s=60)
    first = w.arena.challenge("bob", "ttt", "alice", {}, 120)
    w.arena.decline("alice", first.id)
    (closed,) = effects_of(w.arena.drain(), Closed)
    assert (closed.reason, closed.notify, closed.by) == ("declined", ("bob",), "alice")
    w.arena.challenge("bob", "ttt", "alice", {}, 120)
    assert not effects_of(w.later(59.9), Closed)
    (closed,) = effects_of(w.later(0.2), Closed)
    assert closed.reason == "expired" and set(closed.notify) == {"bob", "alice"}
    w.arena.challenge("bob", "ttt", "alice", {}, 120)
    w.arena.drain()
    w.arena.disconnected("alice")
    (closed,) = effects_of(w.arena.drain(), Closed)
    assert (closed.reason, closed.notify) == ("offline", ("bob",))
    w.arena.challenge("carol", "ttt", "bob", {}, 120)
    w.arena.drain()
    w.arena.disconnected("carol")
    (closed,) = effects_of(w.arena.drain(), Closed)
    assert (closed.reason, closed.notify) == ("withdrawn", ("bob",))
    assert not w.arena.challenges


@pytest.mark.parametrize(("call", "code"), [
    (lambda a: a.challenge("bob", "chess", "alice", {}, 120), GameErrorCode.BAD_REQUEST),
    (lambda a: a.challenge("bob", "ttt", "bob", {}, 120), GameErrorCode.BAD_REQUEST),
    (lambda a: a.challenge("bob", "ttt", "dave", {}, 120), GameErrorCode.NOT_FOUND),
    (lambda a: a.challenge("bob", "ttt", "alice", {"size": 99}, 120), GameErrorCode.BAD_REQUEST),
    (lambda a: a.challenge("bob", "ttt", "alice", {}, 0), GameErrorCode.BAD_REQUEST),
    (lambda a: a.accept("alice"), GameErrorCode.NOT_FOUND),
    (lambda a: a.accept("alice", "nope"), GameErrorCode.NOT_FOUND),
    (lambda a: a.decline("carol"), GameErrorCode.NOT_FOUND),
    (lambda a: a.move("bob", "nope", 1), GameErrorCode.NOT_FOUND),
    (lambda a: a.table("nope"), GameErrorCode.NOT_FOUND),
])
def test_bad_requests_are_game_errors_with_codes(call, code):
    w = World()
    with pytest.raises(GameError) as info:
        call(w.arena)
    assert info.value.code == code
    assert not w.arena.drain()


def test_a_challenge_for_someone_else_cannot_be_answered():
    w = World()
    challenge = w.arena.challenge("bob", "ttt", "alice", {}, 120)
    with pytest.raises(GameError) as info:
        w.arena.accept("carol", challenge.id)
    assert info.value.code == GameErrorCode.NOT_PLAYER


def test_accepting_any_challenge_takes_the_oldest_of_the_game_asked():
    w = World()
    guess = w.arena.challenge("bob", "guess", "alice", {}, 120)
    ttt = w.arena.challenge("carol", "ttt", "alice", {}, 120)
    table = w.arena.accept("alice", kind="ttt")
    assert table.players == ("carol", "alice") and list(w.arena.challenges) == [guess.id]
    with pytest.raises(GameError, match="no tic-tac-toe challenge") as info:
        w.arena.accept("alice", kind="ttt")
    assert info.value.code == GameErrorCode.NOT_FOUND and ttt.id not in w.arena.challenges
    assert w.arena.accept("alice").game.KIND == "guess"


def test_mutual_challenges_start_the_game_with_the_first_challengers_options():
    w = World()
    w.arena.challenge("bob", "ttt", "alice", {"size": 5, "k": 4}, 30)
    table = w.arena.challenge("alice", "ttt", "bob", {}, 120)
    assert isinstance(table, Table)
    assert table.players == ("bob", "alice") and table.game.options == {"size": 5, "k": 4}
    assert not w.arena.challenges


def test_moves_turns_and_errors():
    w = World()
    table = w.start()
    with pytest.raises(GameError) as info:
        w.arena.move("alice", table.id, 5)
    assert info.value.code == GameErrorCode.NOT_YOUR_TURN and "bob is to move" in info.value.reason
    with pytest.raises(GameError) as info:
        w.arena.move("carol", table.id, 5)
    assert info.value.code == GameErrorCode.NOT_PLAYER
    w.arena.move("bob", table.id, 5)
    with pytest.raises(GameError) as info:
        w.arena.move("alice", table.id, 5)
    assert info.value.code == GameErrorCode.ILLEGAL_MOVE
    assert table.game.turn == 1 and table.version == 2
    for nick, cell in [("alice", 1), ("bob", 3), ("alice", 2), ("bob", 7)]:
        w.arena.move(nick, table.id, cell)
    effects = w.arena.drain()
    assert effects_of(effects, Finished) and table.status == "over"
    assert table.game.outcome == Outcome(0, "line")
    with pytest.raises(GameError) as info:
        w.arena.move("alice", table.id, 9)
    assert info.value.code == GameErrorCode.GAME_OVER
    assert w.arena.running("bob") == []


def test_the_player_who_does_not_move_in_time_loses():
    w = World()
    table = w.start(timeout=10)
    w.arena.move("bob", table.id, 5)
    w.arena.drain()
    assert not w.later(9.9)
    effects = w.later(0.2)
    assert effects_of(effects, Finished)
    assert table.game.outcome == Outcome(0, "time")


def test_resign_gives_the_opponent_the_win():
    w = World()
    table = w.start()
    w.arena.resign("bob", table.id)
    assert table.game.outcome == Outcome(1, "resign")
    with pytest.raises(GameError) as info:
        w.arena.resign("alice", table.id)
    assert info.value.code == GameErrorCode.GAME_OVER


def test_disconnect_pauses_the_game_and_the_other_may_claim_the_win():
    w = World(reconnect_window_s=60)
    table = w.start(timeout=10)
    with pytest.raises(GameError) as info:
        w.arena.claim("alice", table.id)
    assert info.value.code == GameErrorCode.ILLEGAL_MOVE
    w.online.discard("bob")
    w.arena.disconnected("bob")
    assert effects_of(w.arena.drain(), Changed) and table.status == "paused"
    assert table.deadline is None and not w.later(30)  # no clock runs while paused
    w.arena.claim("alice", table.id)
    assert table.game.outcome == Outcome(1, "claim")


def test_a_player_who_reconnects_in_time_resumes_the_game():
    w = World(reconnect_window_s=60)
    table = w.start(timeout=10)
    w.arena.move("bob", table.id, 5)
    w.online.discard("alice")
    w.arena.disconnected("alice")
    w.arena.drain()
    w.later(50)
    assert table.status == "paused"
    w.online.add("alice")
    (changed,) = effects_of(w.later(1), Changed)
    assert changed.table.status == "playing" and table.away == {}
    assert w.arena.time_left_s(table) == 10  # the mover's clock starts afresh
    w.arena.move("alice", table.id, 1)
    assert [m.value for m in table.game.moves] == [5, 1]


def test_a_player_who_does_not_come_back_loses_and_two_absent_abandon():
    w = World(reconnect_window_s=60)
    table = w.start()
    w.online.discard("alice")
    w.arena.disconnected("alice")
    w.later(59)
    assert table.status == "paused"
    assert effects_of(w.later(1.5), Finished)
    assert table.game.outcome == Outcome(0, "disconnect")
    w.online.update({"alice"})
    table = w.start(challenger="carol", opponent="alice")
    for nick in ("carol", "alice"):
        w.online.discard(nick)
        w.arena.disconnected(nick)
    w.later(61)
    assert table.game.outcome == Outcome(None, "abandoned")


def test_challenging_again_after_a_reconnect_resumes_the_game():
    w = World()
    table = w.start()
    w.online.discard("bob")
    w.arena.disconnected("bob")
    w.online.add("bob")
    again = w.arena.challenge("bob", "ttt", "alice", {}, 120)
    assert again is table and table.status == "playing"


def test_rematch_swaps_the_seats():
    w = World()
    table = w.start()
    with pytest.raises(GameError) as info:
        w.arena.rematch("bob", table.id)
    assert info.value.code == GameErrorCode.ILLEGAL_MOVE
    w.arena.resign("alice", table.id)
    w.arena.drain()
    offer = w.arena.rematch("alice", table.id)
    assert offer.seats == ("alice", "bob") and offer.rematch_of == table.id
    assert w.arena.rematch("alice", table.id) is offer  # asking twice is one offer
    new = w.arena.rematch("bob", table.id)
    assert isinstance(new, Table) and new.players == ("alice", "bob")
    assert new.rematch_of == table.id and new.game.turn == 0
    with pytest.raises(GameError) as info:
        w.arena.rematch("carol", table.id)
    assert info.value.code == GameErrorCode.NOT_PLAYER


def test_bot_games_start_at_once_and_ask_the_bot_to_move():
    w = World()
    table = w.arena.challenge("bob", "guess", "", {}, 120, bot=True)
    assert isinstance(table, Table) and table.players == (BOT_NAME, "bob")
    (turn,) = effects_of(w.arena.drain(), BotTurn)
    assert w.arena.bot_play(table.id, turn.version - 1, 50) is None  # stale: ignored
    w.arena.bot_play(table.id, turn.version, w.arena.think(table))
    assert table.game.turn == 1 and table.deadline is not None
    w.arena.resign("bob", table.id)
    rematch = w.arena.rematch("bob", table.id)
    assert isinstance(rematch, Table) and rematch.players == ("bob", BOT_NAME)
    ttt = w.arena.challenge("bob", "ttt", "", {}, 120, bot=True)
    assert ttt.players == ("bob", BOT_NAME) and not effects_of(w.arena.drain(), BotTurn)[1:]
    w.arena.move("bob", ttt.id, 1)
    (turn,) = effects_of(w.arena.drain(), BotTurn)
    w.arena.bot_play(ttt.id, turn.version, w.arena.think(ttt))
    assert ttt.game.turn == 0 and len(ttt.game.moves) == 2


def test_limits_on_games_and_challenges_per_nick():
    w = World(max_games_per_nick=1, max_challenges_per_nick=1)
    w.arena.challenge("bob", "ttt", "alice", {}, 120)
    with pytest.raises(GameError) as info:
        w.arena.challenge("bob", "guess", "carol", {}, 120)
    assert info.value.code == GameErrorCode.TOO_MANY
    w.arena.accept("alice")
    with pytest.raises(GameError) as info:
        w.arena.challenge("bob", "guess", "", {}, 120, bot=True)
    assert info.value.code == GameErrorCode.TOO_MANY


def test_finished_games_are_kept_for_a_while_then_forgotten():
    w = World(finished_keep_s=100)
    table = w.start()
    w.arena.resign("bob", table.id)
    w.later(99)
    assert w.arena.table(table.id) is table
    w.later(2)
    with pytest.raises(GameError):
        w.arena.table(table.id)


def test_every_game_is_one_module_of_rules():
    assert set(GAMES) == {"ttt", "guess"}
    for cls in GAMES.values():
        game = cls()
        assert game.turn == 0 and game.outcome is None and cls.SEAT_NAMES
        copy = game.copy()
        copy.play(0, copy.bot_move(0, random.Random(1), 500))
        assert game.moves == [] and len(copy.moves) == 1
