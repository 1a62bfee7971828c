"""``python -m runtime.samples.render``: draw the bundled sample image with Pillow.

The sample is synthetic on purpose (no third-party photograph, none of the benchmark or
training images): text at several sizes, thin lines, a radial star, a checkerboard, a brick
wall and a facade of windows, the repeated structures non-local attention exploits. It is drawn
at twice the HR size and reduced with Lanczos (anti-aliased edges, like a photograph), giving
the HR image; the shipped ``sample.png`` is its MATLAB-bicubic x2 reduction (192×192), i.e. a
benchmark-style LR image whose ground truth this script can redraw:

    python -m runtime.samples.render                    # rewrites runtime/samples/sample.png
    python -m runtime.samples.render --hr hr.png        # also writes the 384×384 ground truth
    python -m runtime.infer -i runtime/samples/sample.png -o sample_x2.png    # bundled NLSN x2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample.png"
HR_SIZE = 384
SAMPLE_SCALE = 2


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font (Pillow ≥ 10.1)


def render_hr(size: int = HR_SIZE) -> np.ndarray:
    """The HR sample, uint8 [size, size, 3]; deterministic for a given Pillow version."""
    s = 2  # supersampling factor
    W = size * s
    u = W / 768  # layout unit: coordinates below are for a 768-pixel canvas
    im = Image.new("RGB", (W, W), (236, 232, 222))
    d = ImageDraw.Draw(im)

    def r(*xy):
        return [round(v * u) for v in xy]

    # brick wall, top left
    brick_w, brick_h = 48, 20
    for row in range(12):
        y = row * (brick_h + 4)
        off = 0 if row % 2 == 0 else brick_w // 2 + 2
        for col in range(-1, 8):
            x = col * (brick_w + 4) + off
            if x + brick_w <= 0 or x >= 380:
                continue
            d.rectangle(r(max(x, 0), y, min(x + brick_w, 380), y + brick_h),
                        fill=(168 - 6 * (col % 3), 74 + 5 * (row % 2), 52))
    # facade of windows, top right
    d.rectangle(r(388, 0, 768, 290), fill=(196, 204, 214))
    for row in range(6):
        for col in range(8):
            x, y = 402 + col * 46, 12 + row * 46
            d.rectangle(r(x, y, x + 32, y + 34), fill=(40, 62, 96))
            d.line(r(x + 16, y, x + 16, y + 34), fill=(225, 225, 225), width=round(3 * u))
            d.line(r(x, y + 17, x + 32, y + 17), fill=(225, 225, 225), width=round(3 * u))
    # checkerboard, middle left
    cell = 16
    for i in range(11):
        for j in range(23):
            if (i + j) % 2 == 0:
                x, y = j * cell, 300 + i * cell
                d.rectangle(r(x, y, x + cell - 1, y + cell - 1), fill=(20, 20, 20))
    # radial star, middle right
    cx, cy, rad = 576, 388, 92
    for k in range(48):
        a = np.pi * k / 24
        d.line(r(cx, cy, cx + rad * np.cos(a), cy + rad * np.sin(a)), fill=(10, 10, 10), width=round(2 * u))
    for k in range(3):
        d.ellipse(r(cx - 30 - 20 * k, cy - 30 - 20 * k, cx + 30 + 20 * k, cy + 30 + 20 * k),
                  outline=(180, 30, 30), width=round(2 * u))
    # fine parallel lines, bottom right
    for k in range(20):
        x = 390 + k * 19
        d.line(r(x, 500, x + 60, 760), fill=(30, 60 + 8 * k, 140), width=round(3 * u))
    # text, bottom left
    d.rectangle(r(0, 480, 380, 768), fill=(250, 250, 246))
    lines = [(46, "srdeploy", (20, 20, 20)), (34, "NLSN  CSNLN", (150, 20, 20)),
             (26, "non-local attention", (20, 40, 120)), (20, "THE QUICK BROWN FOX", (20, 20, 20)),
             (16, "jumps over the lazy dog 0123456789", (20, 20, 20)),
             (14, "repeated structure helps super-resolution", (60, 60, 60))]
    y = 488
    for pt, text, colour in lines:
        d.text(r(10, y), text, font=_font(round(pt * u * 1.1)), fill=colour)
        y += pt + 14
    hr = im.resize((size, size), Image.LANCZOS)
    return np.asarray(hr, dtype=np.uint8).copy()


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR as the benchmarks make it: HR modcropped, MATLAB bicubic reduction on uint8."""
    from runtime.resize import bicubic_downscale_uint8

    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    return bicubic_downscale_uint8(np.ascontiguousarray(hr[:h, :w]), scale)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.samples.render", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, default=SAMPLE, help=f"LR sample to write (default: {SAMPLE})")
    p.add_argument("--scale", type=int, default=SAMPLE_SCALE, choices=(2, 3, 4))
    p.add_argument("--hr", type=Path, default=None, help="also write the HR ground truth here")
    args = p.parse_args(argv)
    hr = render_hr()
    Image.fromarray(make_lr(hr, args.scale)).save(args.output, optimize=True)
    if args.hr:
        Image.fromarray(hr).save(args.hr, optimize=True)
    print(f"wrote {args.output}" + (f" and {args.hr}" if args.hr else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
