"""Reading images and masks from disk: one reader per file kind, without torch.

Every part of fmuia that opens an image or a mask goes through this module: the layout
checks (``fmuia data check``), the datasets, prediction, the scorer and the submission
validator. It imports only numpy, OpenCV and Pillow, so scoring a submission never pays
for importing torch.

What a file must be (:func:`content_problem`), the same for every reader
    Images are PNG or JPEG, masks PNG, judged by the bytes, not the file name (BMP bytes
    saved as ``.png`` are refused; ``read_image(path, by_content=True)`` is the
    challenge's own, laxer reading, for the exported container). The file must be whole: a PNG's chunks all present
    with their checksums through ``IEND``, a JPEG's last scan followed by its end marker.
    A cut-off file is refused even where a decoder would fill the missing rows with gray.
Images (:func:`read_image`)
    Any PNG/JPEG that OpenCV decodes (Pillow as a fallback): grayscale, RGB, RGBA,
    palette, 8 or 16 bits. The result is always ``H x W x 3`` uint8 RGB, converted the
    way the challenge's own inference code reads images (``cv2.imread`` in colour mode):
    grayscale is repeated to three channels, alpha is dropped, 16-bit samples keep their
    high byte. EXIF orientation is ignored, so sizes and coordinates match the file as
    stored.
Image sizes (:func:`image_header`, :func:`image_size`)
    From the file header only (no pixels decoded; the format rule above still applies).
Masks (:func:`read_mask`), the same rules for ground truth and predictions
    A mask holds one class index per pixel, in a PNG (lossless). Stored 8- or 16-bit, as
    one channel, or as 3/4 channels whose colour channels are equal (a gray mask saved as
    RGB; alpha is ignored): the values are the class indices as stored. Colour channels
    that differ are refused: no class index can be read from them.
    :class:`Mask` also records how the file was stored, because the challenge's scorer
    reads every mask with ``cv2.IMREAD_GRAYSCALE``, which keeps an 8-bit single-channel
    mask as it is, converts equal colour channels to the same values, but turns 16-bit
    values into their high byte (class indices 0..255 all become 0).
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fmuia_lib.paths import not_regular_problem

#: The most pixels an image or mask may have (OpenCV's own limit, 2**30): a header that claims
#: more (a "decompression bomb") is refused before anything is decoded.
MAX_PIXELS = 1 << 30


class ImageReadError(ValueError):
    """A file cannot be read as an image or a mask.

    ``reason`` says why without the path (for messages that already name the file, such
    as a CSV problem), ``path`` is the file; ``str()`` gives both.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{reason}: {path}")


class ImageHeader(NamedTuple):
    height: int
    width: int
    format: str | None  # as Pillow names it: "PNG", "JPEG", ...


#: The formats an image may have, and a mask (as Pillow names them).
IMAGE_FORMATS = ("PNG", "JPEG")
MASK_FORMATS = ("PNG",)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def sniff_format(data: bytes) -> str | None:
    """The format of a file from its first bytes, as Pillow names it ("PNG", "JPEG",
    "BMP", ...), or None when Pillow does not recognise it either."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(JPEG_SIGNATURE):
        return "JPEG"
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError):
        return None


def _png_problem(data: bytes) -> str | None:
    """Why a PNG's chunk structure is not whole (None when it is): every chunk within the
    file and matching its CRC, up to ``IEND``. Written by hand because neither OpenCV nor
    Pillow reports a cut-off file without either printing libpng's errors or accepting it;
    the CRC pass costs far less than the decode that follows."""
    position, end = len(PNG_SIGNATURE), len(data)
    while position + 8 <= end:
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        stop = position + 8 + length + 4
        name = kind.decode("latin-1")
        if stop > end:
            return f"truncated PNG: the file ends inside its {name} chunk"
        crc = struct.unpack(">I", data[stop - 4:stop])[0]
        if zlib.crc32(data[position + 4:stop - 4]) != crc:
            return f"corrupt PNG: the {name} chunk fails its checksum"
        if kind == b"IEND":
            return None
        position = stop
    return "truncated PNG: the file ends before its IEND chunk"


def _jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG is not whole (None when it is): its last scan (SOS marker) must be
    followed by the end-of-image marker. A cut-off JPEG decodes without an error, the
    missing rows gray, so this is looked for explicitly. Entropy-coded data cannot hold
    these two markers (0xFF is stuffed), so the last SOS is the last scan's."""
    last_scan = data.rfind(b"\xff\xda")
    if last_scan < 0:
        return "corrupt JPEG: no image data (no start-of-scan marker)"
    if data.find(b"\xff\xd9", last_scan + 2) < 0:
        return "truncated JPEG: the file ends before its end-of-image marker"
    return None


