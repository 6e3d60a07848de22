"""``zmeet keys``: your key pair (made on first use) and the brokers' keys you have pinned.

A person's identity on every broker is their CurveZMQ public key (docs/protocol.md 5): the
nicks they register belong to it. ``zmeet keys`` shows it, so that a broker's owner can list it
in ``zmeet broker --allow-keys FILE``, and ``--forget ADDRESS`` drops a broker's pinned key
after its owner changed it on purpose (as ``ssh-keygen -R`` does for a host).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from zmeet import keys
from zmeet.errors import ZmeetError

from .common import _fail


@click.command(name="keys")
@click.option("--identity", envvar="ZMEET_IDENTITY", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Your key pair file [$XDG_CONFIG_HOME/zmeet/identity.key_secret] "
                   "(env ZMEET_IDENTITY).")
@click.option("--forget", "forget", metavar="ADDRESS", default=None,
              help="Forget the key pinned for the broker at ADDRESS (tcp://HOST:PORT).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_command(identity: Path | None, forget: str | None, as_json: bool) -> None:
    """Show your public key and its fingerprint (making the key pair on first use), or
    forget a broker's pinned key."""
    known = keys.KnownBrokers()
    if forget is not None:
        address, _key = keys.parse_address(forget)
        gone = known.forget(address)
        if as_json:
            click.echo(json.dumps({"type": "forgot", "address": address, "keys": gone,
                                   "file": str(known.path)}))
        elif gone:
            click.echo(f"forgot the key of {address} ({known.path})")
        else:
            _fail(f"no key is pinned for {address} in {known.path}")
        return
    path = identity or keys.default_identity_path()
    try:
        pair, made = keys.load_or_create(path)
    except (ZmeetError, OSError) as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"type": "identity", "key": pair.public_text,
                               "fingerprint": pair.fingerprint, "file": str(path),
                               "made": made, "known_brokers": str(known.path)}))
        return
    if made:
        click.echo(f"made a new key pair in {path}")
    click.echo(f"key:         {pair.public_text}")
    click.echo(f"fingerprint: {pair.fingerprint}")
    click.echo(f"file:        {path}")


COMMANDS = (keys_command,)
