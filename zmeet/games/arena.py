"""The game machinery, once for every game: challenges, seats, turns, clocks, disconnects,
rematches, spectators and the bot's turn. Pure: the caller injects the clocks, who is online,
and randomness, and carries out what the arena asks (:attr:`Arena.outbox`).

The broker's :class:`zmeet.broker.games.GamesService` drives one :class:`Arena`: each game
request becomes one method call here, :meth:`Arena.tick` runs on the broker's timer, and the
effects the calls leave in :attr:`Arena.outbox` become messages (docs/protocol.md, "Games"):

- :class:`Offered`: tell the challenged nick about a challenge (CHALLENGE-OFFER).
- :class:`Closed`: a challenge ended (accepted, declined, expired, offline, withdrawn): tell
  the nicks in ``notify`` (CHALLENGE-ENDED).
- :class:`Changed`: a game's state changed: send it to its players and publish it for
  spectators (GAME-STATE).
- :class:`Finished`: a game ended: store its record.
- :class:`BotTurn`: the bot is to move in a game: think (off the hub if slow), then call
  :meth:`Arena.bot_play` with the move and the ``version`` it thought about.

Rules of the machinery (the issue "Games over the broker"):

- The challenger sits in the game's ``CHALLENGER_SEAT`` (X in tic-tac-toe); seat 0 moves first;
  a rematch swaps the seats. A challenge not answered within ``challenge_expiry_s`` expires.
  A challenge to a nick who has challenged you to the same game accepts theirs.
- A human player who does not move within the game's ``move_timeout_s`` loses on time.
- A player whose session ends is *away*: the game pauses (no clock runs) and the opponent may
  claim the win at once, or wait. If the nick is online again within ``reconnect_window_s``
  the game resumes where it was and the mover's clock starts afresh; if not, the opponent
  wins (or, both away, the game is abandoned).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from random import Random

from .base import Game, GameError, GameErrorCode, GameOver
from .bot import DEFAULT_NODE_BUDGET
from .registry import GAMES

BOT_NAME = "@bot"
"""The broker's bot as a player (never a valid nick, so never confused with one)."""


@dataclass
class ArenaSettings:
    """Limits and windows of the machinery; tests shorten them."""

    challenge_expiry_s: float = 60.0
    reconnect_window_s: float = 60.0
    finished_keep_s: float = 120.0
    """How long a finished game stays in memory for a rematch or a late spectator."""
    max_finished_kept: int = 10_000
    """At most this many finished games stay in memory (the oldest go first)."""
    min_move_timeout_s: int = 1
    max_move_timeout_s: int = 86_400
    max_games_per_nick: int = 16
    max_challenges_per_nick: int = 16
    bot_node_budget: int = DEFAULT_NODE_BUDGET


@dataclass
class Challenge:
    """An open challenge from ``challenger`` to ``opponent`` (a nick, or :data:`BOT_NAME`)."""

    id: str
    kind: str
    challenger: str
    opponent: str
    seats: tuple[str, str]
    """Who sits where if it is accepted (seat 0 moves first)."""
    options: dict[str, int]
    move_timeout_s: int
    expires_at: float
    rematch_of: str = ""

    @property
    def opponent_seat(self) -> int:
        return self.seats.index(self.opponent)


@dataclass
class Table:
    """A game being played (or finished and kept for a while)."""

    id: str
    game: Game
    players: tuple[str, str]
    move_timeout_s: int
    bot_seat: int | None
    started_ms: int
    rematch_of: str = ""
    version: int = 0
    """Counts the table's changes: 1 at the start. A receiver drops a state not newer."""
    deadline: float | None = None
    """When the human to move loses on time; None while paused, over, or the bot's turn."""
    away: dict[int, float] = field(default_factory=dict)
    """Seats whose session ended, with the end of their reconnect window."""
    ended_ms: int = 0
    ended_at: float | None = None
    rematch_challenge: str = ""
    watched: bool = False
    """A spectator asked for it: its states are published (the broker's concern)."""

    @property
    def status(self) -> str:
        """``over``, ``paused`` (a player is away) or ``playing``."""
        if self.game.over:
            return "over"
        return "paused" if self.away else "playing"

    @property
    def turn_nick(self) -> str:
        turn = self.game.turn
        return "" if turn is None else self.players[turn]

    def seat_of(self, nick: str) -> int | None:
        for seat, player in enumerate(self.players):
            if player == nick and seat != self.bot_seat:
                return seat
        return None


