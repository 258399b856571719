"""The public-dataset converter (``fmuia data real``) on copies of the real slices.

Each dataset fixture copies a few files of ``../shared/real_us`` (the slice next to the
repository) into ``tmp_path`` in the dataset's original layout; the expected targets
are computed here straight from the original files, independently of the converter.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmuia_lib.cli import main as cli_main
from fmuia_lib.data.layout import read_root, validate_root
from fmuia_lib.sources.real import RealDataError, citations, convert_real
from fmuia_lib.sources.real import busi
from fmuia_lib.sources.real.convert import FILES_LIST, PROVENANCE, REPORT, split_images

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_US = REPO_ROOT.parent / "shared" / "real_us"
needs_slice = pytest.mark.skipif(not REAL_US.is_dir(),
                                 reason=f"real ultrasound slice not found at {REAL_US}")
pytestmark = needs_slice


def copy_files(dst: Path, rel_paths: list[str]) -> Path:
    """Copy ``rel_paths`` (relative to the slice) into ``dst``, keeping the layout."""
    for rel in rel_paths:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL_US / rel, target)
    return dst


def binary(path: Path) -> np.ndarray:
    """An original annotation as a boolean mask (any channel non-zero)."""
    values = np.asarray(Image.open(path).convert("L"))
    return values > 0


def rows(out: Path, split: str, task_id: str) -> pd.DataFrame:
    frame = read_root(out / split)
    return frame[frame["task_id"] == task_id]


def all_rows(out: Path, task_id: str) -> pd.DataFrame:
    return pd.concat([rows(out, s, task_id).assign(split=s) for s in ("train", "val")],
                     ignore_index=True)


def provenance(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / PROVENANCE, dtype=str, keep_default_na=False)


def split_of(out: Path) -> dict[tuple[str, str], str]:
    """``{(task_id, original_file): split}``."""
    prov = provenance(out)
    return {(r.task_id, r.original_file): r.split for r in prov.itertuples()}


def assert_groups_whole(out: Path, group_of) -> None:
    """No group (patient, subject) has images in both splits, in any task."""
    prov = provenance(out)
    prov["group"] = prov["original_file"].map(group_of)
    splits_per_group = prov.groupby("group")["split"].nunique()
    assert (splits_per_group == 1).all(), splits_per_group[splits_per_group > 1]


# -- BUSI -------------------------------------------------------------------------------------

BUSI_FILES = [f"BUSI/{c}/{c} ({n}){s}.png" for c, ns in
              (("benign", (1, 25, 3)), ("malignant", (1, 11, 16)), ("normal", (1, 11, 16)))
              for n in ns for s in ("", "_mask")] + ["BUSI/benign/benign (25)_mask_1.png"]


@pytest.fixture
def busi_src(tmp_path) -> Path:
    return copy_files(tmp_path / "src", BUSI_FILES)


def test_busi_masks_labels_and_shared_split(busi_src, tmp_path):
    out = tmp_path / "out"
    report = convert_real(busi_src, out, seed=3)
    assert report["found"] == ["BUSI"]
    assert report["missing"] == ["HC18", "CCAUI_carotid", "DDTI", "POCUS_lung"]
    seg, cls3, cls2 = (all_rows(out, t) for t in ("breast_lesion", "breast_3cls", "breast_2cls"))
    assert (len(seg), len(cls3), len(cls2)) == (9, 9, 6)  # normal images are not in breast_2cls
    assert report["tasks"]["breast_2cls"]["excluded_labels"] == {"normal": 3}

    # classes by manifest name: breast_3cls = normal;benign;malignant, breast_2cls = benign;malignant
    def labels(frame):
        return {Path(p).stem: int(v) for p, v in zip(frame["image_path"], frame["mask"])}
    assert labels(cls3) == {"benign_1": 1, "benign_25": 1, "benign_3": 1, "malignant_1": 2,
                            "malignant_11": 2, "malignant_16": 2, "normal_1": 0, "normal_11": 0,
                            "normal_16": 0}
    assert labels(cls2) == {"benign_1": 0, "benign_25": 0, "benign_3": 0, "malignant_1": 1,
                            "malignant_11": 1, "malignant_16": 1}

    masks = {Path(p).stem: np.asarray(Image.open(f)) for p, f in zip(seg["mask_path"], seg["mask_file"])}
    for name, mask in masks.items():
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    # the second lesion mask is OR-ed in
    src = busi_src / "BUSI" / "benign"
    expected = binary(src / "benign (25)_mask.png") | binary(src / "benign (25)_mask_1.png")
    assert not binary(src / "benign (25)_mask_1.png").all() and binary(src / "benign (25)_mask_1.png").any()
    np.testing.assert_array_equal(masks["benign_25"], expected.astype(np.uint8))
    for name in ("normal_1", "normal_11", "normal_16"):
        assert masks[name].max() == 0
    assert all(masks[n].max() == 1 for n in masks if not n.startswith("normal"))

    # image pixels kept
    image_file = seg.loc[seg["image_path"].str.endswith("/malignant_11.png"), "image_file"].item()
    np.testing.assert_array_equal(np.asarray(Image.open(image_file)),
                                  np.asarray(Image.open(busi_src / "BUSI/malignant/malignant (11).png")))

    # one split per image, shared by the three tasks
    where = split_of(out)
    for original in {f for _, f in where}:
        assert len({s for (t, f), s in where.items() if f == original}) == 1
    assert {s for s in where.values()} == {"train", "val"}


def test_busi_mask_without_image_is_an_error(busi_src, tmp_path):
    (busi_src / "BUSI/benign/benign (3).png").unlink()
    with pytest.raises(RealDataError, match=re.escape("benign (3)_mask.png") + ".*without its image"):
        convert_real(busi_src, tmp_path / "out")


def test_busi_unknown_class_folder_is_an_error(busi_src, tmp_path):
    (busi_src / "BUSI/benign").rename(busi_src / "BUSI/benigne")
    with pytest.raises(RealDataError, match="benigne.*unknown BUSI class folder"):
        convert_real(busi_src, tmp_path / "out")


# -- HC18 -------------------------------------------------------------------------------------

HC18_NUMBERS = ("000", "013", "040", "053")


def test_hc18_filled_annotations_kept(tmp_path):
    src = copy_files(tmp_path / "src", [f"HC18/training_set/{n}_HC{s}.png" for n in HC18_NUMBERS
                                        for s in ("", "_Annotation")])
    out = tmp_path / "out"
    report = convert_real(src, out)
    assert report["datasets"]["HC18"]["outlines_filled"] == 0
    seg = all_rows(out, "fetal_head")
    assert len(seg) == 4
    for path, mask_file in zip(seg["image_path"], seg["mask_file"]):
        number = Path(path).stem.split("_")[0]
        expected = binary(src / f"HC18/training_set/{number}_HC_Annotation.png")
        np.testing.assert_array_equal(np.asarray(Image.open(mask_file)), expected.astype(np.uint8))


def _outline_case(src: Path, number: str, axes=(150, 100), gap: int = 0) -> np.ndarray:
    """Write an HC18-style image and a thin (2 px) ellipse outline; return the solid ellipse."""
    folder = src / "HC18" / "training_set"
    folder.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(int(number)).integers(0, 255, (540, 800), dtype=np.uint8)
    cv2.imwrite(str(folder / f"{number}_HC.png"), image)
    annotation = np.zeros((540, 800), np.uint8)
    cv2.ellipse(annotation, (400, 270), axes, 30, 0, 360 - gap, 255, thickness=2)
    cv2.imwrite(str(folder / f"{number}_HC_Annotation.png"), annotation)
    solid = np.zeros_like(annotation)
    cv2.ellipse(solid, (400, 270), axes, 30, 0, 360, 1, thickness=-1)
    return solid


def test_hc18_outline_annotation_is_filled(tmp_path):
    src = tmp_path / "src"
    axes = {"001": (150, 100), "002": (90, 70)}
    solids = {n: _outline_case(src, n, a) for n, a in axes.items()}
    out = tmp_path / "out"
    report = convert_real(src, out)
    assert report["datasets"]["HC18"]["outlines_filled"] == 2
    seg = all_rows(out, "fetal_head")
    assert len(seg) == 2
    for path, mask_file in zip(seg["image_path"], seg["mask_file"]):
        number = Path(path).stem.split("_")[0]
        mask = np.asarray(Image.open(mask_file))
        assert set(np.unique(mask)) == {0, 1}
        # the filled area is the ellipse's (pi a b) up to the outline's own width
        a, b = axes[number]
        assert abs(int(mask.sum()) - np.pi * a * b) / (np.pi * a * b) < 0.05
        solid = solids[number].astype(bool)
        assert (mask.astype(bool) & solid).sum() / (mask.astype(bool) | solid).sum() > 0.95


def test_hc18_open_outline_is_an_error(tmp_path):
    src = tmp_path / "src"
    _outline_case(src, "003", gap=40)
    with pytest.raises(RealDataError, match=re.escape("003_HC_Annotation.png") + ".*encloses no area"):
        convert_real(src, tmp_path / "out")


# -- CCAUI ------------------------------------------------------------------------------------

CCAUI_STEMS = ["202201121748100022VAS_slice_1069", "202201121748100022VAS_slice_1411",
               "202201121752220024VAS_slice_599", "202201121752220024VAS_slice_603",
               "202201121806070027VAS_slice_103", "202201121806070027VAS_slice_24",
               "202201121807410028VAS_slice_693", "202201121807410028VAS_slice_700"]


def test_ccaui_subjects_stay_whole(tmp_path):
    src = copy_files(tmp_path / "src", [f"CCAUI_carotid/{d}/{s}.png" for s in CCAUI_STEMS
                                        for d in ("US images", "Expert mask images")])
    out = tmp_path / "out"
    report = convert_real(src, out)
    assert report["datasets"]["CCAUI"]["groups"] == {"train": 3, "val": 1}
    seg = all_rows(out, "carotid_artery")
    assert sorted(seg["split"]) == ["train"] * 6 + ["val"] * 2
    assert_groups_whole(out, lambda f: Path(f).name.split("VAS")[0])
    for path, mask_file in zip(seg["image_path"], seg["mask_file"]):
        expected = binary(src / "CCAUI_carotid/Expert mask images" / f"{Path(path).stem}.png")
        np.testing.assert_array_equal(np.asarray(Image.open(mask_file)), expected.astype(np.uint8))


def test_ccaui_image_without_mask_is_an_error(tmp_path):
    src = copy_files(tmp_path / "src", [f"CCAUI_carotid/US images/{CCAUI_STEMS[0]}.png"])
    (src / "CCAUI_carotid/Expert mask images").mkdir()
    with pytest.raises(RealDataError, match=CCAUI_STEMS[0] + ".*image without its mask"):
        convert_real(src, tmp_path / "out")


# -- DDTI -------------------------------------------------------------------------------------

DDTI_STEMS = ["14_1(1)", "14_1(2)", "366_1", "366_2", "366_3", "378_1(1)", "378_1(2)",
              "100_1(1)", "141_1", "160_1"]


@pytest.fixture
def ddti_src(tmp_path) -> Path:
    src = copy_files(tmp_path / "src", [f"DDTI/{d}/{s}.{e}" for s in DDTI_STEMS
                                        for d, e in (("cropped", "png"), ("mask", "gif"))])
    # the full diagnosis.csv, with 141_1's label blanked (an unlabelled crop)
    lines = (REAL_US / "DDTI/diagnosis.csv").read_text().splitlines()
    lines = [re.sub(r"^(141_1,[^,]*),\d$", r"\1,", line) for line in lines]
    (src / "DDTI/diagnosis.csv").write_text("\n".join(lines) + "\n")
    return src


def test_ddti_masks_boxes_patients_and_unlabelled(ddti_src, tmp_path):
    out = tmp_path / "out"
    report = convert_real(ddti_src, out)
    seg, det = all_rows(out, "thyroid_nodule"), all_rows(out, "thyroid_nodule_det")
    assert len(seg) == 10
    assert len(det) == 9  # 378_1(2) has an empty mask: no box
    ddti = report["datasets"]["DDTI"]
    assert ddti["skipped"] == [{"dataset": "DDTI", "task_id": "thyroid_nodule_det",
                                "file": "DDTI/mask/378_1(2).gif", "reason": "empty mask: no box to detect"}]
    assert any("1 crops have no diagnosis label" in n and "141_1" in n for n in ddti["notes"])
    assert ddti["labels"]["train"].get("unlabelled", 0) + ddti["labels"]["val"].get("unlabelled", 0) == 1

    originals = {Path(f).stem: f for f in provenance(out)["original_file"]}
    for r in det.itertuples():
        gif = np.asarray(Image.open(ddti_src / "DDTI/mask" / f"{_ddti_stem(r.image_path, originals)}.gif"))
        ys, xs = np.nonzero(gif)
        assert r.target == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    for r in seg.itertuples():
        gif = np.asarray(Image.open(ddti_src / "DDTI/mask" / f"{_ddti_stem(r.image_path, originals)}.gif"))
        np.testing.assert_array_equal(np.asarray(Image.open(r.mask_file)), (gif > 0).astype(np.uint8))
    assert_groups_whole(out, lambda f: Path(f).name.split("_")[0])
    where = split_of(out)
    for stem in set(DDTI_STEMS) - {"378_1(2)"}:  # images in both tasks: same split in both
        f = f"DDTI/cropped/{stem}.png"
        assert where[("thyroid_nodule", f)] == where[("thyroid_nodule_det", f)]


def _ddti_stem(image_path: str, originals: dict[str, str]) -> str:
    """The original stem of a converted DDTI image (``14_1_2.png`` <- ``14_1(2)``)."""
    name = Path(image_path).stem
    return next(s for s in originals if re.sub(r"[^A-Za-z0-9-]+", "_", s).strip("_") == name)


def test_ddti_unreadable_gif_is_an_error(ddti_src, tmp_path):
    (ddti_src / "DDTI/mask/366_2.gif").write_bytes(b"GIF89a this is not a gif")
    with pytest.raises(RealDataError, match=re.escape("366_2.gif") + ".*cannot read"):
        convert_real(ddti_src, tmp_path / "out")


# -- POCUS ------------------------------------------------------------------------------------

@pytest.fixture
def pocus_src(tmp_path) -> Path:
    """All patient-1 videos, three volpecelli videos (one source case) and some single stills."""
    with (REAL_US / "POCUS_lung/labels.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, all_rows_ = reader.fieldnames, list(reader)
    keep = [r for r in all_rows_ if re.search(r"pat1Image|volpecelli|Reg_Avi_Image00[159]|Pneu_Avi_"
                                               r"(consolidated|Video)|Cov_Oliviera", r["file"])]
    src = copy_files(tmp_path / "src", [f"POCUS_lung/{r['file']}" for r in keep]
                     + ["POCUS_lung/dataset_metadata.csv"])
    with (src / "POCUS_lung/labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
    return src


def test_pocus_labels_mapping_and_patient_groups(pocus_src, tmp_path):
    copy_files(pocus_src, ["POCUS_lung/pocus_images/convex/Pneu_emdocs_1.png"])  # not in labels.csv
    out = tmp_path / "out"
    report = convert_real(pocus_src, out, seed=1)
    assert report["datasets"]["POCUS"]["skipped"] == [
        {"dataset": "POCUS", "task_id": None, "file": "POCUS_lung/pocus_images/convex/Pneu_emdocs_1.png",
         "reason": "image not listed in labels.csv (no class)"}]
    labels = {r["file"]: r["class3"] for r in csv.DictReader((pocus_src / "POCUS_lung/labels.csv").open())}
    three, two = all_rows(out, "lung_disease_3cls"), all_rows(out, "lung_2cls")
    assert len(three) == len(two) == len(labels) == 17
    prov = provenance(out)
    original = dict(zip(zip(prov["task_id"], prov["image_path"]), prov["original_file"]))
    index3 = {"covid": 0, "pneumonia": 1, "regular": 2}  # manifest: covid;pneumonia;regular
    index2 = {"covid": 1, "pneumonia": 1, "regular": 0}  # manifest: regular;abnormal
    for frame, task_id, index in ((three, "lung_disease_3cls", index3), (two, "lung_2cls", index2)):
        for r in frame.itertuples():
            label = labels[original[(task_id, r.image_path)].removeprefix("POCUS_lung/")]
            assert r.target == index[label]
    # per-file licence from labels.csv
    licences = {r["file"]: r["license"] for r in csv.DictReader((pocus_src / "POCUS_lung/labels.csv").open())}
    for r in prov.itertuples():
        assert r.licence == licences[r.original_file.removeprefix("POCUS_lung/")]
    # patient 1 (dataset_metadata.csv "Patient ID / Name" 4) and the volpecelli case (134) stay whole
    where = split_of(out)
    for pattern in ("pat1Image", "volpecelli", "Cov_Oliviera"):
        assert len({s for (_, f), s in where.items() if re.search(pattern, f)}) == 1, pattern
    assert set(where.values()) == {"train", "val"}


def test_pocus_row_with_missing_file_is_an_error(pocus_src, tmp_path):
    first = next(csv.DictReader((pocus_src / "POCUS_lung/labels.csv").open()))["file"]
    (pocus_src / "POCUS_lung" / first).unlink()
    with pytest.raises(RealDataError, match=r"labels\.csv:2: file .*" + re.escape(Path(first).name)
                       + ".* not found"):
        convert_real(pocus_src, tmp_path / "out")


# -- output folder, determinism, CLI ------------------------------------------------------------

def test_refuses_non_empty_out_and_overwrite_removes_only_its_files(busi_src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RealDataError, match="not empty"):
        convert_real(busi_src, out)
    with pytest.raises(RealDataError, match="holds no previous conversion"):
        convert_real(busi_src, out, overwrite=True)
    (out / "notes.txt").unlink()
    convert_real(busi_src, out, seed=0)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    listed = set((out / FILES_LIST).read_text().split())
    assert {str(p) for p in first} == listed  # every file written is listed
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RealDataError, match="not empty"):
        convert_real(busi_src, out)
    convert_real(busi_src, out, seed=0, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()
              if p.name != "notes.txt"}
    assert second == first  # same seed, same bytes
    # the seed decides the split
    items = busi.collect(busi_src / "BUSI").items
    splits = {tuple(sorted(split_images(busi.DATASET, items, seed, 0.25).items())) for seed in range(4)}
    assert len(splits) > 1


def test_cli_converts_and_reports(busi_src, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["data", "real", "--src", str(busi_src), "--out", str(out), "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "found: BUSI" in printed and "not found: HC18, CCAUI_carotid, DDTI, POCUS_lung" in printed
    assert re.search(r"breast_2cls\s+train\s+\d+\s+benign=\d+, malignant=\d+", printed)
    assert json.loads((out / REPORT).read_text())["seed"] == 2
    assert cli_main(["data", "real", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "source folder not found" in capsys.readouterr().err


# -- the full slice ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real") / "out"
    return out, convert_real(REAL_US, out)


def test_full_slice_converts_and_validates(full):
    out, report = full
    assert report["found"] == ["BUSI", "HC18", "CCAUI_carotid", "DDTI", "POCUS_lung"]
    for split in ("train", "val"):
        assert validate_root(out / split) == []
    totals = {t: e["train"]["images"] + e["val"]["images"] for t, e in report["tasks"].items()}
    assert totals == {"breast_lesion": 42, "carotid_artery": 40, "fetal_head": 40, "thyroid_nodule": 43,
                      "breast_2cls": 28, "breast_3cls": 42, "lung_2cls": 42, "lung_disease_3cls": 42,
                      "thyroid_nodule_det": 42}
    for task_id, entry in report["tasks"].items():  # every task has both splits, val ~ 25 %
        assert 0.15 <= entry["val"]["images"] / totals[task_id] <= 0.35, task_id
    # the report's counts are those of the CSVs
    for split in ("train", "val"):
        counts = read_root(out / split).groupby("task_id").size().to_dict()
        assert counts == {t: e[split]["images"] for t, e in report["tasks"].items()}


def test_full_slice_groups_never_straddle(full):
    out, _ = full

    def group(original: str) -> str:
        dataset, name = original.split("/", 1)[0], Path(original).name
        if dataset == "CCAUI_carotid":
            return "ccaui " + name.split("VAS")[0]
        if dataset == "DDTI":
            return "ddti " + name.split("_")[0]
        if dataset == "HC18":
            return "hc18 " + name.split("_")[0]
        if dataset == "BUSI":
            return original
        return "pocus pat1" if re.search(r"pat1Image|Reg_Image_18(2106|2340)", name) else original
    assert_groups_whole(out, group)


def test_full_slice_provenance_and_citations(full):
    out, _ = full
    prov = provenance(out)
    for split in ("train", "val"):
        frame = read_root(out / split)
        assert set(zip(frame["task_id"], frame["image_path"])) == set(
            zip(*prov.loc[prov["split"] == split, ["task_id", "image_path"]].T.to_numpy()))
    assert all((REAL_US / f).is_file() for f in prov["original_file"])
    assert set(prov["dataset"]) == {"BUSI", "HC18", "CCAUI", "DDTI", "POCUS"}
    cited = citations(out)
    assert len(cited) == 5 and any("Al-Dhabyani" in c for c in cited) and any("Born J" in c for c in cited)
    train_citations = set(prov.loc[prov["split"] == "train", "citation"])
    assert citations(out / "train") == [c for c in cited if c in train_citations]
    assert citations(out / PROVENANCE) == cited
