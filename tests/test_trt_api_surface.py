"""Every TensorRT attribute that pytest_trtparity/trt/api.py touches exists in each supported version.

The real bindings wheels (tensorrt-cu12-bindings 10.0.1 and 10.16, tensorrt-cu13-bindings 11.4 and
the 11.4 lean runtime) import against stub libnvinfer*.so built by ci/fetch-trt-bindings.sh; the test
only looks names up, it never constructs a TensorRT object. It proves the names exist, not that the
calls behave: that needs a GPU (tests/gpu/).

The uses are read from api.py's syntax tree: chains rooted at `trt`, and attributes of the variables
that `api.OBJECT_TYPES` says hold TensorRT objects.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.trt import api

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_trtparity"
API = PACKAGE / "trt" / "api.py"
FETCH = "ci/fetch-trt-bindings.sh"

#: folder fetched by the script -> (module to import, stub set, full or runtime-only check)
BINDINGS = {
    "tensorrt-cu12-bindings-10.0.1": ("tensorrt_bindings", "stubs10", "full"),
    "tensorrt-cu12-bindings-10.16.1.11": ("tensorrt_bindings", "stubs10", "full"),
    "tensorrt-cu13-bindings-11.4.0.106": ("tensorrt_bindings", "stubs11", "full"),
    "tensorrt-lean-cu13-bindings-11.4.0.106": ("tensorrt_lean_bindings", "stubs11", "runtime"),
}


# -- helpers shared with the other TensorRT tests ---------------------------------------------------
def bindings_dir() -> Path:
    env = os.environ.get("TRT_BINDINGS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "trtparity" / "trt-bindings"


def require(folder: str) -> Path:
    path = bindings_dir() / folder
    if not (path / ".complete").is_file():
        pytest.skip(
            f"{folder} not fetched into {bindings_dir()}: run {FETCH} (about 17 MB, no GPU needed)"
        )
    return path


def run_python(
    code: str, *, paths: list[Path], stubs: Path | None = None, stdin: Any = None
) -> Any:
    """Run `code` in a fresh interpreter with `paths` first on sys.path; it prints one JSON line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, paths), str(ROOT)]))
    if stubs is not None:
        env["LD_LIBRARY_PATH"] = str(stubs)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        input=json.dumps(stdin) if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- what api.py uses ---------------------------------------------------------------------------------
def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def used_paths(source: str, functions: tuple[str, ...] | None = None) -> set[str]:
    """'Class.attr' and 'Enum.MEMBER' paths used in `source` (optionally only inside `functions`)."""
    tree = ast.parse(source)
    roots: list[ast.AST] = [tree]
    if functions is not None:
        roots = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in functions
        ]
    found: set[str] = set()
    outer: set[int] = set()
    for root in roots:
        for node in ast.walk(root):
            if not isinstance(node, ast.Attribute) or id(node) in outer:
                continue
            chain = _chain(node)
            inner = node.value
            while isinstance(inner, ast.Attribute):
                outer.add(id(inner))
                inner = inner.value
            if not chain:
                continue
            if chain[0] == "trt" and len(chain) > 1:
                found.add(".".join(chain[1:]))
            elif chain[0] in api.OBJECT_TYPES and len(chain) > 1:
                found.add(".".join([api.OBJECT_TYPES[chain[0]], *chain[1:]]))
    return found


def dynamic_paths() -> set[str]:
    """Names api.py reaches through getattr with a variable: precision flags and hardware levels."""
    from pytest_trtparity.trt.build import HARDWARE_LEVELS

    return {f"BuilderFlag.{flag}" for flag in api.PRECISION_FLAGS.values()} | {
        f"HardwareCompatibilityLevel.{level}" for level in HARDWARE_LEVELS
    }


def expected_present(path: str, version: tuple[int, ...], flavour: str = "tensorrt") -> bool:
    only = api.FLAVOUR_ONLY.get(path)
    if only is not None:
        return only == flavour
    if flavour == "tensorrt-rtx":  # always strongly typed; no calibration, no v1 memory API
        precision_flag = (
            path.startswith("BuilderFlag.") and path.split(".")[1] in api.PRECISION_FLAGS.values()
        )
        return not precision_flag and path not in api.NOT_IN_RTX
    if path.startswith("BuilderFlag.") and path.split(".")[1] in api.PRECISION_FLAGS.values():
        return version[:1] < (11,)
    bounds = api.VERSIONED.get(path)
    if bounds is None:
        return True
    first, gone = bounds
    return version >= first and (gone is None or version < gone)


