"""The manifest is the single task list: check it against the challenge configuration."""
from __future__ import annotations

import shutil

import pytest

from fmuia_lib import tasks as T

# The challenge's configuration (task_id: classes, or landmarks for Regression), as the
# official baseline configures its 27 heads.
CHALLENGE = {
    "segmentation": {
        "breast_lesion": 2, "cardiac_multi": 4, "carotid_artery": 2, "cervix": 2,
        "cervix_multi": 3, "fetal_abdomen_multi": 5, "fetal_head": 2, "fetal_heart": 2,
        "head_symphysis_multi": 3, "lung": 2, "ovary_tumor": 2, "thyroid_nodule": 2,
    },
    "classification": {
        "breast_2cls": 2, "breast_3cls": 3, "fetal_head_pos_cls": 8, "fetal_plane_cls": 6,
        "fetal_sacral_pos_cls": 8, "liver_lesion_2cls": 2, "lung_2cls": 2,
        "lung_disease_3cls": 3, "organ_cls": 6,
    },
    "detection": {"spinal_cord_injury_loc": 1, "thyroid_nodule_det": 1, "uterine_fibroid_det": 1},
    "Regression": {"FUGC": 2, "IUGC": 3, "fetal_femur": 2},
}


def test_manifest_matches_challenge_configuration():
    tasks = T.load_manifest()
    assert len(tasks) == 27
    got = {ttype: {t.task_id: t.num_classes for t in tasks.values() if t.task_type == ttype}
           for ttype in T.TASK_TYPES}
    assert got == CHALLENGE


@pytest.mark.parametrize("task", T.load_manifest().values(), ids=lambda t: t.task_id)
def test_row_is_consistent(task):
    if task.task_type == T.SEGMENTATION:
        assert task.class_names[0] == "background"
        assert task.seg_folder == T.SEG_FOLDERS[task.num_classes]
        assert task.folder == f"Segmentation/{task.seg_folder}/{task.task_id}"
        assert task.metrics == ("DSC", "HD")
    else:
        assert task.seg_folder == ""
        assert task.folder == f"{T.TYPE_FOLDERS[task.task_type]}/{task.task_id}"
    if task.task_type != T.DETECTION:
        assert len(task.class_names) == task.num_classes
    assert len(set(task.class_names)) == len(task.class_names)
    assert task.is_dense == (task.task_type in ("segmentation", "detection"))
    w, h = task.phantom_size
    assert 128 <= w <= 1024 and 128 <= h <= 1024
    if task.phantom_class_weights:
        assert len(task.phantom_class_weights) == task.num_classes


def test_real_us_folders_exist_in_shared_slice(repo_root):
    real = repo_root.parent / "shared" / "real_us"
    if not real.is_dir():
        pytest.skip(f"no real-data slice at {real}")
    named = {t.real_us_folder for t in T.load_manifest().values() if t.real_us_folder}
    assert named == {"BUSI", "HC18", "CCAUI_carotid", "DDTI", "POCUS_lung"}
    assert all((real / f).is_dir() for f in named)
    assert sum(1 for t in T.load_manifest().values() if t.real_us_folder) == 9


def test_lookup_helpers():
    tasks = T.load_manifest()
    t = tasks["cardiac_multi"]
    assert t.class_index("myocardium") == 2
    with pytest.raises(KeyError, match="unknown class name 'aorta'"):
        t.class_index("aorta")
    with pytest.raises(KeyError, match=r"unknown task_id\(s\) \['nope'\]"):
        T.select_tasks(["cervix", "nope"])
    assert [s.task_id for s in T.select_tasks(["FUGC", "breast_lesion"])] == ["breast_lesion", "FUGC"]
    assert tasks["IUGC"].num_points == 3
    with pytest.raises(AttributeError):
        tasks["cervix"].num_points


def test_manifest_hash_tracks_task_definitions(tmp_path, repo_root):
    base = T.manifest_hash()
    assert base == T.manifest_hash() and len(base) == 16
    assert T.manifest_hash(["cervix"]) != base
    edited = tmp_path / "m.csv"
    text = (repo_root / "data_manifest.csv").read_text()
    edited.write_text(text.replace("background;cervix,", "background;cervix_uteri,"))
    assert T.manifest_hash(manifest=edited) != base


@pytest.mark.parametrize("old,new,message", [
    ("left_atrium,heart,Four,", "left_atrium,heart,Five,", "seg_folder must be 'Four'"),
    ("FUGC,Regression,2,", "FUGC,regression,2,", "task_name 'regression' of FUGC"),
    ("lung_2cls,classification,2,regular;abnormal", "lung_2cls,classification,2,regular", "1 class_names"),
    ("organ_cls,classification,6,", "breast_2cls,classification,6,", "duplicate task_id 'breast_2cls'"),
    ("thyroid_nodule_det,detection,1,", "thyroid_nodule_det,detection,2,", "num_classes 1"),
])
def test_bad_manifest_rows_name_file_and_line(tmp_path, repo_root, old, new, message):
    bad = tmp_path / "bad.csv"
    text = (repo_root / "data_manifest.csv").read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(T.ManifestError) as err:
        T.load_manifest(bad)
    assert str(bad) in str(err.value) and "line" in str(err.value)
    assert message in str(err.value)


def test_packaged_manifest_is_the_top_level_file(repo_root):
    assert T.DEFAULT_MANIFEST.resolve() == (repo_root / "data_manifest.csv").resolve()


def test_missing_manifest(tmp_path):
    with pytest.raises(T.ManifestError, match="manifest not found"):
        T.load_manifest(tmp_path / "none.csv")
    shutil.copy(T.DEFAULT_MANIFEST, tmp_path / "ok.csv")
    assert len(T.load_manifest(tmp_path / "ok.csv")) == 27