def content_problem(data: bytes, kind: str = "image") -> str | None:
    """Why the bytes of a file cannot be an image (``kind="image"``: PNG or JPEG) or a
    mask (``kind="mask"``: PNG), None when their format and structure are right. The rule
    every reader applies before decoding (see the module docstring)."""
    allowed = IMAGE_FORMATS if kind == "image" else MASK_FORMATS
    found = sniff_format(data)
    wanted = " or ".join(allowed)
    if found is None:
        return f"unreadable {kind}: the file is not {wanted} (its content is no known image format)"
    if found not in allowed:
        why = " (lossless class indices)" if kind == "mask" else ""
        return f"{kind} is a {found} file whatever its name; {kind}s must be {wanted}{why}"
    return _png_problem(data) if found == "PNG" else _jpeg_problem(data)


def _present(path: str | Path, kind: str) -> None:
    """Raise :class:`ImageReadError` unless ``path`` is a regular file (a named pipe would block)."""
    if not os.path.exists(path):
        raise ImageReadError(path, f"{kind} file not found")
    problem = not_regular_problem(path)
    if problem:
        raise ImageReadError(path, f"{kind} file {problem}")


def _size_problem(width: int, height: int, kind: str) -> str | None:
    if width * height > MAX_PIXELS:
        return (f"{kind} header claims {width}x{height} pixels, more than the {MAX_PIXELS} an image may have "
                "(a corrupt or hostile file)")
    return None


def _decoded(path: str | Path, data: bytes, flags: int, kind: str) -> np.ndarray | None:
    """``cv2.imdecode`` of a file's bytes, its header's size checked first."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            problem = _size_problem(*im.size, kind)
    except Image.DecompressionBombError as err:
        problem = f"{kind} is too large to decode ({err})"
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError):
        problem = None  # OpenCV may still read it; it says so when not
    if problem:
        raise ImageReadError(path, problem)
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as err:
        raise ImageReadError(path, f"unreadable {kind} (OpenCV: {str(err).strip().splitlines()[-1]})") from None


def _read_bytes(path: str | Path, kind: str) -> bytes:
    """The bytes of a ``kind`` ("image" or "mask") file that :func:`content_problem` accepts."""
    _present(path, kind)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise ImageReadError(path, f"cannot read the {kind} file ({err.strerror or err})") from None
    problem = content_problem(data, kind)
    if problem:
        raise ImageReadError(path, problem)
    return data


def image_header(path: str | Path) -> ImageHeader:
    """Size and format from the file header, without decoding pixels (``fmuia data check
    --header-only``). The format must be PNG or JPEG; whether the rest of the file is
    whole is not looked at. Raises :class:`ImageReadError` with a readable reason."""
    _present(path, "image")
    try:
        with Image.open(path) as im:
            (width, height), fmt = im.size, im.format
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"image is too large to decode ({err})") from None
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(path, f"unreadable image ({err})") from None
    if fmt not in IMAGE_FORMATS:
        raise ImageReadError(path, f"image is a {fmt} file; images must be PNG or JPEG")
    problem = _size_problem(width, height, "image")
    if problem:
        raise ImageReadError(path, problem)
    return ImageHeader(int(height), int(width), fmt)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image as stored, read from its header (no pixels decoded)."""
    header = image_header(path)
    return header.height, header.width


