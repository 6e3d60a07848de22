"""The one tree of zmeet's exceptions (h11 ``_util.py`` and magic-wormhole ``errors.py``).

Every exception zmeet raises on purpose derives from :class:`ZmeetError`. Each class's
docstring is written for people: the CLI prints it (or the instance's message) and exits 1.
"""

from __future__ import annotations


class ZmeetError(Exception):
    """Something went wrong in zmeet."""

    def __str__(self) -> str:
        text = super().__str__()
        return text or (self.__doc__ or type(self).__name__).strip()


class ProtocolError(ZmeetError):
    """A message broke the zmeet wire protocol (docs/protocol.md).

    ``code`` is an :class:`zmeet.protocol.ErrorCode` value; ``req_id`` is the request id of the
    offending message when it could be read (else 0), so that a broker can answer
    ``ERROR(req_id, code, reason)``.
    """

    def __init__(self, reason: str, code: int = 400, req_id: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.req_id = req_id


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol does not allow (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class BrokerUnavailable(ZmeetError):
    """The broker did not answer. Is `zmeet broker` running, and is --broker right?"""


class KeyFileError(ZmeetError):
    """A key file is not usable (missing its secret key, or readable by others)."""


class BadKey(ZmeetError):
    """A key is not 40 characters of Z85 or 64 hex digits (a CurveZMQ public key)."""


class BrokerKeyChanged(ZmeetError):
    """The broker's key is not the one remembered for it: someone may be impersonating it."""


class InsecureBroker(ZmeetError):
    """The broker runs without encryption (`zmeet broker --insecure`)."""


class Refused(ZmeetError):
    """A request was refused: ``code`` (an :class:`zmeet.protocol.ErrorCode` value, an int) and
    ``reason`` (text for people) say why (docs/protocol.md, "Errors").

    The one refusal type of zmeet. On the broker, a service handler or a domain rule (chat
    rooms, games) raises it and the broker answers ``ERROR(req_id, code, reason)`` and serves
    on; on the client, :class:`~zmeet.client.Session` raises it for an ERROR reply.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = int(code)
        self.reason = reason


class NickInUse(Refused):
    """That nick is in use on this broker: choose another with --nick."""


class RateLimited(Refused):
    """The broker is limiting how fast this client sends: wait a moment and try again.

    ``retry_after_ms`` (an int, >= 0) is how long the broker asked to wait before the same
    request is admitted (ERROR RATE_LIMITED, docs/protocol.md, "Rate limits"). The client
    session waits it out and retries by itself, a bounded number of times; this reaches the
    caller only past that bound."""

    def __init__(self, code: int, reason: str, retry_after_ms: int = 0) -> None:
        super().__init__(code, reason)
        self.retry_after_ms = int(retry_after_ms)


class DeviceError(ZmeetError):
    """A camera, screen, video file or window could not be opened or read."""