CHECK = r"""
import importlib, json, sys
paths = json.load(sys.stdin)
trt = importlib.import_module(sys.argv[1] if len(sys.argv) > 1 else "MODULE")
present = {}
for path in paths:
    obj = trt
    ok = True
    for part in path.split("."):
        if not hasattr(obj, part):
            ok = False
            break
        obj = getattr(obj, part)
    present[path] = ok
print(json.dumps({"version": trt.__version__, "present": present}))
"""


def test_the_ast_scan_sees_the_uses_it_must() -> None:
    """The scanner itself: it finds chained, assigned and object uses, and nothing from elsewhere."""
    uses = used_paths(API.read_text())
    for must in (
        "Builder",
        "OnnxParser.parse_from_file",
        "IBuilderConfig.set_memory_pool_limit",
        "IBuilderConfig.profiling_verbosity",
        "ProfilingVerbosity.DETAILED",
        "ILogger.Severity.WARNING",
        "IExecutionContext.execute_async_v3",
        "ICudaEngine.get_tensor_profile_shape",
        "ParserError.desc",
        "Runtime.deserialize_cuda_engine",
        "ITimingCache.serialize",
    ):
        assert must in uses
    assert not any(u.startswith(("np.", "cuda.", "log.")) for u in uses)
    assert used_paths("def f(context):\n    context.nope_v9(1)\n") == {"IExecutionContext.nope_v9"}


def test_only_api_imports_tensorrt_and_the_trt_layer_imports_cuda_only_in_cuda_py() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                rel = path.relative_to(PACKAGE).as_posix()
                if top.startswith("tensorrt") and rel != "trt/api.py":
                    offenders.append(f"{rel} imports {name}")
                if (
                    top == "cuda"
                    and rel.startswith(("trt/", "backends/tensorrt"))
                    and rel != "trt/cuda.py"
                ):
                    offenders.append(f"{rel} imports {name}")
    assert offenders == []
    assert "importlib.import_module(name)" in API.read_text()  # TensorRT itself is imported lazily


def test_the_backend_calls_only_runtime_functions_of_api() -> None:
    tree = ast.parse((PACKAGE / "backends" / "tensorrt.py").read_text())
    called = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and _chain(n) == ["api", n.attr]
    }
    allowed = set(api.RUNTIME_FUNCTIONS) | {
        "import_runtime",
        "version",
        "is_lean",
        "last_lines",
        "title",
        "flavour_of",
    }
    assert called - allowed == set()
    assert set(api.RUNTIME_FUNCTIONS) <= set(dir(api))


@pytest.mark.parametrize("folder", sorted(BINDINGS))
def test_every_tensorrt_name_api_uses_exists(folder: str) -> None:
    path = require(folder)
    module, stubs, scope = BINDINGS[folder]
    source = API.read_text()
    uses = used_paths(source, api.RUNTIME_FUNCTIONS if scope == "runtime" else None)
    if scope == "full":
        uses |= dynamic_paths()
    checked = sorted(uses | set(api.VERSIONED))
    code = CHECK.replace('"MODULE"', repr(module))
    result = run_python(code, paths=[path], stubs=bindings_dir() / stubs, stdin=checked)
    from pytest_trtparity.trt.compat import version_tuple

    version = version_tuple(result["version"])
    present: dict[str, bool] = result["present"]
    missing = [p for p in sorted(uses) if not present[p] and expected_present(p, version)]
    assert missing == [], f"TensorRT {result['version']} ({module}) lacks {missing}"
    # The version table must tell the truth both ways: what it calls gone is really gone.
    wrong = [
        p
        for p in checked
        if present[p] != expected_present(p, version)
        and (p in api.VERSIONED or p in dynamic_paths())
    ]
    if scope == "runtime":
        wrong = [
            p for p in wrong if p.split(".")[0] in {"ICudaEngine", "IExecutionContext", "Runtime"}
        ]
    assert wrong == [], f"api.VERSIONED is wrong for TensorRT {result['version']}: {wrong}"


