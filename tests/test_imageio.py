"""runtime.imageio: formats, channel layouts, the 16-bit PNG codec, atomic writes, bad files."""
from __future__ import annotations

import os
import stat
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from runtime import imageio
from runtime.imageio import ImageReadError, OutputExistsError, read_image, write_image


@pytest.fixture(scope="module")
def rgb8(shared_dir) -> np.ndarray:
    im = Image.open(shared_dir / "data/benchmark/Set5/HR/bird.png").convert("RGB").resize((37, 29))
    return np.asarray(im)


def rng_u16(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


# ----------------------------------------------------------------------------- 8-bit formats

@pytest.mark.parametrize("ext,tol", [(".png", 0), (".bmp", 0), (".jpg", 12), (".jpeg", 12), (".webp", 16)])
def test_rgb_round_trip(tmp_path, rgb8, ext, tol):
    p = tmp_path / f"a{ext}"
    notes = write_image(p, rgb8.astype(np.float32) / 255)
    assert notes == []
    data = read_image(p)
    assert data.pixels.shape == (29, 37, 3) and data.pixels.dtype == np.float32 and data.bit_depth == 8
    assert np.abs(imageio.quantize(data.pixels, 8).astype(int) - rgb8).mean() <= tol


@pytest.mark.parametrize("mode,channels", [("L", 1), ("1", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4), ("CMYK", 3)])
def test_pillow_modes_map_to_channels(tmp_path, rgb8, mode, channels):
    p = tmp_path / ("a.jpg" if mode == "CMYK" else "a.png")
    im = Image.fromarray(rgb8).convert(mode)
    im.save(p)
    data = read_image(p)
    assert data.pixels.shape == (29, 37, channels) and data.bit_depth == 8
    assert data.is_gray == (channels in (1, 2)) and data.has_alpha == (channels in (2, 4))


def test_palette_with_transparency_becomes_rgba(tmp_path, rgb8):
    p = tmp_path / "p.png"
    im = Image.fromarray(rgb8).convert("P")
    im.info["transparency"] = 0
    im.save(p, transparency=0)
    assert read_image(p).pixels.shape[2] == 4
    Image.fromarray(rgb8).convert("P").save(tmp_path / "q.png")
    assert read_image(tmp_path / "q.png").pixels.shape[2] == 3


def test_exif_orientation_is_applied(tmp_path, rgb8):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(rgb8).save(p, exif=exif)
    assert read_image(p).pixels.shape == (37, 29, 3)


def test_formats_adapt_and_say_what_was_lost(tmp_path):
    rgba = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    notes = write_image(tmp_path / "a.jpg", rgba)
    assert any("alpha" in n for n in notes) and read_image(tmp_path / "a.jpg").pixels.shape == (6, 5, 3)
    notes = write_image(tmp_path / "a.bmp", rgba, 16)
    assert len(notes) == 2 and read_image(tmp_path / "a.bmp").pixels.shape == (6, 5, 3)
    la = rgba[..., 2:]
    assert write_image(tmp_path / "la.webp", la) == [] and read_image(tmp_path / "la.webp").pixels.shape == (6, 5, 4)
    assert write_image(tmp_path / "la.png", la) == [] and read_image(tmp_path / "la.png").pixels.shape == (6, 5, 2)
    assert write_image(tmp_path / "g.jpg", la[..., :1]) == [] and read_image(tmp_path / "g.jpg").pixels.shape == (6, 5, 1)


def test_quantize_rounds_and_clamps():
    x = np.array([-0.1, 0.0, 0.5 / 255, 1.4 / 255, 0.5, 1.0, 1.2], np.float32)
    assert imageio.quantize(x, 8).tolist() == [0, 0, 0, 1, 128, 255, 255]
    assert imageio.quantize(x, 16).dtype == np.uint16 and imageio.quantize(x, 16)[-2] == 65535


# ----------------------------------------------------------------------------- 16-bit PNG

@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_round_trip(tmp_path, channels):
    q = rng_u16((9, 11, channels), seed=channels)
    p = tmp_path / "a.png"
    write_image(p, q.astype(np.float32) / 65535, 16)
    data = read_image(p)
    assert data.bit_depth == 16 and data.pixels.shape == (9, 11, channels)
    assert np.array_equal(imageio.quantize(data.pixels, 16), q)


def test_png16_gray_agrees_with_pillow(tmp_path):
    q = (np.add.outer(np.arange(40) * 1000, np.arange(30) * 7) % 65536).astype(np.uint16)
    Image.fromarray(q).save(tmp_path / "pil.png")  # Pillow's writer picks its own row filters
    assert np.array_equal(imageio.quantize(read_image(tmp_path / "pil.png").pixels[..., 0], 16), q)
    write_image(tmp_path / "ours.png", q[..., None] / 65535.0, 16)
    with Image.open(tmp_path / "ours.png") as im:
        assert im.mode.startswith("I;16") and np.array_equal(np.asarray(im), q)


def _filter_rows(raw: np.ndarray, bpp: int, ftypes) -> bytes:
    """PNG row filters written out plainly (the encoder side), one type per row."""
    h, n = raw.shape
    out = bytearray()
    r = raw.astype(np.int64)
    for y in range(h):
        f = ftypes[y % len(ftypes)]
        out.append(f)
        for i in range(n):
            a = r[y, i - bpp] if i >= bpp else 0
            b = r[y - 1, i] if y > 0 else 0
            c = r[y - 1, i - bpp] if y > 0 and i >= bpp else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out.append((r[y, i] - pred) % 256)
    return bytes(out)


def _png(w, h, ctype, interlace, idat: bytes) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"gAMA", b"\0\0\xb1\x8f")
            + chunk(b"IDAT", idat[:7]) + chunk(b"IDAT", idat[7:]) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels,ctype", [(3, 2), (4, 6)])
