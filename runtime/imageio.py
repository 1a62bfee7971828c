"""Reading and writing images for inference: PNG, JPEG, BMP, WebP (and TIFF input).

Pixels are handed around as H×W×C float32 arrays in [0, 1], where C says what the
image holds: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. ``bit_depth`` (8 or 16) travels
with them so that a 16-bit input can be written back at 16 bits.

Pillow reads 16-bit RGB(A) PNGs as 8-bit and cannot write them, so 16-bit PNGs are
read and written by a small codec in this module; everything else goes through Pillow.

Writes are atomic (``models.files.atomic_output``): the image is written to a temporary file
in the destination folder and moved into place, so a reader never sees a half-written file
and an interrupted run leaves nothing behind.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from models.errors import OutputExistsError, SrdeployError
from models.files import atomic_output

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "INPUT_FORMATS",
    "DEFAULT_QUALITY",
    "ImageData",
    "ImageReadError",
    "OutputExistsError",
    "is_supported",
    "is_writable",
    "read_image",
    "write_image",
    "quantize",
    "adapt_to_format",
]

#: file extension -> Pillow format name: what can be written (and read)
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}
EXTENSIONS = tuple(FORMATS)
#: what can be read: TIFF is common for scans and 16-bit masters, but is not written
INPUT_FORMATS = {**FORMATS, ".tif": "TIFF", ".tiff": "TIFF"}
#: JPEG/WebP quality when none is asked for
DEFAULT_QUALITY = 95

# What each format can store (Pillow writes BMP alpha but reads it back as RGB).
_ALPHA_FORMATS = {"PNG", "WEBP"}
_GRAY_FORMATS = {"PNG", "JPEG", "BMP"}
_LOSSY_FORMATS = {"JPEG", "WEBP"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type <-> channel count, for the 16-bit codec
_PNG_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}
_PNG_COLOR_TYPE = {c: t for t, c in _PNG_CHANNELS.items()}
# Adam7 passes: (x0, y0, dx, dy)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class ImageReadError(SrdeployError, ValueError):
    """An input that is missing, of an unsupported type, or cannot be decoded."""


@dataclass
class ImageData:
    pixels: np.ndarray  # H×W×C float32 in [0, 1]; C = 1, 2, 3 or 4
    bit_depth: int = 8  # 8 or 16

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] in (1, 2)


def is_supported(path: str | os.PathLike) -> bool:
    """True for a file name this module can read."""
    return Path(path).suffix.lower() in INPUT_FORMATS


def is_writable(path: str | os.PathLike) -> bool:
    """True for a file name this module can write."""
    return Path(path).suffix.lower() in FORMATS


# --------------------------------------------------------------------------- reading

def read_image(path: str | os.PathLike) -> ImageData:
    """Decode an image file; raises :class:`ImageReadError` with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if not is_supported(path):
        raise ImageReadError(f"{path}: unsupported image type {path.suffix or '(no extension)'!r}; "
                             f"supported: {', '.join(INPUT_FORMATS)}")
    try:
        if _png_bit_depth(path) == 16:
            pixels16 = _read_png16(path.read_bytes())
            return ImageData(pixels16.astype(np.float32) / 65535.0, 16)
        with Image.open(path) as im:
            im.load()
            return _from_pil(ImageOps.exif_transpose(im))
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot read image ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg and msg[0] else type(e).__name__


