#!/usr/bin/env bash
# The two stacks against each other (issue 26), after `make test-next-stack` (its `make run`
# leaves the next stack's pushed models in the root's clone) and a default-stack `make run`
# here (workdir $1, default .medflow). As root, like build-root.sh.
#
# Each stack compiles the Kubeflow spec and parses the other's as a KFP PipelineSpec, and
# serves both stacks' pushed SavedModels with `medflow serve` to `medflow predict` the same
# 64 DICOM files: a model's scores must agree across stacks (max |diff| <= 1e-4).
# Results: test-artifacts/next-stack/cross-check/*.json and one summary line per model.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${MEDFLOW_NEXT_ROOT:-$HOME/.cache/medflow/trixie-root}
default_wd=$(cd "${1:-$repo/.medflow}" && pwd)
next_wd=$root/work/medflow/.medflow
out=$repo/test-artifacts/next-stack/cross-check
shared=$root/work/next-stack-out  # /work/next-stack-out inside the root, outside its clone
die() { echo "cross-check: $*" >&2; exit 1; }
[ -d "$default_wd/models" ] || die "no pushed models in $default_wd: run 'make run' (default stack) first"
[ -d "$next_wd/models" ] || die "no pushed models in $next_wd: run 'make test-next-stack' first"
rm -rf "$out" "$shared" && mkdir -p "$out" "$shared"

# What both stacks read: each stack's models and spec, and the same DICOM files.
cp -a "$default_wd/models" "$shared/default-models"
cp -a "$next_wd/models" "$shared/next-models"
mkdir -p "$shared/dicom"
mapfile -t dicoms < <(find "$default_wd/demo-data" -name '*.dcm' | sort)
[ "${#dicoms[@]}" -gt 0 ] || die "no DICOM files under $default_wd/demo-data"
cp "${dicoms[@]:0:64}" "$shared/dicom/"
mapfile -t names < <(find "$shared/default-models" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
model=${names[0]}

"$repo/.venv/bin/medflow" compile --out "$shared/default-spec.yaml" --pipeline-root "$shared/root-default" >/dev/null
MEDFLOW_NEXT_KEEP=1 "$repo/scripts/next-stack/build-root.sh" .venv/bin/medflow compile \
  --out /work/next-stack-out/next-spec.yaml --pipeline-root /work/next-stack-out/root-next >/dev/null

check() {  # check STACK SPEC_OF MODELS_OF: STACK parses SPEC_OF's spec and serves MODELS_OF's models
  local stack=$1 spec=$2 models=$3 name="$1-stack-on-$3-models"
  local args=(--spec "$4/$spec-spec.yaml" --model-base "$4/$models-models" --model "$model"
    --dicom "$4/dicom" --out "$4/$name.json")
  if [ "$stack" = default ]; then
    "$repo/.venv/bin/python" "$repo/scripts/next-stack/cross_check.py" "${args[@]}"
  else
    MEDFLOW_NEXT_KEEP=1 "$repo/scripts/next-stack/build-root.sh" .venv/bin/python \
      scripts/next-stack/cross_check.py "${args[@]}"
  fi
}
check default next default "$shared"
check default next next "$shared"
check next default default /work/next-stack-out
check next default next /work/next-stack-out
cp "$shared"/*.json "$out/"

"$repo/.venv/bin/python" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])

def numbers(x):  # every number in a prediction, in a fixed order
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    items = sorted(x.items()) if isinstance(x, dict) else enumerate(x)
    return [v for _, y in items for v in numbers(y)]

def load(name):
    doc = json.loads((out / f"{name}.json").read_text())
    preds = doc["predictions"]["predictions"]
    return doc, [(Path(p["path"]).name, numbers(p)) for p in preds]

ok = True
for models in ("default", "next"):
    (d, a), (n, b) = load(f"default-stack-on-{models}-models"), load(f"next-stack-on-{models}-models")
    same_files = [k for k, _ in a] == [k for k, _ in b] and all(len(x) == len(y) for (_, x), (_, y) in zip(a, b))
    diff = max(abs(u - v) for (_, x), (_, y) in zip(a, b) for u, v in zip(x, y))
    same = same_files and diff <= 1e-4
    ok &= same
    print(f"cross-check: the {models} stack's model, {len(a)} files, served by TF {d['tensorflow']} "
          f"and TF {n['tensorflow']}: max |diff| {diff:.2e} {'OK' if same else 'DIFFERENT'}")
for stack, other in (("default", "next"), ("next", "default")):
    doc, _ = load(f"{stack}-stack-on-{stack}-models")
    print(f"cross-check: the {stack} stack (TFX {doc['tfx']}) parsed the {other} stack's spec as a "
          f"PipelineSpec: {doc['spec']['name']}, {len(doc['spec']['tasks'])} tasks")
sys.exit(0 if ok else 1)
PY
