"""What every ``zmeet`` command shares: the ``--broker`` options (with ``--broker-key``,
``--identity`` and ``--insecure``), ``--nick`` and ``--connect-timeout``, the error exit,
logging, signals and the session a client command opens.

The feature modules of ``zmeet_cli`` import from here and from nothing above them; the
composition root (:mod:`zmeet_cli.main`) imports them and adds their commands to its group.

Errors print one line to stderr and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import gevent
import zmq.green as zmq_green

from zmeet import __version__, keys
from zmeet.client import Session
from zmeet.errors import ZmeetError

DEFAULT_BROKER = "tcp://127.0.0.1:5555"

_TRUST: dict[str, Any] = {"broker_key": None, "identity": None, "insecure": False}
"""What the trust options of the command being run said (set by their callbacks)."""


def _set_trust(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        _TRUST[name] = value
    return store


def broker_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--broker`` (the command's ``broker`` argument) and the trust options that go with it,
    which :func:`_open_session` reads: ``--broker-key``, ``--identity``, ``--insecure``."""
    for option in reversed([
        click.option(
            "--broker", envvar="ZMEET_BROKER", default=DEFAULT_BROKER, show_default=True,
            help="The broker's address: tcp://HOST:PORT, or zmeet://HOST:PORT/KEY to pin its "
                 "key (env ZMEET_BROKER)."),
        click.option(
            "--broker-key", envvar="ZMEET_BROKER_KEY", default=None, expose_value=False,
            callback=_set_trust("broker_key"),
            help="Pin the broker's public key (Z85 or hex, as `zmeet broker` prints it) "
                 "instead of trusting it on first contact (env ZMEET_BROKER_KEY)."),
        click.option(
            "--identity", envvar="ZMEET_IDENTITY", default=None, expose_value=False,
            type=click.Path(dir_okay=False, path_type=Path), callback=_set_trust("identity"),
            help="Your key pair file [$XDG_CONFIG_HOME/zmeet/identity.key_secret, made on "
                 "first use] (env ZMEET_IDENTITY)."),
        click.option(
            "--insecure", is_flag=True, envvar="ZMEET_INSECURE", expose_value=False,
            callback=_set_trust("insecure"),
            help="Connect to a broker that runs without encryption (env ZMEET_INSECURE=1)."),
    ]):
        command = option(command)
    return command

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
    """A :class:`Session` connected to ``broker`` as ``nick`` (``timeout_s`` per reply), with
    the trust options of :func:`broker_option`; on any :class:`ZmeetError` (no broker, nick in
    use or registered to another key, the broker's key changed, a bad key file) it fails:
    exit 1. Says so on stderr, once, when it meets a broker's key for the first time."""
    try:
        identity = None
        if _TRUST["identity"] is not None:
            identity, made = keys.load_or_create(_TRUST["identity"])
            if made:
                click.echo(f"zmeet: made a new key pair in {_TRUST['identity']}", err=True)
        session = Session(broker, nick, timeout_s=timeout_s, client=f"zmeet-cli/{__version__}",
                          identity=identity, broker_key=_TRUST["broker_key"],
                          insecure=bool(_TRUST["insecure"]))
        session.connect()
    except ZmeetError as exc:
        _fail(exc)
    except OSError as exc:  # an identity file that cannot be read or written
        _fail(f"cannot use the key pair: {exc}")
    if session.first_contact and session.broker_key is not None:
        click.echo(f"zmeet: first contact with the broker at {session.broker}: its key is "
                   f"{keys.fingerprint(session.broker_key)}; remembered in "
                   f"{keys.KnownBrokers().path}", err=True)
    elif session.broker_key is None:
        click.echo(f"zmeet: warning: the broker at {session.broker} runs WITHOUT encryption "
                   "(--insecure): anyone on the network can read this session", err=True)
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
