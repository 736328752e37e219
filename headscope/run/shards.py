"""Scorer states on disk (npz and JSON, no pickle): shards of one run, which ``merge_shards`` checks against each
other and finishes as the run one process would have written."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Sequence

from ..errors import HeadscopeError

STATES = "states.npz"
MANIFEST = "shard.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/3"`` as ``(1, 3)``: shard 1 of 3, counted from 0."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise HeadscopeError(f"--shard {text!r} is not of the form I/N with 0 <= I < N (e.g. 0/4 for the first of "
                             f"four shards)")
    return int(m.group(1)), int(m.group(2))


def flatten_states(states: dict) -> tuple[dict, list]:
    """The arrays of every state under plain keys, and the index that says whose they are."""
    import numpy as np

    arrays, index = {}, []
    for model, jobs in states.items():
        for job, scorers in jobs.items():
            for k, state in enumerate(scorers):
                key = str(len(index))
                scalars, names = {}, []
                for name, value in state.items():
                    if name == "units":
                        for field, arr in value.items():
                            arrays[f"{key}.units.{field}"] = np.asarray(arr)
                            names.append(f"units.{field}")
                    elif isinstance(value, np.ndarray):
                        arrays[f"{key}.{name}"] = value
                        names.append(name)
                    else:
                        scalars[name] = value
                index.append({"model": model, "job": job, "scorer": k, "key": key, "scalars": scalars,
                              "arrays": names})
    return arrays, index


def analyze_shard(model: Any, data: Any = None, *, shard: tuple[int, int], config: Any = None, select_on: Any = None,
                  progress: Any = None, **options: Any) -> Any:
    """``analyze`` on one shard of the inputs (those whose index is i modulo n, ``shard=(i, n)``), keeping the
    scorers' states (``result.states``, no intervals) for ``write_shard``."""
    from ..config import RunConfig
    from .analyze import run_analysis
    from .state import RunState

    cfg = RunConfig.given(config, options)
    return run_analysis(model, data, cfg, RunState(shard=shard, progress=progress), select_on=select_on)


def shard_parts(result: Any, *, model: Any, data: Any, select_on: Any, config: Any,
                command: str | None = None) -> tuple[dict, dict]:
    """A shard as its manifest (what was run, on which data, which arrays belong to which scorer) and its
    arrays (every scorer's sums and per-unit rows): what ``write_shard`` writes and ``merge_parts`` reads."""
    if not result.states:
        raise HeadscopeError("this result holds no scorer states; analyse with analyze_shard(..., shard=(i, n)) to "
                             "write a shard")
    arrays, index = flatten_states(result.states)
    meta = result.meta
    manifest = {
        "shard": meta.shard, "model": str(model) if isinstance(model, (str, Path)) else None,
        "model_info": meta.model, "models": meta.models,
        "data": [str(Path(p).resolve()) for p in data] if data else None,
        "select_on": str(Path(select_on).resolve()) if select_on else None,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "tasks": meta.tasks, "datasets": meta.datasets,
        "control_datasets": (meta.control or {}).get("datasets", []),
        "versions": meta.versions, "command": command or "headscope (library call)", "states": index,
    }
    return manifest, arrays


def write_shard(result: Any, out: Path, *, model: Any, data: Any, select_on: Any, config: Any,
                command: str | None = None, force: bool = False) -> Path:
    """A shard's folder: ``states.npz`` and ``shard.json`` (``shard_parts``), written whole."""
    import numpy as np

    from ..reports.folder import staged_output
    from ..reports.writer import write_text

    manifest, arrays = shard_parts(result, model=model, data=data, select_on=select_on, config=config,
                                   command=command)
    with staged_output(Path(out), "shard", force=force) as folder:
        with open(folder / STATES, "wb") as f:
            np.savez(f, **arrays)
        write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
    return Path(out)


