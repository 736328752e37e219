"""Dataset loaders (CoNLL-U treebanks, plain text, jsonl) and the bundled sample."""

from __future__ import annotations

from .loading import FORMATS, load_data, load_sample
from .text import load_text
from .ud import load_conllu, parse_conllu

__all__ = ["FORMATS", "load_conllu", "load_data", "load_sample", "load_text", "parse_conllu"]
