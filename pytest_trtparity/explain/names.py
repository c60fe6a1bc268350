"""Names: ONNX node names to PyTorch module paths, and tensor names across exports.

The PyTorch exporter names nodes after the module that emitted them (`/encoder/1/activation/Relu`
from module `encoder.1.activation`); the dynamo exporter also records the scope in node metadata
(`pkg.torch.onnx.name_scopes`). Inlining an `If` prefixes names with the branch it came from
(`If_0_then_branch__Inline_0__/decoder/...`), so tensors are matched across two graphs by their name
with those prefixes removed.
"""

from __future__ import annotations

import ast
import re
from typing import Any

_INLINE_PREFIX = re.compile(r"^(?:If_\d+_(?:then|else)_branch__Inline_\d+__)+")
_SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def strip_inline(name: str) -> str:
    """`name` without the prefixes an If inliner adds."""
    return _INLINE_PREFIX.sub("", name)


def display_name(name: str) -> str:
    """A node or tensor name for people: from its exporter scope on (`/encoder/1/...`) when it has
    one, else without inline prefixes."""
    return name[name.index("/") :] if "/" in name else strip_inline(name)


def module_path(node: Any) -> str:
    """The PyTorch module that produced `node` (an onnx.NodeProto), or "" when the name has none."""
    for prop in getattr(node, "metadata_props", ()):
        if prop.key == _SCOPE_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            return module_of_scopes([str(s) for s in scopes if s])
    return module_of_name(node.name)


def module_of_scopes(scopes: list[str]) -> str:
    """The dynamo exporter's scopes (`['encoder', 'encoder.0', 'encoder.0.proj', 'linear']`: each
    module's full path, then the op) -> `encoder.0.proj`."""
    return _join(scopes[:-1])


def _join(parts: list[str]) -> str:
    """Scope segments to a module path; a segment that repeats the path so far (`encoder.0` after
    `encoder`, as both exporters write children of containers) replaces it instead of extending it."""
    path: list[str] = []
    for part in parts:
        if (path and part.startswith(".".join(path) + ".")) or (not path and "." in part):
            path = part.split(".")
        else:
            path.append(part)
    return ".".join(path)


def module_of_name(name: str) -> str:
    """`/encoder/1/activation/Relu` -> `encoder.1.activation` (the last part is the op).

    Whatever precedes the first `/` is a prefix an inliner added (`If_0_If_0_then_branch__...`).
    """
    if "/" not in name:
        return ""
    bare = name[name.index("/") :]
    return _join([p for p in bare.split("/") if p][:-1])


def match_names(reference: list[str], engine: list[str]) -> dict[str, str]:
    """Reference tensor name -> engine tensor name: exact names first, then without inline prefixes.

    A stripped name that two engine tensors share is ambiguous and left unmatched.
    """
    have = set(engine)
    by_bare: dict[str, str | None] = {}
    for name in engine:
        bare = strip_inline(name)
        by_bare[bare] = None if bare in by_bare and by_bare[bare] != name else name
    out: dict[str, str] = {}
    for name in reference:
        if name in have:
            out[name] = name
            continue
        hit = by_bare.get(strip_inline(name))
        if hit is not None:
            out[name] = hit
    return out
