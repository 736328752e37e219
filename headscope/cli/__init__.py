"""Command-line interface: a thin typer app over the library."""
