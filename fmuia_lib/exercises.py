"""Autograded exercises for the course-assignment mode of the notebooks.

Each ``check_*`` function takes the student's function, runs it on a fixed set of
seeded random cases and compares it with fmuia's own implementation. It prints one
clear line (PASS, FAIL with the first differing case, or NOT DONE while the stub still
raises ``NotImplementedError``) and returns an :class:`ExerciseResult`. Checks never
raise, so a student notebook runs to the end and shows every exercise's status.

The cases are drawn with a fixed seed, so the printed message is the same on every
machine (the teacher notebooks check it with ``# NBVAL_CHECK_OUTPUT``).
"""
from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from fmuia_lib.tasks import TaskSpec, load_manifest

SEED = 2026


@dataclass(frozen=True)
class ExerciseResult:
    """Outcome of one check: ``status`` is ``"pass"``, ``"fail"`` or ``"not done"``."""

    exercise: str
    status: str
    message: str
    cases: int

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        label = {"pass": "PASS", "fail": "FAIL", "not done": "NOT DONE"}[self.status]
        return f"[{label}] {self.exercise}: {self.message}"


def _grade(exercise: str, student: Callable, cases: Iterable[tuple[tuple, dict]],
           reference: Callable, compare: Callable[[Any, Any], str | None], reference_name: str
           ) -> ExerciseResult:
    """Run ``student`` and ``reference`` on every case; the first mismatch fails."""
    n = 0
    for n, (args, kwargs) in enumerate(cases, 1):
        expected = reference(*args, **kwargs)
        try:
            got = student(*args, **kwargs)
        except NotImplementedError:
            result = ExerciseResult(exercise, "not done", "replace `raise NotImplementedError` "
                                    "with your implementation, then run this cell again", 0)
            print(result)
            return result
        except Exception as exc:  # the student's bug, shown as feedback rather than a crash
            last = traceback.extract_tb(exc.__traceback__)[-1]
            result = ExerciseResult(exercise, "fail", f"case {n} raised {type(exc).__name__}: {exc} "
                                    f"(line {last.lineno}: {last.line})\n  inputs: {_describe(args)}", n)
            print(result)
            return result
        problem = compare(got, expected)
        if problem:
            result = ExerciseResult(exercise, "fail", f"case {n}: {problem}\n  inputs: {_describe(args)}", n)
            print(result)
            return result
    result = ExerciseResult(exercise, "pass", f"all {n} cases agree with {reference_name}", n)
    print(result)
    return result


def _describe(args: tuple) -> str:
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            parts.append(f"array{a.shape} {a.dtype}" + (f" = {a.tolist()}" if a.size <= 16 else ""))
        elif isinstance(a, TaskSpec):
            parts.append(f"TaskSpec({a.task_id}, {a.task_type})")
        else:
            text = repr(a)
            parts.append(text if len(text) < 120 else text[:117] + "...")
    return ", ".join(parts)


def _close(rtol: float = 1e-6, atol: float = 1e-9) -> Callable[[Any, Any], str | None]:
    def compare(got: Any, expected: Any) -> str | None:
        try:
            got_arr = np.asarray(got, dtype=np.float64)
        except (TypeError, ValueError):
            return f"expected numbers like {expected!r}, got {got!r}"
        exp_arr = np.asarray(expected, dtype=np.float64)
        if got_arr.shape != exp_arr.shape:
            return f"expected shape {exp_arr.shape}, got {got_arr.shape}"
        if not np.allclose(got_arr, exp_arr, rtol=rtol, atol=atol):
            return f"expected {np.round(exp_arr, 4).tolist()}, got {np.round(got_arr, 4).tolist()}"
        return None
    return compare


# -- segmentation metrics ---------------------------------------------------------------------
def _mask_cases(n: int, num_classes_choices: tuple[int, ...] = (2, 3, 4)) -> list[tuple[tuple, dict]]:
    """Random label masks, including empty classes and identical masks."""
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(n):
        c = int(rng.choice(num_classes_choices))
        h, w = (int(v) for v in rng.integers(4, 24, size=2))
        gt = _blobs(rng, h, w, c)
        pred = gt.copy() if i % 7 == 0 else _blobs(rng, h, w, c)
        if i % 5 == 1:
            pred[:] = 0  # prediction has no foreground at all
        cases.append(((pred, gt, c), {}))
    return cases


