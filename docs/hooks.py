"""mkdocs hooks of headscope's site: the CLI reference generated from the typer app, and a check that every
public name of ``headscope`` has a docstring and a place in the API reference (a gap fails the build)."""

from __future__ import annotations

import re

from mkdocs.exceptions import PluginError

CLI_MARKER = "<!-- headscope-cli-reference -->"
API_PAGE = "api.md"


def cli_reference() -> str:
    """Every command and option of ``headscope``, as typer writes them for its own docs."""
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from headscope.cli.app import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="headscope")
    text = get_docs_for_click(obj=command, ctx=ctx, name="headscope", title="headscope")
    # the generated page has its own top heading: make it a section of this page
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text.strip(), flags=re.M) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if page.file.src_uri == API_PAGE:
        check_api(markdown)
    return markdown


def check_api(markdown: str) -> None:
    import headscope

    shown = set(re.findall(r"^::: headscope\.(\w+)", markdown, flags=re.M))
    missing = [name for name in headscope.__all__ if name not in shown]
    if missing:
        raise PluginError(f"{API_PAGE}: public names without an entry: {', '.join(missing)}; add '::: headscope.NAME'")
    bare = [name for name in headscope.__all__ if not (getattr(getattr(headscope, name), "__doc__", None) or "").strip()
            or (isinstance(getattr(headscope, name), (list, tuple, dict)) and name not in DOCUMENTED_DATA)]
    bare += [f"{name}.{method}" for name in headscope.__all__
             for method in undocumented_methods(getattr(headscope, name))]
    if bare:
        raise PluginError(f"public names without a docstring: {', '.join(bare)}; write one")


def undocumented_methods(obj) -> list[str]:
    """The public methods and properties a class defines itself without a docstring."""
    import inspect

    if not inspect.isclass(obj):
        return []
    out = []
    for name, member in vars(obj).items():
        if name.startswith("_"):
            continue
        fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        if (isinstance(member, property) or inspect.isfunction(fn)) and not (fn.__doc__ or "").strip():
            out.append(name)
    return out


# Public data (not functions or classes) carries its documentation in api.md itself.
DOCUMENTED_DATA = {"SCORE_COLUMNS"}
