#!/usr/bin/env bash
# Checks the deployment files:
#   - every deploy/kubernetes/*.yaml with `kubernetes-validate --strict` (unknown fields are
#     errors) against the oldest and the newest Kubernetes version we mean to support;
#   - the alertprof config inside each ConfigMap parses as YAML, and, when ALERTPROF names
#     an alertprof binary, passes `alertprof check-config` (secret files stubbed);
#   - deploy/systemd/alertprof.service with `systemd-analyze verify`, where it exists.
# Exits non-zero when any file is invalid.
#
# kubernetes-validate (PyPI) goes into a venv that .ci/pyvenv makes (and remakes every
# time with CI=true).
#
#   deploy/check.sh
#   KUBERNETES_VERSIONS="1.29.0 1.33.0" deploy/check.sh
#   ALERTPROF=target/release/alertprof deploy/check.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
validate_version=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
# The oldest Kubernetes we mean to support and the newest this kubernetes-validate knows.
read -r -a kubernetes_versions <<<"${KUBERNETES_VERSIONS:-1.30.0 1.37.0}"
failed=0

# --- kubernetes-validate in its venv -------------------------------------------------
venv=$("$here/../.ci/pyvenv" kubernetes-validate "kubernetes-validate==$validate_version")

shopt -s nullglob
manifests=("$here"/kubernetes/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
  echo "check: no manifests in $here/kubernetes" >&2
  exit 1
fi

for version in "${kubernetes_versions[@]}"; do
  echo "check: kubernetes-validate $validate_version --strict, Kubernetes $version: ${#manifests[@]} files"
  if ! "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${manifests[@]}"; then
    failed=1
  fi
done

# --- the alertprof config inside each ConfigMap --------------------------------------
# kubernetes-validate sees only a string there. This parses it as YAML and, with
# ALERTPROF set, writes it out with its /etc/alertprof/ secret paths pointing at stub
# files, for `alertprof check-config`.
configs=$(mktemp -d)
trap 'rm -rf "$configs"' EXIT
if ! "$venv/bin/python" - "$configs" "${manifests[@]}" <<'PY'; then
import pathlib, sys, yaml

out = pathlib.Path(sys.argv[1])
bad = 0
for name in sys.argv[2:]:
    try:
        docs = list(yaml.safe_load_all(open(name)))
    except yaml.YAMLError:
        continue  # kubernetes-validate has said so
    for doc in docs:
        if not doc or doc.get("kind") != "ConfigMap":
            continue
        configmap = doc["metadata"]["name"]
        for key, text in (doc.get("data") or {}).items():
            if not key.endswith((".yaml", ".yml")):
                continue
            try:
                tree = yaml.safe_load(text)
            except yaml.YAMLError as error:
                print(f"ERROR {name}: configmap/{configmap} {key} is not valid YAML: {error}")
                bad = 1
                continue
            if not isinstance(tree, dict):
                print(f"ERROR {name}: configmap/{configmap} {key} is not a mapping")
                bad = 1
                continue
            print(f"check: configmap/{configmap} {key}: YAML ok")
            (out / f"{configmap}.yaml").write_text(text.replace("/etc/alertprof/", f"{out}/"))
sys.exit(bad)
PY
  failed=1
fi
if [ -n "${ALERTPROF:-}" ]; then
  mkdir -p "$configs/s3" "$configs/auth"
  for stub in s3/access_key_id s3/secret_access_key auth/token; do
    echo stub >"$configs/$stub"
  done
  for config in "$configs"/*.yaml; do
    echo "check: $ALERTPROF check-config ($(basename "$config" .yaml))"
    "$ALERTPROF" check-config "$config" || failed=1
  done
else
  echo "check: alertprof check-config skipped (set ALERTPROF=path/to/alertprof to run it)"
fi

# --- the systemd unit ----------------------------------------------------------------
unit=$here/systemd/alertprof.service
if command -v systemd-analyze >/dev/null; then
  echo "check: systemd-analyze verify $(basename "$unit")"
  status=0
  output=$(systemd-analyze verify "$unit" 2>&1) || status=$?
  # The binary is installed where the unit runs, not where it is checked: that complaint
  # alone is no fault of the unit. Anything else is.
  missing="Command /usr/local/bin/alertprof is not executable"
  others=$(grep -v -F "$missing" <<<"$output" || true)
  if [ -n "$others" ] || { [ "$status" -ne 0 ] && ! grep -q -F "$missing" <<<"$output"; }; then
    printf '%s\n' "$output"
    echo "ERROR $(basename "$unit") did not verify"
    failed=1
  elif [ -n "$output" ]; then
    echo "check: $(basename "$unit") ok (apart from /usr/local/bin/alertprof, not installed here)"
  else
    echo "check: $(basename "$unit") ok"
  fi
else
  echo "check: systemd-analyze not found, $(basename "$unit") not verified (Debian: apt-get install systemd)"
fi

if [ "$failed" -ne 0 ]; then
  echo "check: FAILED"
  exit 1
fi
echo "check: all deployment files valid"
