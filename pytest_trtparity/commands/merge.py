"""`trtparity merge DIR... -o OUT`: CI-matrix shards (`--trt-shard K/N`) into one sign-off.

The parts are checked as one run's (same reference, contract and engine, every shard once, each
finished) and then go through the xdist controller's own path: `ingest` each payload, `merge_parts`
(sharding/parts.py judges the merged series as one process would), and the session's `write`, which
renders summary.json, report.md, the plots and the GitHub job summary. A JUnit file with one test
case per suite is written beside them, for CI systems that show JUnit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..session import GateSession
    from ..settings import GateSettings
    from ..sharding.matrix import PartFile

JUNIT = "junit.xml"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "merge",
        help="merge the shard parts of --trt-shard K/N runs into one verdict and its artifacts",
        description="Merge CI-matrix shard parts (shard-part.json, found in each DIR and below it) "
        "into the summary.json, report.md, plots, junit.xml and GitHub job summary that one "
        "unsharded run would have written. Exit status: 0 pass or warn, 1 fail or refused.",
    )
    parser.add_argument("parts", nargs="+", type=Path, metavar="DIR", help="part file or folder")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="artifacts folder"
    )
    parser.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    from ..judge.tiers import Level
    from ..sharding.matrix import check_set, find_parts, read_part

    parts = [read_part(path) for path in find_parts(args.parts)]
    check_set(parts)
    gate = merged_session(parts, args.output)
    summary_path = gate.write()
    junit = write_junit(gate.summary, args.output / JUNIT)
    verdict = gate.verdict
    print(f"trtparity merge: {len(parts)} shard(s) -> verdict {verdict.word.upper()}")
    for result in gate.results:
        print(f"  {result.suite}: {result.verdict.word} ({result.chunks_run} chunks)")
    for error in gate.errors:
        print(f"  ERROR: {error}")
    print(f"  summary: {summary_path}; junit: {junit}")
    return 1 if verdict is Level.FAIL else 0


def merged_session(parts: list[PartFile], out: Path) -> GateSession:
    """A gate session holding every part's payload, merged as the xdist controller merges."""
    from ..errors import TrtParityError
    from ..session import GateSession
    from ..sharding.payload import ingest

    first = parts[0].document
    gate = GateSession(settings=_settings(first["settings"], out))
    gate.contract = _contract(first, gate.settings)
    for part in sorted(parts, key=lambda p: p.k):
        ingest(gate, part.document["payload"])
    gate.environment["matrix_shards"] = parts[0].n
    try:
        gate.merge_parts(final=True)
    except TrtParityError as exc:
        gate.errors.append(str(exc))
    return gate


def _settings(raw: dict[str, Any], out: Path) -> GateSettings:
    from ..settings import GateSettings

    def path(key: str) -> Path | None:
        value = raw.get(key)
        return Path(value) if value else None

    return GateSettings(
        engine=path("engine"),
        backend=raw.get("backend"),
        contract=path("contract"),
        ref=path("ref"),
        artifacts=out,
        strict=bool(raw.get("strict")),
        mode=str(raw.get("mode") or "auto"),
        provider="cpu",
        threads=0,
        baseline=path("baseline"),
        devices=(),
        onnx=path("onnx"),
    )


def _contract(document: dict[str, Any], settings: GateSettings) -> Any:
    """The contract the shards judged with (its text travels in the part): the merge judges the
    merged series by it even where the merging machine has no copy of the file."""
    from ..contract.model import contract_from_json
    from ..errors import ShardSetError
    from ..util import strictjson

    text = document.get("contract_text")
    if text is None:
        raise ShardSetError("the shard parts carry no contract: the merged series cannot be judged")
    return contract_from_json(strictjson.loads(text), path=settings.contract, text=text)


def write_junit(summary: dict[str, Any] | None, path: Path) -> Path:
    """One test case per suite, read from the merged summary.json, with the verdict properties a
    gate run's test cases carry; a failing or incomplete suite, or an error of the run, fails."""
    import xml.etree.ElementTree as ET

    from ..util.atomic import write_text

    summary = summary or {}
    suites: dict[str, Any] = summary.get("suites") or {}
    errors = [str(e) for e in summary.get("errors") or []]
    cases = [_junit_case(name, body) for name, body in suites.items()]
    if errors or not suites:
        message = errors[0] if errors else "no suite ran"
        case = ET.Element("testcase", classname="trtparity.merge", name="run", time="0")
        ET.SubElement(case, "failure", message=message).text = "\n".join(errors) or message
        cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    suite_el = ET.Element(
        "testsuite", name="trtparity", tests=str(len(cases)), failures=str(failures), errors="0"
    )
    suite_el.extend(cases)
    root = ET.Element("testsuites")
    root.append(suite_el)
    return write_text(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")


def _junit_case(name: str, body: dict[str, Any]) -> Any:
    import xml.etree.ElementTree as ET

    case = ET.Element("testcase", classname="trtparity.merge", name=name, time="0")
    props = ET.SubElement(case, "properties")
    values = {
        "suite": name,
        "verdict": str(body.get("verdict")),
        "chunks": str(body.get("chunks_run", 0)),
        "complete": str(bool(body.get("complete"))).lower(),
    }
    if body.get("error"):
        values["error"] = str(body["error"])
    for key, value in values.items():
        ET.SubElement(props, "property", name=f"trtparity.{key}", value=value)
    findings = body.get("findings") or []
    for f in findings[:20]:
        text = f"{f.get('level')}: {f.get('message')}"
        ET.SubElement(props, "property", name="trtparity.finding", value=text)
    if body.get("verdict") == "fail" or not body.get("complete"):
        fails = [str(f.get("message")) for f in findings if f.get("level") == "fail"]
        message = str(body.get("error") or (fails[0] if fails else "failed"))
        ET.SubElement(case, "failure", message=message).text = message
    return case
