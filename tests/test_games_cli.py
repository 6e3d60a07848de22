"""Whole games as users play them: a real ``zmeet broker`` and ``zmeet ttt``/``zmeet guess``/
``zmeet join`` subprocesses with piped stdin (not a terminal: one move is read per turn).

Every wait is for a line of output (``Proc.expect``) under a bounded timeout; nothing sleeps.
"""

from __future__ import annotations

import json
import re
import signal

import pytest
from click.testing import CliRunner
from proc import ZMEET, Proc, start_broker
from zmeet_cli.main import main

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc, endpoints = start_broker(tmp_path_factory.mktemp("games") / "data")
    yield endpoints["entry"]
    proc.stop()


@pytest.fixture
def procs():
    """Start zmeet commands; every one still running is stopped at teardown."""
    started: list[Proc] = []

    def run(*args: str, broker: str, stdin: bool = True) -> Proc:
        proc = Proc([*ZMEET, *args, "--broker", broker], stdin=stdin)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        proc.stop()


def start_ttt(procs, broker, x: str, o: str, *extra: str, json_out: bool = False):
    """``o`` waits with --accept, ``x`` challenges: returns (x proc, o proc, game id)."""
    flag = ("--json",) if json_out else ()
    o_proc = procs("ttt", "--accept", "--nick", o, *flag, broker=broker)
    o_proc.expect(r"waiting.*challenge")
    x_proc = procs("ttt", "--vs", o, "--nick", x, *extra, *flag, broker=broker)
    if json_out:
        game_id = json.loads(x_proc.expect(r'"type": "state"').string)["game"]["id"]
    else:
        game_id = x_proc.expect(r"^-- game (\w+): tic-tac-toe").group(1)
    return x_proc, o_proc, game_id


def test_usage_errors():
    runner = CliRunner()
    result = runner.invoke(main, ["ttt", "--nick", "a", "--vs", "b", "--accept"])
    assert result.exit_code == 2 and "one of --vs, --accept and --watch" in result.output
    result = runner.invoke(main, ["ttt", "--nick", "a", "--vs", "b", "--size", "4", "--k", "5"])
    assert result.exit_code == 2 and "k (in a row)" in result.output
    result = runner.invoke(main, ["--help"])
    for command in ("ttt", "guess", "games"):
        assert command in result.output
    assert "--challenge-expiry" in runner.invoke(main, ["broker", "--help"]).output


def test_a_win_watched_live_listed_and_stored(broker, procs):
    bob, alice, game_id = start_ttt(procs, broker, "bob1", "alice1")
    alice.expect(r"bob1 challenges you.*accepting")
    bob.expect(r"Your move, X \(1-9, 0 to resign\)")
    listing = procs("games", broker=broker, stdin=False)
    assert listing.wait() == 0
    assert any(game_id in line and "bob1 (X) vs alice1 (O)" in line for line in listing.stdout)
    watcher = procs("ttt", "--watch", game_id, "--nick", "carol1", broker=broker, stdin=False)
    watcher.expect(rf"^-- game {game_id}")
    watcher.expect(r"^ 1 \| 2 \| 3$")
    for proc, cell in [(bob, 1), (alice, 5), (bob, 2), (alice, 9), (bob, 3)]:
        proc.send(str(cell))
        watcher.expect(rf"takes {cell}$")  # live, move by move
    watcher.expect(r"^ X \| X \| X$")
    watcher.expect(r"^bob1 \(X\) wins!$")
    assert watcher.wait() == 0
    bob.expect(r"^You win!$")
    alice.expect(r"^You lose!$")
    end = bob.stdout.index("You win!")
    board = bob.stdout[end - 6: end - 1]
    assert board == [" X | X | X", "-----------", " 4 | O | 6", "-----------", " 7 | 8 | O"]
    for proc in (bob, alice):
        proc.close_stdin()
        assert proc.wait() == 0
    history = procs("games", "--history", "--json", "--player", "bob1", broker=broker,
                    stdin=False)
    assert history.wait() == 0
    (record,) = [json.loads(line) for line in history.stdout]
    assert record["id"] == game_id and record["winner"] == "bob1" and record["reason"] == "line"
    assert record["moves"] == [[0, 1, ""], [1, 5, ""], [0, 2, ""], [1, 9, ""], [0, 3, ""]]
    text = procs("games", "--history", broker=broker, stdin=False)
    assert text.wait() == 0 and any(game_id in line and "wins" in line for line in text.stdout)


