"""`python -m cli ...`: the same command as the installed `tradewind` script (and the same name in its
messages)."""

from cli.app import app

app(prog_name="tradewind")
