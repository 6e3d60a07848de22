"""The click front end of zmeet, installed as ``zmeet_cli`` (the ``zmeet`` console script)."""
