"""Provenance of a result: the versions of Python and of the packages that produced it."""

from __future__ import annotations

import functools
import platform

PACKAGES = ("headscope", "torch", "transformers", "tokenizers", "numpy", "pandas", "conllu", "networkx")


def package_versions() -> dict[str, str]:
    """Python's version and each of ``PACKAGES``' (``not installed`` where it is missing)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    """Read once per process: reading the packages' metadata takes tens of milliseconds."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return tuple(out.items())
