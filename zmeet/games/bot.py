"""The broker's tic-tac-toe bot: negamax (minimax) with alpha-beta pruning.

It wins at once when it can and blocks an immediate loss; then it searches. Boards with few free
cells (every 3 x 3 position) are searched to the end, so the bot never loses on 3 x 3. Larger
boards are searched by iterative deepening, bounded by a budget of positions visited (not wall
time, so that a move is the same on every machine), with a heuristic at the horizon: each run of
K cells that only one side occupies counts for it, more the fuller it is.

Pure and deterministic: no I/O, no clock, no randomness. Thread-safe (the broker runs it in
gevent's threadpool): it shares only an answer cache, filled by whole-dict operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from .lines import lines, lines_through

DEFAULT_NODE_BUDGET = 20_000
"""Positions the bot may visit for one move. A full 3 x 3 search needs far fewer."""

FULL_SEARCH_EMPTIES = 10
"""At most this many free cells: search to the end of the game (exact play)."""

FULL_SEARCH_BUDGET = 100_000
"""Positions a search to the end may visit (an empty 3 x 3 board takes about 7,600); past it,
the bot falls back to the bounded search."""

WIN = 1_000_000_000
"""Score of a won position (less the plies it takes, so that a quicker win scores higher)."""

_ANSWER_CACHE_SIZE = 200_000
_answers: dict[tuple, int] = {}


class _OutOfBudget(Exception):
    pass


@lru_cache(maxsize=64)
def _centre_order(size: int) -> tuple[int, ...]:
    """Cell indexes from the centre outwards (ties in index order): a good first guess."""
    mid = (size - 1) / 2
    return tuple(sorted(range(size * size),
                        key=lambda i: (abs(i // size - mid) + abs(i % size - mid), i)))


@lru_cache(maxsize=64)
def _neighbours(size: int) -> tuple[tuple[int, ...], ...]:
    out = []
    for i in range(size * size):
        r, c = divmod(i, size)
        out.append(tuple((r + dr) * size + c + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                         if (dr or dc) and 0 <= r + dr < size and 0 <= c + dc < size))
    return tuple(out)


def _weights(k: int) -> tuple[int, ...]:
    """Heuristic value of a run holding c marks of one side only, c = 0..k-1."""
    return (0, *(4 ** c for c in range(1, k)))


class _Search:
    """One search: the board with incremental run counts, so that a move and its undo cost
    O(runs through the cell) and the heuristic O(1)."""

    def __init__(self, cells: Sequence[int], size: int, k: int, budget: int) -> None:
        self.size, self.k, self.budget = size, k, budget
        self.cells = list(cells)
        self.nodes = 0
        self.lines = lines(size, k)
        index = {line: n for n, line in enumerate(self.lines)}
        self.through = [tuple(index[line] for line in runs) for runs in lines_through(size, k)]
        self.count = [[0] * len(self.lines), [0] * len(self.lines), [0] * len(self.lines)]
        self.weights = _weights(k)
        self.score = 0  # heuristic, from X's (mark 1) side
        self.near = [0] * (size * size)
        self.neighbours = _neighbours(size)
        self.order = _centre_order(size)
        self.empties = sum(1 for v in self.cells if not v)
        for i, v in enumerate(cells):
            if v:
                self.cells[i] = 0
                self.empties += 1
                self.make(i, v)

    def _run_value(self, n: int) -> int:
        x, o = self.count[1][n], self.count[2][n]
        if x and o:
            return 0
        return self.weights[x] if x else -self.weights[o]

    def make(self, i: int, mark: int) -> bool:
        """Put ``mark`` on cell ``i``; True if it completes K in a row."""
        self.cells[i] = mark
        self.empties -= 1
        won = False
        count = self.count[mark]
        for n in self.through[i]:
            self.score -= self._run_value(n)
            count[n] += 1
            if count[n] >= self.k:
                won = True
            else:
                self.score += self._run_value(n)
        for j in self.neighbours[i]:
            self.near[j] += 1
        return won

    def undo(self, i: int, mark: int) -> None:
        count = self.count[mark]
        for n in self.through[i]:
            if count[n] < self.k:
                self.score -= self._run_value(n)
            count[n] -= 1
            self.score += self._run_value(n)
        for j in self.neighbours[i]:
            self.near[j] -= 1
        self.cells[i] = 0
        self.empties += 1

    def candidates(self, first: int | None) -> list[int]:
        cells, near = self.cells, self.near
        if self.empties > FULL_SEARCH_EMPTIES:  # far from everything: not worth a look
            moves = [i for i in self.order if not cells[i] and near[i]]
            if not moves:
                moves = [i for i in self.order if not cells[i]][:1]
        else:
            moves = [i for i in self.order if not cells[i]]
        if first is not None and first in moves:
            moves.remove(first)
            moves.insert(0, first)
        return moves

    def negamax(self, depth: int, alpha: int, beta: int, mark: int, ply: int) -> int:
        """Score of the position for ``mark``, to move."""
        self.nodes += 1
        if self.nodes > self.budget:
            raise _OutOfBudget
        if depth == 0:
            return self.score if mark == 1 else -self.score
        best = -WIN - 1
        for i in self.candidates(None):
            if self.make(i, mark):
                value = WIN - ply - 1
            elif self.empties == 0:
                value = 0
            else:
                value = -self.negamax(depth - 1, -beta, -alpha, 3 - mark, ply + 1)
            self.undo(i, mark)
            if value > best:
                best = value
            if value > alpha:
                alpha = value
                if alpha >= beta:
                    break
        return best

    def root(self, depth: int, mark: int, first: int | None) -> tuple[int, int]:
        """Best ``(cell index, score)`` at ``depth``; ties go to the earlier cell in order.
        Raises _OutOfBudget (and leaves the board dirty: the search is then dropped)."""
        alpha, beta = -WIN - 1, WIN + 1
        best_i, best = -1, -WIN - 1
        for i in self.candidates(first):
            if self.make(i, mark):
                value = WIN - 1
            elif self.empties == 0:
                value = 0
            else:
                value = -self.negamax(depth - 1, -beta, -alpha, 3 - mark, 1)
            self.undo(i, mark)
            if value > best:
                best_i, best = i, value
            alpha = max(alpha, value)
        return best_i, best


def _immediate(cells: Sequence[int], size: int, k: int, mark: int) -> int | None:
    """A free cell that completes K in a row for ``mark``, or None."""
    for line in lines(size, k):
        free = [i for i in line if not cells[i]]
        if len(free) == 1 and all(cells[i] == mark for i in line if cells[i]):
            return free[0]
    return None


def best_move(cells: Sequence[int], size: int, k: int, mark: int,
              node_budget: int = DEFAULT_NODE_BUDGET) -> int:
    """The bot's move (a cell number, 1-based) for ``mark`` (1 for X, 2 for O) on ``cells``
    (N*N ints: 0 free, 1 X, 2 O).

    Raises ValueError if no cell is free. Same input, same answer.
    """
    if len(cells) != size * size or mark not in (1, 2):
        raise ValueError("cells must have size*size entries and mark must be 1 or 2")
    free = [i for i in _centre_order(size) if not cells[i]]
    if not free:
        raise ValueError("the board is full")
    for who in (mark, 3 - mark):  # win now, else block the loss
        cell = _immediate(cells, size, k, who)
        if cell is not None:
            return cell + 1
    key = (size, k, mark, tuple(cells))
    cached = _answers.get(key)
    if cached is not None:
        return cached
    if len(free) <= FULL_SEARCH_EMPTIES:  # to the end of the game: exact, then cached
        try:
            index, _ = _Search(cells, size, k, max(node_budget, FULL_SEARCH_BUDGET)).root(
                len(free), mark, None)
        except _OutOfBudget:
            pass
        else:
            if len(_answers) >= _ANSWER_CACHE_SIZE:
                _answers.clear()
            _answers[key] = index + 1
            return index + 1
    search = _Search(cells, size, k, node_budget)
    choice = free[0]
    for depth in range(1, len(free) + 1):
        try:
            index, value = search.root(depth, mark, choice)
        except _OutOfBudget:
            break
        choice = index
        if value >= WIN - size * size:  # a forced win found: take it
            break
    return choice + 1