def _from_pil(im: Image.Image) -> ImageData:
    mode = im.mode
    if mode.startswith("I;16"):  # 16-bit gray (TIFF, some PNG readers): keep the 16 bits
        a = np.asarray(im).astype(np.float32)
        return ImageData((a / 65535.0)[..., None], 16)
    if mode == "P" or mode == "PA":  # palette: expand, keeping transparency if there is any
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
    elif mode in ("1", "L"):
        im = im.convert("L")
    elif mode in ("LA", "La"):
        im = im.convert("LA")
    elif mode in ("RGBA", "RGBa"):
        im = im.convert("RGBA")
    elif mode != "RGB":  # CMYK, YCbCr, RGBX, ...
        im = im.convert("RGB")
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    return ImageData(a.astype(np.float32) / 255.0, 8)


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR, or None for anything that is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def _png_chunks(data: bytes):
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    pos = 8
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("truncated PNG chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise ValueError("truncated PNG file")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise ValueError(f"bad CRC in PNG chunk {kind.decode('latin-1')!r}")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise ValueError("PNG file has no IEND chunk (truncated?)")


def _read_png16(data: bytes) -> np.ndarray:
    """Decode a 16-bit PNG to an H×W×C uint16 array (ancillary chunks are ignored)."""
    header, idat = None, []
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise ValueError("PNG file has no IHDR chunk")
    w, h, depth, ctype, _, _, interlace = header
    if depth != 16 or ctype not in _PNG_CHANNELS:
        raise ValueError(f"unsupported PNG bit depth {depth} / colour type {ctype}")
    channels = _PNG_CHANNELS[ctype]
    bpp = 2 * channels
    raw = zlib.decompress(b"".join(idat))
    if interlace == 0:
        passes = [(0, 0, 1, 1)]
    elif interlace == 1:
        passes = _ADAM7
    else:
        raise ValueError(f"unknown PNG interlace method {interlace}")
    out = np.zeros((h, w, bpp), np.uint8)
    pos = 0
    for x0, y0, dx, dy in passes:
        pw, ph = -(-(w - x0) // dx) if w > x0 else 0, -(-(h - y0) // dy) if h > y0 else 0
        if pw == 0 or ph == 0:
            continue  # an empty pass has no bytes, not even filter bytes
        n = ph * (1 + pw * bpp)
        if pos + n > len(raw):
            raise ValueError("PNG image data is truncated")
        out[y0::dy, x0::dx] = _unfilter(raw[pos:pos + n], ph, pw, bpp)
        pos += n
    return out.view(">u2").reshape(h, w, channels).astype(np.uint16)


def _unfilter(data: bytes, h: int, w: int, bpp: int) -> np.ndarray:
    """Undo PNG row filters; returns [h, w, bpp] uint8.

    Sub, Average and Paeth depend on the reconstructed pixel to the left, so a row cannot
    be done in one vector step. Every pixel depends only on its left, upper and upper-left
    neighbours, though, so all pixels on one anti-diagonal are independent: sweeping the
    diagonals costs h + w numpy steps instead of h·w Python ones.
    """
    rows = np.frombuffer(data, np.uint8).reshape(h, 1 + w * bpp)
    ftype = rows[:, 0].astype(np.int16)
    if ftype.max(initial=0) > 4:
        raise ValueError(f"bad PNG filter type {int(ftype.max())}")
    filt = rows[:, 1:].reshape(h, w, bpp).astype(np.int16)
    if not (ftype != 0).any():
        return filt.astype(np.uint8)
    rec = np.zeros((h + 1, w + 1, bpp), np.int16)  # one zero row/column: PNG's out-of-image value
    for d in range(h + w - 1):
        y = np.arange(max(0, d - w + 1), min(h, d + 1))
        x = d - y
        a, b, c = rec[y + 1, x], rec[y, x + 1], rec[y, x]
        f = ftype[y][:, None]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
        rec[y + 1, x + 1] = (filt[y, x] + pred) & 0xFF
    return rec[1:, 1:].astype(np.uint8)


# --------------------------------------------------------------------------- writing

def quantize(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats -> uint8 or uint16, clamped and rounded to nearest."""
    peak = 65535 if bit_depth == 16 else 255
    q = np.rint(np.clip(pixels, 0.0, 1.0) * peak)
    return q.astype(np.uint16 if bit_depth == 16 else np.uint8)


def adapt_to_format(pixels: np.ndarray, bit_depth: int, fmt: str) -> tuple[np.ndarray, int, list[str]]:
    """Fit pixels to what ``fmt`` can store; returns (pixels, bit_depth, notes on what was lost)."""
    notes = []
    c = pixels.shape[2]
    if c in (2, 4) and fmt not in _ALPHA_FORMATS:
        pixels = pixels[..., :c - 1]
        notes.append(f"{fmt} has no alpha channel: alpha dropped")
    if pixels.shape[2] in (1, 2) and fmt not in _GRAY_FORMATS:
        gray, alpha = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, alpha], axis=2)
    if bit_depth == 16 and fmt != "PNG":
        bit_depth = 8
        notes.append(f"{fmt} has no 16-bit mode: written at 8 bits")
    return pixels, bit_depth, notes


def write_image(path: str | os.PathLike, pixels: np.ndarray, bit_depth: int = 8, *,
                overwrite: bool = False, quality: int | None = None) -> list[str]:
    """Write H×W×C [0, 1] pixels atomically; returns notes on what the format could not keep.

    ``quality`` (1-100) applies to JPEG and WebP (default :data:`DEFAULT_QUALITY`).
    Raises :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output type {path.suffix!r}; supported: {', '.join(EXTENSIONS)}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    pixels, bit_depth, notes = adapt_to_format(pixels, bit_depth, fmt)
    q = quantize(pixels, bit_depth)
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:  # refused if it appears meanwhile
        if bit_depth == 16:
            f.write(_encode_png16(q))
        else:
            mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[q.shape[2]]
            options = {"quality": quality or DEFAULT_QUALITY} if fmt in _LOSSY_FORMATS else {}
            Image.fromarray(q[..., 0] if q.shape[2] == 1 else q, mode).save(f, format=fmt, **options)
    return notes


def _encode_png16(q: np.ndarray) -> bytes:
    """Encode an H×W×C uint16 array as a 16-bit PNG (no filtering: simple and always valid)."""
    h, w, c = q.shape
    rows = q.astype(">u2").reshape(h, w * c).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, _PNG_COLOR_TYPE[c], 0, 0, 0)
    return _PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
