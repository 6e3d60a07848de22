"""The runs of K cells in a row on an N x N board: the line tables that the tic-tac-toe rules
(:mod:`zmeet.games.tictactoe`) and its bot (:mod:`zmeet.games.bot`) both use.

Cells are 0-based indexes, row by row (cell number ``i + 1`` on the wire). Pure: no I/O, no
clock; the tables are cached per ``(size, k)``.
"""

from __future__ import annotations

from functools import lru_cache

DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
"""``(row step, column step)`` of a run: along a row, a column, a diagonal, an anti-diagonal."""


@lru_cache(maxsize=64)
def lines(size: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Every run of ``k`` cells in a row, column or diagonal of a ``size`` x ``size`` board,
    as tuples of 0-based cell indexes."""
    out = []
    for r in range(size):
        for c in range(size):
            for dr, dc in DIRECTIONS:
                end_r, end_c = r + dr * (k - 1), c + dc * (k - 1)
                if 0 <= end_r < size and 0 <= end_c < size:
                    out.append(tuple((r + dr * i) * size + c + dc * i for i in range(k)))
    return tuple(out)


@lru_cache(maxsize=64)
def lines_through(size: int, k: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """For each cell index (``size * size`` entries), the runs of :func:`lines` that contain
    it."""
    by_cell: list[list[tuple[int, ...]]] = [[] for _ in range(size * size)]
    for line in lines(size, k):
        for i in line:
            by_cell[i].append(line)
    return tuple(tuple(x) for x in by_cell)


__all__ = ["DIRECTIONS", "lines", "lines_through"]
