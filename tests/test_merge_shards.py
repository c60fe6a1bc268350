"""CI-matrix shards as users run them: `--trt-shard K/N` jobs, then `trtparity merge`, give the
verdict, findings, chunk counts and aggregates of one unsharded run; sets that are not one complete
run are refused in one sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_trtparity.cli import main
from pytest_trtparity.errors import ConfigError
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter
from pytest_trtparity.sharding.matrix import PART_FILE, parse_shard, schema

from .conftest import REPO, SILERO_CONTRACT, SILERO_REF

ENCODER_ONNX = REPO / "references" / "encoder_streaming" / "encoder_streaming_small.onnx"
ENCODER_CONTRACT = REPO / "contracts" / "encoder_streaming_small.contract.json"
ENCODER_REF = REPO / "references" / "encoder_streaming_small_300.jsonl"
SUITES = "-k", "functional_parity or closed_loop"
KEEP = (
    "verdict",
    "complete",
    "error",
    "chunks_run",
    "streams",
    "findings",
    "outputs",
    "aggregates",
)


def _three_stream_reference(path: Path) -> Path:
    """The Silero reference as three interleaved streams of 100 chunks (three closed loops)."""
    source = list(ReferenceReader(SILERO_REF))
    with ReferenceWriter(path, metadata={"model": "silero_vad"}) as w:
        for i in range(100):
            for s in range(3):
                r = source[s * 100 + i]
                w.write(inputs=r.inputs, outputs=r.outputs, stream=f"utt{s}")
    return path


def _run(
    pytester: pytest.Pytester,
    engine: Path,
    ref: Path,
    out: str,
    *extra: str,
    contract: Path = SILERO_CONTRACT,
) -> Any:
    return pytester.runpytest_subprocess(
        f"--trt-engine={engine}",
        f"--trt-contract={contract}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={pytester.path / out}",
        "--trt-mode=both",
        "-p",
        "no:cacheprovider",
        *SUITES,
        *extra,
    )


def _shards(
    pytester: pytest.Pytester, engine: Path, ref: Path, n: int, contract: Path = SILERO_CONTRACT
) -> list[Path]:
    folders = []
    for k in range(1, n + 1):
        _run(pytester, engine, ref, f"s{k}of{n}", f"--trt-shard={k}/{n}", contract=contract)
        folders.append(pytester.path / f"s{k}of{n}")
    return folders


def _merge(folders: list[Path], out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["merge", *map(str, folders), "-o", str(out)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _suites(summary: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: body[k] for k in KEEP} for name, body in summary["suites"].items()}


def _summary(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return loaded


@pytest.fixture
def three_streams(gate_dir: Path) -> Path:
    return _three_stream_reference(gate_dir / "ref3.jsonl")


@pytest.mark.parametrize("n", [2, 3])
def test_merged_shards_equal_one_unsharded_run(
    pytester: pytest.Pytester,
    three_streams: Path,
    silero_onnx: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    n: int,
) -> None:
    one = _run(pytester, silero_onnx, three_streams, "one")
    assert one.ret == pytest.ExitCode.OK, one.stdout.str()[-2000:]
    folders = _shards(pytester, silero_onnx, three_streams, n)
    for folder in folders:
        part = json.loads((folder / PART_FILE).read_text())
        jsonschema.Draft202012Validator(schema()).validate(part)
        assert part["finished"] is True and part["identity"]["reference"]["records"] == 300
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "job-summary.md"))
    code, text = _merge(folders, pytester.path / "merged", capsys)
    assert code == 0, text
    single, merged = _summary(pytester.path / "one"), _summary(pytester.path / "merged")
    assert merged["verdict"] == single["verdict"] == "pass"
    assert _suites(merged) == _suites(single)
    assert merged["suites"]["closed_loop"]["streams"] == ["utt0", "utt1", "utt2"]
    assert merged["suites"]["functional"]["chunks_run"] == 300
    assert merged["environment"]["matrix_shards"] == n
    junit = (pytester.path / "merged" / "junit.xml").read_text()
    assert 'name="functional"' in junit and "<failure" not in junit
    assert (pytester.path / "merged" / "report.md").is_file()
    assert "TensorRT parity gate: ✅ PASS" in (pytester.path / "job-summary.md").read_text()


def test_the_streaming_encoder_closed_loop_merged_equals_one_run(
    pytester: pytest.Pytester, gate_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The committed encoder reference is one 300-chunk stream: split into three streams of 100
    consecutive chunks (each starts from the PyTorch caches at its first chunk), three loops."""
    ref = gate_dir / "encoder3.jsonl"
    source = list(ReferenceReader(ENCODER_REF))
    with ReferenceWriter(ref, metadata={"model": "encoder_streaming_small"}) as w:
        for i, r in enumerate(source):
            w.write(inputs=r.inputs, outputs=r.outputs, stream=f"utt{i // 100}")
    one = _run(pytester, ENCODER_ONNX, ref, "one", contract=ENCODER_CONTRACT)
    folders = _shards(pytester, ENCODER_ONNX, ref, 2, contract=ENCODER_CONTRACT)
    code, text = _merge(folders, pytester.path / "merged", capsys)
    single, merged = _summary(pytester.path / "one"), _summary(pytester.path / "merged")
    assert code == (1 if single["verdict"] == "fail" else 0), text + one.stdout.str()[-1500:]
    assert merged["verdict"] == single["verdict"]
    assert _suites(merged) == _suites(single)
    assert merged["suites"]["closed_loop"]["streams"] == ["utt0", "utt1", "utt2"]
    assert merged["suites"]["closed_loop"]["chunks_run"] == 300


