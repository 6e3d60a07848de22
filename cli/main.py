"""``zmeet``: the command line (click), and its composition root. The only layer that prints
for people.

This module holds the click group :func:`main` and says, explicitly, what it is made of: each
feature module (:mod:`~zmeet_cli.broker`, :mod:`~zmeet_cli.chat`, :mod:`~zmeet_cli.games`,
:mod:`~zmeet_cli.files`, :mod:`~zmeet_cli.keys`, :mod:`~zmeet_cli.bench`) exposes its
commands and imports nothing back from here; the chat terminal of ``zmeet join`` gets the
features' plugins and ``zmeet tail`` their renderers through click's ``ctx.obj["chat"]``
(:class:`~zmeet_cli.terminal.ChatFeatures`).
It runs as the ``zmeet`` script, as ``python -m zmeet_cli`` and as ``python -m zmeet_cli.main``.

Every client command takes ``--broker`` (or ``ZMEET_BROKER``; with ``--broker-key``,
``--identity`` and ``--insecure``) and ``--nick`` (or ``ZMEET_NICK``).
Errors print one line to stderr and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from zmeet import __version__

from . import bench, broker, chat, files, games, keys, privacy
from .common import LOG_LEVELS, _release_zmq
from .meeting_controls import MeetingControls
from .render import RENDERERS
from .terminal import ChatFeatures, JoinOptions, Plugin


def chat_plugins(options: JoinOptions) -> Sequence[Plugin]:
    """The plugins of one ``zmeet join`` terminal, in ``/help`` order."""
    return [MeetingControls(), privacy.PrivacyChat(),
            files.FilesChat(accept_files=options.accept_files), games.GamesChat()]


CHAT = ChatFeatures(renderers={**RENDERERS, **files.RENDERERS, **privacy.RENDERERS},
                    plugins=chat_plugins)
"""What the features add to the chat commands."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmeet")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="What to log on stderr.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """zmeet: meetings, chat and games on your own machine or LAN, over ZeroMQ."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level
    ctx.obj["chat"] = CHAT
    ctx.call_on_close(_release_zmq)  # runs when the command ends, sys.exit included


main.add_command(broker.broker)
for _command in (chat.say, chat.tail, chat.join, *games.COMMANDS, *files.COMMANDS,
                 *keys.COMMANDS, bench.bench):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
