"""Games: move round trip with many concurrent games on one broker.

A ``zmeet broker`` subprocess (heartbeat 60 s, so that idle sessions need no PING during the
run). One client process holds ``2 x --games`` sessions (a DEALER each) and plays ``--games``
tic-tac-toe games at once, pair by pair; a finished game (9 moves, a draw) is followed at once
by a new challenge between the same pair. Each player thinks for an exponentially distributed
time (mean ``--think-ms``) before each move, so that the broker sees about ``games / think``
moves per second, as from people; ``--think-ms 0`` moves as soon as it may (saturation).

The client is plain pyzmq on one epoll loop, and reads GAME-STATE bodies with msgpack alone,
so that it costs the machine (two shared cores) as little as it can: the figures are mostly
the broker's.

Measured per MOVE, on the client's clock: the *round trip*, from sending MOVE to receiving
the mover's own GAME-STATE carrying the move (request, the broker judging it, the state to both
players, and with ``--watched`` published for spectators too: every game is asked WATCH
once), and the *delivery* to the opponent (from the same send
to the opponent's GAME-STATE). Also the broker's and the client's CPU (percent of one core)
and the moves per second actually made.

    python -m benchmarks.games_rtt [--games 1000] [--think-ms 1000 ...] [--seconds 20]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
import resource
import selectors
import time

import msgpack
import zmq

from zmeet import protocol as p
from zmeet.protocol import games as pg

from .common import broker_process, histogram, percentiles_ms, save, table

DRAW = (1, 5, 9, 2, 8, 7, 3, 6, 4)
"""Cells of a 3 x 3 game that ends in a draw, X first: every game is 9 moves long."""


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Player:
    """One session: a DEALER. X (the challenger) plays DRAW's odd moves, O the even ones."""

    __slots__ = ("nick", "sock", "ids", "opponent", "seat", "game", "version", "sent_at")

    def __init__(self, ctx: zmq.Context, control: str, nick: str, seat: int) -> None:
        self.nick = nick
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(control)
        self.ids = itertools.count(1)
        self.opponent: Player | None = None
        self.seat = seat
        self.game = ""
        self.version = 0
        self.sent_at: dict[int, float] = {}  # moves in the game after this one -> send time

    def send(self, cls, **fields) -> None:
        self.sock.send_multipart(p.encode(cls(req_id=next(self.ids), **fields)))


class Bench:
    def __init__(self, control: str, games: int, think_ms: float, watched: bool) -> None:
        self.watched = watched
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 2 * games + 64)  # a context option, not a socket one
        self.think_s = think_ms / 1000
        self.rng = random.Random(1)
        self.rtt = histogram()
        self.delivery = histogram()
        self.recording = False
        self.moves = self.games_done = self.errors = self.welcomed = 0
        self.due: list[tuple[float, int, Player, str, int]] = []
        self.seq = itertools.count()
        self.players: list[Player] = []
        self.selector = selectors.EpollSelector()
        for i in range(games):
            x = Player(self.ctx, control, f"x{i}", 0)
            o = Player(self.ctx, control, f"o{i}", 1)
            x.opponent, o.opponent = o, x
            self.players += [x, o]
        for pl in self.players:
            self.selector.register(pl.sock.getsockopt(zmq.FD), selectors.EVENT_READ, pl)

    # the loop ---------------------------------------------------------------------------------

    def run_for(self, seconds: float, until=None) -> None:
        """Serve sockets and due moves for ``seconds`` (or until ``until()`` is true)."""
        end = time.perf_counter() + seconds
        while True:
            now = time.perf_counter()
            if now >= end or (until is not None and until()):
                return
            while self.due and self.due[0][0] <= now:
                _, _, player, game, count = heapq.heappop(self.due)
                self.move(player, game, count)
            wait = min(end, self.due[0][0] if self.due else end) - time.perf_counter()
            for key, _ in self.selector.select(max(0.0, wait)):
                self.drain(key.data)

    def drain(self, player: Player) -> None:
        sock = player.sock
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK)
            now = time.perf_counter()
            command = frames[1]
            if command == b"GAME-STATE":
                self.on_state(player, msgpack.unpackb(frames[2])["game"], now)
            elif command in (b"OK", b"CHALLENGE-SENT", b"ACCEPTED", b"GAME-SNAPSHOT"):
                continue
            else:
                self.on_other(player, p.decode(frames))

    def on_other(self, player: Player, message: p.Message) -> None:
        if isinstance(message, p.Welcome):
            self.welcomed += 1
        elif isinstance(message, pg.ChallengeOffer):
            player.send(pg.Accept, challenge_id=message.challenge_id)  # drain() looks again
        elif isinstance(message, p.Error):
            self.errors += 1
            print(f"{player.nick}: error {message.code}: {message.reason}")

    def on_state(self, player: Player, view: dict, now: float) -> None:
        if view["id"] != player.game:
            if view["version"] != 1:
                return  # a late state of a finished game
            player.game, player.version = view["id"], 0
            player.sent_at.clear()
            if self.watched and player.seat == 0:  # then the broker publishes its states
                player.send(pg.Watch, game_id=view["id"])
        if view["version"] <= player.version:
            return
        player.version = view["version"]
        moves = view["moves"]
        if moves and self.recording:
            mover = player if moves[-1]["seat"] == player.seat else player.opponent
            sent = mover.sent_at.get(len(moves))
            if sent is not None:
                (self.rtt if mover is player else self.delivery).record_value(
                    max(1, int((now - sent) * 1e6)))
        if view["status"] == "over":
            if player.seat == 0:
                self.games_done += 1
                self.challenge(player)
            return
        if view["turn"] == player.nick:
            due = now + (self.rng.expovariate(1 / self.think_s) if self.think_s else 0.0)
            heapq.heappush(self.due, (due, next(self.seq), player, view["id"], len(moves) + 1))

    # requests ---------------------------------------------------------------------------------

    def move(self, player: Player, game: str, count: int) -> None:
        if player.game != game:
            return
        player.sent_at[count] = time.perf_counter()
        player.send(pg.MakeMove, game_id=game, value=DRAW[count - 1])
        self.moves += 1
        self.drain(player)  # an edge-triggered FD: look again after a send

    def challenge(self, x: Player) -> None:
        assert x.opponent is not None
        x.send(pg.Challenge, game="ttt", options={}, opponent=x.opponent.nick,
               move_timeout_s=3600)
        self.drain(x)

    def connect(self) -> float:
        t0 = time.perf_counter()
        for pl in self.players:
            pl.send(p.Hello, nick=pl.nick, client="bench")
            self.drain(pl)
        self.run_for(60, until=lambda: self.welcomed == len(self.players))
        if self.welcomed != len(self.players):
            raise RuntimeError(f"only {self.welcomed} of {len(self.players)} sessions welcomed")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.selector.close()
        for pl in self.players:
            pl.sock.close(linger=0)
        self.ctx.term()