def test_a_draw_in_json(broker, procs):
    bob, alice, game_id = start_ttt(procs, broker, "bob2", "alice2", json_out=True)
    for proc, cell in [(bob, 1), (alice, 5), (bob, 9), (alice, 2), (bob, 8), (alice, 7),
                       (bob, 3), (alice, 6), (bob, 4)]:
        proc.send(str(cell))
    for proc in (bob, alice):
        result = json.loads(proc.expect(r'"type": "result"').string)
        assert result["result"] == "draw" and result["reason"] == "full"
        proc.close_stdin()
        assert proc.wait() == 0
    states = [json.loads(line) for line in bob.stdout if '"state"' in line]
    assert states[-1]["game"]["board"] == ["X", "O", "X", "X", "O", "O", "O", "X", "X"]
    assert [s["game"]["version"] for s in states] == sorted({s["game"]["version"] for s in states})


def test_chat_accept_out_of_turn_invalid_moves_and_resign(broker, procs):
    alice = procs("join", "--nick", "alice3", "--no-display", broker=broker)
    alice.expect(r"joined #lobby as alice3")
    bob = procs("ttt", "--vs", "alice3", "--nick", "bob3", broker=broker)
    challenge = alice.expect(r"^-- bob3 challenges you to tic-tac-toe .*/accept or /decline")
    assert "you would be O" in challenge.string
    alice.send("/accept")
    alice.expect(r"^-- game \w+: tic-tac-toe")
    alice.send("5")  # not her turn
    alice.expect(r"^-- error: it is not your turn: bob3 is to move")
    for bad, error in [("10", "cell 10 does not exist: choose 1 to 9"),
                       ("x5", "'x5' is not a move")]:
        bob.send(bad)
        bob.expect(rf"^-- error: {error}")
        bob.expect(r"^Your move, X")  # the same player moves again
    bob.send("5")
    alice.expect(r"bob3 \(X\) takes 5")
    alice.send("5")
    alice.expect(r"^-- error: cell 5 is taken by X")
    alice.send("hello bob")  # chat still works during a game
    alice.expect(r"<alice3> hello bob")
    alice.send("0")  # resign, as in the seeds
    alice.expect(r"^You lose!$")
    bob.expect(r"^-- alice3 \(O\) resigned$")
    bob.expect(r"^You win!$")
    bob.close_stdin()
    assert bob.wait() == 0
    alice.send("/quit")
    assert alice.wait() == 0


def test_chat_challenges_that_end_without_a_game(broker, procs):
    alice = procs("join", "--nick", "alice4", "--no-display", broker=broker)
    alice.expect(r"joined #lobby as alice4")
    alice.send("!TTT bob4")
    alice.expect(r"^-- error: bob4 is not online")
    bob = procs("join", "--nick", "bob4", "--no-display", broker=broker)
    bob.expect(r"joined #lobby as bob4")
    alice.send("!TTT bob4")
    alice.expect(r"^-- challenged bob4 to tic-tac-toe")
    bob.expect(r"^-- alice4 challenges you to tic-tac-toe")
    bob.send("/decline")
    alice.expect(r"^-- challenge \w+: bob4 declined the challenge")
    cli = procs("ttt", "--vs", "bob4", "--nick", "carol4", broker=broker)
    bob.expect(r"^-- carol4 challenges you")
    bob.send("/decline")
    cli.expect(r"^-- bob4 declined the challenge")
    assert cli.wait() == 1


def test_a_player_who_does_not_move_loses_on_time(broker, procs):
    bob, alice, game_id = start_ttt(procs, broker, "bob5", "alice5", "--move-timeout", "1")
    bob.send("5")
    alice.expect(r"^Your move, O")
    alice.expect(r"^-- alice5 \(O\) ran out of time$", timeout_s=10)
    alice.expect(r"^You lose!$")
    bob.expect(r"^You win!$")
    for proc in (bob, alice):
        proc.close_stdin()
        assert proc.wait() == 0


def test_a_player_who_leaves_announced_and_the_win_claimed(broker, procs):
    bob, alice, game_id = start_ttt(procs, broker, "bob6", "alice6")
    bob.send("5")
    alice.expect(r"^Your move, O")
    alice.send("1")
    bob.expect(r"^Your move, X")
    bob.send("/quit")
    assert bob.wait() == 1  # left a game before its end
    alice.expect(r"^-- bob6 left the game: wait for them to come back, or /claim the win")
    alice.send("/claim")
    alice.expect(r"^-- bob6 \(X\) left and alice6 \(O\) claimed the win")
    alice.expect(r"^You win!$")
    alice.close_stdin()
    assert alice.wait() == 0


def test_a_killed_player_reconnects_and_the_game_resumes(broker, procs):
    bob, alice, game_id = start_ttt(procs, broker, "bob7", "alice7")
    bob.send("5")
    alice.expect(r"^Your move, O")
    alice.send("1")
    bob.expect(r"alice7 \(O\) takes 1")
    bob.signal(signal.SIGKILL)
    bob.wait()
    alice.expect(r"^-- bob7 left the game", timeout_s=15)  # once its heartbeats stop
    again = procs("ttt", "--nick", "bob7", broker=broker)  # the same nick, a new session
    again.expect(rf"^-- resuming game {game_id}")
    again.expect(r"^ O \| 2 \| 3$")  # the full state: both moves
    again.expect(r"^Your move, X")
    alice.expect(r"^-- bob7 is back: the game goes on")
    for proc, cell in [(again, 3), (alice, 2), (again, 7)]:
        proc.send(str(cell))
    again.expect(r"^You win!$")
    alice.expect(r"^You lose!$")
    for proc in (again, alice):
        proc.close_stdin()
        assert proc.wait() == 0