def read_image(path: str | Path, by_content: bool = False) -> np.ndarray:
    """Read an image as ``H x W x 3`` uint8 RGB (see the module docstring for the rules
    and conversions). Raises :class:`ImageReadError` naming the file.

    ``by_content=True`` is the challenge's own reading (``cv2.imread``, which goes by the
    bytes): any format OpenCV or Pillow decodes (BMP bytes under a ``.png`` name, TIFF,
    WebP ...), and the PNG/JPEG structure rule is not applied: whatever the decoders make
    of the file is the image. Only a file that neither decoder reads is refused. The
    exported container reads this way (``predict --unreadable fallback``)."""
    if by_content:
        return _read_image_by_content(path)
    data = _read_bytes(path, "image")
    image = _decoded(path, data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, "image")
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return _read_image_with_pillow(path, data)


def _read_image_by_content(path: str | Path) -> np.ndarray:
    """:func:`read_image` with ``by_content=True``: OpenCV on the bytes, then Pillow."""
    if not os.path.isfile(path):
        raise ImageReadError(path, "image file not found")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise ImageReadError(path, f"cannot read the image file ({err.strerror or err})") from None
    image = None
    if data:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if not data:
        raise ImageReadError(path, "unreadable image: the file is empty")
    return _read_image_with_pillow(path, data)


def _read_image_with_pillow(path: str | Path, data: bytes) -> np.ndarray:
    """The fallback for files OpenCV cannot decode, converted by the same rules."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(im, dtype=np.int64)
                if im.mode == "I":  # 32-bit integers: keep the top byte of their 16-bit range
                    values = np.clip(values, 0, 65535)
                gray = (values >> 8).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"image is too large to decode ({err})") from None
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(path, f"unreadable image ({err})") from None


class Mask(NamedTuple):
    """A mask as read by :func:`read_mask`: the class indices and how the file stored them."""

    values: np.ndarray  # H x W, uint8 or uint16, the class indices as stored
    bits: int  # 8 or 16
    channels: int  # 1, or 3/4 with equal colour channels

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape[:2]

    def challenge_reading(self) -> str | None:
        """How the challenge's scorer (``cv2.IMREAD_GRAYSCALE``) would read this file
        differently, or None when it reads the same values."""
        if self.bits == 16:
            return ("it is stored as 16-bit, and the challenge's scorer reads masks as 8-bit grayscale, "
                    "which keeps only the high byte (class indices 0..255 all become 0); save it as 8-bit")
        if self.channels != 1:
            return (f"it is stored with {self.channels} channels (equal colour channels); the challenge's "
                    "scorer converts it to grayscale, which keeps the values, but one channel is the "
                    "expected form")
        return None


def read_mask(path: str | Path) -> Mask:
    """Read a class-index mask by the rules in the module docstring.

    Raises :class:`ImageReadError` naming the file.
    """
    raw = _read_bytes(path, "mask")
    data = _decoded(path, raw, cv2.IMREAD_UNCHANGED, "mask")
    if data is None:
        raise ImageReadError(path, "unreadable mask (not an image OpenCV can decode)")
    if data.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"mask holds {data.dtype} samples; class indices must be stored "
                                   "as 8- or 16-bit integers")
    bits = 8 * data.dtype.itemsize
    if data.ndim == 2:
        return Mask(data, bits, 1)
    channels = data.shape[2]
    colour = data[:, :, :3] if channels >= 3 else data[:, :, :1]
    first = colour[:, :, 0]
    if any(not np.array_equal(first, colour[:, :, c]) for c in range(1, colour.shape[2])):
        raise ImageReadError(path, f"mask is a colour image ({channels} channels that differ); "
                                   "write one channel of class indices")
    return Mask(np.ascontiguousarray(first), bits, channels)


def mask_value_problem(values: np.ndarray, num_classes: int) -> str | None:
    """Why a mask's values are not class indices of a ``num_classes`` task (None when they are)."""
    if values.size and int(values.max()) >= num_classes:
        return f"mask has value {int(values.max())} >= num_classes {num_classes}"
    return None


def mask_fit_problem(values: np.ndarray, size: tuple[int, int] | None, num_classes: int) -> str | None:
    """Why a ground-truth mask does not fit its image (``size`` = its ``(height, width)``,
    None when unknown) or its task (None when it does): the rule of ``fmuia data check``
    and of the training set alike."""
    if size is not None and tuple(values.shape[:2]) != tuple(size):
        return (f"mask is {values.shape[1]}x{values.shape[0]} but its image is "
                f"{size[1]}x{size[0]} (width x height)")
    return mask_value_problem(values, num_classes)
