"""Shards over a CI matrix: `--trt-shard K/N` runs one shard per job, `trtparity merge` joins them.

A CI system's matrix (GitHub Actions `strategy.matrix`, GitLab `parallel:`) already schedules jobs
over GPU runners and carries files between them; the gate adds only the two ends. Each job runs
shard K of N by the xdist rules (parts.py: functional blocks in file order, closed-loop streams
whole) and writes `shard-part.json` into its artifacts folder: the xdist worker's payload
(payload.py), plus what the merge must check before it trusts the parts (the reference's size,
record count and index hash, the contract's and the engine's SHA-256, K/N, whether the run
finished). Suites that cannot be sharded (contract, latency, memory ...) run in shard 1 only, as
they run on one worker under xdist.

A part is written unfinished when the shard's tests start and replaced when the run ends, so a
killed job leaves a part the merge refuses rather than a stale one from an earlier run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import ConfigError, ShardSetError, TrtParityError
from ..util.atomic import write_text
from ..util.hashing import file_sha256
from .parts import Shard
from .payload import payload

if TYPE_CHECKING:
    from ..session import GateSession
    from ..settings import GateSettings

PART_FILE = "shard-part.json"
FORMAT = "shard-part/1"
SCHEMA_RESOURCE = "shard-part.schema.json"


def parse_shard(text: str, where: str = "--trt-shard") -> Shard:
    """`2/3` -> Shard(1, 3): K counts from 1, as CI matrices do."""
    k, sep, n = text.strip().partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise ConfigError(f"{where} {text!r}: expected K/N, e.g. 1/4")
    index, count = int(k) - 1, int(n)
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"{where} {text!r}: K must be between 1 and N (N at least 1)")
    return Shard(index, count)


def shard_option(config: pytest.Config) -> Shard | None:
    """The shard this run takes (option first, then the ini key); None when not given."""
    cli = config.getoption("trt_shard", None)
    if cli:
        return parse_shard(str(cli))
    ini = config.getini("trt_shard")
    return parse_shard(str(ini), "ini key trt_shard") if ini else None


# -- identity: what a part was measured against ------------------------------------------------


def index_sha256(ref: Path) -> tuple[int, str]:
    """Record count and a hash of the index's content columns (never its file times, which differ
    between checkouts of the same file)."""
    from ..reference.reader import ReferenceReader

    index = ReferenceReader(ref).index()
    raw = index.to_json()
    digest = hashlib.sha256(
        json.dumps(
            [raw[c] for c in ("stream", "chunk", "line", "offset", "length", "crc32")],
            separators=(",", ":"),
        ).encode()
    )
    return len(index), digest.hexdigest()


def identity(settings: GateSettings) -> dict[str, Any]:
    """Reference (size, records, index hash), contract and engine SHA-256; raises TrtParityError
    when any of them cannot be read."""
    ref = settings.require("ref")
    contract = settings.require("contract")
    engine = settings.require("engine")
    records, index_hash = index_sha256(ref)
    try:
        return {
            "reference": {
                "size": ref.stat().st_size,
                "records": records,
                "index_sha256": index_hash,
            },
            "contract_sha256": file_sha256(contract),
            "engine_sha256": file_sha256(engine),
        }
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: cannot be hashed for the shard part: {exc}") from None


def _settings_json(settings: GateSettings) -> dict[str, Any]:
    def text(path: Path | None) -> str | None:
        return str(path) if path is not None else None

    return {
        "engine": text(settings.engine),
        "contract": text(settings.contract),
        "ref": text(settings.ref),
        "baseline": text(settings.baseline),
        "onnx": text(settings.onnx),
        "mode": settings.mode,
        "backend": settings.backend,
        "strict": settings.strict,
    }


def part_document(gate: GateSession, shard: Shard, *, finished: bool) -> dict[str, Any]:
    """The part file's content. Unfinished parts carry no identity: nothing merges with them."""
    ident: dict[str, Any] | None = None
    if finished:
        try:
            ident = identity(gate.settings)
        except TrtParityError as exc:
            gate.errors.append(str(exc))
            finished = False
    contract_text = None
    if gate.settings.contract is not None and gate.settings.contract.is_file():
        contract_text = gate.settings.contract.read_text("utf-8", errors="replace")
    return {
        "trtparity": FORMAT,
        "shard": {"k": shard.index + 1, "n": shard.count},
        "finished": finished,
        "run_id": gate.run_id,
        "identity": ident,
        "settings": _settings_json(gate.settings),
        "contract_text": contract_text,
        "payload": payload(gate),
    }


