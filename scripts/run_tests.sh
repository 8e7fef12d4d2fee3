#!/usr/bin/env bash
# Runs the test suite in .venv; extra arguments go to pytest. A run that collects no test
# (pytest exit code 5) is a failure: a green run must have tested something.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "run_tests: pytest collected no test" >&2
  exit 1
fi
exit "$status"
