"""The op contract (models/ops/contract.py) against everything that implements or states it.

For every op of the contract: a registered reference, decomposition, emitter, onnxruntime op and kernel
binding, each taking the contract's inputs and attributes in order; the ``torch.ops.srdeploy`` op; the
ONNX schema; the README tables in ``plugins/<folder>/``; the CUDA kernel and launcher header beside them;
and a TensorRT creator (printed by the interface driver) whose name, version, namespace and fields match.
Each check is a function returning the gaps it finds (one line each); the tests assert the real project
has none, and that each check reports a gap planted into it.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from models.ops import contract
from models.ops.contract import DOMAIN, FLOAT_DTYPES, OPS, PART_MODULES, PARTS, TRT_FIELD_TYPES, VERSION

for _module in PART_MODULES.values():  # importing a part's module registers its implementations
    importlib.import_module(_module)

from export import ops_plugin  # noqa: E402
from plugins import kernels  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: how the READMEs write the contract's element types
README_DTYPES = {"int32": "int32", "float": " / ".join(t.replace("float", "fp") for t in FLOAT_DTYPES)}
ONNX_TYPES = {"int32": "tensor(int32)", "float32": "tensor(float)", "float16": "tensor(float16)"}
ONNX_ATTRIBUTE_TYPES = {"INT": onnx.defs.OpSchema.AttrType.INT, "FLOAT": onnx.defs.OpSchema.AttrType.FLOAT}


def _signature(names) -> str:
    return "(" + ", ".join(names) + ")"


def _operands(op) -> list[str]:
    """What every implementation of ``op`` takes, in order: its inputs, then its attributes."""
    return [t.name for t in op.inputs] + [a.name for a in op.attributes]


# ----------------------------------------------------------------------------------- the checks

def registry_gaps() -> list[str]:
    """Parts no module registered."""
    return [f"{name}: no {part} registered (expected in {PART_MODULES[part]})"
            for name in OPS for part in PARTS if name not in contract.registered(part)]


def signature_gaps() -> list[str]:
    """Registered parts and torch ops whose required parameters are not the contract's inputs and
    attributes in order (onnxruntime-extensions passes attributes by name)."""
    gaps = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for part in PARTS:
        for name, fn in contract.registered(part).items():
            got = [p.name for p in inspect.signature(fn).parameters.values()
                   if p.kind in positional and p.default is inspect.Parameter.empty]
            if got != _operands(OPS[name]):
                gaps.append(f"{name}: {part} {fn.__module__}.{fn.__qualname__} takes {_signature(got)}, "
                            f"the contract {_signature(_operands(OPS[name]))}")
    for name, op in OPS.items():
        torch_op = getattr(getattr(torch.ops, DOMAIN), op.torch_name, None)
        if torch_op is None:
            gaps.append(f"{name}: no torch.ops.{DOMAIN}.{op.torch_name}")
            continue
        got = [a.name for a in torch_op.default._schema.arguments]
        if got != _operands(op):
            gaps.append(f"{name}: torch.ops.{DOMAIN}.{op.torch_name} takes {_signature(got)}, "
                        f"the contract {_signature(_operands(op))}")
    return gaps


def schema_gaps() -> list[str]:
    """ONNX schemas (as register_schemas() registers them) that differ from the contract."""
    ops_plugin.register_schemas()
    gaps = []
    floats = {ONNX_TYPES[t] for t in FLOAT_DTYPES}
    for name, op in OPS.items():
        try:
            schema = onnx.defs.get_schema(name, VERSION, DOMAIN)
        except onnx.defs.SchemaError:
            gaps.append(f"{name}: no ONNX schema {DOMAIN}::{name} version {VERSION}")
            continue
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

        def formal(params):
            return [(p.name, sorted(allowed.get(p.type_str, {p.type_str}))) for p in params]

        def wanted(tensors):
            return [(t.name, sorted({ONNX_TYPES["int32"]} if t.dtype == "int32" else floats)) for t in tensors]

        for what, got, want in (("inputs", formal(schema.inputs), wanted(op.inputs)),
                                ("outputs", formal(schema.outputs), wanted(op.outputs))):
            if got != want:
                gaps.append(f"{name}: ONNX schema {what} {got}, the contract {want}")
        got_attrs = {a.name: (a.type, a.required) for a in schema.attributes.values()}
        want_attrs = {a.name: (ONNX_ATTRIBUTE_TYPES[a.type], True) for a in op.attributes}
        if got_attrs != want_attrs:
            gaps.append(f"{name}: ONNX schema attributes {got_attrs}, the contract {want_attrs}")
    return gaps


def _table(text: str, title: str) -> list[dict[str, str]] | None:
    """Rows of the first table under ``## title`` as {column: cell}, None without that section."""
    section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        return None
    lines = [line.strip() for line in section.group(1).splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    if len(rows) < 2:
        return []
    return [dict(zip(rows[0], row)) for row in rows[2:]]  # rows[1] is the |---| line


def readme_gaps(name: str, text: str) -> list[str]:
    """Where the README text of op ``name`` states the contract otherwise (tables, names, fields)."""
    op = OPS[name]
    gaps = []
    flat = " ".join(text.split())
    for phrase in (f"`torch.ops.{DOMAIN}.{op.torch_name}`", f"`{DOMAIN}::{name}` version {VERSION}",
                   "this order: " + ", ".join(f"`{a.name}` {TRT_FIELD_TYPES[a.type]}" for a in op.attributes) + "."):
        if phrase not in flat:
            gaps.append(f"{name}: README does not say {phrase}")
    for title, tensors in (("Inputs", op.inputs), ("Outputs", op.outputs)):
        rows = _table(text, title)
        got = [(r.get("name"), r.get("dtype"), len(r.get("shape", "").split(","))) for r in rows or []]
        want = [(f"`{t.name}`", README_DTYPES[t.dtype], t.rank) for t in tensors]
        if got != want:
            gaps.append(f"{name}: README {title} (name, dtype, rank) {got}, the contract {want}")
    rows = _table(text, "Attributes")
    got = [(r.get("name"), r.get("type"), r.get("valid")) for r in rows or []]
    want = [(f"`{a.name}`", a.type, a.valid) for a in op.attributes]
    if got != want:
        gaps.append(f"{name}: README Attributes (name, type, valid) {got}, the contract {want}")
    return gaps


def readmes_gaps(root: Path = REPO) -> list[str]:
    gaps = []
    for name, op in OPS.items():
        path = root / "plugins" / op.folder / "README.md"
        gaps += readme_gaps(name, path.read_text()) if path.is_file() else [f"{name}: no {path.relative_to(root)}"]
    return gaps


def source_gaps(suffixes: tuple[str, ...], root: Path = REPO) -> list[str]:
    """Files plugins/<folder>/<folder><suffix> that are missing."""
    return [f"{name}: no plugins/{op.folder}/{op.folder}{suffix}" for name, op in OPS.items() for suffix in suffixes
            if not (root / "plugins" / op.folder / f"{op.folder}{suffix}").is_file()]


KERNEL_SOURCES = ("Kernel.cu", "Kernel.h")  # the CUDA kernel and its launcher header
PLUGIN_SOURCES = ("Plugin.cpp", "Plugin.h")  # the IPluginV3 class and its creator
_CREATOR = re.compile(r"^OK creator (\S+) v(\S+) ns=(\S*) fields:(.*)$")


def field_type_names(header: str) -> dict[int, str]:
    """PluginFieldType value -> name ('kINT32'), read from the TensorRT header the driver is built against."""
    body = re.search(r"enum class PluginFieldType\s*:\s*\w+\s*\{(.*?)\};", header, re.S)
    return {int(v): k for k, v in re.findall(r"\b(k\w+)\s*=\s*(\d+)", body.group(1))} if body else {}


def creator_gaps(driver_output: str, type_names: dict[int, str]) -> list[str]:
    """TensorRT creators (lines ``OK creator <Name> v<ver> ns=<ns> fields: <field>(<type>) ...`` of the
    interface driver) whose version, namespace or fields (names, order, types) differ from the contract."""
    found = {}
    for line in driver_output.splitlines():
        m = _CREATOR.match(line.strip())
        if m:
            fields = [(f, type_names.get(int(t), t)) for f, t in re.findall(r"(\w+)\((-?\d+)\)", m.group(4))]
            found[m.group(1)] = (m.group(2), m.group(3), fields)
    gaps = []
    for name, op in OPS.items():
        if name not in found:
            gaps.append(f"{name}: no TensorRT creator")
            continue
        version, namespace, fields = found.pop(name)
        if (version, namespace) != (str(VERSION), DOMAIN):
            gaps.append(f"{name}: TensorRT creator v{version} ns={namespace}, the contract v{VERSION} ns={DOMAIN}")
        want = [(a.name, TRT_FIELD_TYPES[a.type]) for a in op.attributes]
        if fields != want:
            gaps.append(f"{name}: TensorRT creator fields {fields}, the contract {want}")
    gaps += [f"{name}: a TensorRT creator the contract does not have" for name in found]
    return gaps


def completeness_gaps() -> list[str]:
    """Everything above that runs without a build (the creators need the interface driver)."""
    return registry_gaps() + signature_gaps() + schema_gaps() + readmes_gaps() + source_gaps(KERNEL_SOURCES + PLUGIN_SOURCES)


# ----------------------------------------------------------------------------------- the project

def test_every_op_has_all_its_parts():
    assert completeness_gaps() == []


def _driver_output(trt_plugins_lib: Path) -> str:
    from plugins import trt
    driver = trt_plugins_lib.parent / trt.DRIVER_NAME
    return subprocess.run([str(driver), str(trt_plugins_lib)], capture_output=True, text=True, timeout=300).stdout


def _trt_field_types() -> dict[int, str]:
    from plugins import trt
    headers = sorted((trt.tensorrt_root() / "include").glob("NvInfer*.h"))
    names = {}
    for header in headers:
        names.update(field_type_names(header.read_text(errors="replace")))
    return names


def test_tensorrt_creators_match_the_contract(trt_plugins_lib):
    type_names = _trt_field_types()
    assert type_names.get(5) == "kINT32" and type_names.get(1) == "kFLOAT32"  # the header was read
    output = _driver_output(trt_plugins_lib)
    assert output.count("OK creator ") == len(OPS), output
    assert creator_gaps(output, type_names) == []


def test_attribute_ranges_are_what_the_tensorrt_creators_accept(trt_plugins_lib):
    """For each attribute: values at, just below and just above its minimum (and NaN, inf for FLOAT),
    the others at their minimum; TensorRT's createPlugin accepts exactly those the contract calls valid."""
    if importlib.util.find_spec("tensorrt_lean") is None:  # before importing its helpers (they need the exporter)
        pytest.skip("tensorrt_lean is not installed: pip install -e '.[dev]'")
    from test_tensorrt_real import lean_code, ok, run_python
    cases = []
    for name, op in OPS.items():
        base = {a.name: a.minimum + (1 if a.exclusive else 0) for a in op.attributes}
        for a in op.attributes:
            step = 1 if a.type == "INT" else 1e-3
            extra = [math.nan, math.inf] if a.type == "FLOAT" else []
            for value in [a.minimum - step, a.minimum, a.minimum + step] + extra:
                values = {**base, a.name: value}
                fields = [(x.name, int(values[x.name]) if x.type == "INT" else values[x.name],
                           TRT_FIELD_TYPES[x.type][1:]) for x in op.attributes]
                cases.append((name, fields))
    proc = run_python(lean_code("""
        cases = json.loads(sys.argv[2])
        print(json.dumps([create(op, [field(*f) for f in fields]) is not None for op, fields in cases]))
    """), str(trt_plugins_lib), json.dumps(cases))
    accepted = json.loads(ok(proc).splitlines()[-1])
    valid = [all(a.problem(v) is None for a, (_, v, _) in zip(OPS[name].attributes, fields)) for name, fields in cases]
    disagree = [f"{name} {fields}: TensorRT {'accepts' if got else 'refuses'}, the contract says "
                f"{'valid' if want else 'invalid'}" for (name, fields), got, want in zip(cases, accepted, valid) if got != want]
    assert disagree == []
    assert sum(valid) and not all(valid)  # both kinds were tried


def test_kernel_dtypes_are_the_contract_floats():
    assert sorted(str(t).removeprefix("torch.") for t in kernels.DTYPES) == sorted(FLOAT_DTYPES)


# ----------------------------------------------------------------------------------- the checks catch gaps

def test_a_removed_part_is_reported(monkeypatch):
    """Remove the BucketSort decomposition: the completeness check names exactly that gap, and an
    --ops onnx export says what is missing instead of leaving a torch op in the graph."""
    without = {k: v for k, v in contract.registered("decomposition").items() if k != "BucketSort"}
    monkeypatch.setitem(contract._REGISTRY, "decomposition", without)
    assert completeness_gaps() == ["BucketSort: no decomposition registered (expected in export.ops_onnx)"]
    from export.onnx import decomposition_table
    with pytest.raises(LookupError, match=r"^BucketSort has no registered 'decomposition' implementation"):
        decomposition_table("onnx", "fp32", 8)


def test_a_wrong_signature_is_reported(monkeypatch):
    def swapped(codes, buckets):  # an attribute under another name
        raise AssertionError("not called")
    monkeypatch.setitem(contract._REGISTRY, "ort", {**contract.registered("ort"), "BucketSort": swapped})
    (gap,) = signature_gaps()
    assert gap.startswith("BucketSort: ort ") and gap.endswith("takes (codes, buckets), the contract (codes, num_buckets)")


def test_a_readme_that_differs_is_reported():
    text = (REPO / "plugins" / "bucketAttention" / "README.md").read_text()
    assert readme_gaps("BucketAttention", text) == []
    wrong = text.replace("| `eps` | FLOAT | ≥ 0 |", "| `eps` | INT | ≥ 0 |").replace("| `rank` | int32 | [N, R*L] |", "")
    assert readme_gaps("BucketAttention", wrong) == [
        "BucketAttention: README Inputs (name, dtype, rank) [('`q`', 'fp32 / fp16', 3), ('`v`', 'fp32 / fp16', 3), "
        "('`order`', 'int32', 2)], the contract [('`q`', 'fp32 / fp16', 3), ('`v`', 'fp32 / fp16', 3), "
        "('`order`', 'int32', 2), ('`rank`', 'int32', 2)]",
        "BucketAttention: README Attributes (name, type, valid) [('`chunk_size`', 'INT', '≥ 1'), "
        "('`n_hashes`', 'INT', '≥ 1'), ('`eps`', 'INT', '≥ 0')], the contract [('`chunk_size`', 'INT', '≥ 1'), "
        "('`n_hashes`', 'INT', '≥ 1'), ('`eps`', 'FLOAT', '≥ 0')]"]


def test_a_creator_that_differs_is_reported():
    names = {5: "kINT32", 1: "kFLOAT32", 2: "kFLOAT64"}
    good = ("OK creator BucketSort v1 ns=srdeploy fields: num_buckets(5)\n"
            "OK creator BucketAttention v1 ns=srdeploy fields: chunk_size(5) n_hashes(5) eps(1)\n"
            "OK creator CrossScaleFold v1 ns=srdeploy fields: stride(5) padding(5)\n")
    assert creator_gaps(good, names) == []
    bad = good.replace("eps(1)", "eps(2)").replace("CrossScaleFold v1 ns=srdeploy fields: stride(5) padding(5)",
                                                 "CrossScaleFold v2 ns=srdeploy fields: padding(5) stride(5)")
    assert creator_gaps(bad, names) == [
        "BucketAttention: TensorRT creator fields [('chunk_size', 'kINT32'), ('n_hashes', 'kINT32'), "
        "('eps', 'kFLOAT64')], the contract [('chunk_size', 'kINT32'), ('n_hashes', 'kINT32'), ('eps', 'kFLOAT32')]",
        "CrossScaleFold: TensorRT creator v2 ns=srdeploy, the contract v1 ns=srdeploy",
        "CrossScaleFold: TensorRT creator fields [('padding', 'kINT32'), ('stride', 'kINT32')], the contract "
        "[('stride', 'kINT32'), ('padding', 'kINT32')]"]
    assert creator_gaps(good.replace("BucketSort", "Sort"), names) == [
        "BucketSort: no TensorRT creator", "Sort: a TensorRT creator the contract does not have"]


def test_field_type_names_come_from_the_header():
    header = "enum class PluginFieldType : int32_t\n{\n    //! FP16\n    kFLOAT16 = 0,\n    kFLOAT32 = 1,\n    kINT32 = 5,\n};"
    assert field_type_names(header) == {0: "kFLOAT16", 1: "kFLOAT32", 5: "kINT32"}


# ----------------------------------------------------------------------------------- the contract itself

def test_attribute_checks_name_the_problem():
    attention = OPS["BucketAttention"]
    attention.check_attributes({"chunk_size": 144, "n_hashes": 4, "eps": 0.0})  # eps = 0: the plugins take it
    for values, message in [
        ({"chunk_size": 0, "n_hashes": 4, "eps": 5e-5}, "BucketAttention: chunk_size must be ≥ 1, got 0"),
        ({"chunk_size": 144, "n_hashes": 4.0, "eps": 5e-5}, "BucketAttention: n_hashes must be a whole number, got 4.0"),
        ({"chunk_size": True, "n_hashes": 4, "eps": 5e-5}, "BucketAttention: chunk_size must be a whole number, got True"),
        ({"chunk_size": 144, "n_hashes": 4, "eps": -1e-9}, "BucketAttention: eps must be finite and ≥ 0, got -1e-09"),
        ({"chunk_size": 144, "n_hashes": 4, "eps": math.nan}, "BucketAttention: eps must be finite and ≥ 0, got nan"),
        ({"chunk_size": 144, "n_hashes": 4}, "BucketAttention: attributes chunk_size, n_hashes, eps expected; missing eps"),
        ({"chunk_size": 144, "n_hashes": 4, "eps": 5e-5, "seed": 1},
         "BucketAttention: attributes chunk_size, n_hashes, eps expected; unknown seed"),
    ]:
        with pytest.raises(contract.OpAttributeError) as e:
            attention.check_attributes(values)
        assert str(e.value) == message
    assert issubclass(contract.OpAttributeError, ValueError)


def test_kernel_binding_checks_attributes_before_any_call():
    """The ctypes binding refuses an attribute outside the contract before it looks at the tensors
    (no GPU needed: the check comes first)."""
    binding = kernels.Kernels.__new__(kernels.Kernels)  # no library: nothing may be called
    with pytest.raises(contract.OpAttributeError, match="CrossScaleFold: stride must be ≥ 1, got 0"):
        binding.cross_scale_fold(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2, 2), 0, 0)
    with pytest.raises(contract.OpAttributeError, match="BucketSort: num_buckets must be ≥ 1, got 0"):
        binding.bucket_sort(torch.zeros(1, 4, dtype=torch.int32), 0)


def test_unknown_op_or_part_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown op 'Sort'"):
        contract.implements("Sort", "reference")
    with pytest.raises(ValueError, match="unknown part 'plugin'"):
        contract.implements("BucketSort", "plugin")
    monkeypatch.setitem(contract._REGISTRY, "kernel", {})
    with pytest.raises(LookupError, match=r"^BucketSort has no registered 'kernel' implementation \(is plugins.kernels"):
        contract.implementation("BucketSort", "kernel")


# ----------------------------------------------------------------------------------- layering

def test_models_import_nothing_above_them():
    """models (with its ops and their contract) is the bottom layer: importing it loads no plugins,
    export, runtime or benchmarks module (a fresh interpreter, so nothing else imported them first)."""
    code = ("import sys, models, models.ops, models.ops.contract\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('plugins', 'export', 'runtime', 'benchmarks')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
