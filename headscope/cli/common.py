"""What every command shares: choices as enums, help texts, logging to stderr, the re-runnable command line,
the --out check and one-line failures."""

from __future__ import annotations

import contextlib
import enum
import logging
import shlex
import sys
from pathlib import Path
from typing import Iterator

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


def _without_flag_types(params: list) -> list:
    """``params`` with no value type shown for a flag (an option that takes no value): typer writes ``<bool>``
    beside every flag in --help, as if it took one."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(typer.core.TyperCommand):
    """A command whose --help shows a value type only for options that take a value."""

    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))


class Group(typer.core.TyperGroup):
    """The ``headscope`` group, whose --help shows no value type for --help (see :class:`Command`)."""

    def get_params(self, ctx: typer.Context) -> list:
        return _without_flag_types(super().get_params(ctx))


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


def setup_logging(doing: str | None = None) -> None:
    """Log to stderr. Every command calls it first: the command has begun, and is ``doing`` this until it has
    anything to write (a Ctrl-C then ends it with one line; None: the command handles Ctrl-C itself)."""
    from .interrupts import begin

    begin(doing)
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


@contextlib.contextmanager
def holding(out: Path, ranks: tuple[int, int] | None = None) -> Iterator[None]:
    """Hold --out's lock while the command runs (under a launcher, rank 0's, which writes it): another process
    that writes into the same folder meanwhile is refused in one line."""
    from ..errors import HeadscopeError
    from ..reports.folder import output_lock

    if ranks is not None and ranks[0] != 0:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(output_lock(out))
        except HeadscopeError as exc:
            fail(str(exc))
        yield


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as the command's one error line, the settings it names as flags (``errors.as_flags``),
    and exit with ``code``; after a Ctrl-C that came before
    anything was written, the error is its consequence (a library may turn the interrupt into another error),
    so the line says that instead, with code 130."""
    from ..errors import as_flags, escape_controls, shorten
    from .interrupts import interrupted, said

    if interrupted() is not None:
        message, code = interrupted(), 130
    said()
    typer.echo(f"headscope: error: {escape_controls(shorten(as_flags(message)))}", err=True)
    raise typer.Exit(code)


def launched() -> tuple[int, int] | None:
    from ..run.distributed import world

    return world()

