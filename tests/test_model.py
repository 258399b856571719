"""MultiTaskNet: heads for every manifest task, routing, predict(), encoder weights."""
from __future__ import annotations

import time

import cv2
import huggingface_hub.constants
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from fmuia_lib.model import MultiTaskNet, PretrainedWeightsUnavailable, build_encoder
from fmuia_lib.tasks import CLASSIFICATION, DETECTION, REGRESSION, SEGMENTATION, select_tasks

SIZE = 64
#: fmuia's head types (switches centernet_detection, sigmoid_landmarks); the baseline's are
#: tested in test_official_recipe.py
FMUIA_HEADS = dict(det_head="centernet", landmark_head="sigmoid")


@pytest.fixture(scope="module")
def net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(select_tasks(), encoder_name="resnet18", encoder_weights=None, **FMUIA_HEADS).eval()


def test_one_head_per_manifest_task(net):
    assert list(net.heads) == [t.task_id for t in select_tasks()]
    assert len(net.heads) == 27


def test_heads_only_for_requested_tasks():
    tasks = select_tasks(["cervix", "organ_cls", "FUGC"])
    small = MultiTaskNet(tasks, encoder_name="resnet18", encoder_weights=None)
    assert sorted(small.heads) == ["FUGC", "cervix", "organ_cls"]
    with pytest.raises(KeyError, match="no head for task 'lung'.*cervix"):
        small(torch.zeros(1, 3, SIZE, SIZE), "lung")


