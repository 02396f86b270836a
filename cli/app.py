"""The `tradewind` command: the typer app, the one-line error handling around every verb, and the
verbs (grouped by job in the modules beside this one) registered in the order `--help` lists them.

Heavy libraries (Feast, MLflow, Ray, torch) are imported inside the verbs that need them, so
`tradewind --help` and the light verbs start fast.
"""

from __future__ import annotations

import os

# OpenMP threads (LightGBM) wait passively, not spinning: on shared cores spinning turns training into a
# crawl. Set before any verb loads LightGBM; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

# typer carries its own copy of click: its usage errors are these classes, not the click package's
from typer._click import Context
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from cli import benchmark_verbs, data_verbs, demo, model_verbs, schedule_verbs, serve_verbs
from cli.errors import BAD_INPUT_EXIT, FAILED_EXIT, debugging, echo_error, is_user_error, one_line


class OneLineErrors(TyperGroup):
    """Every verb ends a failure with one line on stderr and no traceback (unless --debug): bad
    input (`cli.errors.USER_ERRORS`, a wrong option value) exits 2, anything unexpected exits 1 naming
    the exception type. Here, around every verb, so a verb added later is covered too."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_errors.NoArgsIsHelpError:
            raise
        except click_errors.UsageError as error:  # `tradewind --bogus`
            _usage_error(error)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except click_errors.NoArgsIsHelpError:
            raise
        except click_errors.UsageError as error:  # a verb's wrong option, argument or value
            _usage_error(error)
        except (typer.Exit, typer.Abort, click_errors.ClickException):
            raise
        except Exception as error:
            if debugging(ctx):
                raise
            if is_user_error(error):
                echo_error(str(error))
                raise typer.Exit(BAD_INPUT_EXIT) from None
            first = one_line(str(error)) or "(no message)"
            echo_error(f"{type(error).__name__}: {first} (run with --debug for the traceback)")
            raise typer.Exit(FAILED_EXIT) from None


def _usage_error(error: click_errors.UsageError) -> NoReturn:
    where = f"{error.ctx.command_path}: " if error.ctx is not None else ""
    help_hint = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
    echo_error(f"{where}{error.format_message()}{help_hint}")
    raise typer.Exit(error.exit_code)


app = typer.Typer(
    cls=OneLineErrors,
    help="Tradewind: recommendation, demand forecasting and ad bidding for a cross-border marketplace.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="The Feast feature repo: build feature tables, apply, materialize.")
app.add_typer(features_app, name="features")
schedule_app = typer.Typer(
    help="Scheduled retraining (configs/schedule.yaml): run the due jobs, or print crontab / systemd units."
)
app.add_typer(schedule_app, name="schedule")


@app.callback()
def main(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default: configs/platform.yaml, or TRADEWIND_DATA_DIR).")
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error instead of one line.")
    ] = False,
) -> None:
    if data_dir is not None:
        os.environ["TRADEWIND_DATA_DIR"] = str(data_dir.resolve())


# data
app.command()(data_verbs.contract)
app.command()(data_verbs.generate)
app.command()(data_verbs.ingest)
app.command("forget-user")(data_verbs.forget_user)
features_app.command("build")(data_verbs.features_build)
features_app.command("apply")(data_verbs.features_apply)
features_app.command("materialize")(data_verbs.features_materialize)
# models: one set of verbs for every family
app.command()(model_verbs.train)
app.command()(model_verbs.retrain)
app.command()(model_verbs.tune)
app.command()(model_verbs.monitor)
schedule_app.command("run")(schedule_verbs.schedule_run)
schedule_app.command("status")(schedule_verbs.schedule_status)
schedule_app.command("crontab")(schedule_verbs.schedule_crontab)
schedule_app.command("systemd")(schedule_verbs.schedule_systemd)
app.command(context_settings=benchmark_verbs.BENCHMARK_CONTEXT, add_help_option=False)(
    benchmark_verbs.benchmark
)
app.command()(serve_verbs.serve)
# the whole flow
app.command()(demo.demo)

if __name__ == "__main__":
    app()
