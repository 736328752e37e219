"""The typer app of the ``headscope`` command: each command registered from its module (``app.main`` runs it)."""

from __future__ import annotations

import typer

from ..tasks import TASKS
from . import compare as compare_command
from . import explain as explain_command
from . import interventions, patch as patch_command, probe as probe_command
from . import run as run_command
from .common import Command, Group

app = typer.Typer(cls=Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find out what every attention head of a transformer does.")
for command in (run_command.run, run_command.merge, probe_command.probe, compare_command.compare,
                explain_command.explain, interventions.ablate, interventions.context,
                patch_command.patch):
    app.command(cls=Command)(command)


@app.command(cls=Command)
def models() -> None:
    """List the model aliases that load offline."""
    from ..models.loading import list_aliases

    for name, desc in list_aliases().items():
        typer.echo(f"{name:10s} {desc}")
    typer.echo("Any Hugging Face id or local model folder also works with --model.")


@app.command(cls=Command)
def tasks() -> None:
    """List the analysis tasks."""
    for task in TASKS.values():
        typer.echo(f"{task.name:11s} {task.description}" + ("  [needs trees]" if task.data == "treebank" else ""))
