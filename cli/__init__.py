"""The `tradewind` command: the top layer, above training and serving; each verb a thin call into the
layer that does the work. `cli.app` holds the typer app; the verbs are grouped by job beside it."""
