"""Command line: ``pfbench run|plan|train|sample|eval|...`` (typer + rich); no logic of its own.

The commands live in ``pfbench.cli.suites`` (suites and their results), ``pfbench.cli.studies`` (views across
suites) and ``pfbench.cli.stages`` (one stage at a time); they are registered here in the order ``pfbench --help`` lists them. User errors (``PfbenchError``) print
one line and exit with status 1; nothing is written half-way.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from pfbench import PfbenchError
from pfbench.cli import stages, studies, suites
from pfbench.cli.common import err_console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Patch Forcing benchmark harness.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: embedded preview, VAE latent stores.")
assets_app = typer.Typer(no_args_is_help=True, help="Shipped evaluation networks and checkpoints.")
app.add_typer(data_app, name="data")
app.add_typer(assets_app, name="assets")
# ``pfbench --help`` lists the commands in this order.
app.command()(suites.run)
app.command()(suites.plan)
app.command()(stages.train)
app.command()(suites.report)
app.command()(studies.hetero)
app.command()(suites.compare)
app.command()(suites.baseline)
app.command()(stages.sample)
app.command()(stages.bench)
app.command("eval")(stages.eval_)
data_app.command("preview")(stages.data_preview)
data_app.command("encode")(stages.data_encode)
assets_app.command("build")(stages.assets_build)
app.command()(suites.figures)
app.command()(suites.pareto)
app.command()(suites.tune)
app.command()(suites.parity)
app.command()(stages.fetch)
assets_app.command("export")(stages.assets_export)


def main() -> None:
    """Console entry point: one-line errors, non-zero exit."""
    if sys.argv[1:2] != ["fetch"]:  # only `pfbench fetch` may reach the Hugging Face hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()  # typer turns Ctrl-C into exit status 130 (commands say what is kept: common.kept_on_ctrl_c)
    except PfbenchError as err:
        # escape: messages hold key paths and lists ("grid: [{models: [m], ...}]") that rich would read as markup
        err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as err:
        err_console.print(f"[red]error:[/] {err.strerror or err}: {err.filename or ''}", soft_wrap=True)
        sys.exit(1)


__all__ = ["app", "main"]
