"""The ``headscope`` command's entry point: ``main``, which imports and runs the typer app (``commands.app``) so
that a Ctrl-C at any moment, the imports included, is one line (``interrupts``)."""

from __future__ import annotations

from typing import Any


def main() -> None:
    from .interrupts import guarded

    with guarded():
        from .commands import app            # typer and the commands: imports that a Ctrl-C may cut

        try:
            app()
        finally:
            from .collection import exiting
            from .common import launched

            exiting(enabled=launched() is None)


def __getattr__(name: str) -> Any:
    if name == "app":                        # ``from headscope.cli.app import app``: built on first use
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
