"""``python -m models.weights.bundle``: copy trained runs into the package and write the manifest.

    python -m models.weights.bundle \\
        --entry nlsn_x2=runs/nlsn_x2_s1,runs/nlsn_x2 --entry nlsn_x3=runs/nlsn_x3 ... \\
        --quality nlsn.json csnln.json --bicubic bicubic.json --default nlsn_x4

Each ``--entry NAME=RUN[,RUN...][@PARENT]`` lists the ``python -m models.train`` run folders of one
bundled checkpoint in training order (the last one's ``weights.pt`` is shipped as
``NAME.pt``); their ``train.json`` become the entry's training stages; ``@PARENT`` is the run
folder whose weights the first run started from (``--init-from``). ``--quality`` takes
``benchmarks.quality`` JSON files (bundled weights) and ``--bicubic`` the bicubic baseline
JSON: per set PSNR/SSIM of the model and of bicubic go into the manifest.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..files import atomic_output, atomic_write, sha256_file
from . import FOLDER, MANIFEST


def _quality(files: list[Path]) -> dict[tuple[str, int, str], dict]:
    rows = {}
    for f in files:
        q = json.loads(Path(f).read_text())
        for r in q["results"]:
            rows[(q["model"], int(r["scale"]), r["set"])] = dict(psnr=r["psnr"], ssim=r["ssim"], n=r["n_images"],
                                                                 weights=r.get("weights"), options=q.get("options"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.weights.bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--entry", action="append", required=True, metavar="NAME=RUN[,RUN...][@PARENT]")
    p.add_argument("--quality", nargs="*", default=[], type=Path)
    p.add_argument("--bicubic", nargs="*", default=[], type=Path,
                   help="benchmarks.quality --model bicubic JSON files (matched by set, scale and image count)")
    p.add_argument("--default", required=True, metavar="NAME", help="entry used when no model/scale is given")
    p.add_argument("--hardware-note", default="", help="free text on the machine the runs shared")
    args = p.parse_args(argv)

    quality = _quality(args.quality)
    bicubic = {}
    for f in args.bicubic:
        for r in json.loads(Path(f).read_text())["results"]:
            bicubic[(int(r["scale"]), r["set"], r["n_images"])] = r
    old = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    entries = {}
    for spec in args.entry:
        name, _, runs = spec.partition("=")
        runs, _, parent = runs.partition("@")
        runs = [Path(r) for r in runs.split(",") if r]
        summaries = [json.loads((r / "train.json").read_text()) for r in runs]
        last = summaries[-1]
        src = runs[-1] / "weights.pt"
        dst = FOLDER / f"{name}.pt"
        sd = torch.load(src, map_location="cpu", weights_only=True)
        with atomic_output(dst) as tmp:
            torch.save(sd, tmp)
        model, scale = last["model"], int(last["scale"])
        stages = []
        for i, (r, s) in enumerate(zip(runs, summaries)):
            t = dict(s["training"])
            if t.get("init_from"):  # name the run folder the stage started from
                t["init_from"] = f"{runs[i - 1].name if i else Path(parent).name}/weights.pt"
            t["val_psnr_rgb"] = s.get("val_psnr_rgb")
            t["run"] = r.name
            stages.append(t)
        q = {}
        for (m, sc, set_), v in quality.items():
            if m == model and sc == scale and v["weights"] and Path(v["weights"]).resolve() == src.resolve():
                b = bicubic.get((sc, set_, v["n"]))
                opts = {k: o for k, o in (v["options"] or {}).items() if o not in (None, False)}
                q[set_] = dict(psnr=round(v["psnr"], 3), ssim=round(v["ssim"], 4), images=v["n"], options=opts,
                               **({"bicubic": round(b["psnr"], 3), "bicubic_ssim": round(b["ssim"], 4),
                                   "gain": round(v["psnr"] - b["psnr"], 3)} if b else {}))
        if not q:
            q = old.get("models", {}).get(name, {}).get("quality", {})
        entries[name] = dict(
            file=dst.name, model=model, scale=scale, config=last["config"], load_overrides={},
            sha256=sha256_file(dst), bytes=dst.stat().st_size,
            training=dict(data=stages[0]["data"], init_from=f"{Path(parent).name}/weights.pt" if parent else None,
                          steps=sum(s["steps"] for s in stages),
                          seconds=round(sum(s["seconds"] for s in stages), 1), seed=stages[0]["seed"],
                          hardware=stages[-1]["hardware"], device=stages[-1]["device"],
                          threads=stages[-1]["threads"], torch=stages[-1]["torch"], stages=stages),
            quality=q,
        )
    manifest = dict(
        format=1,
        about="Compact NLSN/CSNLN trained by python -m models.train on T91 (MATLAB-bicubic LR, L1, Adam); "
              "quality: python -m benchmarks.quality (Y PSNR/SSIM, border = scale).",
        hardware_note=args.hardware_note or old.get("hardware_note", ""),
        default=dict(zip(("model", "scale"), (entries[args.default]["model"], entries[args.default]["scale"]))),
        models={**old.get("models", {}), **entries},
    )
    unknown = [f.name for f in FOLDER.glob("*.pt") if f.name not in {e["file"] for e in manifest["models"].values()}]
    if unknown:
        print(f"warning: {', '.join(unknown)} in {FOLDER} but not in the manifest", file=sys.stderr)
    atomic_write(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {MANIFEST} ({len(manifest['models'])} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
