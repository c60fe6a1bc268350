"""The reader's fast path returns exactly what the strict path returns: the same records, or the same
error with file, line and field, on valid files and on every corruption we can think of."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_trtparity.errors import ReferenceFormatError
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter, codec, fastpath
from pytest_trtparity.reference.fastpath import scan_line

Outcome = tuple[str, object]


@pytest.fixture(autouse=True, params=["whole", "blocks"])
def cut_every_payload(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The test records are small: cut even their payloads, so the fast path is what is tested,
    each payload decoded in one call (as payloads up to `WHOLE_SPAN` are) or in blocks of 8
    characters (as larger ones are)."""
    monkeypatch.setattr(fastpath, "MIN_PAYLOAD", 0)
    if request.param == "blocks":
        monkeypatch.setattr(codec, "WHOLE_SPAN", 0)
        monkeypatch.setattr(codec, "SPAN_BLOCK", 8)


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "f32": rng.standard_normal((2, 3, 5)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "i8": rng.integers(-128, 127, (3, 3)).astype(np.int8),
        "i64": np.array(7, dtype=np.int64),
        "flag": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "special": np.array([np.nan, -0.0, np.inf, 1e-45], dtype=np.float32),
    }


def write_reference(
    path: Path, records: int = 3, *, streams: int = 1, dtypes: dict[str, str] | None = None
) -> Path:
    with ReferenceWriter(path, metadata={"model": "t"}, dtypes=dtypes) as w:
        for i in range(records):
            arrays = _arrays(i)
            w.write(
                inputs={k: v for k, v in arrays.items() if k != "special"},
                outputs={"special": arrays["special"], "bf": arrays["f32"]},
                stream=f"s{i % streams}" if streams > 1 else None,
                meta={"i": i},
            )
    return path


def outcome(path: Path, *, fast: bool, **kw: int) -> Outcome:
    """Every record as plain data, or the error message: what the two paths must agree on."""
    try:
        return "ok", [_plain(r) for r in ReferenceReader(path, fast=fast, **kw)]
    except ReferenceFormatError as exc:
        return "error", str(exc)


def _plain(record: object) -> tuple[object, ...]:
    def tensors(side: dict[str, np.ndarray]) -> list[tuple[object, ...]]:
        return [(k, v.dtype.str, v.shape, v.tobytes(), v.flags.writeable) for k, v in side.items()]

    r = record
    return (
        r.stream,
        r.chunk_index,
        r.line,
        r.source,
        json.dumps(r.meta, sort_keys=True),  # type: ignore[attr-defined]
        tensors(r.inputs),
        tensors(r.outputs),
    )  # type: ignore[attr-defined]


def assert_same(path: Path, **kw: int) -> Outcome:
    strict = outcome(path, fast=False, **kw)
    fast = outcome(path, fast=True, **kw)
    assert fast == strict
    return strict


# -- valid files ------------------------------------------------------------------------------


def test_fast_path_reads_what_the_strict_path_reads(tmp_path: Path) -> None:
    kind, records = assert_same(
        write_reference(tmp_path / "r.jsonl", 4, streams=2, dtypes={"bf": "bfloat16"})
    )
    assert kind == "ok" and len(records) == 4  # type: ignore[arg-type]


def test_fast_path_arrays_match_the_written_bits(tmp_path: Path) -> None:
    path = write_reference(tmp_path / "r.jsonl", 1)
    record = next(iter(ReferenceReader(path)))
    for name, array in _arrays(0).items():
        side = record.outputs if name == "special" else record.inputs
        assert side[name].tobytes() == array.tobytes(), name
        assert side[name].shape == array.shape


