#!/usr/bin/env bash
# Mutation testing of the comparison and gate code: pytest_trtparity/judge/compare.py, gate.py, invariants.py.
#
# Not part of normal CI: every mutant reruns the tests that reach the mutated function (about five
# minutes on two cores). Each survivor must be killed by a test or explained in docs/mutation.md.
#
#   pip install 'mutmut>=3.8,<4'
#   ci/mutation.sh [REPORT_DIR]        # default: ./mutation-report
#
# The run happens in a scratch copy of the repository, so the working tree is left as it was (mutmut
# writes a mutants/ folder and needs its own [mutmut] section, kept here rather than in pyproject.toml).
# Exit status: 0 when every surviving mutant is explained in docs/mutation.md, 1 when one is not
# (all survivors are listed in REPORT_DIR/survivors.txt with their diffs), 2 when the run failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
report="$(realpath -m "${1:-$repo/mutation-report}")"
jobs="${MUTATION_JOBS:-$(nproc)}"

if ! python -c 'import mutmut, sys; sys.exit(0 if int(mutmut.__version__.split(".")[0]) >= 3 else 1)' 2>/dev/null; then
    echo "ci/mutation.sh: needs mutmut 3.x: pip install 'mutmut>=3.8,<4'" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/trtparity-mutation.XXXXXX")"
trap 'rm -rf "$work"' EXIT
for item in pytest_trtparity tests contracts references suites conftest.py pyproject.toml; do
    cp -r "$repo/$item" "$work/"
done
find "$work" -name __pycache__ -prune -exec rm -rf {} +

# The tests that judge these three modules directly; the plugin's end-to-end tests are too slow to
# rerun per mutant and add nothing here (test_34_* start whole pytest sessions).
cat > "$work/setup.cfg" <<'EOF'
[mutmut]
source_paths = pytest_trtparity
only_mutate =
    pytest_trtparity/judge/compare.py
    pytest_trtparity/judge/tiers.py
    pytest_trtparity/contract/invariants.py
also_copy =
    conftest.py
    contracts
    references
    suites
pytest_add_cli_args_test_selection =
    tests/test_catalogue_compare.py
    tests/test_properties.py
    tests/test_compare_metrics.py
    tests/test_mutation_kills.py
pytest_add_cli_args =
    -p
    no:cacheprovider
    -p
    no:randomly
    -k
    not test_34_
EOF

cd "$work"
echo "ci/mutation.sh: mutating compare.py, gate.py, invariants.py in $work ($jobs workers)"
mutmut run --max-children "$jobs" > mutmut-run.log 2>&1 || { tail -n 40 mutmut-run.log >&2; exit 2; }

mkdir -p "$report"
mutmut results --all true > "$report/results.txt" 2>/dev/null
survivors=$(grep -vE ': (killed|caught by type check)$' "$report/results.txt" | grep -E '__mutmut_' | cut -d: -f1 | tr -d ' ' || true)
: > "$report/survivors.txt"
for name in $survivors; do
    {
        echo "=== $name ($(grep -F "$name:" "$report/results.txt" | cut -d: -f2- | tr -d ' '))"
        mutmut show "$name" 2>/dev/null | grep -E '^[-+]' | grep -vE '^(\+\+\+|---)'
    } >> "$report/survivors.txt"
done

total=$(grep -c . "$report/results.txt" || true)
killed=$(grep -c ': killed' "$report/results.txt" || true)
left=$(grep -c '^===' "$report/survivors.txt" || true)
echo "ci/mutation.sh: $total mutants, $killed killed, $left not killed (see $report/survivors.txt)"

# Every survivor must be explained in docs/mutation.md (by its mutmut name, with the reason).
explained="$(grep -oE 'pytest_trtparity\.[^ `|]+__mutmut_[0-9]+' "$repo/docs/mutation.md" | sort -u || true)"
unexplained=0
for name in $survivors; do
    if ! grep -qxF "$name" <<< "$explained"; then
        echo "ci/mutation.sh: unexplained survivor $name" >&2
        unexplained=$((unexplained + 1))
    fi
done
echo "ci/mutation.sh: $unexplained unexplained survivor(s)"
[ "$unexplained" -eq 0 ]