def test_a_failing_engine_merged_fails(
    pytester: pytest.Pytester,
    gate_dir: Path,
    silero_half_onnx: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = Path(shutil.copy(SILERO_REF, gate_dir / "ref.jsonl"))
    one = _run(pytester, silero_half_onnx, ref, "one")
    assert one.ret == pytest.ExitCode.TESTS_FAILED
    code, text = _merge(
        _shards(pytester, silero_half_onnx, ref, 2), pytester.path / "merged", capsys
    )
    assert code == 1, text
    single, merged = _summary(pytester.path / "one"), _summary(pytester.path / "merged")
    assert merged["verdict"] == single["verdict"] == "fail"
    assert _suites(merged) == _suites(single)
    assert "<failure" in (pytester.path / "merged" / "junit.xml").read_text()


@pytest.fixture
def two_parts(pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path) -> list[Path]:
    ref = Path(shutil.copy(SILERO_REF, gate_dir / "ref.jsonl"))
    return _shards(pytester, silero_onnx, ref, 2)


def _edit(folder: Path, change: Any) -> None:
    path = folder / PART_FILE
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _refused(folders: list[Path], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, text = _merge(folders, out, capsys)
    assert code == 1
    assert not (out / "summary.json").exists()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text  # one sentence
    return lines[0]


def test_the_two_parts_merge_cleanly(
    two_parts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal tests below start from this set: untouched, it merges and passes."""
    code, text = _merge(two_parts, tmp_path / "out", capsys)
    assert code == 0, text


def test_a_missing_shard_is_refused(
    two_parts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refused(two_parts[:1], tmp_path / "out", capsys)
    assert "shard(s) 2 of 2 missing" in line


def test_a_duplicated_shard_is_refused(
    two_parts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "again"
    shutil.copytree(two_parts[0], copy)
    line = _refused([*two_parts, copy], tmp_path / "out", capsys)
    assert "shard 1/2 given twice" in line


def test_an_unfinished_shard_is_refused(
    two_parts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(two_parts[1], lambda d: d.update(finished=False, identity=None))
    line = _refused(two_parts, tmp_path / "out", capsys)
    assert "shard 2/2 did not finish" in line


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("reference", lambda d: d["identity"]["reference"].update(index_sha256="0" * 64)),
        ("reference", lambda d: d["identity"]["reference"].update(size=1)),
        ("contract", lambda d: d["identity"].update(contract_sha256="1" * 64)),
        ("engine", lambda d: d["identity"].update(engine_sha256="2" * 64)),
        ("shard count", lambda d: d["shard"].update(n=3)),
    ],
)
def test_parts_of_different_runs_are_refused(
    two_parts: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
    change: Any,
) -> None:
    _edit(two_parts[1], change)
    line = _refused(two_parts, tmp_path / "out", capsys)
    assert f"another {what} than" in line


def test_a_part_that_breaks_its_schema_is_refused(
    two_parts: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(two_parts[0], lambda d: d["shard"].update(k=0))
    line = _refused(two_parts, tmp_path / "out", capsys)
    assert "field $['shard']['k']" in line


def test_a_run_killed_before_its_end_leaves_an_unfinished_part(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    """The part is marked unfinished before the tests start; -x stopping early keeps it so."""
    pytester.makeconftest(
        "def pytest_runtest_setup(item):\n"
        "    if 'functional' in item.name:\n"
        "        raise RuntimeError('runner lost')\n"
    )
    ref = Path(shutil.copy(SILERO_REF, gate_dir / "ref.jsonl"))
    _run(pytester, silero_onnx, ref, "s", "--trt-shard=1/2", "-x")
    part = json.loads((pytester.path / "s" / PART_FILE).read_text())
    assert part["finished"] is False and part["identity"] is None


def test_shard_option_and_ini(pytester: pytest.Pytester, gate_dir: Path) -> None:
    assert parse_shard("2/3").index == 1 and parse_shard("2/3").count == 3
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(ConfigError, match=r"K/N|between 1 and N"):
            parse_shard(bad)
    pytester.makeini("[pytest]\ntrt_shard = 5/2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*ini key trt_shard '5/2': K must be between 1 and N*"])
