"""What every command shares: choices as enums, help texts, logging to stderr, the re-runnable command line,
the --out check and one-line failures."""

from __future__ import annotations

import enum
import logging
import shlex
import sys
from pathlib import Path

import typer

from ..tasks import TASKS, default_tasks


class OnError(str, enum.Enum):
    fail = "fail"
    skip = "skip"


def format_names() -> list[str]:
    from ..datasets.formats import FORMATS

    return list(FORMATS)


# --format choices come from the format registry
Format = enum.Enum("Format", [(name, name) for name in format_names()], type=str)


class Control(str, enum.Enum):
    random_init = "random-init"


def tasks_help() -> str:
    names = ", ".join(TASKS)
    default = ", ".join(default_tasks())
    auto = ", ".join(t.name for t in TASKS.values() if t.auto)
    return (f"Comma-separated: {names} (see `headscope tasks`). Default: without --data, {default} on the bundled "
            f"samples; with --data, those of {auto} that the data supports.")


TASKS_HELP = tasks_help()


class Part(str, enum.Enum):
    encoder = "encoder"
    decoder = "decoder"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


FORCE_HELP = ("Write into --out even when it holds files headscope did not write (they are left as they are; "
              "same-named files are replaced) or another kind of headscope output (replaced whole).")
TRUST_HELP = ("Let a model folder run its own Python code (auto_map in its config). Off by default: read the code "
              "first.")


def setup_logging() -> None:
    logger = logging.getLogger("headscope")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("headscope: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def command_line(ctx: typer.Context) -> str:
    """The command as a re-runnable line: the options given on the command line, in declaration order."""
    parts = [ctx.command_path if ctx.command_path.startswith("headscope") else f"headscope {ctx.info_name}"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        flag = max(param.opts, key=len)
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            negative = getattr(param, "secondary_opts", None)
            parts.append(max(negative, key=len) if value is False and negative else flag)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [flag, shlex.quote(str(v.value if isinstance(v, enum.Enum) else v))]
    return " ".join(parts)


def check_out(out: Path, kind: str, force: bool) -> None:
    """An unusable --out fails now, in one line, not after the analysis."""
    from ..errors import HeadscopeError
    from ..reports.folder import check_output

    try:
        check_output(out, kind, force=force)
    except HeadscopeError as exc:
        fail(str(exc))


def fail(message: str, code: int = 2) -> None:
    from ..errors import escape_controls

    typer.echo(f"headscope: error: {escape_controls(message)}", err=True)
    raise typer.Exit(code)

def launched() -> tuple[int, int] | None:
    from ..run.distributed import world

    return world()

