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
    """The request names a room the client has not joined."""
    UNKNOWN_COMMAND = 405
    """The command is not one this broker knows."""
    NICK_IN_USE = 409
    """Another client holds that nick."""
    MESSAGE_TOO_LARGE = 413
    """A text, room topic or whole message is over its limit."""
    INVALID_NAME = 422
    """A nick or room name does not match its pattern."""
    VERSION_MISMATCH = 426
    """The header carries a protocol version this broker does not speak."""
    TOO_MANY = 429
    """Too many rooms joined, or history asked beyond MAX_HISTORY."""
    INTERNAL_ERROR = 500
    """The broker failed; it logged the cause and goes on serving."""
