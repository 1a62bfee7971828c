"""One test per op of the contract (models.ops.contract.OPS) on every backend, against one oracle.

The table: op × {torch reference, ONNX decomposition on onnxruntime, custom op on onnxruntime, CUDA kernel,
TensorRT plugin (enqueue harness), TensorRT parser + builder}. Every backend gets the same cases
(benchmarks/op_cases.table_cases: 1, 2 and 3 chunks, the padding path, flat and peaky queries, the released
NLSN block, CSNLN's u = 2 and 3, fp32 and fp16) and is compared with the oracle, the PyTorch reference in
float64 on CPU from the very input values the backend saw, at the DESIGN.md §5 floors: BucketSort exact,
fp32 >= 100 dB, fp16 >= 60 dB. A backend runs the cases it can take and says which it leaves out:

- torch reference: fp32 on CPU (its fp16 on CPU is not a deployment path: half-precision sums);
- onnxruntime (both): one dynamic-shape graph per op, exported by the project's exporter
  (``export.onnx.to_onnx`` on a one-op module) from the op's first case and run at every size that
  shares its attributes and channels, fp32;
- CUDA kernel and TensorRT plugin (GPU, marked ``gpu``): every case, fp32 and fp16;
- TensorRT parser + builder: TensorRT for RTX parses and builds the op's ``--ops onnx`` graph here on the
  CPU (a profile spanning the graph's cases); running the engine needs a GPU and full TensorRT, which no
  machine here has, so this row proves that it builds, not what it computes.

Each backend skips with its reason where it is missing (no GPU, no kernels library, no
onnxruntime-extensions, no TensorRT). The GPU machine has no onnx-graphsurgeon: the export modules are
imported only by the rows that need them.

Long module: the table is one place on purpose (six backends, the one-op graphs they share and the one
comparison every row rests on); split up, the rows would drift apart.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import models.ops  # noqa: F401  (registers torch.ops.srdeploy)
from benchmarks import op_cases
from benchmarks.op_cases import OpCase
from models.ops.contract import OPS
from runtime.metrics import max_abs_diff, psnr_peak1

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- one-op graphs

class OneOp(nn.Module):
    """``torch.ops.srdeploy.<op>`` with fixed attributes: what the exporter turns into a one-op graph."""

    def __init__(self, op: str, attributes: dict):
        super().__init__()
        self.fn = getattr(torch.ops.srdeploy, OPS[op].torch_name)
        self.attributes = tuple(attributes.values())

    def forward(self, *tensors):
        return self.fn(*tensors, *self.attributes)


#: per input, the axes a one-op graph fixes (the rest follow _dynamic_shapes)
FIXED_AXES = {"BucketSort": ((),), "BucketAttention": ((2,), (2,), (), ()), "CrossScaleFold": ((), (2, 3, 4))}


def _dynamic_shapes(op: str, attributes: dict):
    """Batch and every size axis dynamic; channels and patch sizes fixed (as in the networks' graphs)."""
    from torch.export import Dim
    n = Dim("N", min=1)  # the example has batch 2: a size-1 example would fix the axis to 1
    if op == "BucketSort":
        return ({0: n, 1: Dim("M", min=2)},)
    if op == "BucketAttention":
        length = Dim("L", min=attributes["chunk_size"])
        rows = {0: n, 1: attributes["n_hashes"] * length}
        return {0: n, 1: length}, {0: n, 1: length}, rows, rows
    return {0: n, 1: Dim("K", min=2), 2: Dim("H", min=2), 3: Dim("W", min=2)}, {0: n, 1: Dim("K", min=2)}


def _same_graph(case: OpCase, example: OpCase) -> bool:
    """Whether the graph exported from ``example`` takes ``case``: fp32, same attributes, same fixed axes."""
    if case.dtype != example.dtype or case.attributes != example.attributes:
        return False
    fixed = FIXED_AXES[case.op]
    return all(t.shape[a] == e.shape[a] for t, e, axes in zip(case.inputs().values(), example.inputs().values(), fixed)
               for a in axes)


_GRAPHS: dict = {}


def one_op_graph(op: str, mode: str, tmp_path_factory) -> tuple:
    """(ONNX proto, its file, the cases it runs) for ``op`` exported with ``--ops mode``, once per session."""
    if (op, mode) not in _GRAPHS:
        import onnx

        from export.onnx import to_onnx
        cases = op_cases.table_cases(op)
        example = cases[0]
        inputs = example.inputs()
        spec = OPS[op]
        proto = to_onnx(OneOp(op, example.attributes), tuple(inputs.values()), mode=mode,
                        dynamic_shapes=(_dynamic_shapes(op, example.attributes),),  # one entry: *tensors
                        input_names=list(inputs),
                        output_names=[t.name for t in spec.outputs])
        path = tmp_path_factory.mktemp("one_op") / f"{op}_{mode}.onnx"
        onnx.save(proto, path)
        _GRAPHS[op, mode] = (proto, path, [c for c in cases if _same_graph(c, example)])
    return _GRAPHS[op, mode]


# ------------------------------------------------------------------------------------ backends

class Backend:
    """One column of the table: ``missing()`` says why it cannot run here (None: it can), ``select``
    picks the cases it takes, ``problems`` runs them and says what is wrong (by default: ``outputs``
    against the oracle). ``ctx``: pytest's tmp_path_factory and request."""
    name = ""
    gpu = False

    def missing(self) -> str | None:
        return None

    def select(self, op: str, cases: list[OpCase], ctx) -> list[OpCase]:
        return cases

    def outputs(self, op: str, cases: list[OpCase], ctx) -> list[tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def problems(self, op: str, cases: list[OpCase], ctx) -> list[str]:
        return [p for case, got in zip(cases, self.outputs(op, cases, ctx)) for p in compare(case, got)]


class TorchReference(Backend):
    name = "torch reference"

    def select(self, op, cases, ctx):
        return [c for c in cases if c.dtype != torch.float16]

    def outputs(self, op, cases, ctx):
        fn = getattr(torch.ops.srdeploy, OPS[op].torch_name)
        with torch.no_grad():
            return [c.call(fn, c.inputs().values()) for c in cases]


class OrtDecomposition(Backend):
    name = "ONNX decomposition on onnxruntime"
    mode = "onnx"

    def missing(self):
        for module in ("onnxruntime", "onnx_graphsurgeon"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e .)"
        return None

    def select(self, op, cases, ctx):
        return one_op_graph(op, self.mode, ctx["tmp"])[2]

    def check_graph(self, op, proto) -> None:
        from export import cleanup
        cleanup.check(proto)
        assert cleanup.trt_violations(proto) == []
        assert not any(n.op_type in ("TopK", "Col2Im", "Sort") for n in proto.graph.node)  # DESIGN §4

    def outputs(self, op, cases, ctx):
        from export.ort import make_session
        proto, path, _ = one_op_graph(op, self.mode, ctx["tmp"])
        self.check_graph(op, proto)
        session = make_session(path)
        return [tuple(torch.from_numpy(a) for a in session.run(None, {k: t.numpy() for k, t in c.inputs().items()}))
                for c in cases]


class OrtCustomOp(OrtDecomposition):
    name = "custom op on onnxruntime"
    mode = "plugin"

    def missing(self):
        why = super().missing()
        if why:
            return why
        from export.ort import custom_ops_available
        return None if custom_ops_available() else "onnxruntime-extensions is not installed"

    def check_graph(self, op, proto):
        from export import cleanup, ops_plugin
        cleanup.check(proto)
        (node,) = ops_plugin.custom_nodes(proto)
        assert (node.domain, node.op_type) == ("srdeploy", op)
        assert [a.name for a in node.attribute] == [a.name for a in OPS[op].attributes]


@functools.cache
def cuda_kernels():
    """(the CUDA kernels library or None, why not); tests/test_kernels_gpu.py uses it too."""
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    from plugins import kernels
    try:
        return kernels.load(), ""
    except kernels.KernelsUnavailable as e:
        return None, str(e)


class CudaKernel(Backend):
    name = "CUDA kernel"
    gpu = True

    def missing(self):
        return cuda_kernels()[1] or None

    def outputs(self, op, cases, ctx):
        fn = getattr(cuda_kernels()[0], OPS[op].torch_name)  # the binding's methods carry the torch ops' names
        out = []
        for c in cases:  # the oracle's values, moved to the GPU
            got = c.call(fn, [t.cuda() for t in c.inputs().values()])
            torch.cuda.synchronize()
            out.append(tuple(t.cpu() for t in got))
        return out


class TrtPlugin(Backend):
    """The IPluginV3 plugins as TensorRT drives them (plugins/trt/harness): the harness compares with the
    references it is given (the oracle), so this row reads its verdicts instead of outputs."""
    name = "TensorRT plugin (enqueue harness)"
    gpu = True

    def missing(self):
        return None if torch.cuda.is_available() else "torch sees no CUDA device (the harness exits 3 without one)"

    @staticmethod
    def write(op: str, cases: list[OpCase], folder: Path) -> None:
        """The cases as harness case files, named ``<op>_<index>``; each profile's maximum is the input's shape."""
        from plugins.trt import harness
        spec = OPS[op]
        selected = []
        for i, c in enumerate(cases):
            inputs = c.inputs()
            selected.append(harness.Case(
                f"{op}_{i}", op, dict(c.attributes), inputs, {k: tuple(t.shape) for k, t in inputs.items()},
                op_cases.oracle(c), {t.name: torch.int32 if t.dtype == "int32" else c.dtype for t in spec.outputs},
                c.floor_db or 0.0))
        harness.write_cases(folder, selected)

    @staticmethod
    def read_verdicts(cases: list[OpCase], results: dict) -> list[str]:
        """The harness's rows against the floors (not only its own verdict); a case with no passing row
        (under any variant) is a problem too."""
        problems, ran = [], set()
        for r in results["cases"]:
            case = cases[int(r["case"].rsplit("_", 1)[1])]
            if r["status"] == "SKIP":  # a variant this library does not offer
                continue
            exact = case.floor_db is None
            if r["status"] == "PASS" and r["non_finite"] == 0 and (
                    r["mismatches"] == 0 if exact else r["psnr_db"] is not None and r["psnr_db"] >= case.floor_db):
                ran.add(r["case"])
            else:
                problems.append(f"{case.name} ({r.get('variant') or 'plugin'}): {r['status']}, "
                                + (f"{r.get('mismatches')} mismatches" if exact else f"{r.get('psnr_db')} dB")
                                + f", {r.get('message') or ''}")
        problems += [f"{c.name}: not run" for i, c in enumerate(cases) if f"{c.op}_{i}" not in ran]
        return problems

    def problems(self, op, cases, ctx):
        from plugins import trt
        from plugins.trt import harness
        lib = ctx["request"].getfixturevalue("trt_plugins_lib")
        folder = ctx["tmp"].mktemp(f"harness_{op}")
        self.write(op, cases, folder)
        proc, results = harness.run(lib.parent / trt.HARNESS_NAME, lib, folder, json_path=folder / "results.json")
        assert results is not None, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return self.read_verdicts(cases, results)


class TrtBuilder(Backend):
    """TensorRT for RTX parses the ``--ops onnx`` graph and builds it with a profile spanning the graph's
    cases, on the CPU. Running the engine needs a GPU: this row proves the build, not the values."""
    name = "TensorRT parser + builder"

    def missing(self):
        if importlib.util.find_spec("tensorrt_rtx") is None:
            return "tensorrt_rtx is not installed (pip install -e '.[dev]' pins tensorrt-rtx-cu13)"
        return OrtDecomposition().missing()

    def select(self, op, cases, ctx):
        return one_op_graph(op, "onnx", ctx["tmp"])[2]

    def problems(self, op, cases, ctx):
        proc = _rtx_build(one_op_graph(op, "onnx", ctx["tmp"])[1], _profile(cases))
        if proc.returncode != 0 or not proc.stdout.split() or int(proc.stdout.split()[-1]) <= 0:
            return [f"TensorRT-RTX did not build the {op} graph: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"]
        return []


BACKENDS = [TorchReference(), OrtDecomposition(), OrtCustomOp(), CudaKernel(), TrtPlugin(), TrtBuilder()]


# --------------------------------------------------------------------------------- comparison

def compare(case: OpCase, got: tuple[torch.Tensor, ...]) -> list[str]:
    """What is wrong with ``got`` against the oracle (empty: nothing): dtype, shape, exactness of the
    index outputs, the PSNR floor of the float ones."""
    want = op_cases.oracle(case)
    if len(got) != len(want):
        return [f"{case.name}: {len(got)} outputs, {len(want)} expected"]
    problems = []
    for (name, w), g in zip(want.items(), got):
        expected_dtype = torch.int32 if not w.is_floating_point() else case.dtype
        if g.dtype != expected_dtype or tuple(g.shape) != tuple(w.shape):
            problems.append(f"{case.name} {name}: {g.dtype} {tuple(g.shape)}, expected {expected_dtype} {tuple(w.shape)}")
        elif not w.is_floating_point():
            if not torch.equal(g, w):
                problems.append(f"{case.name} {name}: {int((g != w).sum())} of {w.numel()} differ (exact expected)")
        elif not torch.isfinite(g).all():
            problems.append(f"{case.name} {name}: non-finite values")
        else:
            db = psnr_peak1(g, w)
            if db < case.floor_db:
                problems.append(f"{case.name} {name}: {db:.1f} dB < {case.floor_db} dB "
                                f"(max |diff| {max_abs_diff(g, w):.2e})")
    return problems


def _rtx_build(onnx_path: Path, profile: dict[str, list[tuple[int, ...]]]) -> subprocess.CompletedProcess:
    """TensorRT-RTX parses and builds ``onnx_path`` with one profile (in a subprocess: its parser may
    abort the process); prints the engine size."""
    code = textwrap.dedent("""
        import json, sys
        import tensorrt_rtx as trt
        path, profile = sys.argv[1], json.loads(sys.argv[2])
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(open(path, "rb").read()):
            sys.exit("parser: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
        config = builder.create_builder_config()
        shapes = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            shapes.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(shapes)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            sys.exit("the builder returned no engine")
        print(engine.nbytes)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, str(onnx_path), json.dumps(profile)], capture_output=True,
                          text=True, timeout=300, env=env)


def _profile(cases: list[OpCase]) -> dict[str, list[tuple[int, ...]]]:
    """min / opt / max per input, elementwise over the cases (opt: the first case, the export example)."""
    shapes = [{k: tuple(t.shape) for k, t in c.inputs().items()} for c in cases]
    return {k: [tuple(map(min, *(s[k] for s in shapes))), shapes[0][k], tuple(map(max, *(s[k] for s in shapes)))]
            for k in shapes[0]}


# --------------------------------------------------------------------------------------- the table

@pytest.mark.parametrize("backend", [pytest.param(b, id=b.name, marks=[pytest.mark.gpu] if b.gpu else [])
                                     for b in BACKENDS])
@pytest.mark.parametrize("op", list(OPS))
def test_op_on_backend(op, backend, tmp_path_factory, request):
    why = backend.missing()
    if why:
        pytest.skip(f"{backend.name}: {why}")
    ctx = {"tmp": tmp_path_factory, "request": request}
    cases = backend.select(op, op_cases.table_cases(op), ctx)
    assert cases, f"{backend.name} takes none of the {op} cases"
    problems = backend.problems(op, cases, ctx)
    assert not problems, f"{op} on {backend.name}: {len(problems)} problem(s):\n" + "\n".join(problems)


def test_plugin_row_reads_the_harness_by_replay(trt_plugins_lib, tmp_path):
    """The TensorRT plugin row without a GPU: the harness replays outputs made here (the oracle in each
    case's dtype, one of them corrupted) against the references the row wrote, and the row's reading of
    its verdicts names exactly the corrupted case."""
    from plugins import trt
    for op in OPS:
        cases = [c for c in op_cases.table_cases(op) if "released" not in c.name]
        cases = cases[:2] + [c for c in cases if c.dtype == torch.float16][:1]
        folder, outputs = tmp_path / op, tmp_path / op / "outputs"
        TrtPlugin.write(op, cases, folder)
        outputs.mkdir()
        for i, c in enumerate(cases):
            for name, want in op_cases.oracle(c).items():
                got = want.to(c.dtype if want.is_floating_point() else torch.int32).numpy().copy()
                if i == 1:  # the corrupted one
                    got.flat[3] += 1
                got.astype(got.dtype.newbyteorder("<"), copy=False).tofile(outputs / f"{op}_{i}.{name}.out")
        results_file = folder / "results.json"
        proc = subprocess.run([str(trt_plugins_lib.parent / trt.HARNESS_NAME), "--library", str(trt_plugins_lib),
                               "--cases", str(folder), "--replay", str(outputs), "--json", str(results_file)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr  # one case fails
        problems = TrtPlugin.read_verdicts(cases, json.loads(results_file.read_text()))
        failed, not_run = [p for p in problems if not p.endswith(": not run")], problems[-1:]
        assert len(failed) == 1 and failed[0].startswith(f"{cases[1].name} (replay): FAIL"), problems
        assert not_run == [f"{cases[1].name}: not run"], problems


def test_the_comparison_finds_what_is_wrong():
    """What every row's verdict rests on: the oracle's own outputs pass; a flipped index, a small error
    in fp32 (above the fp16 floor, below the fp32 one), a NaN, a wrong dtype or shape each fail."""
    sort = op_cases.table_cases("BucketSort")[0]
    order, rank = op_cases.oracle(sort).values()
    assert compare(sort, (order, rank)) == []
    swapped = order.clone()
    swapped[0, :2] = swapped[0, :2].flip(0)
    assert compare(sort, (swapped, rank)) == [f"{sort.name} order: 2 of {order.numel()} differ (exact expected)"]
    assert "expected torch.int32" in compare(sort, (order.long(), rank))[0]
    fold = op_cases.table_cases("CrossScaleFold")[0]
    (want,) = op_cases.oracle(fold).values()
    assert compare(fold, (want.float(),)) == []
    noisy = want + 1e-4 * torch.randn(want.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (problem,) = compare(fold, (noisy.float(),))
    assert " dB < 100.0 dB" in problem and compare(dataclasses.replace(fold, dtype=torch.float16), (noisy.half(),)) == []
    broken = want.float().clone()
    broken[0, 0, 0, 0] = float("nan")
    assert compare(fold, (broken,)) == [f"{fold.name} out: non-finite values"]
    assert "expected torch.float32" in compare(fold, (want.float()[:1],))[0]