@dataclass(frozen=True)
class Offered:
    challenge: Challenge


@dataclass(frozen=True)
class Closed:
    challenge: Challenge
    reason: str
    """``accepted``, ``declined``, ``expired``, ``offline`` (the challenged left),
    ``withdrawn`` (the challenger left)."""
    notify: tuple[str, ...]
    game_id: str = ""
    by: str = ""


@dataclass(frozen=True)
class Changed:
    table: Table


@dataclass(frozen=True)
class Finished:
    table: Table


@dataclass(frozen=True)
class BotTurn:
    table: Table
    version: int


Effect = Offered | Closed | Changed | Finished | BotTurn


class Arena:
    """Every open challenge and running game of one broker.

    ``clock`` returns monotonic seconds (deadlines), ``wall_ms`` wall-clock ms since the Unix
    epoch (records), ``is_online(nick)`` whether a nick has a session, ``rng`` the randomness
    (ids, the bot's picks); ``id_taken(id)`` says whether a stored game already has an id.
    Methods raise :class:`GameError` (with a :class:`GameErrorCode`) for any request that
    breaks a rule, and change nothing then.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        wall_ms: Callable[[], int],
        is_online: Callable[[str], bool],
        rng: Random | None = None,
        settings: ArenaSettings | None = None,
        games: Mapping[str, type[Game]] | None = None,
        id_taken: Callable[[str], bool] = lambda _id: False,
    ) -> None:
        if games is None:
            games = GAMES
        self.clock = clock
        self.wall_ms = wall_ms
        self.is_online = is_online
        self.rng = rng or Random()
        self.settings = settings or ArenaSettings()
        self.games = dict(games)
        self.id_taken = id_taken
        self.challenges: dict[str, Challenge] = {}
        self.tables: dict[str, Table] = {}
        """Every game by id: running, and finished ones still kept."""
        self.outbox: list[Effect] = []
        self._running: dict[str, Table] = {}
        self._finished: deque[Table] = deque()
        self._running_by_nick: dict[str, dict[str, None]] = {}

    # queries --------------------------------------------------------------------------------

    def drain(self) -> list[Effect]:
        """The effects since the last call, oldest first."""
        out, self.outbox = self.outbox, []
        return out

    def running(self, nick: str | None = None) -> list[Table]:
        """Games not over (of ``nick``, if given), oldest first."""
        if nick is None:
            return list(self._running.values())
        return [self._running[i] for i in self._running_by_nick.get(nick, ())]

    def table(self, game_id: str) -> Table:
        """The game ``game_id`` (running, or finished and still kept). Raises NOT_FOUND."""
        table = self.tables.get(game_id)
        if table is None:
            raise GameError(GameErrorCode.NOT_FOUND, f"there is no game {game_id[:40]!r}")
        return table

    def pending_for(self, nick: str) -> list[Challenge]:
        """Open challenges to ``nick``, oldest first."""
        return [c for c in self.challenges.values() if c.opponent == nick]

    def time_left_s(self, table: Table) -> float | None:
        """Seconds the human to move has left, or None when no clock runs."""
        if table.deadline is None:
            return None
        return max(0.0, table.deadline - self.clock())

    # challenges -----------------------------------------------------------------------------

    def challenge(
        self,
        challenger: str,
        kind: str,
        opponent: str,
        options: Mapping[str, int],
        move_timeout_s: int,
        *,
        bot: bool = False,
    ) -> Challenge | Table:
        """``challenger`` challenges ``opponent`` (or the bot) to a game of ``kind``.

        Returns the open :class:`Challenge`; or a :class:`Table` when the game starts at once:
        against the bot, when ``opponent`` had challenged ``challenger`` to the same game, or
        when the two are already playing that game (the challenger resumes it).
        """
        cls = self._game_class(kind)
        opts = cls.check_options(options)
        self._check_timeout(move_timeout_s)
        if not bot:
            if opponent == challenger:
                raise GameError(GameErrorCode.BAD_REQUEST, "you cannot challenge yourself")
            for table in self.running(challenger):
                if table.game.KIND == kind and opponent in table.players:
                    self.returned(challenger)
                    return table  # resume: the state goes to the challenger again
            for waiting in self.pending_for(challenger):
                if waiting.challenger == opponent and waiting.kind == kind:
                    return self.accept(challenger, waiting.id)
            if not self.is_online(opponent):
                raise GameError(GameErrorCode.NOT_FOUND, f"{opponent} is not online")
        self._check_room_for(challenger)
        mine = sum(1 for c in self.challenges.values() if c.challenger == challenger)
        if mine >= self.settings.max_challenges_per_nick:
            raise GameError(GameErrorCode.TOO_MANY,
                            f"you have {mine} open challenges: wait for answers")
        seat = cls.CHALLENGER_SEAT
        other = BOT_NAME if bot else opponent
        seats = (challenger, other) if seat == 0 else (other, challenger)
        if bot:
            return self._start(kind, seats, opts, move_timeout_s, bot_seat=1 - seat)
        challenge = Challenge(
            id=self._new_id(self.challenges), kind=kind, challenger=challenger,
            opponent=opponent, seats=seats, options=opts, move_timeout_s=move_timeout_s,
            expires_at=self.clock() + self.settings.challenge_expiry_s,
        )
        self.challenges[challenge.id] = challenge
        self.outbox.append(Offered(challenge))
        return challenge

    def accept(self, nick: str, challenge_id: str = "", kind: str = "") -> Table:
        """``nick`` accepts the challenge ``challenge_id`` (empty: the oldest open one to them,
        of game ``kind`` if given). Raises NOT_FOUND, NOT_PLAYER, TOO_MANY."""
        challenge = self._challenge_to(nick, challenge_id, kind)
        self._check_room_for(nick)
        self._check_room_for(challenge.challenger)
        del self.challenges[challenge.id]
        game_id = self._new_id(self.tables)
        self.outbox.append(Closed(challenge, "accepted", (challenge.challenger,), game_id, nick))
        table = self._start(challenge.kind, challenge.seats, challenge.options,
                            challenge.move_timeout_s, rematch_of=challenge.rematch_of,
                            game_id=game_id)
        old = self.tables.get(challenge.rematch_of)
        if old is not None and old.rematch_challenge == challenge.id:
            old.rematch_challenge = ""
        return table

    def decline(self, nick: str, challenge_id: str = "", kind: str = "") -> Challenge:
        """``nick`` declines a challenge, as :meth:`accept` finds it. Raises NOT_FOUND,
        NOT_PLAYER."""
        challenge = self._challenge_to(nick, challenge_id, kind)
        self._close(challenge, "declined", (challenge.challenger,), by=nick)
        return challenge

    def rematch(self, nick: str, game_id: str) -> Challenge | Table:
        """``nick`` asks for a rematch of the finished game ``game_id``, seats swapped. If the
        opponent asked first (or is the bot) the new game starts: returns its Table."""
        old = self.table(game_id)
        seat = old.seat_of(nick)
        if seat is None:
            raise GameError(GameErrorCode.NOT_PLAYER, f"you did not play game {game_id}")
        if not old.game.over:
            raise GameError(GameErrorCode.ILLEGAL_MOVE, f"game {game_id} is still being played")
        open_ = self.challenges.get(old.rematch_challenge)
        if open_ is not None:
            if open_.challenger == nick:
                return open_
            return self.accept(nick, open_.id)
        swapped = (old.players[1], old.players[0])
        self._check_room_for(nick)
        if old.bot_seat is not None:
            return self._start(old.game.KIND, swapped, old.game.options, old.move_timeout_s,
                               bot_seat=1 - old.bot_seat, rematch_of=old.id)
        opponent = old.players[1 - seat]
        if not self.is_online(opponent):
            raise GameError(GameErrorCode.NOT_FOUND, f"{opponent} is not online")
        challenge = Challenge(
            id=self._new_id(self.challenges), kind=old.game.KIND, challenger=nick,
            opponent=opponent, seats=swapped, options=dict(old.game.options),
            move_timeout_s=old.move_timeout_s,
            expires_at=self.clock() + self.settings.challenge_expiry_s, rematch_of=old.id,
        )
        self.challenges[challenge.id] = challenge
        old.rematch_challenge = challenge.id
        self.outbox.append(Offered(challenge))
        return challenge

    # moves ----------------------------------------------------------------------------------

    def move(self, nick: str, game_id: str, value: int) -> Table:
        """``nick`` plays ``value`` in ``game_id``. Raises NOT_FOUND, NOT_PLAYER, GAME_OVER,
        NOT_YOUR_TURN, ILLEGAL_MOVE (the player moves again)."""
        table = self.table(game_id)
        seat = self._seat(table, nick)
        turn = table.game.turn
        if turn is None:
            raise GameOver(f"game {table.id} is over")
        if seat != turn:
            raise GameError(GameErrorCode.NOT_YOUR_TURN,
                            f"it is not your turn: {table.players[turn]} is to move")
        table.game.play(seat, value)
        self._after_move(table)
        return table

    def bot_play(self, game_id: str, version: int, value: int) -> Table | None:
        """Play the bot's ``value`` if game ``game_id`` is still at ``version`` (nothing
        happened while the bot thought); else do nothing and return None."""
        table = self.tables.get(game_id)
        if (table is None or table.version != version or table.bot_seat is None
                or table.game.turn != table.bot_seat):
            return None
        table.game.play(table.bot_seat, value)
        self._after_move(table)
        return table

    def think(self, table: Table) -> int:
        """The bot's move in ``table``, computed here (the caller may rather run
        ``table.game.copy().bot_move(...)`` in a thread)."""
        assert table.bot_seat is not None
        return table.game.bot_move(table.bot_seat, self.rng, self.settings.bot_node_budget)

    def resign(self, nick: str, game_id: str) -> Table:
        """``nick`` resigns: the opponent wins. Raises NOT_FOUND, NOT_PLAYER, GAME_OVER."""
        table = self.table(game_id)
        seat = self._seat(table, nick)
        table.game.end(1 - seat, "resign")
        self._finish(table)
        return table

    def claim(self, nick: str, game_id: str) -> Table:
        """``nick`` claims the win because the opponent is away. Raises NOT_FOUND,
        NOT_PLAYER, GAME_OVER, ILLEGAL_MOVE (the opponent is here)."""
        table = self.table(game_id)
        seat = self._seat(table, nick)
        if table.game.over:
            raise GameOver()
        if 1 - seat not in table.away:
            raise GameError(GameErrorCode.ILLEGAL_MOVE,
                            f"{table.players[1 - seat]} is here: there is no win to claim")
        table.game.end(seat, "claim")
        self._finish(table)
        return table

    # sessions and time ----------------------------------------------------------------------

    def disconnected(self, nick: str) -> None:
        """``nick``'s session ended: their challenges go, their games pause."""
        for challenge in list(self.challenges.values()):
            if challenge.challenger == nick:
                notify = (challenge.opponent,) if challenge.opponent != BOT_NAME else ()
                self._close(challenge, "withdrawn", notify, by=nick)
            elif challenge.opponent == nick:
                self._close(challenge, "offline", (challenge.challenger,), by=nick)
        window_end = self.clock() + self.settings.reconnect_window_s
        for table in self.running(nick):
            seat = table.seat_of(nick)
            if seat is None or seat in table.away:
                continue
            table.away[seat] = window_end
            table.deadline = None
            self._changed(table)

    def returned(self, nick: str) -> None:
        """``nick`` is online again: bring them back to the games they were away from now,
        rather than at the next :meth:`tick`."""
        if not self.is_online(nick):
            return
        for table in self.running(nick):
            seat = table.seat_of(nick)
            if seat is not None and seat in table.away:
                self._check_away(table, self.clock())

    def tick(self) -> None:
        """Expire challenges, bring back players who reconnected, end games whose reconnect
        window or move clock ran out. Call it often (the broker: every 0.1 s)."""
        now = self.clock()
        for challenge in [c for c in self.challenges.values() if c.expires_at <= now]:
            notify = tuple(n for n in (challenge.challenger, challenge.opponent) if n != BOT_NAME)
            self._close(challenge, "expired", notify)
        finished, keep_s = self._finished, self.settings.finished_keep_s
        while finished and (len(finished) > self.settings.max_finished_kept
                            or now - (finished[0].ended_at or now) >= keep_s):
            self.tables.pop(finished.popleft().id, None)
        for table in list(self._running.values()):
            if table.away:
                self._check_away(table, now)
            elif table.deadline is not None and now >= table.deadline:
                mover = table.game.turn
                assert mover is not None
                table.game.end(1 - mover, "time")
                self._finish(table)

    def _check_away(self, table: Table, now: float) -> None:
        back = [s for s in table.away if self.is_online(table.players[s])]
        for seat in back:
            del table.away[seat]
        if not table.away:
            self._start_clock(table)
            self._changed(table)
            return
        lapsed = [s for s, end in table.away.items() if now >= end]
        if not lapsed:
            if back:
                self._changed(table)
            return
        present = [s for s in (0, 1) if s not in table.away]
        winner = present[0] if present else None
        table.game.end(winner, "disconnect" if present else "abandoned")
        self._finish(table)

    # inside ---------------------------------------------------------------------------------

    def _game_class(self, kind: str) -> type[Game]:
        cls = self.games.get(kind)
        if cls is None:
            raise GameError(GameErrorCode.BAD_REQUEST,
                            f"unknown game {kind[:40]!r}: choose {', '.join(sorted(self.games))}")
        return cls

    def _check_timeout(self, seconds: int) -> None:
        s = self.settings
        if not s.min_move_timeout_s <= seconds <= s.max_move_timeout_s:
            raise GameError(GameErrorCode.BAD_REQUEST,
                            f"the move time-out must be {s.min_move_timeout_s} to "
                            f"{s.max_move_timeout_s} s")

    def _check_room_for(self, nick: str) -> None:
        if len(self._running_by_nick.get(nick, ())) >= self.settings.max_games_per_nick:
            raise GameError(GameErrorCode.TOO_MANY, f"{nick} is already playing "
                            f"{self.settings.max_games_per_nick} games")

    def _seat(self, table: Table, nick: str) -> int:
        seat = table.seat_of(nick)
        if seat is None:
            raise GameError(GameErrorCode.NOT_PLAYER,
                            f"you are not playing game {table.id}: watch it instead")
        return seat

    def _challenge_to(self, nick: str, challenge_id: str, kind: str = "") -> Challenge:
        if not challenge_id:
            pending = [c for c in self.pending_for(nick) if not kind or c.kind == kind]
            if not pending:
                what = f"{self.games[kind].TITLE} challenge" if kind in self.games else "challenge"
                raise GameError(GameErrorCode.NOT_FOUND, f"no {what} is waiting for you")
            return pending[0]
        challenge = self.challenges.get(challenge_id)
        if challenge is None:
            raise GameError(GameErrorCode.NOT_FOUND,
                            f"there is no open challenge {challenge_id[:40]!r}")
        if challenge.opponent != nick:
            raise GameError(GameErrorCode.NOT_PLAYER, f"challenge {challenge_id} is not for you")
        return challenge

    def _close(self, challenge: Challenge, reason: str, notify: tuple[str, ...],
               by: str = "") -> None:
        self.challenges.pop(challenge.id, None)
        old = self.tables.get(challenge.rematch_of)
        if old is not None and old.rematch_challenge == challenge.id:
            old.rematch_challenge = ""
        self.outbox.append(Closed(challenge, reason, notify, "", by))

    def _new_id(self, taken: Mapping[str, object]) -> str:
        for _ in range(1000):
            new = f"{self.rng.getrandbits(32):08x}"
            if new not in taken and new not in self.tables and not self.id_taken(new):
                return new
        raise RuntimeError("no free game id")  # 2**32 ids: a broken rng

    def _start(self, kind: str, seats: tuple[str, str], options: Mapping[str, int],
               move_timeout_s: int, *, bot_seat: int | None = None,
               rematch_of: str = "", game_id: str = "") -> Table:
        game = self.games[kind](options)
        table = Table(
            id=game_id or self._new_id(self.tables), game=game, players=seats,
            move_timeout_s=move_timeout_s, bot_seat=bot_seat, started_ms=self.wall_ms(),
            rematch_of=rematch_of,
        )
        self.tables[table.id] = table
        self._running[table.id] = table
        for seat, nick in enumerate(seats):
            if seat != bot_seat:
                self._running_by_nick.setdefault(nick, {})[table.id] = None
        self._start_clock(table)
        self._changed(table)
        return table

    def _after_move(self, table: Table) -> None:
        if table.game.over:
            self._finish(table)
        else:
            self._start_clock(table)
            self._changed(table)

    def _start_clock(self, table: Table) -> None:
        turn = table.game.turn
        if turn is None or turn == table.bot_seat or table.away:
            table.deadline = None
        else:
            table.deadline = self.clock() + table.move_timeout_s

    def _changed(self, table: Table) -> None:
        table.version += 1
        self.outbox.append(Changed(table))
        if (table.bot_seat is not None and table.game.turn == table.bot_seat
                and not table.away):
            self.outbox.append(BotTurn(table, table.version))

    def _finish(self, table: Table) -> None:
        table.deadline = None
        table.away.clear()
        table.ended_ms = self.wall_ms()
        table.ended_at = self.clock()
        self._running.pop(table.id, None)
        self._finished.append(table)
        for nick in table.players:
            ids = self._running_by_nick.get(nick)
            if ids is not None:
                ids.pop(table.id, None)
                if not ids:
                    del self._running_by_nick[nick]
        self._changed(table)
        self.outbox.append(Finished(table))