def test_11x_really_removed_the_precision_flags_and_calibrators() -> None:
    """The reason `trt.build.precision_plan` refuses fp16/bf16/int8 on 11.x instead of ignoring them."""
    path = require("tensorrt-cu13-bindings-11.4.0.106")
    probe = [
        "BuilderFlag.FP16",
        "BuilderFlag.BF16",
        "BuilderFlag.INT8",
        "IInt8EntropyCalibrator2",
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "BuilderFlag.TF32",
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    ]
    result = run_python(
        CHECK.replace('"MODULE"', "'tensorrt_bindings'"),
        paths=[path],
        stubs=bindings_dir() / "stubs11",
        stdin=probe,
    )
    assert result["present"] == {
        "BuilderFlag.FP16": False,
        "BuilderFlag.BF16": False,
        "BuilderFlag.INT8": False,
        "IInt8EntropyCalibrator2": False,
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": False,
        "BuilderFlag.TF32": True,
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED": True,
    }


def test_lean_runtime_has_no_builder() -> None:
    """api.import_builder skips a module without Builder, so the lean runtime never poses as a builder."""
    path = require("tensorrt-lean-cu13-bindings-11.4.0.106")
    result = run_python(
        CHECK.replace('"MODULE"', "'tensorrt_lean_bindings'"),
        paths=[path],
        stubs=bindings_dir() / "stubs11",
        stdin=["Builder", "OnnxParser", "Runtime", "EngineInspector"],
    )
    assert result["present"] == {
        "Builder": False,
        "OnnxParser": False,
        "Runtime": True,
        "EngineInspector": False,
    }


def _rtx_module_path() -> Path:
    """The installed TensorRT-RTX bindings (their real library loads without a GPU: no stubs)."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_rtx_bindings")
    if spec is None or spec.origin is None:
        pytest.skip(
            "TensorRT-RTX bindings not installed: pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
            "tensorrt-rtx-cu13-bindings==1.7.1.116 (.ci/run does)"
        )
    return Path(spec.origin).parents[1]


def test_every_tensorrt_name_api_uses_exists_in_tensorrt_rtx() -> None:
    """The same check for TensorRT-RTX, against its real module: every name api.py uses exists
    unless api.NOT_IN_RTX says RTX lacks it, and the tables are true both ways."""
    path = _rtx_module_path()
    uses = used_paths(API.read_text()) | dynamic_paths()
    checked = sorted(uses | set(api.FLAVOUR_ONLY) | set(api.NOT_IN_RTX))
    code = CHECK.replace('"MODULE"', "'tensorrt_rtx_bindings'")
    result = run_python(code, paths=[path], stdin=checked)
    present: dict[str, bool] = result["present"]
    missing = [
        p for p in sorted(uses) if not present[p] and expected_present(p, (1,), "tensorrt-rtx")
    ]
    assert missing == [], f"TensorRT-RTX {result['version']} lacks {missing}"
    tables = set(api.FLAVOUR_ONLY) | set(api.NOT_IN_RTX) | dynamic_paths()
    wrong = [
        p
        for p in checked
        if p in tables and present[p] != expected_present(p, (1,), "tensorrt-rtx")
    ]
    assert wrong == [], f"api.FLAVOUR_ONLY / NOT_IN_RTX are wrong for TensorRT-RTX: {wrong}"
    members = run_python(
        "import json, tensorrt_rtx_bindings as t; "
        "print(json.dumps(list(t.ComputeCapability.__members__)))",
        paths=[path],
    )
    assert {"SM75", "SM80", "SM86", "SM89", "SM120", "SM121"} <= set(members)


def test_rtx_only_names_are_absent_from_tensorrt() -> None:
    """ComputeCapability and the AOT target setters are RTX's alone: TensorRT 11.4 has none of them,
    which is why `--compute-capability` needs `--builder tensorrt-rtx`."""
    path = require("tensorrt-cu13-bindings-11.4.0.106")
    result = run_python(
        CHECK.replace('"MODULE"', "'tensorrt_bindings'"),
        paths=[path],
        stubs=bindings_dir() / "stubs11",
        stdin=sorted(api.FLAVOUR_ONLY),
    )
    assert result["present"] == dict.fromkeys(sorted(api.FLAVOUR_ONLY), False)
