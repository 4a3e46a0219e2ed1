#!/usr/bin/env bash
# The README's test command: installs what the tests need from Debian (Go for the demo
# target, Prometheus, Alertmanager, chromium and chromedriver for the browser test), then
# runs every test. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps tests
exec cargo test --locked "$@"
