"""Reading a finished run folder back: its score table and run.json, and its roles table, each checked, with
``path:line`` errors that say what to pass instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError


def read_run(path: Path) -> tuple[Any, dict]:
    """A run folder (or its scores.csv) read back: the score table, checked column by column, and run.json
    (an empty dict where there is none)."""
    import pandas as pd

    from ..schema import frame

    path = Path(path)
    if not path.exists():
        raise HeadscopeError(f"{path}: run folder not found; pass the --out folder of a `headscope run`")
    folder = path.parent if path.is_file() else path
    scores_path = path if path.is_file() else folder / "scores.csv"
    if not scores_path.is_file():
        raise HeadscopeError(f"{scores_path}: no scores.csv there; pass the --out folder of a `headscope run`")
    try:
        df = pd.read_csv(scores_path, dtype={"direction": "string", "baseline": "string"})
    except Exception as exc:
        raise HeadscopeError(f"{scores_path}: not a readable scores table ({exc}); pass a run's scores.csv") from None
    missing = [c for c in ("model", "dataset", "task", "relation", "metric", "layer", "head", "score")
               if c not in df.columns]
    if missing:
        raise HeadscopeError(f"{scores_path}:1: scores table lacks columns {', '.join(missing)}; pass a run's "
                             f"scores.csv")
    for col in ("layer", "head", "score", "ci_low", "ci_high", "n"):
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            line = int(bad.to_numpy().argmax()) + 2                  # header is line 1
            raise HeadscopeError(f"{scores_path}:{line}: {col} {df[col].iloc[line - 2]!r} is not a number; pass a "
                                 f"run's scores.csv")
        df[col] = values
    meta: dict = {}
    run_json = folder / "run.json"
    if run_json.is_file():
        try:
            meta = json.loads(run_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HeadscopeError(f"{run_json}:{getattr(exc, 'lineno', 1)}: not valid JSON; re-run or remove "
                                 f"it") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("control") or {}, dict) \
                or not isinstance(meta.get("model") or {}, dict):
            raise HeadscopeError(f"{run_json}:1: not a headscope run.json (expected an object with 'model' and "
                                 f"'control' objects); re-run or remove it")
    return frame(df.to_dict("records")), meta


def read_roles(run_dir: str | Path, *, model: Any = None) -> dict[tuple[int, int], str]:
    """``(layer, head) -> "role; role"`` from a previous run's roles.csv (heads without a role are left out).

    ``model``: the ModelInfo the roles will label; a run of another model, or of another layer x
    head grid, is refused (roles are per head index, so they would label the wrong heads).
    """
    return roles_for(load_roles(run_dir), model, path=roles_path(run_dir))


def roles_path(run_dir: str | Path) -> Path:
    return Path(run_dir) if Path(run_dir).is_file() else Path(run_dir) / "roles.csv"


def load_roles(run_dir: str | Path):
    """A previous run's roles.csv as a table, checked: the columns are there, layer and head are indices."""
    import pandas as pd

    path = roles_path(run_dir)
    if not path.is_file():
        raise HeadscopeError(f"{path}: no roles.csv there; pass the --out folder of a `headscope run`")
    try:
        roles = pd.read_csv(path)
    except Exception as exc:
        raise HeadscopeError(f"{path}: not a readable roles table ({exc}); pass a run's roles.csv") from None
    need = {"layer", "head", "role"}
    if not need <= set(roles.columns):
        raise HeadscopeError(f"{path}:1: roles table lacks columns {', '.join(sorted(need - set(roles.columns)))}; "
                             f"pass a run's roles.csv")
    for col in ("layer", "head"):
        values = pd.to_numeric(roles[col], errors="coerce")
        bad = values.isna() | (values != values.round()) | (values < 0)
        if bad.any():
            line = int(bad.to_numpy().argmax()) + 2          # header is line 1
            raise HeadscopeError(f"{path}:{line}: {col} {roles[col].iloc[line - 2]!r} is not a head index "
                                 f"(a whole number >= 0); pass a run's roles.csv")
        roles[col] = values.astype(int)
    return roles


def roles_for(roles: Any, model: Any, *, path: Path) -> dict[tuple[int, int], str]:
    """The checked roles table as ``(layer, head) -> "role; role"``, refused if it is for another model."""
    if "model" in roles.columns and roles["model"].nunique() > 1:
        roles = roles[roles["model"] == roles["model"].iloc[0]]
    if model is not None:
        run_model = str(roles["model"].iloc[0]) if "model" in roles.columns and len(roles) else None
        grid = (int(roles["layer"].max()) + 1, int(roles["head"].max()) + 1) if len(roles) else (0, 0)
        if run_model is not None and run_model != model.name:
            raise HeadscopeError(f"{path}: roles are for model {run_model!r}, not {model.name!r}; pass --model "
                                 f"{run_model} or the run of {model.name}")
        if grid[0] > model.num_layers or grid[1] > model.num_heads:
            raise HeadscopeError(f"{path}: roles cover {grid[0]} layers x {grid[1]} heads but {model.name} has "
                                 f"{model.num_layers} x {model.num_heads}; pass a run of this model")
    roles = roles[roles["role"].notna() & (roles["role"] != "none")]
    out: dict[tuple[int, int], str] = {}
    for (layer, head), grp in roles.groupby(["layer", "head"]):
        out[(int(layer), int(head))] = "; ".join(dict.fromkeys(grp["role"].astype(str)))
    return out
