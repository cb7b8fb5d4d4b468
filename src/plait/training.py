"""Training plumbing: batches in a reproducible order, and checkpoints a run resumes from.

The order of batches depends only on (seed, epoch), and a checkpoint holds the weights, the
optimizer state and the dropout random state, so a run that is killed and resumed from its
last checkpoint ends with the same weights as one that was not.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from plait.parts import Arrays, Part, write_json


class Batches(keras.utils.PyDataset):
    """Mini-batches over parts; shuffled by (seed, epoch) when ``shuffle``. The epoch is set
    by ``EpochOrder``, not counted here, since Keras may signal epoch ends more than once.

    Batches are drawn part after part (a batch may span the end of one part and the start of
    the next), so only the last batch is short and at most two parts' arrays are held at a
    time.
    """

    def __init__(self, parts: list[Part], batch_size: int, seed: int = 0, shuffle: bool = True,
                 epoch: int = 0) -> None:
        super().__init__()
        self.parts = [part for part in parts if part.rows]
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch = epoch
        self.held: dict[int, tuple] = {}
        self.arrange()

    def arrange(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.parts)) if self.shuffle else range(len(self.parts))
        self.plan: list[list[tuple[Part, np.ndarray]]] = []
        batch: list[tuple[Part, np.ndarray]] = []
        room = self.batch_size
        for index in order:
            part = self.parts[index]
            rows = rng.permutation(part.rows) if self.shuffle else np.arange(part.rows)
            while rows.size:
                batch.append((part, np.sort(rows[:room])))
                room -= min(room, rows.size)
                rows = rows[batch[-1][1].size:]
                if not room:
                    self.plan.append(batch)
                    batch, room = [], self.batch_size
        if batch:
            self.plan.append(batch)

    @property
    def num_batches(self) -> int:
        return math.ceil(sum(part.rows for part in self.parts) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> tuple:
        pieces = [self.rows_of(part, rows) for part, rows in self.plan[index]]
        joined = [{name: np.concatenate([piece[k][name] for piece in pieces]) if len(pieces) > 1
                   else pieces[0][k][name] for name in pieces[0][k]}
                  for k in range(3) if pieces[0][k] is not None]
        return tuple(joined)

    def rows_of(self, part: Part, rows: np.ndarray) -> list[Arrays | None]:
        if id(part) not in self.held:
            if len(self.held) >= 2:
                self.held.pop(next(iter(self.held)))
            self.held[id(part)] = part.load()
        return [None if arrays is None else {name: values[rows] for name, values in arrays.items()}
                for arrays in self.held[id(part)]]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.arrange()


class EpochOrder(keras.callbacks.Callback):
    """Tells the batches which epoch begins, so their order depends on (seed, epoch) alone."""

    def __init__(self, batches: Batches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.set_epoch(epoch)


def seed_states(model: Any) -> list[Any]:
    """The random-number states of the model's layers (dropout draws), which Keras's saved
    weights leave out."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras early stopping whose progress (best value, wait, best weights) can be carried
    into a resumed run."""

    def __init__(self, carried: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.carried = carried

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.carried:
            self.best = self.carried["best"]
            self.wait = self.carried["wait"]
            self.best_epoch = self.carried["best_epoch"]
            self.best_weights = self.carried.get("best_weights")

    def progress(self) -> dict:
        best = self.best
        return {"best": None if best is None else float(best), "wait": int(self.wait),
                "best_epoch": int(self.best_epoch)}


class Checkpoint(keras.callbacks.Callback):
    """Records the history; with a ``folder``, also writes after every epoch the weights with
    the optimizer state, the history so far, and early stopping's progress, each under a
    temporary name renamed into place."""

    def __init__(self, folder: Path | None, history: dict[str, list[float]],
                 stopping: ResumableEarlyStopping | None) -> None:
        super().__init__()
        self.folder, self.history, self.stopping = folder, history, stopping

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.folder is None:
            return
        save_weights(self.model, self.folder / "weights.weights.h5")
        seeds = [np.asarray(state).tolist() for state in seed_states(self.model)]
        progress = {"epoch": epoch + 1, "history": self.history, "seeds": seeds}
        if self.stopping is not None:
            progress["stopping"] = self.stopping.progress()
            if self.stopping.best_weights is not None and self.stopping.best_epoch == epoch:
                save_weights(self.model, self.folder / "best.weights.h5")
        write_json(self.folder / "progress.json", progress)


def save_weights(model: Any, path: Path) -> None:
    from plait.distributed import outside_distribution

    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    with outside_distribution():  # process 0 saves alone; see outside_distribution
        model.save_weights(partial, overwrite=True)
    partial.replace(path)


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
