"""The sharded CI templates: one GPU job per shard whose part always reaches the merge job, which
runs `trtparity merge` on every part and publishes the sign-off even when a shard failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the CI templates")
    return yaml.safe_load((REPO / "ci" / name).read_text())


def _step(job: dict[str, Any], text: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if text in str(s.get("run", "")) + str(s.get("uses", "")))


def check_github(workflow: dict[str, Any]) -> None:
    shard, merge = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    assert "gpu" in shard["runs-on"] and "self-hosted" in shard["runs-on"]
    shards = shard["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, int(workflow["env"]["SHARDS"]) + 1))
    assert shard["strategy"]["fail-fast"] is False
    assert "--trt-shard=${{ matrix.shard }}/${{ env.SHARDS }}" in _step(shard, "run-gate.sh")["run"]
    upload = _step(shard, "actions/upload-artifact@")
    assert upload["if"] == "always()" and "matrix.shard" in upload["with"]["name"]
    assert merge["needs"] == "shard" and merge["if"] == "always()"
    download = _step(merge, "actions/download-artifact@")
    assert download["with"]["pattern"] == "trtparity-shard-*"
    run = _step(merge, "trtparity merge")["run"]
    assert run.split()[:3] == ["trtparity", "merge", download["with"]["path"].rstrip("/") + "/"]
    assert _step(merge, "actions/upload-artifact@")["if"] == "always()"


def check_gitlab(config: dict[str, Any]) -> None:
    shard, merge = config["trtparity-shard"], config["trtparity-merge"]
    assert "gpu" in shard["tags"] and int(shard["parallel"]) >= 2
    assert any('--trt-shard="$CI_NODE_INDEX/$CI_NODE_TOTAL"' in s for s in shard["script"])
    assert shard["artifacts"]["when"] == "always"
    assert "$CI_NODE_INDEX" in shard["variables"]["TRT_ARTIFACTS"]
    assert merge["when"] == "always"
    assert merge["needs"] == [{"job": "trtparity-shard", "artifacts": True}]
    assert any(s.startswith("trtparity merge trtparity-shard-* -o") for s in merge["script"])
    assert merge["artifacts"]["reports"]["junit"] == "trtparity-artifacts/junit.xml"
    assert config["stages"].index("signoff") > config["stages"].index("test")


def test_github_sharded_template() -> None:
    check_github(_load("github-actions-sharded.yml"))


def test_gitlab_sharded_template() -> None:
    check_gitlab(_load("gitlab-ci-sharded.yml"))


@pytest.mark.parametrize(
    "edit",
    [
        lambda w: w["jobs"]["shard"]["strategy"]["matrix"].update(shard=[1]),
        lambda w: w["jobs"]["merge"].pop("if"),
        lambda w: w["jobs"]["shard"]["steps"][-1].pop("if"),
        lambda w: w["jobs"]["merge"]["steps"][-2].update(run="trtparity merge one/ -o out"),
    ],
)
def test_github_checks_catch_a_broken_template(edit: Any) -> None:
    workflow = _load("github-actions-sharded.yml")
    edit(workflow)
    with pytest.raises((AssertionError, KeyError)):
        check_github(workflow)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["trtparity-shard"].update(parallel=1),
        lambda c: c["trtparity-merge"].pop("when"),
        lambda c: c["trtparity-shard"].update(script=["ci/run-gate.sh -ra"]),
    ],
)
def test_gitlab_checks_catch_a_broken_template(edit: Any) -> None:
    config = _load("gitlab-ci-sharded.yml")
    edit(config)
    with pytest.raises((AssertionError, KeyError)):
        check_gitlab(config)
