"""Dataset loaders (CoNLL-U treebanks, plain text, jsonl, coreference, GAP) and the bundled sample."""

from __future__ import annotations

from .coref import load_conll2012, load_coref, load_corefud, load_jsonlines
from .documents import documents, join_sentences
from .gap import load_gap
from .formats import FORMATS
from .loading import load_data, load_sample
from .text import load_text
from .ud import load_conllu, parse_conllu

__all__ = ["FORMATS", "documents", "join_sentences", "load_conll2012", "load_conllu", "load_coref", "load_corefud", "load_data", "load_gap",
           "load_jsonlines", "load_sample", "load_text", "parse_conllu"]