def test_rematch_swaps_colours(broker, procs):
    bob, alice, first = start_ttt(procs, broker, "bob8", "alice8")
    bob.send("0")
    bob.expect(r"^You lose!$")
    alice.expect(r"^You win!$")
    alice.send("/rematch")
    alice.expect(r"^-- asked bob8 for a rematch")
    bob.expect(r"^-- alice8 wants a rematch")
    bob.send("/rematch")
    second = alice.expect(r"^-- game (\w+): tic-tac-toe.*alice8 \(X\) vs bob8 \(O\)").group(1)
    assert second != first
    alice.expect(r"^Your move, X")
    for proc, cell in [(alice, 1), (bob, 2), (alice, 4), (bob, 3), (alice, 7)]:
        proc.send(str(cell))
    alice.expect(r"^You win!$")
    bob.expect(r"^You lose!$")
    for proc in (bob, alice):
        proc.close_stdin()
        assert proc.wait() == 0


def test_tic_tac_toe_against_the_bot(broker, procs):
    dave = procs("ttt", "--vs", "bot", "--nick", "dave9", "--json", broker=broker)
    for cell in range(1, 10):  # taken cells are refused and the next line is read
        dave.send(str(cell))
    result = json.loads(dave.expect(r'"type": "result"', timeout_s=20).string)
    assert result["result"] in ("lose", "draw")
    errors = [json.loads(line) for line in dave.stdout if '"error"' in line]
    assert all(e["code"] == 412 and "taken" in e["text"] for e in errors)
    dave.close_stdin()
    assert dave.wait() == 0


def test_guess_against_the_broker_and_against_a_nick(broker, procs):
    carol = procs("guess", "--nick", "carol10", broker=broker)
    carol.expect(r"^Enter guess \(1-100\), 5 tries left")
    low, high = 1, 100
    for _ in range(5):
        value = (low + high) // 2
        carol.send(str(value))
        hint = carol.expect(r"^(Your guess is too low\.|Your guess is too high\.|"
                            r"Your guess \d+ is right\.)").group(1)
        if "right" in hint:
            break
        low, high = (value + 1, high) if "low" in hint else (low, value - 1)
    carol.expect(r"^You (win|lose)!$")
    carol.close_stdin()
    assert carol.wait() == 0
    alice = procs("guess", "--accept", "--nick", "alice10", broker=broker)
    alice.expect(r"waiting for a challenge")
    bob = procs("guess", "--vs", "alice10", "--nick", "bob10", broker=broker)
    alice.expect(r"^Pick a number \(1-100\) for bob10 \(guesser\) to guess")
    alice.send("42")
    alice.expect(r"^-- you picked 42")
    bob.expect(r"^-- alice10 \(picker\) has picked a number")
    for guess, hint in [("50", "too high"), ("42", "42 is right")]:
        bob.send(guess)
        bob.expect(rf"^Your guess {hint}" if "right" in hint else rf"^Your guess is {hint}")
        alice.expect(rf"bob10 \(guesser\) guesses {guess}")
    bob.expect(r"^-- bob10 \(guesser\) guessed 42 in 2 tries")
    bob.expect(r"^You win!$")
    alice.expect(r"^You lose!$")
    for proc in (bob, alice):
        proc.close_stdin()
        assert proc.wait() == 0
    before_the_end = bob.stdout[: bob.stdout.index("Your guess 42 is right.")]
    assert not re.search(r"\b42\b", "\n".join(before_the_end))  # hidden from the guesser


def test_an_unanswered_challenge_expires(tmp_path, procs):
    proc, endpoints = start_broker(tmp_path / "data", "--challenge-expiry", "0.5")
    try:
        broker = endpoints["entry"]
        alice = procs("join", "--nick", "alice11", "--no-display", broker=broker)
        alice.expect(r"joined #lobby as alice11")
        bob = procs("ttt", "--vs", "alice11", "--nick", "bob11", broker=broker)
        bob.expect(r"^-- challenged alice11 .*expires in 0.5 s")
        alice.expect(r"^-- bob11 challenges you")
        bob.expect(r"^-- the challenge expired: alice11 did not answer")
        assert bob.wait() == 1
        alice.expect(r"^-- challenge \w+: the challenge expired")
        alice.send("/accept")
        alice.expect(r"^-- error: no challenge is waiting for you")
    finally:
        proc.stop()
