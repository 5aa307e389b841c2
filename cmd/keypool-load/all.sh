#!/usr/bin/env bash
# Every figure of issue 14's table (and issue 17's), from one command, in about 15 minutes:
#
#   bash cmd/keypool-load/all.sh
#
# Needs wrk (Debian's `wrk`). Nothing else should run on the machine meanwhile: the
# ratios are medians of rounds because a shared host moves them from one window to the
# next. BENCHMARKS.md says what each part measures.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/keypool" .
go build -o "$bin/keypool-load" ./cmd/keypool-load
go build -o "$bin/keypool-fanout" ./cmd/keypool-fanout
load() { "$bin/keypool-load" -server "$bin/keypool" "$@" 2>&1 | grep -v '^{'; }

echo "== acquire+unblock against plain net/http, gqlgen's floor and ServeMux's floor, 1e3 keys, unpinned, 5 rounds"
load -pin=false -rounds 5 -duration 5s -warmup 1s
echo "== the same, pinned (servers on CPU 0, wrk on the others)"
load -rounds 5 -duration 5s -warmup 1s
echo "== 1e3 and 1e7 keys, back to back"
load -pin=false -rounds 15 -duration 5s -warmup 1s -targets plain,graphql,rest -compare-keys 10000000
echo "== an expiry storm of 1e6 keys at 32 clients"
load -pin=false -storm 1000000 -concurrency 32 -targets graphql,rest -rounds 3
echo "== fan-out: requests under 1,000 subscribers (issue 17), and keypool against a raw broadcast"
"$bin/keypool-fanout" -server "$bin/keypool" -parts requests -nice 0 2>&1 | grep -v '^{'
"$bin/keypool-fanout" -server "$bin/keypool" -parts broadcast 2>&1 | grep -v '^{'
