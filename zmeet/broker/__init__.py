"""The broker: gevent + zmq.green server loop over its services (chat, games, files) and the
SQLite store. :func:`default_services` is the list ``zmeet broker`` runs."""

from __future__ import annotations

import functools

from ..games import ArenaSettings
from .files import FilesService
from .games import GamesService
from .server import Broker, BrokerConfig, default_data_dir, derive_endpoints
from .service import BrokerCore, Deferred, Service, ServiceFactory
from .store import Store


def default_services(arena: ArenaSettings | None = None) -> list[ServiceFactory]:
    """The services of a full broker beside chat (which the core always runs): files (its limit
    is ``BrokerConfig.max_file_size``), then games with ``arena``'s windows (default
    :class:`~zmeet.games.ArenaSettings`), the order the broker has always run them in. Pass it
    as ``BrokerConfig(services=...)``."""
    return [FilesService, functools.partial(GamesService, settings=arena or ArenaSettings())]


__all__ = [
    "Broker", "BrokerConfig", "BrokerCore", "Deferred", "Service", "ServiceFactory", "Store",
    "default_data_dir", "default_services", "derive_endpoints",
]
