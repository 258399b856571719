"""The autograded checks: the library's own functions pass, wrong ones fail, stubs are NOT DONE."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fmuia_lib import exercises, metrics


def _stub(*_args, **_kwargs):
    raise NotImplementedError


def test_dice_reference_passes_and_a_wrong_rule_fails(capsys):
    assert exercises.check_dice(metrics.dice_per_class).passed

    def empty_is_zero(pred, gt, num_classes):  # the classic slip: both-empty class scored 0
        d = metrics.dice_per_class(pred, gt, num_classes)
        present = [((pred == c) | (gt == c)).any() for c in range(num_classes)]
        return np.where(present, d, 0.0)

    result = exercises.check_dice(empty_is_zero)
    assert result.status == "fail"
    assert "[FAIL] Dice per class: case" in capsys.readouterr().out


def test_hausdorff_reference_passes_and_contour_only_distance_fails():
    assert exercises.check_hausdorff(metrics.hausdorff_pair).passed
    # The HD95 variant (surface distances, 95th percentile) is a different metric.
    assert not exercises.check_hausdorff(lambda a, b: metrics.hausdorff_pair(a, b, percentile=95)).passed


def test_box_iou_and_mre():
    assert exercises.check_box_iou(metrics.box_iou).passed
    assert exercises.check_box_iou(lambda p, g: metrics.box_iou(p, g) * 0.99).status == "fail"
    assert exercises.check_mean_radial_error(metrics.mean_radial_error).passed
    # Summing instead of averaging the landmark distances fails where K > 1.
    wrong = lambda p, g: np.linalg.norm(p - g, axis=2).sum(axis=1)  # noqa: E731
    assert exercises.check_mean_radial_error(wrong).status == "fail"


def test_routing_rule():
    assert exercises.check_routing(lambda task: task.is_dense).passed
    assert exercises.check_routing(lambda task: task.task_type == "segmentation").status == "fail"
    result = exercises.check_routing(lambda task: "yes")
    assert result.status == "fail" and "True or False" in result.message


def test_task_probabilities():
    def mine(counts, strategy, temperature):
        n = np.array(list(counts.values()), float)
        w = {"uniform": np.ones_like(n), "proportional": n}.get(strategy, n ** (1 / temperature))
        return dict(zip(counts, w / w.sum()))

    assert exercises.check_task_probabilities(mine).passed
    # Temperature applied as n**T instead of n**(1/T) fails.
    assert exercises.check_task_probabilities(
        lambda c, s, t: mine(c, s, 1 / t if s == "temperature" else t)).status == "fail"


def test_lr_groups_checked_parameter_by_parameter():
    def trainable(module):
        return [p for p in module.parameters() if p.requires_grad]

    def right(model, lr, mult):
        return [{"params": trainable(model.encoder), "lr": lr},
                {"params": trainable(model.fpn_decoder), "lr": lr * mult},
                {"params": trainable(model.heads), "lr": lr * mult}]

    def baseline_forgets_fpn(model, lr, mult):
        return [right(model, lr, mult)[0], right(model, lr, mult)[2]]

    assert exercises.check_lr_groups(right).passed
    result = exercises.check_lr_groups(baseline_forgets_fpn)
    assert result.status == "fail" and "in no group" in result.message


def test_cosine_lr():
    def cosine(step, total, peak, floor):
        return floor + (peak - floor) * (1 + math.cos(math.pi * step / total)) / 2

    assert exercises.check_cosine_lr(cosine).passed
    assert exercises.check_cosine_lr(lambda s, t, p, f: cosine(s, t, p, 0.0)).status == "fail"


def test_main_effect():
    assert exercises.check_main_effect(lambda t, f, s: t.groupby(f)[s].mean().to_dict()).passed
    assert exercises.check_main_effect(lambda t, f, s: t.groupby(f)[s].median().to_dict()).status == "fail"


@pytest.mark.parametrize("name", sorted(exercises.CHECKS))
def test_every_check_reports_a_stub_as_not_done_without_raising(name, capsys):
    result = exercises.CHECKS[name](_stub)
    assert result.status == "not done" and not result
    assert "[NOT DONE]" in capsys.readouterr().out


def test_a_crashing_answer_is_feedback_not_an_exception():
    result = exercises.check_dice(lambda pred, gt, c: 1 / 0)
    assert result.status == "fail"
    assert "ZeroDivisionError" in result.message and "inputs:" in result.message


def test_messages_are_the_same_on_every_run(capsys):
    exercises.check_dice(metrics.dice_per_class)
    first = capsys.readouterr().out
    exercises.check_dice(metrics.dice_per_class)
    assert capsys.readouterr().out == first
