"""`trtparity build`: ONNX to a TensorRT engine with the contract's optimization profiles.

The pip wheels of TensorRT carry no trtexec, so the build goes through the Python API. Engines come
from the engine cache when nothing that shapes them changed, and a build report JSON lands beside
each one (builder and version, GPU or target compute capabilities, profiles, options, build time,
size, sha256, the parsed network, per-layer precision); the TensorRT backend reads it to refuse an
engine from another TensorRT or GPU before loading it. `--builder tensorrt-rtx` with
`--compute-capability X.Y` builds ahead of time on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..trt.api import FLAVOURS
from ..trt.build import HARDWARE_LEVELS, PRECISIONS


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "build",
        help="build a TensorRT engine from ONNX with the contract's profiles (needs the full TensorRT)",
        description="Build a serialized TensorRT engine from an ONNX model, one optimization profile per "
        "contract profile, through the engine cache.",
    )
    _files(parser)
    _precision(parser)
    _caches(parser)
    _target(parser)
    parser.add_argument("--json", action="store_true", help="print the build report as JSON")
    parser.set_defaults(func=_build)


def _files(parser: argparse.ArgumentParser) -> None:
    """What goes in and where the engine goes."""
    parser.add_argument(
        "--onnx",
        required=True,
        type=Path,
        metavar="M.onnx",
        help="ONNX model (external-data sidecars beside it)",
    )
    parser.add_argument(
        "--contract",
        required=True,
        type=Path,
        metavar="C.json",
        help="binding contract with the profiles",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="E.plan",
        help="where to write the engine",
    )


def _precision(parser: argparse.ArgumentParser) -> None:
    """The build's precision, memory and profile choices."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default), fp16, bf16, int8 (TensorRT 10.x builder flags), or graph: strongly "
        "typed, precision as the ONNX graph says (the only way on 11.x)",
    )
    parser.add_argument(
        "--workspace",
        metavar="SIZE",
        help="workspace memory pool limit, e.g. 4GiB (default: the GPU's memory)",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME",
        help="build only this contract profile (repeatable; default: all, in contract order)",
    )
    parser.add_argument(
        "--tf32", action="store_true", help="allow TF32 for fp32 layers (off: true fp32 for parity)"
    )


def _caches(parser: argparse.ArgumentParser) -> None:
    """The caches a build reads and updates, and the int8 calibration data."""
    parser.add_argument(
        "--timing-cache",
        type=Path,
        metavar="PATH",
        help="timing cache file to read and update "
        "(default: one per TensorRT version and GPU in the cache folder)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="engine cache folder (default: $TRTPARITY_CACHE_DIR or ~/.cache/trtparity)",
    )
    parser.add_argument(
        "--reference", type=Path, metavar="REF", help="reference JSONL whose inputs calibrate int8"
    )


def _target(parser: argparse.ArgumentParser) -> None:
    """Which builder, and which runtimes and GPUs the plan must load on."""
    parser.add_argument(
        "--version-compatible",
        action="store_true",
        help="build a version-compatible plan (loadable by later runtimes and the lean runtime)",
    )
    parser.add_argument(
        "--hardware-compatibility",
        choices=HARDWARE_LEVELS,
        default="NONE",
        help="hardware compatibility level (AMPERE_PLUS: runs on any Ampere or newer GPU)",
    )
    parser.add_argument(
        "--builder",
        choices=FLAVOURS,
        default="tensorrt",
        help="tensorrt (builds for the GPU it runs on) or tensorrt-rtx (also ahead of time, no GPU)",
    )
    parser.add_argument(
        "--compute-capability",
        action="append",
        default=[],
        metavar="X.Y",
        dest="compute_capability",
        help="target compute capability of an ahead-of-time build (tensorrt-rtx; repeatable; "
        "required without a GPU)",
    )
    parser.add_argument("--device", type=int, default=0, help="CUDA device to build on")


def _build(args: argparse.Namespace) -> int:
    from ..contract.model import load_contract
    from ..trt.build import BuildOptions, build_engine, parse_size, summary_line

    options = BuildOptions(
        precision=args.precision,
        workspace=parse_size(args.workspace) if args.workspace else None,
        profiles=tuple(args.profile),
        allow_tf32=args.tf32,
        version_compatible=args.version_compatible,
        hardware_compatibility=args.hardware_compatibility,
        builder=args.builder,
        compute_capabilities=tuple(args.compute_capability),
    )
    contract = load_contract(args.contract)
    result = build_engine(
        args.onnx,
        contract,
        options,
        output=args.output,
        cache_dir=args.cache_dir,
        timing_cache=args.timing_cache,
        reference=args.reference,
        device=args.device,
    )
    if args.json:
        print(json.dumps(result.report, indent=2, sort_keys=True))
    else:
        print(summary_line(result))
        for note in result.notes:
            print(f"note: {note}")
    return 0
