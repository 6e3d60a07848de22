"""zmeet: self-hosted meetings, chat and games over ZeroMQ and gevent.

The layers (docs/architecture.md): :mod:`zmeet.protocol` is sans-IO, :mod:`zmeet.chat` and
:mod:`zmeet.media` are pure domain logic, :mod:`zmeet.broker` and :mod:`zmeet.client` drive them
with gevent and ``zmq.green``, and :mod:`zmeet.devices` adapts cameras, screens and windows.
"""

from __future__ import annotations

__version__ = "0.1.0"