def write_part(folder: Path, document: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_text(folder / PART_FILE, json.dumps(document, allow_nan=True) + "\n")


# -- reading parts back, and refusing a set that cannot be one run ------------------------------


@dataclass(frozen=True)
class PartFile:
    path: Path
    document: dict[str, Any]

    @property
    def k(self) -> int:
        return int(self.document["shard"]["k"])

    @property
    def n(self) -> int:
        return int(self.document["shard"]["n"])


def schema() -> dict[str, Any]:
    from importlib import resources

    text = resources.files("pytest_trtparity.schemas").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def find_parts(paths: Iterable[Path]) -> list[Path]:
    """Each argument is a part file or a folder searched (recursively) for them, as CI downloads
    each job's artifacts into its own subfolder."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(path.rglob(PART_FILE))
            if not inside:
                raise ShardSetError(f"{path}: no {PART_FILE} in this folder or below it")
            found += inside
        else:
            raise ShardSetError(f"{path}: no such file or folder")
    return found


def read_part(path: Path) -> PartFile:
    import jsonschema

    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShardSetError(f"{path}: not a readable shard part ({exc})") from None
    if not isinstance(raw, dict) or raw.get("trtparity") != FORMAT:
        raise ShardSetError(f"{path}: not a shard part of format {FORMAT}")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema()).iter_errors(raw)
    )
    if error is not None:
        where = "$" + "".join(f"[{p!r}]" for p in error.absolute_path)
        raise ShardSetError(f"{path}: field {where}: {error.message}")
    return PartFile(path, raw)


def check_set(parts: Sequence[PartFile]) -> None:
    """One sentence (ShardSetError) for the first reason these parts are not one complete run."""
    if not parts:
        raise ShardSetError("no shard parts given")
    for part in parts:
        if not part.document["finished"]:
            raise ShardSetError(
                f"{part.path}: shard {part.k}/{part.n} did not finish (killed, interrupted or "
                "stopped early); rerun it before merging"
            )
    first = parts[0]
    for part in parts[1:]:
        _same(first, part)
    seen: dict[int, Path] = {}
    for part in parts:
        if part.k in seen:
            raise ShardSetError(
                f"shard {part.k}/{part.n} given twice: {seen[part.k]} and {part.path}"
            )
        seen[part.k] = part.path
    missing = [str(k) for k in range(1, first.n + 1) if k not in seen]
    if missing:
        raise ShardSetError(f"shard(s) {', '.join(missing)} of {first.n} missing from the merge")


def _same(first: PartFile, part: PartFile) -> None:
    a, b = first.document, part.document
    checks = (
        ("shard count", first.n, part.n),
        ("reference", a["identity"]["reference"], b["identity"]["reference"]),
        ("contract", a["identity"]["contract_sha256"], b["identity"]["contract_sha256"]),
        ("engine", a["identity"]["engine_sha256"], b["identity"]["engine_sha256"]),
    )
    for what, left, right in checks:
        if left != right:
            raise ShardSetError(
                f"{part.path}: another {what} than {first.path} ({_short(right)} against "
                f"{_short(left)}); parts of different runs cannot be merged"
            )


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    text = str(value)
    return text[:12] if len(text) == 64 else text


# -- the shard's side, as pytest hooks ---------------------------------------------------------


class MatrixShardHooks:
    """Registered (xdist_support.install) for a run with --trt-shard K/N, in place of the
    end-of-run merge: the parts stay unmerged and go to the part file."""

    def __init__(self, gate: GateSession, shard: Shard) -> None:
        self.gate = gate
        self.shard = shard

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "trt_shard" in metafunc.fixturenames:
            metafunc.parametrize("trt_shard", [self.shard], ids=[self.shard.id])

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Suites that cannot be sharded run in shard 1 only."""
        if self.shard.index == 0:
            return
        once = [
            i
            for i in items
            if i.get_closest_marker("trtparity") is not None
            and "trt_shard" not in getattr(i, "fixturenames", ())
        ]
        if once:
            config.hook.pytest_deselected(items=once)
            items[:] = [i for i in items if i not in once]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if not session.config.getoption("collectonly", False):
            write_part(
                self.gate.settings.artifacts, part_document(self.gate, self.shard, finished=False)
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if session.config.getoption("collectonly", False):
            return
        finished = (
            int(exitstatus) in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
            and not session.shouldstop
            and not session.shouldfail
        )
        document = part_document(self.gate, self.shard, finished=finished)
        try:
            write_part(self.gate.settings.artifacts, document)
        except OSError as exc:
            self.gate.errors.append(
                f"{self.gate.settings.artifacts / PART_FILE}: not written: {exc}"
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