def test_output_shapes_of_all_27_heads(net):
    images = torch.randn(2, 3, SIZE, SIZE)
    for task in select_tasks():
        out = net(images, task.task_id)
        pred = net.predict(images, task.task_id)
        c = task.num_classes
        if task.task_type == SEGMENTATION:
            assert out.shape == (2, c, SIZE, SIZE)
            assert pred["probs"].shape == (2, c, SIZE, SIZE)
            torch.testing.assert_close(pred["probs"].sum(1), torch.ones(2, SIZE, SIZE))
        elif task.task_type == CLASSIFICATION:
            assert out.shape == (2, c)
            torch.testing.assert_close(pred["probs"].sum(1), torch.ones(2))
        elif task.task_type == REGRESSION:
            assert out.shape == (2, c, 2)
            assert pred["points"].shape == (2, c, 2)
            assert 0 <= pred["points"].min() and pred["points"].max() <= 1
        elif task.task_type == DETECTION:
            assert out["heatmap"].shape == (2, 1, SIZE // 4, SIZE // 4)
            assert out["size"].shape == out["offset"].shape == (2, 2, SIZE // 4, SIZE // 4)
            boxes = pred["boxes"]
            assert boxes.shape == (2, 4) and pred["scores"].shape == (2,)
            assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
            assert 0 <= boxes.min() and boxes.max() <= 1


def test_fpn_runs_only_for_dense_tasks(net):
    calls = []
    handle = net.fpn_decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        images = torch.randn(1, 3, SIZE, SIZE)
        for task in select_tasks():
            calls.clear()
            net(images, task.task_id)
            assert len(calls) == (1 if task.is_dense else 0), task.task_id
    finally:
        handle.remove()


def test_predict_restores_training_mode(net):
    net.train()
    net.predict(torch.randn(1, 3, SIZE, SIZE), "organ_cls")
    assert net.training
    net.eval()


def test_input_size_must_be_multiple_of_32(net):
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.randn(1, 3, 48, 64), "cervix")


def test_timm_universal_encoder():
    small = MultiTaskNet(select_tasks(["cervix", "FUGC"]), encoder_name="tu-mobilenetv3_small_100",
                         encoder_weights=None)
    assert small(torch.randn(1, 3, SIZE, SIZE), "cervix").shape == (1, 2, SIZE, SIZE)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown encoder 'resnet-nope'"):
        build_encoder("resnet-nope", None)


def test_efficientnet_symmetric_same_padding_moves_into_its_convolutions():
    """fold_same_padding: the stride-1 convolutions pad inside the convolution, the
    asymmetric stride-2 pads stay, and the encoder computes exactly what smp's does."""
    from segmentation_models_pytorch.encoders._efficientnet import Conv2dStaticSamePadding

    from fmuia_lib.model import fold_same_padding

    torch.manual_seed(0)
    folded = build_encoder("efficientnet-b0", None)
    original = smp.encoders.get_encoder("efficientnet-b0", in_channels=3, depth=5, weights=None)
    original.load_state_dict(folded.state_dict())  # nothing in the state dict changed
    convs = [m for m in folded.modules() if isinstance(m, Conv2dStaticSamePadding)]
    padded = [m for m in convs if m.padding != (0, 0)]
    assert len(padded) == 12 and all(isinstance(m.static_padding, torch.nn.Identity) for m in padded)
    assert all(tuple(m.stride) == (1, 1) and m.padding == (m.kernel_size[0] // 2,) * 2 for m in padded)
    still_padded = [m for m in convs if isinstance(m.static_padding, torch.nn.ZeroPad2d)]
    assert still_padded and all(tuple(m.stride) == (2, 2) for m in still_padded)
    x = torch.randn(2, 3, 64, 96)
    for a, b in zip(folded.eval()(x), original.eval()(x)):
        assert torch.equal(a, b)
    assert fold_same_padding(folded) == 0 and fold_same_padding(original) == 12  # once only


def test_local_encoder_weights_file(tmp_path):
    torch.manual_seed(1)
    source = build_encoder("resnet18", None)
    path = tmp_path / "encoder.pth"
    torch.save(source.state_dict(), path)
    loaded = build_encoder("resnet18", str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_encoder("resnet18", str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not a state dict of encoder 'resnet18'"):
        build_encoder("resnet18", str(tmp_path / "wrong.pth"))


def test_pretrained_weights_offline_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the hub's offline mode
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable, match="imagenet-lite0-package.*/path/to/encoder.pth.*encoder_weights=None"):
        build_encoder("resnet18", "imagenet")
    assert time.perf_counter() - start < 20  # no network time-outs: the hub is never contacted


def test_pretrained_weights_unreachable_hub_gives_the_same_message(monkeypatch):
    """Online mode, the hub unreachable and nothing cached: the hub's own error becomes the message."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", unreachable)
    with pytest.raises(PretrainedWeightsUnavailable, match="'imagenet' for encoder 'resnet18' are not in the local cache"):
        build_encoder("resnet18", "imagenet")


def test_output_priors_start_landmark_heads_at_the_trivial_baseline(make_root, tmp_path):
    from fmuia_lib.data.dataset import MultiTaskDataset
    from fmuia_lib.heads import set_output_prior
    from fmuia_lib.training.baselines import training_priors

    root = make_root(tmp_path, n=6)
    train_set = MultiTaskDataset(root)
    priors = training_priors(train_set)
    landmark_tasks = [t for t in train_set.tasks if t.task_type == REGRESSION]
    assert sorted(priors) == sorted(t.task_id for t in landmark_tasks) and landmark_tasks
    torch.manual_seed(0)
    images = torch.randn(4, 3, SIZE, SIZE)
    for heads in ({"landmark_head": "linear"}, {"landmark_head": "sigmoid"}):
        net = MultiTaskNet(train_set.tasks, encoder_name="resnet18", encoder_weights=None, **heads).eval()
        for task in landmark_tasks:
            prior = priors[task.task_id]
            rows = train_set.frame.iloc[train_set.task_indices[task.task_id]]
            sizes = [cv2.imread(f, cv2.IMREAD_UNCHANGED).shape[1::-1] for f in rows["image_file"]]
            expected = np.mean([np.reshape(t, (-1, 2)) / size for t, size in zip(rows["target"], sizes)], axis=0)
            torch.testing.assert_close(prior, torch.tensor(expected, dtype=torch.float32))
            set_output_prior(net.heads[task.task_id], task, prior)
            if heads["landmark_head"] == "linear":  # no activation: the bias is the prior itself
                torch.testing.assert_close(net.heads[task.task_id].linear.bias, prior.flatten())
            else:
                torch.testing.assert_close(net.predict(images, task.task_id)["points"].mean(0), prior, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="prior has 3 values"):
        set_output_prior(net.heads[landmark_tasks[0].task_id], landmark_tasks[0], torch.tensor([0.2, 0.3, 0.5]))
    classifier = next(t for t in train_set.tasks if t.task_type == CLASSIFICATION)
    with pytest.raises(ValueError, match="for Regression"):
        set_output_prior(net.heads[classifier.task_id], classifier, torch.tensor([0.5, 0.5]))


def test_routing_follows_the_landmark_head_type():
    """heads.reads_fpn is the one rule: dense tasks and the heat-map landmark head read the
    FPN map, classification and the linear and sigmoid landmark heads the deepest map."""
    from fmuia_lib.heads import reads_fpn

    tasks = select_tasks(["breast_lesion", "organ_cls", "thyroid_nodule_det", "FUGC"])
    for landmark_head in ("linear", "sigmoid", "heatmap"):
        net = MultiTaskNet(tasks, encoder_name="resnet18", encoder_weights=None, fpn_pyramid_channels=64,
                           fpn_segmentation_channels=32, landmark_head=landmark_head)
        calls = []
        handle = net.fpn_decoder.register_forward_hook(lambda *_: calls.append(1))
        for task in tasks:
            calls.clear()
            net(torch.randn(2, 3, SIZE, SIZE), task.task_id)
            expected = task.is_dense or (task.task_type == REGRESSION and landmark_head == "heatmap")
            assert len(calls) == int(expected) == int(reads_fpn(task, landmark_head)), (task.task_id, landmark_head)
            assert net.reads_fpn[task.task_id] == expected
        handle.remove()


def test_heatmap_head_trains_on_the_soft_argmax_of_its_maps():
    from fmuia_lib.heads import HeatmapLandmarkHead, soft_argmax

    logits = torch.full((1, 2, 8, 16), -1e4)
    logits[0, 0, 2, 5] = 0.0  # all mass on one cell: its centre
    logits[0, 1, 7, 0] = logits[0, 1, 7, 1] = 0.0  # half on each of two cells: between their centres
    torch.testing.assert_close(soft_argmax(logits), torch.tensor([[[5.5 / 16, 2.5 / 8], [1.0 / 16, 7.5 / 8]]]))
    head = HeatmapLandmarkHead(32, 3)
    out = head(torch.randn(2, 32, 16, 16))
    assert out["heatmap"].shape == (2, 3, 16, 16) and out["points"].shape == (2, 3, 2)
    # the last layer starts at zero: flat maps, every point at the image centre
    torch.testing.assert_close(out["points"], torch.full((2, 3, 2), 0.5))
    torch.testing.assert_close(head.decode(out)["points"], out["points"], atol=1e-5, rtol=0)


def test_heatmap_head_predicts_the_spatial_median_of_its_maps():
    """Prediction takes the point of least expected distance under each map (what MRE scores):
    on a map split 70/30 between two cells it is the heavier cell, where the soft-argmax lies
    between them; on random maps no point of a fine grid has a lower expected distance."""
    from fmuia_lib.heads import HeatmapLandmarkHead, cell_centres, soft_argmax, spatial_median

    logits = torch.full((1, 1, 8, 16), -1e4)
    logits[0, 0, 1, 2], logits[0, 0, 6, 13] = np.log(0.7), np.log(0.3)
    torch.testing.assert_close(spatial_median(logits), torch.tensor([[[2.5 / 16, 1.5 / 8]]]))
    assert soft_argmax(logits)[0, 0, 0] > 0.3  # the mean: 0.7 x 2.5/16 + 0.3 x 13.5/16

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8) * torch.tensor([1.0, 3.0, 10.0]).view(1, 3, 1, 1)
    probs = logits.reshape(2, 3, 64).softmax(dim=-1)
    xs, ys = cell_centres(8, 8)
    cells = torch.stack([xs.repeat(8), ys.repeat_interleave(8)], dim=-1)

    def expected_distance(points):  # B x K x N x 2 candidate points -> B x K x N
        return (probs[:, :, None, :] * (cells[None, None, None] - points[..., None, :]).norm(dim=-1)).sum(dim=-1)

    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 101), torch.linspace(0, 1, 101), indexing="xy"), -1)
    best = expected_distance(grid.reshape(1, 1, -1, 2).expand(2, 3, -1, 2)).min(dim=-1).values
    found = expected_distance(spatial_median(logits)[:, :, None])[..., 0]
    assert (found <= best + 1e-4).all(), (found - best)

    head = HeatmapLandmarkHead(32, 2)
    torch.nn.init.normal_(head.heatmap.weight)
    out = head(torch.randn(2, 32, 16, 16))
    torch.testing.assert_close(head.decode(out)["points"], spatial_median(out["heatmap"]))
    # prediction runs under autocast: the median stays float32 (bf16 would round 0.7 by 0.004)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = spatial_median(logits)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, spatial_median(logits), atol=0, rtol=0)


def test_heatmap_head_prior_starts_it_near_the_mean_landmarks_and_travels_in_its_state():
    from fmuia_lib.heads import HeatmapLandmarkHead, set_output_prior

    task = select_tasks(["IUGC"])[0]
    head = HeatmapLandmarkHead(32, 3)
    prior = torch.tensor([[0.3, 0.35], [0.45, 0.6], [0.7, 0.65]])
    set_output_prior(head, task, prior)
    points = head(torch.randn(2, 32, 16, 16))["points"]
    # The last layer starts at zero, so the points are the log-prior's soft-argmax, which is solved
    # to equal the prior (heads.gaussian_centres_for_mean): float32 rounding only.
    torch.testing.assert_close(points, prior.expand(2, 3, 2), atol=1e-5, rtol=0)
    other = HeatmapLandmarkHead(32, 3)
    other.load_state_dict(head.state_dict())
    torch.testing.assert_close(other(torch.randn(1, 32, 16, 16))["points"][0], points[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="prior has 2 points, the head predicts 3"):
        set_output_prior(head, task, torch.rand(2, 2))


def test_memory_format_is_chosen_where_it_pays_and_inputs_follow_it():
    from fmuia_lib.model import channels_last_pays

    assert channels_last_pays("tu-lcnet_050", "cpu") and channels_last_pays("efficientnet-b4", "cpu")
    assert not channels_last_pays("resnet18", "cpu") and not channels_last_pays("tu-resnet18", "cpu")
    assert channels_last_pays("resnet18", "cuda") and not channels_last_pays("efficientnet-b0", "mps")
    tasks = select_tasks(["cervix", "FUGC"])
    torch.manual_seed(0)
    model = MultiTaskNet(tasks, encoder_name="tu-lcnet_050", encoder_weights=None, fpn_pyramid_channels=64,
                         fpn_segmentation_channels=32, landmark_head="heatmap").eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    nchw = model.place("cpu", channels_last=False)(images, "cervix")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert not model.channels_last and conv.weight.is_contiguous()
    model.place("cpu")  # None: where it pays, on CPU for LCNet
    assert model.channels_last and model.channels_last_setting is None
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    nhwc = model(images, "cervix")  # an NCHW input is converted by the model
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    # the layout changes the rounding of the convolutions, not the function
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-5)
    assert not model.place("cpu", channels_last=False).channels_last
