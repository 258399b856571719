"""Which rows go into which batch: task-homogeneous batches and seeded train/val splits.

**TaskBatchSampler.** Every batch holds rows of a single task, because each task has
its own head and loss. Per step it draws a task ``t`` with probability ``p_t`` and
takes the next ``batch_size`` rows of that task's shuffled queue (re-shuffled once
used up). A remainder of one row joins the batch before it (``batch_size + 1`` rows):
BatchNorm cannot normalise a batch of one. With ``n_t`` rows in task ``t``:

* ``uniform``:      ``p_t = 1 / T``                   (every task equally often, as the baseline)
* ``proportional``: ``p_t = n_t / sum(n)``            (every row equally often)
* ``temperature``:  ``p_t ∝ n_t ** (1 / temperature)`` (1 = proportional, ∞ = uniform)

each times an optional per-task factor ``w_t`` (``TrainConfig.sampler_type_weights``, one per
task type: a type that learns slowly can be drawn more often without changing the others'
relative shares).

The order depends only on ``(seed, epoch)``, so a run can be reproduced, and
``state_dict()`` / ``load_state_dict()`` resume in the middle of an epoch.

**OfficialTaskSampler.** The official baseline's sampler (its ``MultiTaskUniformSampler``),
with its own seeded generator: every task's row list is shuffled once; per step a task is
picked uniformly and the batch is the next ``batch_size`` rows from that task's cursor; a
batch that would run past the end takes the rest, re-shuffles the list in place and fills
up from its start. Every epoch (``len(rows) // batch_size`` steps) restarts every cursor
at 0, without re-shuffling.

**stratified_split.** A seeded train/val split made separately for every task, so
every task is in both parts; optionally stratified by a label column, and by groups
(e.g. patients) that are never split between train and val.

**random_split_indices.** The baseline's split: ``torch.utils.data.random_split`` of all
rows (tasks mixed) with a generator seeded by ``seed``; ``int(N * val_fraction)`` rows
go to validation, in the permutation's order.
"""
from __future__ import annotations

import math
import random
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler, random_split

#: fmuia's task-sampling strategies (:class:`TaskBatchSampler`); ``TrainConfig.sampler`` is
#: one of these or ``"official"`` (:class:`OfficialTaskSampler`).
STRATEGIES = ("uniform", "proportional", "temperature")


