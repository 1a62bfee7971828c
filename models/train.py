"""``python -m models.train``: train a (compact) NLSN, CSNLN or EDSR on T91-style HR images.

    python -m models.train --model nlsn --scale 2 --steps 6000 --out runs/nlsn_x2
    python -m models.train --model csnln --scale 3 --steps 3000 --out runs/csnln_x3 \\
        --init-from runs/csnln_x2/weights.pt          # reuse every tensor whose shape fits

Data: every HR image of ``--data`` is read once, modcropped to the scale, and downscaled once
with the project's MATLAB-compatible bicubic (the benchmark LR); each step draws aligned random
LR/HR patches with random flips and 90° rotations. Loss L1, optimiser Adam, learning rate with
a short warm-up and a cosine decay to ``--lr-min``.

Everything is seeded (model initialisation, patch sampling, augmentation) and kept on one
numpy generator + torch's generator, so a run is deterministic on the CPU for a given seed.
The run folder holds ``state.pt`` (model, optimiser, RNG states, step; written atomically every
``--save-every`` steps and at the end), ``train.log`` and, at the end, ``weights.pt`` (the
network's state dict in the official key layout) and ``train.json`` (config, data, steps,
seed, time, final PSNR on the validation crops). Running the same command again resumes from
``state.pt`` and ends bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.errors import SrdeployError
import models

PROG = "python -m models.train"
STATE = "state.pt"
WEIGHTS = "weights.pt"
SUMMARY = "train.json"
LOG = "train.log"


class TrainError(SrdeployError, ValueError):
    """A bad training request; reported as one line, exit status 2."""


# ----------------------------------------------------------------------------------------- data
def default_data_dir() -> Path:
    root = Path(os.environ.get("SRDEPLOY_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return root / "data" / "train" / "T91"


def read_rgb_uint8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class PatchData:
    """HR images in memory with their bicubic LR; draws aligned, augmented LR/HR patch batches."""

    def __init__(self, files: list[Path], scale: int, lr_patch: int):
        from runtime.resize import bicubic_downscale_uint8

        self.scale, self.lr_patch = scale, lr_patch
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for f in files:
            hr = read_rgb_uint8(f)
            h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
            if h // scale < lr_patch or w // scale < lr_patch:
                continue  # too small for one patch
            hr = np.ascontiguousarray(hr[:h, :w])
            self.pairs.append((bicubic_downscale_uint8(hr, scale), hr))
        if not self.pairs:
            raise TrainError(f"no training image is at least {lr_patch * scale} px on each side "
                             f"(LR patch {lr_patch} at x{scale})")
        # images drawn in proportion to their number of patch positions (big images more often)
        area = np.array([(lr.shape[0] - lr_patch + 1) * (lr.shape[1] - lr_patch + 1) for lr, _ in self.pairs],
                        dtype=np.float64)
        self.p = area / area.sum()

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.scale, self.lr_patch
        lrs, hrs = [], []
        for _ in range(n):
            lr, hr = self.pairs[int(rng.choice(len(self.pairs), p=self.p))]
            y = int(rng.integers(0, lr.shape[0] - p + 1))
            x = int(rng.integers(0, lr.shape[1] - p + 1))
            a = lr[y:y + p, x:x + p]
            b = hr[y * s:(y + p) * s, x * s:(x + p) * s]
            k = int(rng.integers(0, 8))  # one of the 8 flips/rotations of the square
            if k & 1:
                a, b = a[:, ::-1], b[:, ::-1]
            if k & 2:
                a, b = a[::-1], b[::-1]
            if k & 4:
                a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
            lrs.append(np.ascontiguousarray(a))
            hrs.append(np.ascontiguousarray(b))
        to = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
        return to(lrs), to(hrs)


def validation_crops(data: PatchData, n: int = 8, seed: int = 12345) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed LR/HR crops (no augmentation) for the PSNR that the log and the summary report."""
    rng = np.random.default_rng(seed)
    p, s = data.lr_patch, data.scale
    lrs, hrs = [], []
    for i in rng.choice(len(data.pairs), size=min(n, len(data.pairs)), replace=False):
        lr, hr = data.pairs[int(i)]
        y = (lr.shape[0] - p) // 2
        x = (lr.shape[1] - p) // 2
        lrs.append(lr[y:y + p, x:x + p])
        hrs.append(hr[y * s:(y + p) * s, x * s:(x + p) * s])
    to = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
    return to(lrs), to(hrs)


