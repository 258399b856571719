"""The prepared form of a data root (``data.cache``): items equal to the decoded ones, rebuilt when the data change."""
from __future__ import annotations

import os

import pytest
import torch

from fmuia_lib.data.cache import CacheError, build_cache
from fmuia_lib.data.dataset import MultiTaskDataset, PredictionDataset
from fmuia_lib.data.transforms import build_transforms
from fmuia_lib.training.data import SeededItems


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) if k in ("image", "target", "orig_size")
               else a[k] == b[k] for k in a) and a.keys() == b.keys()


@pytest.mark.parametrize("augment", ["official", "light"])
def test_cached_items_equal_decoded_ones_with_the_same_augmentation(data_root, tmp_path, augment):
    dataset = MultiTaskDataset(data_root, transforms=build_transforms(64, train=True, augment=augment))
    cache = build_cache(data_root, tmp_path / "cache", 64)
    cached = dataset.with_cache(cache)
    plain_items, cached_items = SeededItems(dataset), SeededItems(cached)
    for i in range(len(dataset)):
        for seed in (0, 7):  # the same seed draws the same augmentation on either
            assert _equal(plain_items[i, seed], cached_items[i, seed]), dataset.frame["source"][i]
    evaluation = PredictionDataset(data_root, transforms=build_transforms(64, train=False))
    for i in range(len(evaluation)):
        assert _equal(evaluation[i], evaluation.with_cache(build_cache(data_root, tmp_path / "p", 64, labels=False))[i])


def test_the_cache_is_rebuilt_when_the_size_or_a_file_changes(make_root, tmp_path):
    root = make_root(tmp_path, tasks=["organ_cls", "breast_lesion"], n=3)
    first = build_cache(root, tmp_path / "cache", 32)
    stamp = (tmp_path / "cache" / "images.npy").stat().st_mtime_ns
    assert build_cache(root, tmp_path / "cache", 32).meta == first.meta  # reused
    assert (tmp_path / "cache" / "images.npy").stat().st_mtime_ns == stamp
    assert build_cache(root, tmp_path / "cache", 64).size == 64  # another size: rebuilt
    image = next(root.rglob("imgs/*.png"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10 ** 9))
    rebuilt = build_cache(root, tmp_path / "cache", 64)
    assert rebuilt.meta["fingerprint"] != first.meta["fingerprint"]
    with pytest.raises(CacheError, match="data root"):
        build_cache(root, root / "cache", 32)  # never inside the data root
    dataset = MultiTaskDataset(root, transforms=build_transforms(32, train=True))
    with pytest.raises(ValueError, match="64 px"):
        dataset.with_cache(rebuilt)  # the transform resizes to 32


def test_training_and_prediction_through_the_cache_give_the_same_numbers(tiny_run, tmp_path):
    from conftest import TINY_MODEL

    from fmuia_lib.cli import main as fmuia
    from fmuia_lib.config import TrainConfig
    from fmuia_lib.switches import FMUIA_RECIPE
    from fmuia_lib.training import train

    val, checkpoint = tiny_run
    runs = {}
    for cached in (False, True):
        config = TrainConfig.from_dict(dict(
            data_root=str(val.parent / "train"), val_root=str(val), switches=list(FMUIA_RECIPE), epochs=None,
            **TINY_MODEL, image_size=64, batch_size=2, max_steps=2, eval_every=2, num_workers=0, device="cpu",
            out_dir=str(tmp_path / f"run-{cached}"), seed=1, data_cache=cached))
        runs[cached] = train(config, progress=False)
    assert (tmp_path / "run-True" / "data_cache" / "train-64px" / "meta.json").is_file()
    assert runs[True].history["loss"].tolist() == runs[False].history["loss"].tolist()
    assert runs[True].val_history.equals(runs[False].val_history)  # whole-set validation through the cache too

    for name, extra in (("plain", []), ("cached", ["--cache", str(tmp_path / "predict-cache")])):
        assert fmuia(["predict", "--checkpoint", str(checkpoint), "--data", str(val), "--out", str(tmp_path / name),
                      "--device", "cpu", *extra]) == 0
    for file in ("classification_predictions.json", "detection_predictions.json", "regression_predictions.json"):
        assert (tmp_path / "plain" / file).read_bytes() == (tmp_path / "cached" / file).read_bytes()
    masks = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.png"))
    assert masks and all((tmp_path / "plain" / m).read_bytes() == (tmp_path / "cached" / m).read_bytes() for m in masks)
