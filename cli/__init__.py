"""The click front end of zmeet, installed as ``zmeet_cli`` (the ``zmeet`` console script).

- :mod:`~zmeet_cli.main`: the composition root, the click group ``main`` that adds every
  feature's commands and gives the chat its plugins (``python -m zmeet_cli`` runs it too);
- :mod:`~zmeet_cli.common`: the options and helpers every command shares;
- :mod:`~zmeet_cli.render`: how room events read (pure renderers, one per event type);
- :mod:`~zmeet_cli.terminal`: the ``zmeet join`` chat terminal and its :class:`Plugin` type;
- feature modules, importing only the three above: :mod:`~zmeet_cli.broker`,
  :mod:`~zmeet_cli.chat`, :mod:`~zmeet_cli.meeting_controls`, :mod:`~zmeet_cli.files`,
  :mod:`~zmeet_cli.games` (with :mod:`~zmeet_cli.game_display`), :mod:`~zmeet_cli.bench`.
"""
