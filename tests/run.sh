#!/usr/bin/env bash
# The README's test command: installs what the tests need from Debian (Go for the demo
# target, Prometheus, Alertmanager, chromium and chromedriver for the browser test) and
# PyPI (moto's S3 server), then runs every test. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps tests
# moto's S3 server (PyPI), for the object-storage tests.
MOTO_SERVER="$(.ci/pyvenv moto "moto[server]==5.2.5")/bin/moto_server"
export MOTO_SERVER
exec cargo test --locked "$@"