class _ResumableTaskSampler(Sampler[list[int]]):
    """What both task samplers share: the task lists, the seed, and an (epoch, position)
    state that ``state_dict()`` / ``load_state_dict()`` save and restore."""

    def __init__(self, task_indices: dict[str, list[int]], batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.task_indices = {t: list(ix) for t, ix in task_indices.items() if len(ix) > 0}
        if not self.task_indices:
            raise ValueError("no task has any rows")
        self.batch_size, self.seed = batch_size, seed
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` at its first batch."""
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict:
        """Where the sampler stands: the batches it has handed out. A ``DataLoader`` with
        workers fetches batches ahead, so the trainer saves the position of the batches it
        used instead (``training.loop.sampler_state``)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration continues the saved epoch after its saved position."""
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        self.epoch, self.position = state["epoch"], state["position"]

    def __len__(self) -> int:
        return self.num_batches


class TaskBatchSampler(_ResumableTaskSampler):
    """Batches of dataset indices, one task per batch (pass as ``DataLoader(batch_sampler=...)``).

    ``task_indices`` maps task id -> dataset indices (``MultiTaskDataset.task_indices``).
    ``num_batches`` per epoch defaults to the number of batches that shows every row
    about once: ``sum(ceil(n_t / batch_size))``.
    """

    def __init__(self, task_indices: dict[str, list[int]], batch_size: int, strategy: str = "temperature",
                 temperature: float = 2.0, num_batches: int | None = None, seed: int = 0,
                 task_weights: dict[str, float] | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        super().__init__(task_indices, batch_size, seed)
        self.strategy, self.temperature = strategy, temperature
        #: extra factor of each task's weight (default 1; TrainConfig.sampler_type_weights per type)
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.task_indices}
        if not any(self.task_weights.values()) or min(self.task_weights.values()) < 0:
            raise ValueError(f"task weights must be >= 0 and not all 0: {self.task_weights}")
        self.num_batches = num_batches if num_batches is not None else sum(
            math.ceil(len(ix) / batch_size) for ix in self.task_indices.values())

    def task_probabilities(self) -> dict[str, float]:
        """``{task_id: p_t}``, the chance that a batch comes from each task (sums to 1)."""
        sizes = np.array([len(ix) for ix in self.task_indices.values()], dtype=float)
        if self.strategy == "uniform":
            weights = np.ones_like(sizes)
        elif self.strategy == "proportional":
            weights = sizes
        else:
            weights = sizes ** (1.0 / self.temperature)
        weights = weights * np.array(list(self.task_weights.values()))
        return dict(zip(self.task_indices, (weights / weights.sum()).tolist()))

    def _epoch_batches(self) -> Iterator[list[int]]:
        """All batches of the current epoch, a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        probabilities = self.task_probabilities()
        task_ids = list(probabilities)
        queues: dict[str, list[list[int]]] = {t: [] for t in task_ids}
        for t in rng.choice(len(task_ids), size=self.num_batches, p=list(probabilities.values())):
            task = task_ids[t]
            if not queues[task]:  # refill: this task's rows in a fresh random order, cut in batches
                order = rng.permutation(self.task_indices[task]).tolist()
                cuts = range(0, len(order), self.batch_size)
                queues[task] = [order[i:i + self.batch_size] for i in cuts]
                if len(queues[task]) > 1 and len(queues[task][-1]) == 1:
                    remainder = queues[task].pop()
                    queues[task][-1] += remainder  # never a batch of one (BatchNorm)
            yield queues[task].pop(0)

    def __iter__(self) -> Iterator[list[int]]:
        for i, batch in enumerate(self._epoch_batches()):
            if i >= self.position:
                self.position = i + 1
                yield batch
        self.set_epoch(self.epoch + 1)


class OfficialTaskSampler(_ResumableTaskSampler):
    """The official baseline's task sampler (see the module docstring), seeded and resumable.

    ``task_indices`` maps task id -> dataset indices. An epoch is ``sum(n_t) // batch_size``
    batches. Uses a ``random.Random(seed)`` of its own (the baseline
    uses Python's global one), so the order depends only on ``seed``; ``state_dict()`` /
    ``load_state_dict()`` resume in the middle of an epoch, as :class:`TaskBatchSampler`.
    The lists carry over from one epoch to the next, so the state of epoch ``e`` is
    replayed from the start (index lists only, no data) and remembered.
    """

    def __init__(self, task_indices: dict[str, list[int]], batch_size: int, seed: int = 0):
        super().__init__(task_indices, batch_size, seed)
        total = sum(len(ix) for ix in self.task_indices.values())
        self.num_batches = total // batch_size
        if self.num_batches < 1:
            raise ValueError(f"{total} rows do not fill one batch of {batch_size}")
        self._epoch_starts: dict[int, tuple[object, dict[str, list[int]]]] = {}

    def task_probabilities(self) -> dict[str, float]:
        """``{task_id: 1 / T}``: every step picks a task uniformly."""
        return {t: 1.0 / len(self.task_indices) for t in self.task_indices}

    def _start_of(self, epoch: int) -> tuple[random.Random, dict[str, list[int]]]:
        """Generator and row lists at the start of ``epoch`` (copies)."""
        if 0 not in self._epoch_starts:
            rng = random.Random(self.seed)
            lists = {t: list(ix) for t, ix in self.task_indices.items()}
            for ix in lists.values():
                rng.shuffle(ix)  # once, at construction
            self._remember(0, rng, lists)
        known = max(e for e in self._epoch_starts if e <= epoch)
        rng, lists = self._restore(known)
        for e in range(known, epoch):
            for _ in self._batches(rng, lists):
                pass
            self._remember(e + 1, rng, lists)
        return rng, lists

    def _remember(self, epoch: int, rng: random.Random, lists: dict[str, list[int]]) -> None:
        self._epoch_starts[epoch] = (rng.getstate(), {t: list(ix) for t, ix in lists.items()})

    def _restore(self, epoch: int) -> tuple[random.Random, dict[str, list[int]]]:
        state, lists = self._epoch_starts[epoch]
        rng = random.Random()
        rng.setstate(state)
        return rng, {t: list(ix) for t, ix in lists.items()}

    def _batches(self, rng: random.Random, lists: dict[str, list[int]]) -> Iterator[list[int]]:
        """One epoch of batches; consumes ``rng`` and re-shuffles ``lists`` in place as the baseline."""
        cursors = {t: 0 for t in lists}
        task_ids = list(lists)
        for _ in range(self.num_batches):
            task = rng.choice(task_ids)
            rows, start = lists[task], cursors[task]
            end = start + self.batch_size
            if end > len(rows):
                batch = rows[start:]
                rng.shuffle(rows)
                rest = self.batch_size - len(batch)
                batch.extend(rows[:rest])
                cursors[task] = rest
            else:
                batch = rows[start:end]
                cursors[task] = end
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        rng, lists = self._start_of(self.epoch)
        for i, batch in enumerate(self._batches(rng, lists)):
            if i >= self.position:
                self.position = i + 1
                yield list(batch)
        self._remember(self.epoch + 1, rng, lists)
        self.set_epoch(self.epoch + 1)


def random_split_indices(num_rows: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, val)`` positions of the baseline's split: ``random_split`` of ``range(num_rows)``
    into ``num_rows - int(num_rows * val_fraction)`` and ``int(num_rows * val_fraction)`` rows
    with ``torch.Generator().manual_seed(seed)``, each part in the permutation's order."""
    val_size = int(num_rows * val_fraction)
    train, val = random_split(range(num_rows), [num_rows - val_size, val_size],
                              generator=torch.Generator().manual_seed(seed))
    return list(train.indices), list(val.indices)


def stratified_split(frame: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0,
                     group_col: str | None = None, label_col: str | None = None) -> tuple[list[int], list[int]]:
    """Split the rows of ``frame`` into (train, val) positional indices, task by task.

    Within each task the *units* (rows, or groups of rows sharing ``group_col``, so a
    group is never split) are ordered by label (``label_col``; a group takes its most
    common label) and randomly within a label, and every ``1 / val_fraction``-th unit
    from a random start goes to val. This systematic sample puts ``round(val_fraction
    * units)`` units in val (at least 1, and at most all but 1, when a task has 2+
    units) with every label's share within one unit of proportional — and, unlike
    scikit-learn's splitters, it works for labels with a single row.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), not {val_fraction}")
    for col in (group_col, label_col):
        if col is not None and col not in frame.columns:
            raise KeyError(f"column {col!r} is not in the frame (columns: {list(frame.columns)})")
    rng = np.random.default_rng(seed)
    positions = pd.Series(np.arange(len(frame)), index=frame.index)
    val: list[int] = []
    for task_id in sorted(frame["task_id"].unique()):
        rows = frame[frame["task_id"] == task_id]
        unit = rows[group_col].map(str) if group_col else pd.Series(rows.index.map(str), index=rows.index)
        label = rows[label_col].map(str) if label_col else pd.Series("", index=rows.index)
        unit_label = label.groupby(unit).agg(lambda s: s.mode().iloc[0])
        units = unit_label.index.to_numpy()
        n_units = len(units)
        if n_units < 2:
            continue  # a single unit cannot be split: it stays in train
        n_val = min(max(round(val_fraction * n_units), 1), n_units - 1)
        label_code = pd.factorize(unit_label, sort=True)[0]
        order = np.lexsort((rng.random(n_units), label_code))
        picks = order[((np.arange(n_val) + rng.random()) * n_units / n_val).astype(int)]
        val += positions[rows.index[unit.isin(units[picks]).to_numpy()]].tolist()
    val_set = set(val)
    train = [i for i in range(len(frame)) if i not in val_set]
    return train, sorted(val)