def run(games: int, think_ms: float, seconds: float, warmup_s: float,
        watched: bool = False) -> dict:
    _raise_fd_limit()
    with broker_process("--heartbeat-ms", "60000") as (endpoints, proc):
        bench = Bench(endpoints["control"], games, think_ms, watched)
        try:
            connect_s = bench.connect()
            for pl in bench.players[::2]:
                bench.challenge(pl)
            bench.run_for(warmup_s)
            bench.recording = True
            moves0, games0, t0 = bench.moves, bench.games_done, time.perf_counter()
            cpu0, own0 = _cpu_s(proc.pid), _cpu_s(os.getpid())
            bench.run_for(seconds)
            elapsed = time.perf_counter() - t0
            broker_cpu = 100 * (_cpu_s(proc.pid) - cpu0) / elapsed
            client_cpu = 100 * (_cpu_s(os.getpid()) - own0) / elapsed
            running = sum(1 for pl in bench.players[::2] if pl.game)
        finally:
            bench.close()
    return {
        "games": games, "games_playing": running, "think_ms": think_ms, "sessions": 2 * games,
        "watched": watched,
        "connect_s": round(connect_s, 2), "moves_per_s": (bench.moves - moves0) / elapsed,
        "games_finished_per_s": (bench.games_done - games0) / elapsed,
        "broker_cpu_pct": broker_cpu, "client_cpu_pct": client_cpu, "errors": bench.errors,
        "rtt": percentiles_ms(bench.rtt), "delivery": percentiles_ms(bench.delivery),
        "load_avg_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=1000, help="concurrent games")
    parser.add_argument("--think-ms", type=float, action="append", default=None,
                        help="mean think time per move; repeat for several runs [2000, 1000, 0]")
    parser.add_argument("--seconds", type=float, default=20, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=5, help="seconds before measuring")
    parser.add_argument("--watched", action="store_true",
                        help="ask WATCH for every game, so that its states are published too")
    args = parser.parse_args()
    rows = []
    for think_ms in args.think_ms or [2000.0, 1000.0, 0.0]:
        r = run(args.games, think_ms, args.seconds, args.warmup, args.watched)
        rows.append({
            "games": r["games"], "watched": args.watched, "think_ms": think_ms,
            "moves_per_s": r["moves_per_s"],
            "broker_cpu_pct": r["broker_cpu_pct"], "client_cpu_pct": r["client_cpu_pct"],
            "rtt_p50_ms": r["rtt"]["p50_ms"], "rtt_p99_ms": r["rtt"]["p99_ms"],
            "rtt_max_ms": r["rtt"]["max_ms"], "delivery_p50_ms": r["delivery"]["p50_ms"],
            "delivery_p99_ms": r["delivery"]["p99_ms"], "errors": r["errors"], "detail": r,
        })
    print(table(rows, ["games", "watched", "think_ms", "moves_per_s", "broker_cpu_pct",
                       "client_cpu_pct",
                       "rtt_p50_ms", "rtt_p99_ms", "rtt_max_ms", "delivery_p50_ms",
                       "delivery_p99_ms", "errors"]))
    name = "games-rtt-watched" if args.watched else "games-rtt"
    print(f"results: {save(name, {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
