"""Error codes of the ERROR reply (docs/protocol.md, section "Errors").

The numbers follow HTTP's classes as ZeroMQ's RFCs do (7/MDP, 27/ZAP): 4xx the request was
wrong and retrying it unchanged will fail again, 5xx the broker failed.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """docs/protocol.md, section "Errors"."""

    BAD_REQUEST = 400
    """The frames could not be decoded, or a field has the wrong type."""
    NO_SESSION = 401
    """A request other than HELLO came before HELLO (or after the session expired)."""
    NOT_MEMBER = 403
    """The request names a room the client has not joined (or a game or file it may not
    touch)."""
    NOT_FOUND = 404
    """No such game, challenge, file, upload or download, or nobody holds the nick named."""
    UNKNOWN_COMMAND = 405
    """The command is not one this broker knows."""
    NICK_IN_USE = 409
    """Another client holds that nick."""
    GONE = 410
    """The game is over."""
    PRECONDITION_FAILED = 412
    """The rules refuse the move, or the game is in the wrong state for the request."""
    MESSAGE_TOO_LARGE = 413
    """A text, room topic or whole message is over its limit."""
    NICK_REGISTERED = 423
    """The nick is registered to another key: only its owner can use it."""
    INVALID_NAME = 422
    """A nick or room name does not match its pattern."""
    VERSION_MISMATCH = 426
    """The header carries a protocol version this broker does not speak."""
    RATE_LIMITED = 420
    """The request is over its rate limit (docs/protocol.md, "Rate limits"): it was not
    applied; the same request is admitted after the ERROR's ``retry_after_ms``. 429 (HTTP's
    Too Many Requests) is TOO_MANY's here; 420 is the code Twitter's API used for rate
    limiting before 429 existed ("Enhance Your Calm")."""
    NOT_YOUR_TURN = 425
    """A move out of turn: wait for the opponent."""
    TOO_MANY = 429
    """Too many rooms, games, challenges or transfers at once, or a history or list asked
    beyond its limit."""
    INTERNAL_ERROR = 500
    """The broker failed; it logged the cause and goes on serving."""