def psnr(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """RGB PSNR (peak 1) of 8-bit-quantised outputs; a training monitor, not the benchmark metric."""
    mse = ((sr.clamp(0, 1) * 255).round() / 255 - hr).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


# ---------------------------------------------------------------------------------------- config
def parse_cfg(items: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TrainError(f"--cfg {item!r}: expected NAME=VALUE, e.g. n_feats=32")
        k, v = item.split("=", 1)
        try:
            cfg[k] = int(v)
        except ValueError:
            try:
                cfg[k] = float(v)
            except ValueError:
                raise TrainError(f"--cfg {item!r}: value must be a number") from None
    return cfg


def lr_at(step: int, total: int, lr: float, lr_min: float, warmup: int) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(1.0, t)))


def init_from(net: torch.nn.Module, path: Path) -> list[str]:
    """Copy every tensor of ``path`` whose name and shape fit ``net``; the names it copied."""
    from .checkpoint import read_state_dict

    src = read_state_dict(path)
    own = net.state_dict()
    taken = [k for k, v in src.items() if k in own and own[k].shape == v.shape]
    if not taken:
        raise TrainError(f"--init-from {path}: no tensor of it fits this network")
    net.load_state_dict({**own, **{k: src[k] for k in taken}}, strict=True)
    return taken


# -------------------------------------------------------------------------------------- training
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """What must be the same for a resume to continue the same run."""
    return dict(model=args.model, scale=args.scale, cfg=parse_cfg(args.cfg), steps=args.steps, batch=args.batch,
                patch=args.patch, lr=args.lr, lr_min=args.lr_min, warmup=args.warmup, seed=args.seed,
                init_from=str(args.init_from) if args.init_from else None, skip_attention=args.skip_attention)


