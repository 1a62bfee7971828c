"""Which images a run reads and writes, decided before any image is computed (``runtime.infer``
and ``runtime.client`` share it): the -i/-o flags, the plan of jobs with everything that needs no
model checked (inputs, output names and folders, existing files), and the end-of-run summary.

Problems are :class:`~models.errors.UsageError` (one line); messages go through the
:class:`Messages` of the command that runs, so that each line carries that command's name.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from models.cli import whole_number
from models.errors import UsageError
from models.files import file_problem, folder_problem

from .imageio import DEFAULT_QUALITY, FORMATS, INPUT_FORMATS, ImageData, is_supported, is_writable

__all__ = ["Job", "Plan", "Messages", "add_io_arguments", "make_plan", "name_outputs", "check_outputs", "summary"]

#: how many file names a summary line lists before "and N more"
NAMES_SHOWN = 5


@dataclass(frozen=True)
class Messages:
    """The stderr lines of one command, each starting with its name (tqdm.write keeps a progress bar whole)."""
    prog: str

    def say(self, msg: str) -> None:
        tqdm.write(f"{self.prog}: {msg}", file=sys.stderr)

    def warn(self, msg: str) -> None:
        self.say(f"warning: {msg}")

    def error(self, msg: str) -> None:
        self.say(f"error: {msg}")


@dataclass
class Job:
    src: Path
    dst: Path


@dataclass
class Plan:
    """What a run will do, decided before any image is computed."""
    jobs: list[Job]
    out: Path
    to_folder: bool
    not_images: list[Path] = field(default_factory=list)  # files in the input folder that are not images
    subfolders: list[Path] = field(default_factory=list)  # not searched without --recursive
    skipped: list[Job] = field(default_factory=list)  # outputs that exist, with --skip-existing
    single: bool = False  # -i is one image (read, and so checked, before the backend opens)
    first: ImageData | None = None  # that image


_quality = whole_number(1, 100)


def _suffix(text: str) -> str:
    """A file-name part: it must not lead the output out of -o (no separators, no NUL)."""
    bad = [c for c in ("/", os.sep, os.altsep, "\0") if c and c in text]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r} holds {bad[0]!r}: a suffix is part of a file name, not a path")
    return text


def add_io_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """-i/-o and the output rules, shared with ``python -m runtime.client``; returns the group."""
    exts = sorted({e.lstrip(".") for e in FORMATS})
    io = p.add_argument_group("input and output")
    io.add_argument("-i", "--input", required=True, metavar="PATH",
                    help=f"an image ({', '.join(INPUT_FORMATS)}), or a folder of images")
    io.add_argument("-o", "--output", required=True, metavar="PATH",
                    help="an image file for a single input, or a folder (created if missing)")
    io.add_argument("--recursive", action="store_true",
                    help="also upscale the images in subfolders of -i, mirrored under -o")
    io.add_argument("--suffix", type=_suffix, default=None,
                    help="added to each output file name in a folder (default: _x<scale>; '' for none)")
    io.add_argument("--ext", choices=exts, default=None,
                    help="output format in a folder (default: that of each input; png for TIFF inputs)")
    io.add_argument("--quality", type=_quality, default=None, metavar="1-100",
                    help=f"JPEG and WebP quality (default: {DEFAULT_QUALITY})")
    exist = io.add_mutually_exclusive_group()
    exist.add_argument("--overwrite", action="store_true", help="replace existing output files")
    exist.add_argument("--skip-existing", action="store_true",
                       help="leave existing output files alone and upscale only the others (to resume a run)")
    return io



def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _scan(inp: Path, out: Path, recursive: bool) -> tuple[list[Path], list[Path], list[Path]]:
    """(images, other files, subfolders not searched) of an input folder, sorted; hidden entries and,
    when -o lies inside -i, the output folder (earlier results) are left out."""
    out_resolved = out.resolve()
    entries = sorted(inp.rglob("*") if recursive else inp.iterdir())
    images, others, subfolders = [], [], []
    for path in entries:
        if _hidden(path, inp):
            continue
        resolved = path.resolve()
        if resolved == out_resolved or out_resolved in resolved.parents:
            continue
        if path.is_dir():
            if not recursive:
                subfolders.append(path)
        elif path.is_file():
            (images if is_supported(path) else others).append(path)
    return images, others, subfolders


def make_plan(args) -> Plan:
    """Inputs, outputs and what is odd about them; checks everything that needs no model."""
    inp, out = Path(args.input), Path(args.output)
    if not inp.exists():
        raise UsageError(f"input {inp} not found")
    ext = f".{args.ext}" if args.ext else None
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise UsageError(f"-i {inp} is a folder, so -o must be a folder, but {out} is a file")
        if not out.exists() and is_supported(out):
            raise UsageError(f"-i {inp} is a folder, so -o must be a folder, but {out} names an image file")
        sources, others, subfolders = _scan(inp, out, args.recursive)
        if not sources:
            more = f" ({len(subfolders)} subfolders not searched: pass --recursive)" if subfolders else ""
            raise UsageError(f"no images ({', '.join(INPUT_FORMATS)}) in folder {inp}{more}")
        plan = Plan([Job(s, out / s.relative_to(inp)) for s in sources], out, True, others, subfolders)
        return plan
    if args.recursive:
        raise UsageError(f"--recursive needs a folder as -i, but {inp} is a file")
    if not is_supported(inp):
        raise UsageError(f"input {inp}: unsupported image type {inp.suffix or '(none)'!r}; "
                         f"supported: {', '.join(INPUT_FORMATS)}")
    to_folder = out.is_dir() or (not out.exists() and (out.suffix == "" or args.output.endswith(("/", os.sep))))
    if not to_folder:
        if not is_writable(out):
            raise UsageError(f"output {out}: unsupported image type {out.suffix!r}; supported: {', '.join(FORMATS)}")
        if ext and out.suffix.lower() != ext:
            raise UsageError(f"--ext {args.ext} contradicts the output file name {out}")
        return Plan([Job(inp, out)], out, False, single=True)
    return Plan([Job(inp, out / inp.name)], out, True, single=True)


def name_outputs(plan: Plan, args, scale: int | None) -> None:
    """Final output names in a folder: <stem><suffix>.<ext> next to where the input sat."""
    if not plan.to_folder:
        return
    suffix = args.suffix
    if suffix is None:
        if scale is None:
            raise UsageError("cannot tell the network's scale for the default suffix: pass --scale or --suffix")
        suffix = f"_x{scale}"
    out = Path(os.path.abspath(plan.out))
    for job in plan.jobs:
        ext = f".{args.ext}" if args.ext else (job.dst.suffix if is_writable(job.dst) else ".png")
        job.dst = job.dst.with_name(f"{job.src.stem}{suffix}{ext}")
        if out not in Path(os.path.abspath(job.dst)).parents:  # belt and braces: names hold no separators
            raise UsageError(f"{job.dst} would be written outside -o {plan.out}")
    seen: dict[Path, Path] = {}
    for job in plan.jobs:
        if job.dst in seen:
            raise UsageError(f"{seen[job.dst]} and {job.src} would both be written to {job.dst}; "
                             f"use --ext only with inputs of distinct names")
        seen[job.dst] = job.src


def check_outputs(plan: Plan, args, messages: Messages) -> None:
    """Every output folder can be created and written, no output is a folder, and existing
    outputs are refused (or, with --skip-existing, set aside) before any compute."""
    for folder in sorted({job.dst.parent for job in plan.jobs}):
        problem = folder_problem(folder)
        if problem:
            raise UsageError(f"cannot write the output: {problem}")
    for job in plan.jobs:
        if job.dst.is_dir():
            raise UsageError(f"cannot write {job.dst}: {file_problem(job.dst)}")
    existing = [j for j in plan.jobs if j.dst.exists()]
    if args.skip_existing:
        plan.skipped = existing
        plan.jobs = [j for j in plan.jobs if not j.dst.exists()]
    elif existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"output {existing[0].dst} exists{more}; pass --overwrite to replace it or "
                         f"--skip-existing to keep it")
    if args.quality and not any(FORMATS[j.dst.suffix.lower()] in ("JPEG", "WEBP") for j in plan.jobs):
        messages.warn("--quality applies to JPEG and WebP outputs only; ignored")


def _names(paths, n: int = NAMES_SHOWN) -> str:
    paths = [str(p) for p in paths]
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def summary(plan: Plan, written: list[Job], failed: list[Job], seconds: float, interrupted: bool,
            messages: Messages) -> None:
    """The end-of-run lines."""
    say = messages.say
    if plan.single and written and not failed:
        say(f"wrote {plan.jobs[0].dst} in {seconds:.1f} s")
        return
    rate = f", {len(written) / seconds:.2f} images/s" if written and seconds > 0 else ""
    parts = [f"{len(written)} written", f"{len(plan.skipped)} skipped (exist)", f"{len(failed)} failed"]
    if interrupted:
        parts.append(f"{len(plan.jobs) - len(written) - len(failed)} not done (interrupted)")
    say(f"{'interrupted: ' if interrupted else 'done: '}{', '.join(parts)}; {seconds:.1f} s{rate}")
    if failed:
        say(f"  failed: {_names(j.src for j in failed)}")
    if plan.skipped:
        say(f"  skipped, output exists: {_names(j.src for j in plan.skipped)}")
    if plan.not_images:
        say(f"  not images, ignored: {_names(plan.not_images)}")
    if plan.subfolders:
        say(f"  subfolders not searched (pass --recursive): {_names(plan.subfolders)}")