def test_fast_path_is_taken_on_written_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guard against a fast path that silently always falls back (and so proves nothing)."""
    path = write_reference(tmp_path / "r.jsonl", 2)
    monkeypatch.setattr("pytest_trtparity.reference.reader.parse_line", _no_strict_parse)
    assert len(list(ReferenceReader(path))) == 2


def test_small_payloads_stay_in_the_skeleton_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()
    line = b'{"a":{"b64":"QUFB"},"b":{"b64":"' + b"A" * fastpath.MIN_PAYLOAD + b'"}}'
    scan = scan_line(line, 0, len(line), 1 << 30)
    assert scan is not None and [e - b for b, e in scan.cuts] == [fastpath.MIN_PAYLOAD]
    big = tmp_path / "big.jsonl"
    with ReferenceWriter(big) as w:
        w.write(inputs={"x": np.arange(1 << 14, dtype=np.float32), "n": np.array([3])}, outputs={})
    monkeypatch.setattr("pytest_trtparity.reference.reader.parse_line", _no_strict_parse)
    (record,) = ReferenceReader(big)
    assert record.inputs["x"][-1] == (1 << 14) - 1 and record.inputs["n"].tolist() == [3]


def _no_strict_parse(data: bytes, where: str) -> object:
    if b'"trtparity"' in data:  # the header line is always read strictly
        return json.loads(data)
    raise AssertionError(f"{where}: the strict path ran on a line the fast path should take")


def test_stdlib_base64_when_pybase64_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "_fast_b64", None)
    path = write_reference(tmp_path / "r.jsonl", 3)
    assert assert_same(path)[0] == "ok"
    corrupt = tmp_path / "c.jsonl"
    corrupt.write_bytes(path.read_bytes().replace(b'"b64":"', b'"b64":"!', 1))
    assert assert_same(corrupt)[0] == "error"


def test_many_small_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payloads decoded in several blocks; padding at a block edge must not pass for the end."""
    monkeypatch.setattr(codec, "SPAN_BLOCK", 4)
    monkeypatch.setattr(codec, "WHOLE_SPAN", 0)
    path = write_reference(tmp_path / "r.jsonl", 2)
    assert assert_same(path)[0] == "ok"
    line = b'{"chunk_index":0,"inputs":{"x":{"dtype":"uint8","shape":[4],"b64":"QQ==QUFB"}},"outputs":{}}\n'
    bad = tmp_path / "pad.jsonl"
    bad.write_bytes(line)
    kind, message = assert_same(bad)
    assert kind == "error" and "inputs.x.b64: invalid base64" in str(message)


def test_gzip_reference(tmp_path: Path) -> None:
    path = write_reference(tmp_path / "r.jsonl.gz", 3)
    assert assert_same(path)[0] == "ok"


def test_spaces_after_colons_as_json_dumps_writes_them(tmp_path: Path) -> None:
    src = write_reference(tmp_path / "r.jsonl", 2)
    lines = [json.dumps(json.loads(line)) for line in src.read_text().splitlines()]
    assert '"b64": "' in lines[1]
    path = tmp_path / "spaced.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert assert_same(path)[0] == "ok"


# -- corruptions ------------------------------------------------------------------------------

Mutation = Callable[[bytes], bytes]


