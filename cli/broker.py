"""``zmeet broker``: run a broker, with every service of this front end (files, games) and their
settings given as options here (docs/protocol.md, 3.14 and 3.15).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from zmeet import keys
from zmeet.broker import Broker, BrokerConfig, default_data_dir, default_services
from zmeet.broker.ratelimit import DEFAULT_RATE_LIMITS, REQUEST_CLASSES, parse_rate
from zmeet.errors import ZmeetError
from zmeet.files import parse_size
from zmeet.games import ArenaSettings
from zmeet.protocol.limits import DEFAULT_HISTORY, HEARTBEAT_INTERVAL_MS

from .common import LOG_LEVELS, _fail, _on_signals, _setup_logging


@click.command()
@click.option("--bind", "address", default="tcp://127.0.0.1:5555", show_default=True,
              help="The broker's address (its entry lane, what clients are given); the other "
                   "lanes take the next four ports (tcp://HOST:* for any).")
@click.option("--control", default=None, help="Control (ROUTER) endpoint [port + 1].")
@click.option("--events", default=None, help="Events (PUB) endpoint [port + 2].")
@click.option("--media-in", default=None, help="Media in (ROUTER) endpoint [port + 3].")
@click.option("--media-out", default=None, help="Media out (XPUB) endpoint [port + 4].")
@click.option("--insecure", is_flag=True,
              help="No encryption and no keys (CURVE off): for loopback debugging and "
                   "benchmarks only. Anyone who can reach the ports can read and impersonate.")
@click.option("--allow-keys", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None,
              help="Admit only the client keys listed in FILE (one per line, as `zmeet keys` "
                   "prints them; '#' comments). Default: any key (--open).")
@click.option("--open", "open_", is_flag=True,
              help="Admit any client key (the default); nicks stay bound to their keys.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the SQLite store lives [$XDG_DATA_HOME/zmeet].")
@click.option("--history", type=click.IntRange(0, 1000), default=DEFAULT_HISTORY,
              show_default=True, help="Chat messages a join gets by default.")
@click.option("--heartbeat-ms", type=click.IntRange(50, 60_000), default=HEARTBEAT_INTERVAL_MS,
              show_default=True, help="Heartbeat interval; a client silent 5 intervals is gone.")
@click.option("--log-level", "broker_log_level", default=None,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="INFO logs joins and leaves, DEBUG every message. [INFO]")
@click.option("--json", "as_json", is_flag=True, help="Print the ready line as JSON.")
@click.option("--max-file-size", default="4G", show_default=True,
              help="Largest file shared through this broker (e.g. 500M, 4G); told at HELLO.")
@click.option("--media-forwarder", type=click.Choice(["auto", "native", "python"]),
              default="auto", show_default=True,
              help="Media forwarding loop: native (compiled at install) or python; auto takes "
                   "native if it was built.")
@click.option("--challenge-expiry", "challenge_expiry_s", type=click.FloatRange(0.1, 86_400),
              default=60.0, show_default=True,
              help="Seconds before an unanswered game challenge expires.")
@click.option("--reconnect-window", "reconnect_window_s", type=click.FloatRange(0.1, 86_400),
              default=60.0, show_default=True,
              help="Seconds a game waits for a player who left to come back.")
@click.option("--rate-limit", "rate_limit", multiple=True, metavar="CLASS=COUNT/SECONDS[:BURST]",
              help="Change one flood limit per client, e.g. chat=10/5:30 (10 every 5 s, 30 at "
                   "once) or chat=off; classes: " + ", ".join(REQUEST_CLASSES) + ". Defaults: "
                   + ", ".join(f"{k}={v.count}/{v.period_ms / 1000:g}:{v.burst}"
                               for k, v in DEFAULT_RATE_LIMITS.items()) + ".")
@click.option("--no-rate-limits", is_flag=True,
              help="Turn every flood limit off (benchmarks; never on a shared network).")
def broker(address, control, events, media_in, media_out, insecure, allow_keys, open_,
           data_dir, history, heartbeat_ms, broker_log_level, as_json, max_file_size="4G",
           media_forwarder="auto", challenge_expiry_s=60.0, reconnect_window_s=60.0,
           rate_limit=(), no_rate_limits=False) -> None:
    """Run a broker until Ctrl-C or SIGTERM.

    Prints one line when every lane is bound: the address clients are given, and the broker's
    public key, which they pin on first contact (or are given: zmeet://HOST:PORT/KEY).
    """
    _setup_logging(broker_log_level or "INFO")
    if allow_keys is not None and (open_ or insecure):
        raise click.UsageError("--allow-keys admits listed keys only: not with --open or "
                               "--insecure")
    allowed = None
    if allow_keys is not None:
        try:
            allowed = keys.load_key_list(allow_keys)
        except (ZmeetError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--allow-keys") from None
    try:
        max_file_bytes = parse_size(max_file_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-file-size") from None
    rate_limits = None if no_rate_limits else _rate_limits(rate_limit)
    config = BrokerConfig(
        address=address, control=control, events=events, media_in=media_in,
        media_out=media_out, insecure=insecure, allow_keys=allowed,
        data_dir=data_dir or default_data_dir(), history=history,
        heartbeat_interval_ms=heartbeat_ms, max_file_size=max_file_bytes,
        media_forwarder=media_forwarder, rate_limits=rate_limits,
        services=default_services(ArenaSettings(challenge_expiry_s=challenge_expiry_s,
                                        reconnect_window_s=reconnect_window_s)),
    )
    try:
        config.endpoints()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bind") from None
    server = Broker(config)
    try:
        server.start()
    except Exception as exc:  # zmq.ZMQError (address in use), sqlite3.Error (bad store),
        _fail(f"cannot start the broker: {exc}")  # RuntimeError (native forwarder not built)
    handlers = _on_signals(server.stop)
    key = server.public_key
    fingerprint = keys.fingerprint(key) if key else ""
    if insecure:
        click.echo("zmeet: WARNING: this broker runs with --insecure: no encryption, no keys; "
                   "anyone who can reach its ports can read every room and take any nick",
                   err=True)
    if as_json:
        click.echo(json.dumps({"type": "ready", "address": server.address,
                               "endpoints": server.endpoints, "key": key,
                               "fingerprint": fingerprint, "secure": not insecure,
                               "admits": "listed" if allowed is not None else "any",
                               "epoch": server.epoch, "data_dir": str(config.data_dir),
                               "media_forwarder": server.media_forwarder,
                               "rate_limits": {k: str(v) for k, v in (rate_limits or {}).items()}}))
    else:
        e = server.endpoints
        trust = (f"key {key} ({fingerprint})" if key else "INSECURE: no encryption")
        click.echo(f"zmeet broker ready at {server.address}: {trust}; control {e['control']} "
                   f"events {e['events']} media-in {e['media_in']} media-out {e['media_out']} "
                   f"data {config.data_dir} ({server.media_forwarder} media forwarder)")
    if rate_limits is None:
        click.echo("zmeet broker: rate limits are OFF (--no-rate-limits): one client can "
                   "flood everyone", err=True)
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        for h in handlers:
            h.cancel()
        server.stop()
    if server.crashed:
        _fail("the broker stopped after an internal error (see the log above)")


def _rate_limits(options: tuple[str, ...]) -> dict:
    """The broker's limits: DEFAULT_RATE_LIMITS changed by each ``--rate-limit CLASS=RATE``
    (``RATE`` as :func:`zmeet.broker.ratelimit.parse_rate` reads it, or ``off``)."""
    limits = dict(DEFAULT_RATE_LIMITS)
    for option in options:
        name, sep, value = option.partition("=")
        name = name.strip()
        if not sep or name not in REQUEST_CLASSES:
            raise click.BadParameter(f"{option!r}: use CLASS=COUNT/SECONDS[:BURST], CLASS one "
                                     f"of {', '.join(REQUEST_CLASSES)}",
                                     param_hint="--rate-limit")
        if value.strip() == "off":
            limits.pop(name, None)
            continue
        try:
            limits[name] = parse_rate(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate-limit") from None
    return limits