def _blobs(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A label mask of axis-aligned rectangles (some classes may be missing)."""
    mask = np.zeros((h, w), dtype=np.int64)
    for cls in range(1, c):
        if rng.random() < 0.25:
            continue
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        mask[y0:y0 + int(rng.integers(1, h)), x0:x0 + int(rng.integers(1, w))] = cls
    return mask


def check_dice(student: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> ExerciseResult:
    """``student(pred, gt, num_classes) -> (C,)`` Dice per class, background included.

    Rule to remember: a class absent from both masks scores 1.
    """
    from fmuia_lib.metrics import dice_per_class

    return _grade("Dice per class", student, _mask_cases(40), dice_per_class, _close(),
                  "fmuia_lib.metrics.dice_per_class")


def check_hausdorff(student: Callable[[np.ndarray, np.ndarray], float]) -> ExerciseResult:
    """``student(a, b) -> float``: Hausdorff distance of two boolean masks, in pixels.

    Challenge rules: the whole pixel sets (not contours); both empty 0; exactly one empty
    the image diagonal.
    """
    from fmuia_lib.metrics import hausdorff_pair

    cases = [((pred == 1, gt == 1), {}) for (pred, gt, _), _ in _mask_cases(40, (2,))]
    return _grade("Hausdorff distance", student, cases, hausdorff_pair, _close(),
                  "fmuia_lib.metrics.hausdorff_pair")


# -- detection and landmarks -------------------------------------------------------------------
def check_box_iou(student: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> ExerciseResult:
    """``student(pred, gt) -> (N,)`` IoU of matching rows of two ``(N, 4)`` xyxy pixel boxes."""
    from fmuia_lib.metrics import box_iou

    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(30):
        n = int(rng.integers(1, 6))
        corners = rng.uniform(0, 100, size=(2, n, 2, 2))
        pred, gt = (np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1) for c in corners)
        if i % 6 == 0:
            pred = gt.copy()  # perfect boxes
        if i % 6 == 1:
            pred[:, [0, 2]] += 200  # disjoint boxes
        cases.append(((pred, gt), {}))
    return _grade("box IoU", student, cases, box_iou, _close(), "fmuia_lib.metrics.box_iou")


def check_mean_radial_error(student: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> ExerciseResult:
    """``student(pred, gt) -> (N,)``: per image mean landmark distance of ``(N, K, 2)`` arrays."""
    from fmuia_lib.metrics import mean_radial_error

    rng = np.random.default_rng(SEED)
    cases = [((rng.uniform(0, 300, (n, k, 2)), rng.uniform(0, 300, (n, k, 2))), {})
             for n, k in rng.integers(1, 5, size=(20, 2))]
    return _grade("mean radial error", student, cases, mean_radial_error, _close(),
                  "fmuia_lib.metrics.mean_radial_error")


# -- the model: routing and learning-rate groups ----------------------------------------------
def check_routing(student: Callable[[TaskSpec], bool]) -> ExerciseResult:
    """``student(task) -> bool``: does this task's head read the FPN (dense) features?

    Graded on every task of the manifest against the rule the model applies.
    """
    cases = [((task,), {}) for task in load_manifest().values()]

    def compare(got: Any, expected: bool) -> str | None:
        if not isinstance(got, (bool, np.bool_)):
            return f"return True or False, got {got!r}"
        return None if bool(got) == expected else (
            f"expected {expected} ({'FPN map' if expected else 'deepest encoder feature'}), got {got}")

    return _grade("routing rule", student, cases, lambda task: task.is_dense, compare,
                  "TaskSpec.is_dense, the rule MultiTaskNet.forward applies")


def check_lr_groups(student: Callable[[Any, float, float], list[dict]]) -> ExerciseResult:
    """``student(model, lr, head_lr_mult) -> [{"params": [...], "lr": ...}, ...]``.

    The recipe: encoder at ``lr``; FPN decoder and every task head at ``lr * head_lr_mult``.
    Graded parameter by parameter against :func:`fmuia_lib.training.optim.param_groups`: every
    trainable parameter must appear in exactly one group, with the learning rate the
    library gives it.
    """
    import torch

    from fmuia_lib.config import TrainConfig
    from fmuia_lib.losses import build_loss
    from fmuia_lib.model import MultiTaskNet
    from fmuia_lib.training.optim import param_groups

    tasks = list(load_manifest().values())
    pick = [t for t in tasks if t.task_id in {"breast_lesion", "breast_2cls", "thyroid_nodule_det", "FUGC"}]
    torch.manual_seed(0)
    model = MultiTaskNet(pick, encoder_name="resnet18", encoder_weights=None)
    names = {id(p): n for n, p in model.named_parameters()}
    cases = [((model, lr, mult), {}) for lr, mult in ((1e-4, 10.0), (3e-4, 1.0), (1e-3, 5.0))]

    def per_parameter(groups: list[dict]) -> dict[str, float] | str:
        lrs: dict[str, float] = {}
        for g in groups:
            for p in g["params"]:
                name = names.get(id(p), "<a tensor that is not a model parameter>")
                if name in lrs:
                    return f"parameter {name} is in two groups"
                lrs[name] = float(g["lr"])
        return lrs

    def compare(got: Any, expected: list[dict]) -> str | None:
        try:
            got_lrs = per_parameter(list(got))
        except (TypeError, KeyError) as exc:
            return f"return a list of dicts with keys 'params' and 'lr' ({type(exc).__name__}: {exc})"
        if isinstance(got_lrs, str):
            return got_lrs
        exp_lrs = per_parameter(expected)
        assert isinstance(exp_lrs, dict)
        missing = sorted(set(exp_lrs) - set(got_lrs))
        if missing:
            return f"{len(missing)} trainable parameter(s) in no group, e.g. {missing[0]}"
        for name, lr in exp_lrs.items():
            if not math.isclose(got_lrs[name], lr, rel_tol=1e-9):
                return f"{name} should learn at {lr:g}, got {got_lrs[name]:g}"
        extra = sorted(set(got_lrs) - set(exp_lrs))
        if extra:
            return f"{extra[0]} should not be optimised (it is frozen or not a parameter)"
        return None

    def reference(model: Any, lr: float, head_lr_mult: float) -> list[dict]:
        config = TrainConfig.from_dict({"lr": lr, "head_lr_mult": head_lr_mult, "encoder": "resnet18",
                                        "encoder_weights": None, "switches": ["trained_fpn"]})
        return param_groups(model, build_loss(config), config)

    return _grade("learning-rate groups", student, cases, reference, compare,
                  "fmuia_lib.training.optim.param_groups")


# -- sampling and schedules ---------------------------------------------------------------------
def check_task_probabilities(student: Callable[[dict[str, int], str, float], dict[str, float]]
                             ) -> ExerciseResult:
    """``student(counts, strategy, temperature) -> {task: probability}``.

    ``counts`` maps a task to its number of training images; ``strategy`` is
    ``"uniform"``, ``"proportional"`` or ``"temperature"``.
    """
    from fmuia_lib.data.sampler import TaskBatchSampler

    rng = np.random.default_rng(SEED)
    ids = list(load_manifest())
    cases = []
    for strategy in ("uniform", "proportional", "temperature", "temperature", "temperature"):
        for _ in range(4):
            chosen = [str(t) for t in rng.choice(ids, size=int(rng.integers(2, 8)), replace=False)]
            counts = {t: int(rng.integers(1, 400)) for t in chosen}
            cases.append(((counts, strategy, float(rng.choice([1.0, 2.0, 3.0, 5.0]))), {}))

    def reference(counts: dict[str, int], strategy: str, temperature: float) -> dict[str, float]:
        indices, start = {}, 0
        for task, n in counts.items():
            indices[task], start = list(range(start, start + n)), start + n
        sampler = TaskBatchSampler(indices, batch_size=1, strategy=strategy, temperature=temperature)
        return sampler.task_probabilities()

    def compare(got: Any, expected: dict[str, float]) -> str | None:
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"return a dict over the tasks {sorted(expected)}, got {got!r}"
        tasks = sorted(expected)
        return _close()([got[t] for t in tasks], [expected[t] for t in tasks])

    return _grade("task sampling probabilities", student, cases, reference, compare,
                  "fmuia_lib.data.sampler.TaskBatchSampler.task_probabilities")


def check_cosine_lr(student: Callable[[int, int, float, float], float]) -> ExerciseResult:
    """``student(step, total_steps, peak_lr, min_lr) -> lr`` of cosine annealing.

    Graded against ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped ``step`` times.
    """
    import torch

    rng = np.random.default_rng(SEED)
    cases = []
    for _ in range(12):
        total = int(rng.integers(5, 60))
        cases.append(((int(rng.integers(0, total + 1)), total, float(rng.choice([1e-4, 1e-3, 0.1])),
                       float(rng.choice([0.0, 1e-6, 1e-5]))), {}))

    def reference(step: int, total: int, peak: float, floor: float) -> float:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=floor)
        for _ in range(step):
            opt.step()
            sched.step()
        return sched.get_last_lr()[0]

    return _grade("cosine learning-rate schedule", student, cases, reference, _close(rtol=1e-6),
                  "torch.optim.lr_scheduler.CosineAnnealingLR")


def check_main_effect(student: Callable[[Any, str, str], dict]) -> ExerciseResult:
    """``student(table, factor, score) -> {level: mean score}`` over the runs at each level."""
    import pandas as pd

    rng = np.random.default_rng(SEED)
    cases = []
    for _ in range(10):
        n = int(rng.integers(2, 12))
        table = pd.DataFrame({"sampler": rng.choice(["uniform", "temperature", "proportional"], n),
                              "head_lr_mult": rng.choice([1.0, 10.0], n), "score": rng.random(n)})
        cases.append(((table, str(rng.choice(["sampler", "head_lr_mult"])), "score"), {}))

    def reference(table: Any, factor: str, score: str) -> dict:
        return table.groupby(factor)[score].mean().to_dict()

    def compare(got: Any, expected: dict) -> str | None:
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"return a dict over the levels {sorted(expected)}, got {got!r}"
        return _close()([got[k] for k in sorted(expected)], [expected[k] for k in sorted(expected)])

    return _grade("main effect of a factor", student, cases, reference, compare,
                  "pandas DataFrame.groupby(factor)[score].mean()")


#: Every exercise by name, for listings and tests.
CHECKS = {
    "dice": check_dice,
    "hausdorff": check_hausdorff,
    "box_iou": check_box_iou,
    "mean_radial_error": check_mean_radial_error,
    "routing": check_routing,
    "lr_groups": check_lr_groups,
    "task_probabilities": check_task_probabilities,
    "cosine_lr": check_cosine_lr,
    "main_effect": check_main_effect,
}
