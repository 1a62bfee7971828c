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

From Python: ``train(TrainConfig(model="nlsn", scale=2, out="runs/nlsn_x2", cfg={"n_feats": 32}))``;
:class:`TrainConfig` has the flags' names and defaults, and the command line only fills it in. The
data (image reading, patches, validation crops) is in :mod:`models.train_data`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import models
from models.errors import SrdeployError
from models.files import atomic_output, atomic_write, sha256_file
from models.train_data import PatchData, TrainError, default_data_dir, validation_crops
from runtime.metrics import psnr

PROG = "python -m models.train"
STATE = "state.pt"
WEIGHTS = "weights.pt"
SUMMARY = "train.json"
LOG = "train.log"


# ---------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """One training run (the CLI's flags, same names and defaults); :func:`train` carries it out."""
    model: str                                # models.ARCHITECTURES
    scale: int                                # models.SCALES
    out: str | Path                           # run folder: state, log, final weights; resumed if it holds a state
    cfg: dict[str, int | float] = field(default_factory=dict)  # architecture options (official names)
    data: str | Path = field(default_factory=lambda: str(default_data_dir()))  # folder of HR images
    steps: int = 5000
    batch: int = 16
    patch: int = 48                           # LR patch size (HR patch = patch × scale)
    lr: float = 2e-4
    lr_min: float = 1e-6
    warmup: int = 100
    seed: int = 0
    init_from: str | Path | None = None       # start from the tensors of these weights that fit
    skip_attention: bool = False              # NLSN: attention blocks are identities in this run
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    threads: int = 1                          # torch CPU threads
    save_every: int = 200
    log_every: int = 50
    val_every: int = 500
    stop_after: int | None = None             # stop after this many more steps (resumable)
    restart: bool = False                     # ignore an existing state in out
    quiet: bool = False                       # no progress bar; the log file is still written

    def check(self) -> None:
        """TrainError naming the first value that cannot work (before anything is read or written)."""
        if self.model not in models.ARCHITECTURES:
            raise TrainError(f"--model {self.model}: one of {', '.join(sorted(models.ARCHITECTURES))}")
        if self.scale not in models.SCALES:
            raise TrainError(f"--scale {self.scale}: one of {', '.join(map(str, models.SCALES))}")
        for name in ("steps", "batch", "patch", "save_every", "log_every", "val_every", "threads"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be ≥ 1")
        if not (0 < self.lr_min <= self.lr) and self.lr_min != 0:
            raise TrainError("--lr-min must be ≤ --lr")
        if not Path(self.data).is_dir():
            raise TrainError(f"--data {self.data}: no such folder")
        if self.init_from and not Path(self.init_from).is_file():
            raise TrainError(f"--init-from {self.init_from}: no such file")

    def run_key(self) -> dict[str, Any]:
        """What must be the same for a resume to continue the same run (stored in the state)."""
        return dict(model=self.model, scale=self.scale, cfg=dict(self.cfg), steps=self.steps, batch=self.batch,
                    patch=self.patch, lr=self.lr, lr_min=self.lr_min, warmup=self.warmup, seed=self.seed,
                    init_from=str(self.init_from) if self.init_from else None, skip_attention=self.skip_attention)


def parse_cfg(items: list[str]) -> dict[str, Any]:
    """``--cfg NAME=VALUE ...`` -> ``{name: int or float}``."""
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
def _save(obj: Any, path: Path) -> None:
    # torch.save names the archive inside after the file it is given a path to (here a random temporary
    # name); through a file object it is always "archive", so the same tensors give the same bytes
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run ``config`` describes; ``{"step", "finished"[, "summary"]}``.

    Raises TrainError (SrdeployError) for a request that cannot work; Ctrl-C saves the state first."""
    config.check()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: CUDA is not available; use --device cpu")
    if device.type == "cuda":  # the layer that picks the device switches the CUDA kernels on (issue 11)
        from plugins import kernels  # noqa: PLC0415
        kernels.enable()
    cfg = dict(config.cfg)
    conf = config.run_key()
    log = open(out / LOG, "a", buffering=1)

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        log.write(line + "\n")
        if not config.quiet:
            tqdm.write(line)

    # seeds: python, numpy (one generator for all sampling), torch (initialisation)
    random.seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    try:
        net = models.build(config.model, config.scale, **cfg)
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from None
    full_cfg = dict(net.config)
    if config.model == "nlsn" and config.patch * config.patch < full_cfg["chunk_size"]:
        raise TrainError(f"--patch {config.patch}: NLSN needs patch² ≥ chunk_size ({full_cfg['chunk_size']})")
    u = getattr(net, "valid_size", None)
    if u is not None and net.valid_size(config.patch, config.patch) != (config.patch, config.patch):
        raise TrainError(f"--patch {config.patch} is not a size {config.model} x{config.scale} accepts "
                         f"(nearest: {net.valid_size(config.patch, config.patch)[0]})")
    if config.skip_attention:
        blocks = getattr(net, "attention_blocks", None)
        if blocks is None:
            raise TrainError("--skip-attention: only NLSN has attention blocks that can be bypassed")
        for m in blocks():  # identity for this whole run; the weights file keeps their (untouched) tensors
            m.forward = _identity
    taken: list[str] = []
    if config.init_from:
        taken = init_from(net, Path(config.init_from))
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    step, elapsed = 0, 0.0
    resumed_loss = None
    history: list[dict[str, float]] = []
    state_path = out / STATE
    if state_path.exists() and not config.restart:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
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
        say(f"resumed {state_path} at step {step}/{config.steps}")
    else:
        say(f"start {config.model} x{config.scale} {full_cfg} steps={config.steps} batch={config.batch} "
            f"patch={config.patch} lr={config.lr} seed={config.seed} device={device} threads={config.threads}"
            + (f" init_from={config.init_from} ({len(taken)} tensors)" if config.init_from else ""))

    files = sorted(p for p in Path(config.data).iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg", ".jpeg"))
    if not files:
        raise TrainError(f"--data {config.data}: no images")
    data = PatchData(files, config.scale, config.patch)
    val_lr, val_hr = validation_crops(data)
    rgb = float(full_cfg["rgb_range"])

    def save() -> None:
        _save(dict(config=conf, model=net.state_dict(), optimizer=opt.state_dict(),
                   numpy_rng=np_rng.bit_generator.state, python_rng=random.getstate(),
                   torch_rng=torch.get_rng_state(), step=step, elapsed=elapsed, history=history,
                   running_loss=running),
              state_path)

    def validate() -> float:
        net.eval()
        with torch.no_grad():
            sr = net(val_lr.to(device) * rgb).cpu() / rgb
        net.train()
        # RGB PSNR (peak 1) of the 8-bit-quantised output: a training monitor, not the benchmark metric
        return min(psnr((sr.clamp(0, 1) * 255).round() / 255, val_hr, peak=1.0), 120.0)  # JSON has no inf

    bar = tqdm(total=config.steps, initial=step, unit="step", disable=config.quiet or None, dynamic_ncols=True)
    running = resumed_loss
    stop_at = config.steps if config.stop_after is None else min(config.steps, step + config.stop_after)
    try:
        while step < stop_at:
            t0 = time.perf_counter()
            lr_now = lr_at(step, config.steps, config.lr, config.lr_min, config.warmup)
            for g in opt.param_groups:
                g["lr"] = lr_now
            lr_b, hr_b = data.batch(np_rng, config.batch)
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
            if step % config.log_every == 0 or step == config.steps:
                rec = dict(step=step, loss=running, lr=lr_now, elapsed=elapsed)
                if step % config.val_every == 0 or step == config.steps:
                    rec["val_psnr"] = validate()
                history.append(rec)
                say(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
            if step % config.save_every == 0 and step < config.steps:
                save()
    except KeyboardInterrupt:
        save()
        say(f"interrupted at step {step}; state saved, run the same command to resume")
        raise
    finally:
        bar.close()
    save()
    if step < config.steps:
        say(f"stopped at step {step}/{config.steps} (--stop-after); run again to resume")
        log.close()
        return dict(step=step, finished=False)

    net.eval().cpu()
    weights = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    _save(weights, out / WEIGHTS)
    val_psnr = validate() if device.type == "cpu" else history[-1].get("val_psnr")
    summary = dict(
        model=config.model, scale=config.scale, config=full_cfg,
        training=dict(data=Path(config.data).name, images=len(data.pairs), steps=config.steps, batch=config.batch,
                      lr_patch=config.patch, hr_patch=config.patch * config.scale, loss="L1",
                      optimizer="Adam(0.9, 0.999)", lr=config.lr, lr_min=config.lr_min, warmup=config.warmup,
                      schedule="linear warm-up, cosine decay",
                      augmentation="random crops, horizontal/vertical flips, 90-degree rotations",
                      lr_images="MATLAB bicubic (runtime.resize.bicubic_downscale_uint8)",
                      seed=config.seed, skip_attention=config.skip_attention, init_from="/".join(Path(config.init_from).parts[-2:]) if config.init_from else None,
                      init_tensors=len(taken) if config.init_from else None,
                      seconds=round(elapsed, 1), device=str(device), threads=config.threads,
                      hardware=_hardware(device), torch=torch.__version__),
        val_psnr_rgb=round(val_psnr, 3) if val_psnr is not None else None,
        sha256=sha256_file(out / WEIGHTS), bytes=(out / WEIGHTS).stat().st_size,
    )
    atomic_write(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
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
    d = TrainConfig(model="", scale=0, out="")  # the defaults are TrainConfig's
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(__doc__.split("\n\n")[1].splitlines()))
    p.add_argument("--model", required=True, choices=sorted(models.ARCHITECTURES))
    p.add_argument("--scale", required=True, type=int, choices=models.SCALES)
    p.add_argument("--out", required=True, help="run folder (state, log, final weights); resumed if it holds a state")
    p.add_argument("--cfg", nargs="*", default=[], metavar="NAME=VALUE",
                   help="architecture options (official names), e.g. n_resblocks=8 n_feats=32")
    p.add_argument("--data", default=d.data, help="folder of HR training images (default: T91)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help="LR patch size (HR patch = patch × scale)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-min", type=float, default=d.lr_min)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="start from the tensors of these weights that fit (e.g. the x2 body for x3/x4)")
    p.add_argument("--skip-attention", action="store_true",
                   help="NLSN: bypass the attention blocks (identity) in this run: a cheap warm start of the "
                        "convolutional body, to be followed by a full run with --init-from")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default: 1)")
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many more steps (resumable)")
    p.add_argument("--restart", action="store_true", help="ignore an existing state in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar; the log file is still written")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    config = TrainConfig(**{**vars(args), "cfg": {}})
    try:
        config.check()
    except TrainError as e:
        p.error(str(e))  # argparse's form: usage, then the line; exit status 2
    try:
        train(dataclasses.replace(config, cfg=parse_cfg(args.cfg)))
    except SrdeployError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