def _second(f: Callable[[bytes], bytes]) -> Mutation:
    """Apply `f` to the first record line (line 2, after the header)."""

    def mutate(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[1] = f(lines[1])
        return b"\n".join(lines)

    return mutate


def _payload(line: bytes, n: int = 0) -> tuple[int, int]:
    start = -1
    for _ in range(n + 1):
        start = line.index(b'"b64":"', start + 1)
    begin = start + len(b'"b64":"')
    return begin, line.index(b'"', begin)


def _edit_payload(f: Callable[[bytes], bytes], n: int = 0) -> Mutation:
    def edit(line: bytes) -> bytes:
        b, e = _payload(line, n)
        return line[:b] + f(line[b:e]) + line[e:]

    return _second(edit)


def _forge(line: bytes) -> bytes:
    """A tensor whose b64 value is written as the placeholder of the meta's b64 cut: if the fast path
    took the line's own `\\u0000` for its placeholder, it would decode the meta string into it."""
    line = line.replace(b'"meta":{"i":0}', b'"meta":{"b64":"QUFB"}')
    meta_cut = line.count(b'"b64":"') - 1 - 1  # the flag tensor's b64 stops being a cut below
    return line.replace(
        b'"flag":{"dtype":"bool","shape":[3],"b64":"AQAB"}',
        b'"flag":{"dtype":"uint8","shape":[3],"b\\u0036\\u0034":"\\u0000%d"}' % meta_cut,
    )


CORRUPTIONS: dict[str, Mutation] = {
    "invalid base64 character": _edit_payload(lambda p: p[:4] + b"!" + p[5:]),
    "padding in the middle": _edit_payload(lambda p: b"QQ==" + p[4:]),
    "length not a multiple of 4": _edit_payload(
        lambda p: p[:-1] if not p.endswith(b"=") else p[:-2]
    ),
    "escaped quote in payload": _edit_payload(lambda p: p[:4] + b'\\"' + p[4:]),
    "backslash in payload": _edit_payload(lambda p: p[:4] + b"\\\\" + p[8:]),
    "newline in payload": _edit_payload(lambda p: p[:8] + b"\n" + p[8:]),
    "invalid utf-8 in payload": _edit_payload(lambda p: p[:4] + b"\xff" + p[5:]),
    "non-ascii utf-8 in payload": _edit_payload(lambda p: p[:4] + "é".encode() + p[6:]),
    "invalid utf-8 in meta": _second(
        lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"i":"\xc3"}')
    ),
    "byte count mismatch": _second(
        lambda line: line.replace(b'"shape":[2,3,5]', b'"shape":[2,3,6]', 1)
    ),
    "unknown dtype": _second(
        lambda line: line.replace(b'"dtype":"float32"', b'"dtype":"float33"', 1)
    ),
    "b64 not a string": _second(
        lambda line: line.replace(
            b'"empty":{"dtype":"float32","shape":[0,4],"b64":""}',
            b'"empty":{"dtype":"float32","shape":[0,4],"b64":5}',
        )
    ),
    "duplicate b64 key": _second(lambda line: line.replace(b'"b64":"', b'"b64":"QUFB","b64":"', 1)),
    "duplicate record key": _second(
        lambda line: line.replace(b'"outputs":', b'"inputs":{},"outputs":', 1)
    ),
    "NaN token": _second(lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"i":NaN}')),
    "1e400 token": _second(lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"i":1e400}')),
    "b64 and values": _second(lambda line: line.replace(b'"b64":"', b'"values":[1],"b64":"', 1)),
    "bool byte 2": _second(
        lambda line: line.replace(b'"shape":[3],"b64":"AQAB"', b'"shape":[3],"b64":"AQAC"')
    ),
    "header on a record line": _second(
        lambda line: line.replace(b'{"chunk_index"', b'{"trtparity":"x","chunk_index"')
    ),
    "chunk index gap": _second(lambda line: line.replace(b'"chunk_index":0', b'"chunk_index":1')),
    "missing chunk index": _second(lambda line: line.replace(b'"chunk_index":0,', b"")),
    "blank line": lambda d: d.replace(b"\n", b"\n\n", 2),
    "truncated in a payload": lambda d: d[: d.rindex(b'"b64":"') + 20],
    "truncated after a payload": lambda d: d[
        : d.rindex(b'"b64":"') + 12 + d[d.rindex(b'"b64":"') + 7 :].index(b'"')
    ],
    "unterminated payload at end": lambda d: (
        d.rstrip(b"\n") + b'\n{"chunk_index":3,"inputs":{"x":{"b64":"QUFB'
    ),
    "record count off": lambda d: (
        d + d[d.rindex(b"\n", 0, len(d) - 1) + 1 :].replace(b'"chunk_index":2', b'"chunk_index":3')
    ),
    "not an object": _second(lambda line: b"[" + line + b"]"),
    "forged placeholder": _second(_forge),
    "deeply nested meta": _second(
        lambda line: line.replace(b'"meta":{"i":0}', b'"meta":' + b"[" * 100000 + b"]" * 100000)
    ),
}

VALID_VARIANTS: dict[str, Mutation] = {
    "b64 inside meta": _second(
        lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"b64":"QUFB"}')
    ),
    "key ending in b64": _second(
        lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"x\\"b64":"QUFB"}')
    ),
    "NUL escape in meta": _second(
        lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"n":"\\u00000"}')
    ),
    "escaped b64 key": _second(lambda line: line.replace(b'"b64":"', b'"b\\u0036\\u0034":"', 1)),
    "CRLF line endings": lambda d: d.replace(b"\n", b"\r\n"),
    "no final newline": lambda d: d.rstrip(b"\n"),
    "payload-looking text in a string": _second(
        lambda line: line.replace(b'"meta":{"i":0}', b'"meta":{"s":"\\"b64\\":\\"QUFB\\""}')
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_gives_the_same_error(tmp_path: Path, name: str) -> None:
    path = write_reference(tmp_path / "r.jsonl", 3)
    path.write_bytes(CORRUPTIONS[name](path.read_bytes()))
    kind, message = assert_same(path)
    assert kind == "error", f"{name}: read without error"
    assert str(message).startswith(str(path)), message


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_unusual_but_valid_lines_read_the_same(tmp_path: Path, name: str) -> None:
    path = write_reference(tmp_path / "r.jsonl", 3)
    path.write_bytes(VALID_VARIANTS[name](path.read_bytes()))
    kind, records = assert_same(path)
    assert kind == "ok", records


@pytest.mark.parametrize(
    "name",
    [
        "invalid base64 character",
        "newline in payload",
        "byte count mismatch",
        "truncated in a payload",
    ],
)
def test_gzip_corruption_gives_the_same_error(tmp_path: Path, name: str) -> None:
    plain = write_reference(tmp_path / "r.jsonl", 3)
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(CORRUPTIONS[name](plain.read_bytes()), mtime=0))
    assert assert_same(path)[0] == "error"


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_reference(tmp_path / "r.jsonl", 3)
    path.write_bytes(CORRUPTIONS["invalid base64 character"](path.read_bytes()))
    with pytest.raises(ReferenceFormatError, match=r"r\.jsonl:2: inputs\.f32\.b64: invalid base64"):
        list(ReferenceReader(path))


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_line_too_long_is_the_same_error(tmp_path: Path, share: float) -> None:
    path = write_reference(tmp_path / "r.jsonl", 3)
    longest = max(len(line) for line in path.read_bytes().split(b"\n"))
    kind, message = assert_same(path, max_line_bytes=int(longest * share))
    assert kind == "error" and "line too long" in str(message)


