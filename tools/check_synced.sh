#!/usr/bin/env bash
# Fail if `nbdev_export`, `nbdev_clean` or the README render would change any file: the notebooks are the source,
# and what is committed must be what they produce. Compares the working tree before and after, so uncommitted edits
# of your own do not count as drift.
set -euo pipefail
bin=$1
state() { git status --porcelain --untracked-files=all; git diff; }
before=$(state)
"$bin/nbdev_export"
"$bin/nbdev_clean"
"$bin/python" tools/readme.py
after=$(state)
if [ "$before" != "$after" ]; then
  echo "nbdev_export / nbdev_clean / tools/readme.py changed files; run 'make sync' and commit:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "notebooks, library and README are in sync"