def train(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: CUDA is not available; use --device cpu")
    cfg = parse_cfg(args.cfg)
    conf = run_config(args)
    log = open(out / LOG, "a", buffering=1)

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        log.write(line + "\n")
        if not args.quiet:
            tqdm.write(line)

    # seeds: python, numpy (one generator for all sampling), torch (initialisation)
    random.seed(args.seed)
    np_rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    try:
        net = models.build(args.model, args.scale, **cfg)
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from None
    full_cfg = dict(net.config)
    if args.model == "nlsn" and args.patch * args.patch < full_cfg["chunk_size"]:
        raise TrainError(f"--patch {args.patch}: NLSN needs patch² ≥ chunk_size ({full_cfg['chunk_size']})")
    u = getattr(net, "valid_size", None)
    if u is not None and net.valid_size(args.patch, args.patch) != (args.patch, args.patch):
        raise TrainError(f"--patch {args.patch} is not a size {args.model} x{args.scale} accepts "
                         f"(nearest: {net.valid_size(args.patch, args.patch)[0]})")
    if args.skip_attention:
        blocks = getattr(net, "attention_blocks", None)
        if blocks is None:
            raise TrainError("--skip-attention: only NLSN has attention blocks that can be bypassed")
        for m in blocks():  # identity for this whole run; the weights file keeps their (untouched) tensors
            m.forward = _identity
    taken: list[str] = []
    if args.init_from:
        taken = init_from(net, Path(args.init_from))
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    step, elapsed = 0, 0.0
    resumed_loss = None
    history: list[dict[str, float]] = []
    state_path = out / STATE
    if state_path.exists() and not args.restart:
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if st["config"] != conf:
            diff = sorted(k for k in conf if st["config"].get(k) != conf[k])
            raise TrainError(f"{state_path} belongs to another run (differs in {', '.join(diff)}); "
                             f"pass --restart to start over or use another --out")
        net.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        np_rng.bit_generator.state = st["numpy_rng"]
        random.setstate(st["python_rng"])
        torch.set_rng_state(st["torch_rng"])
        step, elapsed, history = st["step"], st["elapsed"], st["history"]
        resumed_loss = st.get("running_loss")
        say(f"resumed {state_path} at step {step}/{args.steps}")
    else:
        say(f"start {args.model} x{args.scale} {full_cfg} steps={args.steps} batch={args.batch} "
            f"patch={args.patch} lr={args.lr} seed={args.seed} device={device} threads={args.threads}"
            + (f" init_from={args.init_from} ({len(taken)} tensors)" if args.init_from else ""))

    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg", ".jpeg"))
    if not files:
        raise TrainError(f"--data {args.data}: no images")
    data = PatchData(files, args.scale, args.patch)
    val_lr, val_hr = validation_crops(data)
    rgb = float(full_cfg["rgb_range"])

    def save() -> None:
        _atomic_save(dict(config=conf, model=net.state_dict(), optimizer=opt.state_dict(),
                          numpy_rng=np_rng.bit_generator.state, python_rng=random.getstate(),
                          torch_rng=torch.get_rng_state(), step=step, elapsed=elapsed, history=history,
                          running_loss=running),
                     state_path)

    def validate() -> float:
        net.eval()
        with torch.no_grad():
            sr = net(val_lr.to(device) * rgb).cpu() / rgb
        net.train()
        return psnr(sr, val_hr)

    bar = tqdm(total=args.steps, initial=step, unit="step", disable=args.quiet or None, dynamic_ncols=True)
    running = resumed_loss
    stop_at = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    try:
        while step < stop_at:
            t0 = time.perf_counter()
            lr_now = lr_at(step, args.steps, args.lr, args.lr_min, args.warmup)
            for g in opt.param_groups:
                g["lr"] = lr_now
            lr_b, hr_b = data.batch(np_rng, args.batch)
            sr = net(lr_b.to(device) * rgb) / rgb
            loss = F.l1_loss(sr, hr_b.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_now:.1e}", refresh=False)
            if step % args.log_every == 0 or step == args.steps:
                rec = dict(step=step, loss=running, lr=lr_now, elapsed=elapsed)
                if step % args.val_every == 0 or step == args.steps:
                    rec["val_psnr"] = validate()
                history.append(rec)
                say(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
            if step % args.save_every == 0 and step < args.steps:
                save()
    except KeyboardInterrupt:
        save()
        say(f"interrupted at step {step}; state saved, run the same command to resume")
        raise
    finally:
        bar.close()
    save()
    if step < args.steps:
        say(f"stopped at step {step}/{args.steps} (--stop-after); run again to resume")
        log.close()
        return dict(step=step, finished=False)

    net.eval().cpu()
    weights = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    _atomic_save(weights, out / WEIGHTS)
    val_psnr = validate() if device.type == "cpu" else history[-1].get("val_psnr")
    summary = dict(
        model=args.model, scale=args.scale, config=full_cfg,
        training=dict(data=Path(args.data).name, images=len(data.pairs), steps=args.steps, batch=args.batch,
                      lr_patch=args.patch, hr_patch=args.patch * args.scale, loss="L1",
                      optimizer="Adam(0.9, 0.999)", lr=args.lr, lr_min=args.lr_min, warmup=args.warmup,
                      schedule="linear warm-up, cosine decay",
                      augmentation="random crops, horizontal/vertical flips, 90-degree rotations",
                      lr_images="MATLAB bicubic (runtime.resize.bicubic_downscale_uint8)",
                      seed=args.seed, skip_attention=args.skip_attention, init_from="/".join(Path(args.init_from).parts[-2:]) if args.init_from else None,
                      init_tensors=len(taken) if args.init_from else None,
                      seconds=round(elapsed, 1), device=str(device), threads=args.threads,
                      hardware=_hardware(device), torch=torch.__version__),
        val_psnr_rgb=round(val_psnr, 3) if val_psnr is not None else None,
        sha256=sha256(out / WEIGHTS), bytes=(out / WEIGHTS).stat().st_size,
    )
    _atomic_json(summary, out / SUMMARY)
    say(f"done: {out / WEIGHTS} val_psnr={summary['val_psnr_rgb']} in {elapsed / 60:.1f} min")
    log.close()
    return dict(step=step, finished=True, summary=summary)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(__doc__.split("\n\n")[1].splitlines()))
    p.add_argument("--model", required=True, choices=sorted(models.ARCHITECTURES))
    p.add_argument("--scale", required=True, type=int, choices=models.SCALES)
    p.add_argument("--out", required=True, help="run folder (state, log, final weights); resumed if it holds a state")
    p.add_argument("--cfg", nargs="*", default=[], metavar="NAME=VALUE",
                   help="architecture options (official names), e.g. n_resblocks=8 n_feats=32")
    p.add_argument("--data", default=str(default_data_dir()), help="folder of HR training images (default: T91)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48, help="LR patch size (HR patch = patch × scale)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-min", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="start from the tensors of these weights that fit (e.g. the x2 body for x3/x4)")
    p.add_argument("--skip-attention", action="store_true",
                   help="NLSN: bypass the attention blocks (identity) in this run: a cheap warm start of the "
                        "convolutional body, to be followed by a full run with --init-from")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many more steps (resumable)")
    p.add_argument("--restart", action="store_true", help="ignore an existing state in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar; the log file is still written")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("steps", "batch", "patch", "save_every", "log_every", "val_every", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if not (0 < args.lr_min <= args.lr) and args.lr_min != 0:
        p.error("--lr-min must be ≤ --lr")
    if not Path(args.data).is_dir():
        p.error(f"--data {args.data}: no such folder")
    if args.init_from and not Path(args.init_from).is_file():
        p.error(f"--init-from {args.init_from}: no such file")
    try:
        train(args)
    except TrainError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
