#!/bin/bash
# Behaviour unchanged? Run the demo for several methods with two checkouts' code and compare results.json byte for
# byte (and config.json without its provenance):
#   bash scripts/compare_results.sh OLD_TREE NEW_TREE [OUT_DIR]      e.g. a `git worktree add ../base main` and .
# Each checkout runs with its own code (PYTHONPATH), the same small settings: demo, num_phases=2, max_epoch=1.
set -u
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd); OUT=${3:-$(mktemp -d)}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
METHODS=${METHODS:-"finetune replay emm cim mrdc"}
status=0
for side in old new; do
  tree=$OLD; [ $side = new ] && tree=$NEW
  for m in $METHODS; do
    (cd "$tree" && PYTHONPATH="$tree" python run.py with demo "$m" num_phases=2 max_epoch=1 progress_bar=False \
      log_dir="$OUT/$side" exp_name="$m" > "$OUT/$side-$m.log" 2>&1) || { echo "$side $m failed: $OUT/$side-$m.log"; status=1; }
  done
done
for m in $METHODS; do
  if cmp -s "$OUT/old/$m/results.json" "$OUT/new/$m/results.json"; then echo "$m: results.json identical"
  else echo "$m: results.json DIFFERS"; status=1; fi
  python - "$OUT/old/$m/config.json" "$OUT/new/$m/config.json" <<'PY' || status=1
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for c in (a, b):
    c.pop("provenance", None); c.pop("log_dir", None)
print(f"  config.json (less provenance, log_dir): {'identical' if a == b else 'DIFFERS: ' + str({k for k in a.keys() | b.keys() if a.get(k) != b.get(k)})}")
sys.exit(a != b)
PY
done
exit $status
