"""Checkpoints of a run: its scorer states saved every few batches beside --out, in one file replaced whole, with
what the run is (model, data, settings, command), so that ``--resume`` goes on from there with nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import HeadscopeError
from .shards import flatten_states, unflatten_state


def checkpoint_path(out: Any, rank: tuple[int, int] | None = None) -> Path:
    """Where the run writing into ``out`` keeps its checkpoint: a hidden file beside the folder (one per rank
    under a launcher: ``rank`` is ``(rank, world size)``)."""
    import os

    out = Path(os.path.abspath(out))
    part = f".rank{rank[0]}of{rank[1]}" if rank else ""
    return out.with_name(f".{out.name}.headscope-checkpoint{part}.npz")


class Checkpoint:
    """A run's scorer states, saved every ``every`` batches and when a job ends, in one file replaced whole
    (a kill leaves the previous checkpoint or the new one, never half of one).

    ``header``: what the run is (model, data, settings, command), so that ``--resume`` needs nothing else;
    ``prior``: the jobs of a checkpoint read back (``load``), which the resumed run goes on from."""

    def __init__(self, path: Any, every: int, header: dict, prior: dict | None = None) -> None:
        self.path, self.every, self.header = Path(path), every, header
        self.jobs: dict = dict(prior or {})     # "model\tjob" -> {"states", "done", "n", "complete"}
        self.batches = 0

    def prior(self, model: str, key: str) -> dict | None:
        return self.jobs.get(f"{model}\t{key}")

    def batch_done(self, model: str, key: str, scorers: list, done: list, n: int) -> None:
        self.batches += 1
        if self.every and self.batches % self.every == 0:
            self._note(model, key, scorers, done, n, complete=False)
            self.save()

    def job_done(self, model: str, key: str, scorers: list, done: list, n: int) -> None:
        self._note(model, key, scorers, done, n, complete=True)
        self.save()

    def _note(self, model: str, key: str, scorers: list, done: list, n: int, *, complete: bool) -> None:
        self.jobs[f"{model}\t{key}"] = {"states": [s.state() for s in scorers], "done": list(done), "n": int(n),
                                         "complete": complete}

    def save(self) -> None:
        import os

        import numpy as np

        arrays: dict = {}
        jobs = []
        for j, (name, job) in enumerate(self.jobs.items()):
            flat, index = flatten_states({"m": {"j": job["states"]}})
            arrays.update({f"j{j}.{k}": v for k, v in flat.items()})
            arrays[f"j{j}.done"] = np.asarray(job["done"], dtype=np.int64)
            jobs.append({"name": name, "n": job["n"], "complete": job["complete"], "states": index})
        manifest = json.dumps({"header": self.header, "jobs": jobs}, default=str).encode("utf-8")
        arrays["manifest"] = np.frombuffer(manifest, dtype=np.uint8)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @staticmethod
    def load(path: Any) -> tuple[dict, dict]:
        """``(header, jobs)`` of a checkpoint file, read without pickle."""
        import zipfile

        import numpy as np

        path = Path(path)
        try:
            arrays = np.load(path, allow_pickle=False)
            meta = json.loads(bytes(arrays["manifest"]).decode("utf-8"))
            jobs = {}
            for j, job in enumerate(meta["jobs"]):
                view = {k[len(f"j{j}."):]: arrays[k] for k in arrays.files if k.startswith(f"j{j}.")}
                jobs[job["name"]] = {"states": [unflatten_state(e, view) for e in job["states"]],
                                     "done": [int(i) for i in view["done"]], "n": job["n"],
                                     "complete": job["complete"]}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise HeadscopeError(f"{path}: not a readable checkpoint ({exc}); start the run again without "
                                 f"--resume") from None
        return meta["header"], jobs

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def start_checkpoint(out: Any, every: int, *, model: Any, data: Any, select_on: Any, settings: dict, command: str,
                     ablate: str | None, force: bool, ranks: tuple[int, int] | None) -> Checkpoint:
    """A new run's checkpoint: saved every ``every`` batches, its header enough to start the run again."""
    known = Path(model)
    header = {"model": str(known.resolve()) if known.exists() else model, "settings": settings,
              "data": [str(Path(p).resolve()) for p in data] if data else None,
              "select_on": str(Path(select_on).resolve()) if select_on else None, "command": command,
              "every": every, "ablate": ablate, "force": force, "world": ranks[1] if ranks else None}
    return Checkpoint(checkpoint_path(out, ranks), every, header)


def resume_checkpoint(out: Any, ranks: tuple[int, int] | None) -> Checkpoint:
    """The checkpoint of the run that was writing into ``out`` when it was killed (this rank's, under a
    launcher), checked to be resumable as it was started."""
    path = checkpoint_path(out, ranks)
    if not path.is_file():
        raise HeadscopeError(f"{out}: no checkpoint to resume from ({path.name} is not there): the run ended, or it "
                             f"was started without --checkpoint-every")
    header, prior = Checkpoint.load(path)
    if header.get("world") != (ranks[1] if ranks else None):
        raise HeadscopeError(f"{path.name}: the run was checkpointed with {header.get('world') or 1} process(es), "
                             f"and this is {ranks[1] if ranks else 1}; resume it as it was started")
    return Checkpoint(path, header["every"], header, prior)


def remove_checkpoints(out: Any, ranks: tuple[int, int] | None) -> None:
    """The run is written: every rank's checkpoint goes, nothing is left to resume."""
    for r in range(ranks[1] if ranks else 1):
        checkpoint_path(out, (r, ranks[1]) if ranks else None).unlink(missing_ok=True)