def test_png16_all_filters_and_interlace(tmp_path, channels, ctype):
    h, w = 13, 10
    q = rng_u16((h, w, channels), seed=7)
    q[4:9] = q[4:9] // 4096 * 4096  # some flat-ish rows, so Paeth takes every branch
    bpp = 2 * channels
    as_bytes = lambda a: a.astype(">u2").view(np.uint8).reshape(a.shape[0], -1)

    plain = _filter_rows(as_bytes(q.reshape(h, -1)), bpp, [0, 1, 2, 3, 4])
    (tmp_path / "f.png").write_bytes(_png(w, h, ctype, 0, zlib.compress(plain)))
    assert np.array_equal(imageio.quantize(read_image(tmp_path / "f.png").pixels, 16), q)

    adam7 = b""
    for k, (x0, y0, dx, dy) in enumerate(imageio._ADAM7):
        sub = q[y0::dy, x0::dx]
        if sub.size:
            adam7 += _filter_rows(as_bytes(sub.reshape(sub.shape[0], -1)), bpp, [4, 3, 2, 1, 0][k % 5:] + [4])
    (tmp_path / "i.png").write_bytes(_png(w, h, ctype, 1, zlib.compress(adam7)))
    assert np.array_equal(imageio.quantize(read_image(tmp_path / "i.png").pixels, 16), q)


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_one_line_errors(tmp_path, rgb8):
    cases = {}
    cases["missing"] = tmp_path / "nope.png"
    (tmp_path / "a.tif").write_bytes(b"II*\0")
    cases["extension"] = tmp_path / "a.tif"
    (tmp_path / "noise.png").write_bytes(os.urandom(300))
    cases["noise"] = tmp_path / "noise.png"
    Image.fromarray(rgb8).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    cases["truncated png"] = tmp_path / "cut.png"
    Image.fromarray(rgb8).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    cases["truncated jpeg"] = tmp_path / "cut.jpg"
    (tmp_path / "empty.webp").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.webp"
    write_image(tmp_path / "16.png", np.zeros((4, 4, 3), np.float32), 16)
    data = bytearray((tmp_path / "16.png").read_bytes())
    data[45] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    (tmp_path / "bad16.png").write_bytes(bytes(data))
    cases["16-bit crc"] = tmp_path / "bad16.png"
    (tmp_path / "trunc16.png").write_bytes((tmp_path / "16.png").read_bytes()[:-20])
    cases["16-bit truncated"] = tmp_path / "trunc16.png"
    cases["folder"] = tmp_path
    for what, path in cases.items():
        with pytest.raises(ImageReadError) as e:
            read_image(path)
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg, what


# ----------------------------------------------------------------------------- atomic writes

def test_existing_output_is_left_alone(tmp_path, rgb8):
    p = tmp_path / "out.png"
    p.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_image(p, rgb8 / 255.0)
    assert p.read_bytes() == b"precious"
    write_image(p, rgb8 / 255.0, overwrite=True)
    assert read_image(p).pixels.shape == (29, 37, 3)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]  # no temporary files left


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(imageio, "_encode_png16", boom)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32), 16)
    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "y.jpg", np.zeros((4, 4, 3), np.float32))
    assert os.listdir(tmp_path) == []


def test_written_files_get_normal_permissions(tmp_path):
    p = tmp_path / "x.png"
    write_image(p, np.zeros((2, 2, 3), np.float32))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_unsupported_output_extension(tmp_path):
    with pytest.raises(ValueError, match="unsupported output type"):
        write_image(tmp_path / "x.tiff", np.zeros((2, 2, 3), np.float32))