def test_line_exactly_at_the_limit(tmp_path: Path) -> None:
    path = write_reference(tmp_path / "r.jsonl", 2)
    longest = max(len(line) + 1 for line in path.read_bytes().split(b"\n")[:-1])
    assert assert_same(path, max_line_bytes=longest)[0] == "ok"
    assert assert_same(path, max_line_bytes=longest - 1)[0] == "error"


# -- random corruption ------------------------------------------------------------------------

_BYTES = [
    b'"',
    b"\\",
    b"=",
    b"\n",
    b"A",
    b"\xff",
    b"{",
    b"}",
    b":",
    b" ",
    b",",
    b"0",
    b"\x00",
    b"/",
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_byte_edits_give_the_same_outcome(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    base = tmp_path_factory.getbasetemp() / "fuzz_base.jsonl"
    if not base.exists():
        write_reference(base, 2)
    raw = bytearray(base.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        what = data.draw(st.sampled_from(_BYTES))
        mode = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        if mode == "replace":
            raw[at : at + 1] = what
        elif mode == "insert":
            raw[at:at] = what
        else:
            del raw[at]
    path = tmp_path_factory.mktemp("fuzz") / "r.jsonl"
    path.write_bytes(bytes(raw))
    assert_same(path)


# -- the scanner ------------------------------------------------------------------------------


def test_scan_finds_payloads_and_line_end() -> None:
    line = b'{"a":{"b64":"QUFB"},"b":{"b64": "QkJC"}}\n{"next":1}'
    scan = scan_line(line, 0, len(line), 1 << 20)
    assert scan is not None and scan.newline
    assert [line[b:e] for b, e in scan.cuts] == [b"QUFB", b"QkJC"]
    assert line[scan.end : scan.end + 1] == b"\n"


def test_scan_crosses_its_window_without_missing_a_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_trtparity.reference.fastpath as fp

    monkeypatch.setattr(fp, "_WINDOW", 8)
    line = b'{"values":[' + b"1," * 50 + b'1],"x":{"b64":"QUFB"}}\n{}'
    scan = scan_line(line, 0, len(line), 1 << 20)
    assert scan is not None and [line[b:e] for b, e in scan.cuts] == [b"QUFB"]
    assert scan.end == line.index(b"\n")


# -- memory -----------------------------------------------------------------------------------

_RSS_PROBE = textwrap.dedent("""
    import sys
    from pytest_trtparity.reference import ReferenceReader

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(key + ":"))

    with open("/proc/self/clear_refs", "w") as fh:  # the high-water mark restarts from here
        fh.write("5")
    before = status("VmRSS")
    for record in ReferenceReader(sys.argv[1]):
        pass
    print(status("VmHWM") - before)
""")


def _big_reference(path: Path, n: int) -> Path:
    """n records of two 8 MiB tensors (an 11 MB base64 string each), written fast: one record
    encoded, its line repeated with the chunk index changed."""
    big = np.arange(2 << 20, dtype=np.float32)
    one = path.with_suffix(".one")
    with ReferenceWriter(one) as w:
        w.write(inputs={"x": big}, outputs={"y": big})
    record = one.read_bytes().split(b"\n")[1]
    with path.open("wb") as fh:
        fh.write(b'{"trtparity":"reference/1","records":%d}\n' % n)
        for i in range(n):
            fh.write(record.replace(b'"chunk_index":0', b'"chunk_index":%d' % i, 1) + b"\n")
    return path


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (VmHWM, clear_refs)"
)
def test_peak_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """Peak memory reaches a plateau after a few records (the allocator reuses what earlier records
    freed) and stays there whatever the file's length, within twice the longest line plus 200 MB.
    Measured in a fresh process that only reads, from VmHWM (a child's ru_maxrss starts at its
    parent's size, so it cannot be used here)."""

    def growth(path: Path) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())

    short = _big_reference(tmp_path / "short.jsonl", 6)
    long = _big_reference(tmp_path / "long.jsonl", 16)
    line = max(len(line) for line in long.read_bytes().split(b"\n"))
    at_6, at_16 = growth(short), growth(long)
    assert at_16 <= at_6 + (8 << 20), (at_6, at_16)
    assert at_16 <= 2 * line + (200 << 20), (at_16, line)
