"""Provenance of a result: the versions of Python and of the packages that produced it."""

from __future__ import annotations

import platform

PACKAGES = ("headscope", "torch", "transformers", "tokenizers", "numpy", "pandas", "conllu", "networkx")


def package_versions() -> dict[str, str]:
    """Python's version and each of ``PACKAGES``' (``not installed`` where it is missing)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
