#!/usr/bin/env bash
# Runs every test under the race detector, each package bounded in time.
set -euo pipefail
cd "$(dirname "$0")"
exec go test -race -timeout 10m -count=1 ./... "$@"
