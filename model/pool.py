"""The runs a bot serves at once: loaded on first use, reloaded when training saves a new checkpoint, and the least
recently used unloaded when the next one would not fit the memory budget.

    pool = Pool("checkpoints", open_run, budget=2048 * 2**20, default="mybot")   # in the model worker's thread
    pool.sampler(None)                                   # the default run's sampler, loaded if need be
    batch = pool.candidates(SampleRequest(run="other"))  # run None: the default run
    pool.reload("other")                                 # `/model reload`: load its checkpoint now
    pool.loaded()                                        # (LoadedRun, ...), most recently used first: any thread

Everything but `loaded()` runs in the model worker's thread (model/worker.py), so a run is loaded, used and
unloaded by the one thread that drives torch, and a load never blocks the event loop. At each request the run's
proverbot.json is read: a checkpoint id other than the loaded one is loaded first, the old weights kept until the
new ones are in (a request that started on them finishes on them: one request at a time). A new checkpoint that
does not load (training still saving it, a damaged file) leaves the old weights answering, with a warning, and is
tried again at the next request. A run counts as its weights in float32 (`weights_bytes`; bfloat16 and int8 copies
take less), so the budget errs on the safe side; the tensors of a request in progress come on top.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ModelError
from model.runinfo import checkpoint_id, damaged, read_json, run_folder, weights_file

log = logging.getLogger(__name__)

MB = 2**20


@dataclass(frozen=True)
class LoadedRun:
    """A run in memory, as /status shows it."""

    name: str
    checkpoint_id: str
    size: int               # bytes, as the budget counts them


def weights_bytes(folder: Path) -> int:
    """The bytes of a run's weights in float32, counted from its config.json (a LoRA run's: merged into its base),
    or the ModelError naming a damaged config.json. GPT-2 124M: 475 MB (of 2**20 bytes)."""
    config = read_json(folder / "config.json")
    try:
        width, layers, vocab, positions = (int(config[key]) for key in ("n_embd", "n_layer", "vocab_size",
                                                                          "n_positions"))
    except (KeyError, TypeError, ValueError) as err:
        raise damaged(folder / "config.json", err) from None
    # token and position embeddings (the output layer shares the first); per block two layer norms, attention and MLP
    return 4 * ((vocab + positions) * width + layers * (12 * width * width + 13 * width) + 2 * width)


@dataclass
class _Entry:
    sampler: Any
    size: int


class Pool:
    """The loaded runs, by name, least recently used first. Only the worker thread calls it, but for `loaded()` (a
    tuple replaced whole at each change) and `folder()`."""

    def __init__(self, checkpoint_dir: str | Path, open_run: Callable[[Path], Any], budget: int, default: str,
                 weights_id: Callable[[Path], str] | None = None) -> None:
        """open_run(folder) loads a run's sampler (model.sample.Sampler); budget: bytes of weights held at most;
        default: the run of a request that names none; weights_id(path): the checkpoint id of a weights file
        (model.run.file_hash), to refuse weights that do not match the proverbot.json they were read with."""
        if budget < 1:
            raise ValueError("the memory budget must be positive")
        self.checkpoint_dir, self.default, self.budget = Path(checkpoint_dir), default, budget
        self._open_run, self._weights_id = open_run, weights_id
        self._runs: OrderedDict[str, _Entry] = OrderedDict()
        self._view: tuple[LoadedRun, ...] = ()

    # --- any thread ----------------------------------------------------------------------------------------------

    def folder(self, name: str | None) -> Path:
        """The folder of run `name` (None: the default), or the ModelError saying why it is no run."""
        return run_folder(self.checkpoint_dir, self.default if name is None else name)

    def loaded(self) -> tuple[LoadedRun, ...]:
        """The runs in memory, most recently used first."""
        return self._view

    # --- the worker thread ---------------------------------------------------------------------------------------

    def candidates(self, request) -> Any:
        """The batch for `request` from the run it names (request.run; None: the default)."""
        return self.sampler(request.run).candidates(request)

    def reload(self, name: str | None) -> tuple[str, str]:
        """Load run `name`'s checkpoint now, whether or not its id changed: (the old checkpoint id or "", the new).
        A checkpoint that does not load is the ModelError saying why; the old weights stay."""
        name = self.folder(name).name
        before = self._runs[name].sampler.checkpoint_id if name in self._runs else ""
        return before, self._load(name).checkpoint_id

    def sampler(self, name: str | None) -> Any:
        """Run `name`'s sampler, loaded (or reloaded, when its checkpoint id changed) first if need be."""
        folder = self.folder(name)
        entry = self._runs.get(folder.name)
        if entry is None:
            return self._load(folder.name)
        try:
            changed = checkpoint_id(folder) != entry.sampler.checkpoint_id
        except ModelError as err:       # proverbot.json being replaced, or damaged: keep what is loaded
            log.warning("run %s: %s; serving checkpoint %s", folder.name, err, entry.sampler.checkpoint_id)
            changed = False
        if changed:
            try:
                return self._load(folder.name)
            except Exception as err:    # noqa: BLE001 (damaged, half-saved, out of memory: the old weights answer)
                log.warning("run %s has a new checkpoint that does not load yet (%s); checkpoint %s answers "
                            "meanwhile, and the new one is tried again at the next request", folder.name, err,
                            entry.sampler.checkpoint_id)
        self._runs.move_to_end(folder.name)
        self._publish()
        return entry.sampler

    def _load(self, name: str) -> Any:
        """Load run `name` into the budget (unloading the least recently used others first); the copy it replaces,
        if any, answers until then."""
        folder = self.checkpoint_dir / name
        size = weights_bytes(folder)
        if size > self.budget:
            raise ModelError(f"Run {name} needs about {size / MB:,.1f} MB, more than model_memory_mb = "
                             f"{self.budget / MB:g} allows: raise model_memory_mb to serve it.")
        while self._runs and sum(e.size for n, e in self._runs.items() if n != name) + size > self.budget:
            self._unload(next(n for n in self._runs if n != name))
        sampler = self._open_run(folder)
        saved = sampler.checkpoint_id
        if self._weights_id and saved and self._weights_id(weights_file(folder)) != saved:
            raise ModelError(f"Run {name} is being saved (its weights are not those of its proverbot.json yet); "
                             "try again in a moment.")
        self._runs.pop(name, None)
        self._runs[name] = _Entry(sampler, size)
        self._publish()
        log.info("run %s loaded (checkpoint %s, %.0f MB); loaded: %s", name, sampler.checkpoint_id, size / MB,
                 ", ".join(self._runs))
        return sampler

    def _unload(self, name: str) -> None:
        del self._runs[name]
        self._publish()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("run %s unloaded to keep within model_memory_mb", name)

    def _publish(self) -> None:
        self._view = tuple(LoadedRun(n, e.sampler.checkpoint_id, e.size) for n, e in reversed(self._runs.items()))
