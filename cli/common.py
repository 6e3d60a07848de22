"""What every ``zmeet`` command shares: the ``--broker``, ``--nick`` and ``--connect-timeout``
options, the error exit, logging, signals and the session a client command opens.

The feature modules of ``zmeet_cli`` import from here and from nothing above them; the
composition root (:mod:`zmeet_cli.main`) imports them and adds their commands to its group.

Errors print one line to stderr and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
import gevent
import zmq.green as zmq_green

from zmeet import __version__
from zmeet.client import Session
from zmeet.errors import ZmeetError

DEFAULT_BROKER = "tcp://127.0.0.1:5555"

broker_option = click.option(
    "--broker", envvar="ZMEET_BROKER", default=DEFAULT_BROKER, show_default=True,
    help="Control endpoint of the broker (env ZMEET_BROKER).",
)
nick_option = click.option(
    "--nick", envvar="ZMEET_NICK", required=True,
    help="Your nick: 1 to 32 letters, digits, '_' or '-' (env ZMEET_NICK).",
)
timeout_option = click.option(
    "--connect-timeout", "connect_timeout_s", type=click.FloatRange(0.1, 120), default=5.0,
    show_default=True, help="Seconds to wait for the broker before giving up.",
)

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _fail(exc: BaseException | str) -> NoReturn:
    """Print ``zmeet: error: <exc>`` on stderr and exit 1."""
    click.echo(f"zmeet: error: {exc}", err=True)
    sys.exit(1)


def _setup_logging(level: str) -> None:
    """Log records of ``level`` (``DEBUG`` .. ``ERROR``) and above on stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _on_signals(callback: Callable[[], Any]) -> list:
    """Run ``callback`` on SIGINT and SIGTERM (in the hub, as gevent delivers them); returns
    the handlers, to ``cancel()`` when done."""
    return [gevent.signal_handler(sig, callback) for sig in (signal.SIGINT, signal.SIGTERM)]


def _open_session(broker: str, nick: str, timeout_s: float) -> Session:
    """A :class:`Session` connected to ``broker`` as ``nick`` (``timeout_s`` per reply); on
    any :class:`ZmeetError` (no broker, nick in use, invalid nick) it fails: exit 1."""
    session = Session(broker, nick, timeout_s=timeout_s, client=f"zmeet-cli/{__version__}")
    try:
        session.connect()
    except ZmeetError as exc:
        _fail(exc)
    return session


def _release_zmq() -> None:
    """Close the sockets of the clients' shared ZeroMQ context and terminate it, before the
    interpreter's exit handlers run.

    A media frame sent without a copy is released by libzmq's reaper thread after its socket is
    closed, through pyzmq's garbage-collector thread. If that happens while pyzmq's own exit
    handler stops that thread, the handler's ``Context.term`` waits forever (seen in CI: an
    uploading ``zmeet send`` whose broker was killed never exited; pyzmq#1003). Terminating the
    context here waits for the reaper first, so nothing is left to release at exit.

    It closes every socket of that shared context: a program that calls ``zmeet_cli.main.main``
    in its own process (click's CliRunner, an embedding) loses the sockets it made there too."""
    if getattr(zmq_green.Context, "_instance", None) is not None:  # pyzmq's singleton, if made
        zmq_green.Context.instance().destroy(linger=0)
