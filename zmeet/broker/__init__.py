"""The broker: gevent + zmq.green server loop over the chat domain and the SQLite store."""

from __future__ import annotations

from . import files as _files  # noqa: E402,F401  (adds FilesService to DEFAULT_SERVICES)
from . import games as _games  # noqa: E402,F401  (adds GamesService to DEFAULT_SERVICES)
from .server import Broker, BrokerConfig, default_data_dir, derive_endpoints
from .store import Store

__all__ = ["Broker", "BrokerConfig", "Store", "default_data_dir", "derive_endpoints"]