def read_shard(folder: Any) -> tuple[dict, Any]:
    """A shard folder's manifest and its arrays (read without pickle), checked to belong together."""
    import zipfile

    import numpy as np

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise HeadscopeError(f"{folder}: not a shard (no {MANIFEST}); pass the --out folders of "
                             f"`headscope run --shard I/N`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HeadscopeError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); write the shard again") from None
    need = ("shard", "model_info", "config", "datasets", "states", "tasks")
    missing = [k for k in need if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise HeadscopeError(f"{path}: no {', '.join(missing)} in the manifest; write the shard again")
    try:
        arrays = np.load(folder / STATES, allow_pickle=False)
        names = set(arrays.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise HeadscopeError(f"{folder / STATES}: not readable as the shard's arrays ({exc}); write the shard "
                             f"again") from None
    for entry in manifest["states"]:
        lost = [a for a in entry.get("arrays", []) if f"{entry['key']}.{a}" not in names]
        if lost:
            raise HeadscopeError(f"{folder / STATES}: the arrays {', '.join(lost)} of {entry['job']}'s "
                                 f"{entry['scalars'].get('task')} scorer are missing; write the shard again")
    return manifest, arrays


def unflatten_state(entry: dict, arrays: Any) -> dict:
    state = dict(entry["scalars"])
    units: dict = {}
    for name in entry["arrays"]:
        value = arrays[f"{entry['key']}.{name}"]
        if name.startswith("units."):
            units[name[len("units."):]] = value
        else:
            state[name] = value
    if units:
        state["units"] = units
    return state


def _differs(a: Any, b: Any, path: str = "") -> str | None:
    """Where two manifests' parts differ, as a dotted path with both values; None when they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            found = _differs(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if found:
                return found
        return None
    return None if a == b else f"{path} ({a!r} against {b!r})"


def _comparable(part: str, value: Any) -> Any:
    """What must agree between shards: every setting but the device (shards run on different ones)."""
    if part == "config" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "device"}
    return value


def _check(folders: list[Path], manifests: list[dict]) -> int:
    """The shard count, once every shard is of the same run and each of 0..N-1 is there once."""
    first = manifests[0]
    counts = {m["shard"]["count"] for m in manifests}
    if len(counts) > 1:
        raise HeadscopeError(f"the shards are of runs split differently ({', '.join(map(str, sorted(counts)))} "
                             f"shards); merge the shards of one run")
    n = counts.pop()
    seen: dict = {}
    for folder, m in zip(folders, manifests):
        i = m["shard"]["index"]
        if i in seen:
            raise HeadscopeError(f"{folder}: shard {i}/{n} is given twice (also {seen[i]}); give each shard once")
        seen[i] = folder
        for part, what in (("model_info", "model"), ("config", "settings"), ("tasks", "tasks"),
                           ("data", "data"), ("select_on", "selection data")):
            found = _differs(_comparable(part, first.get(part)), _comparable(part, m.get(part)))
            if found:
                raise HeadscopeError(f"{folder}: its {what} differ from {folders[0]}'s in {found}; merge the shards "
                                     f"of one run")
        data = [(d["name"], d.get("sha256"), d.get("sentences")) for d in m["datasets"]]
        if data != [(d["name"], d.get("sha256"), d.get("sentences")) for d in first["datasets"]]:
            raise HeadscopeError(f"{folder}: its datasets (names, checksums, sizes) differ from {folders[0]}'s; "
                                 f"merge the shards of one run")
    lost = sorted(set(range(n)) - set(seen))
    if lost:
        raise HeadscopeError(f"shard {', '.join(f'{i}/{n}' for i in lost)} is missing; give all {n} shards")
    return n


def merge_shards(folders: Sequence[Any], *, model: Any = None, progress: Any = None) -> Any:
    """The ``AnalysisResult`` of the run the shards' folders split: the same scores, intervals and roles as one
    process (see ``merge_parts``)."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise HeadscopeError("no shard given; pass the --out folders of `headscope run --shard I/N`")
    result = merge_parts([read_shard(f) for f in folders], [str(f) for f in folders], model=model, progress=progress)
    result.meta.merged["from"] = [str(f) for f in folders]
    return result


def merge_parts(read: Sequence[tuple[dict, Any]], names: Sequence[str], *, model: Any = None,
                progress: Any = None) -> Any:
    """The ``AnalysisResult`` of the run that the shards (``(manifest, arrays)`` each, named ``names`` in
    errors) split: the same scores, intervals and roles as one process.

    The shards are checked first (the same model, settings, tasks and data, each shard once). The data are
    read again from the paths the shards recorded (their checksums must still match) and the model loaded
    again (``model``: its alias, id or folder, when the shards were written from a model object), to rebuild
    each job's scorers; their sums come from the shards, not from forward passes.
    """
    from ..config import RunConfig
    from .analyze import run_analysis
    from .state import RunState

    folders = [Path(n) for n in names]
    manifests = [m for m, _ in read]
    n = _check(folders, manifests)
    first = manifests[0]
    model = model if model is not None else first.get("model")
    if model is None:
        raise HeadscopeError("the shards were written from a model object; pass the model (its alias, id or folder)")
    restored: dict = {}
    names = first["models"]
    for m, arrays in read:
        counts = {names[0]: m["datasets"], **({names[1]: m.get("control_datasets") or []} if len(names) > 1 else {})}
        for entry in m["states"]:
            per_model = restored.setdefault(entry["model"], {})
            states, total = per_model.get(entry["job"], ([], 0))
            while len(states) <= entry["scorer"]:
                states.append([])
            states[entry["scorer"]].append(unflatten_state(entry, arrays))
            if entry["scorer"] == 0:      # the job's place in the run's datasets: "k|name"
                total += counts[entry["model"]][int(entry["job"].split("|", 1)[0])]["scored"]
            per_model[entry["job"]] = (states, total)
    config = RunConfig(**{k: tuple(v) if k == "tasks" and v is not None else v for k, v in first["config"].items()})
    result = run_analysis(model, first["data"], config, RunState(restored=restored, progress=progress),
                          select_on=first.get("select_on"))
    now = [(d["name"], d.get("sha256")) for d in result.meta.datasets]
    if now != [(d["name"], d.get("sha256")) for d in first["datasets"]]:
        changed = next(d for d, e in zip(first["datasets"], result.meta.datasets)
                       if d.get("sha256") != e.get("sha256"))
        raise HeadscopeError(f"{changed.get('path') or changed['name']}: the data changed since the shards were "
                             f"written (its checksum differs); merge with the data they read")
    result.meta.merged = {"shards": n, "from": list(names)}
    return result
