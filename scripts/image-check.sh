#!/usr/bin/env bash
# Checks keypool's container image, as far as this machine allows. Run from anywhere:
#   bash scripts/image-check.sh
#
# Dockerfile's base images cannot be pulled here (nor on CI's machine), so the image
# checked is Dockerfile.local's: the same binary on scratch. The checks:
#  1. always: the binary (CGO_ENABLED=0, -trimpath) is static, -version names the
#     commit it was built from, and, run as uid/gid 65532 (the image's user) on a
#     loopback port, it answers /healthz and exits 0 on SIGTERM;
#  2. with podman: Dockerfile.local builds, and the image holds exactly the binary and the
#     CA certificates, runs as 65532:65532 with /keypool as its entrypoint and 8080
#     exposed;
#  3. where podman can also run containers: the image, run with its port published on
#     loopback, answers /healthz and /readyz, runs as uid 65532, and exits 0 on
#     podman stop.
# A check that fails fails the script (exit 1). Podman missing, or unable to run
# containers in this sandbox, is said and is not a failure: the checks of 1 stand in.
# Everything it makes (a temporary folder, images, containers) is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

uid=65532 # distroless's nonroot, and Dockerfile.local's USER
tag="localhost/keypool-image-check:$$"
probe_tag="localhost/keypool-image-check-probe:$$"
name="keypool-image-check-$$"

work=$(mktemp -d)
chmod 755 "$work" # the binary runs as $uid from here
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
  if command -v podman >/dev/null 2>&1; then
    podman rm -f -i "$name" "$name-export" >/dev/null 2>&1 || true
    podman rmi -f "$tag" "$probe_tag" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "image-check: FAIL: $*" >&2
  exit 1
}
say() { echo "image-check: $*"; }

# healthz URL: GET it (5s at most) and expect 200 "ok".
healthz() {
  local body
  body=$(curl -sS -m 5 "$1/healthz") || fail "GET $1/healthz: no answer"
  [[ "$body" == ok ]] || fail "GET $1/healthz answered '$body', want 'ok'"
}

# ids_of PID: the real, effective, saved and filesystem uids and gids of a process.
ids_of() {
  awk '/^Uid:/ {u=$2" "$3" "$4" "$5} /^Gid:/ {g=$2" "$3" "$4" "$5} END {print u" / "g}' "/proc/$1/status"
}
want_ids="$uid $uid $uid $uid / $uid $uid $uid $uid"

# --- 1. the binary -------------------------------------------------------------------
say "building the static binary"
# -buildvcs=auto: record the revision even where GOFLAGS says -buildvcs=false.
CGO_ENABLED=0 go build -buildvcs=auto -trimpath -ldflags=-s -o "$work/keypool" .
chmod 755 "$work/keypool"
cp /etc/ssl/certs/ca-certificates.crt "$work/ca-certificates.crt"
chmod 644 "$work/ca-certificates.crt"

kind=$(file -b "$work/keypool")
[[ "$kind" == *"statically linked"* ]] || fail "the binary is not static: $kind"
if ldd_out=$(ldd "$work/keypool" 2>&1) || [[ "$ldd_out" != *"not a dynamic executable"* ]]; then
  fail "ldd sees a dynamic executable: $ldd_out"
fi
say "ok: static ($kind; ldd: $(echo "$ldd_out" | tr -d '\t'))"

version=$("$work/keypool" -version)
[[ "$version" =~ ^keypool\ [^\ ]+\ .*go1\.[0-9]+ ]] || fail "keypool -version printed '$version'"
revision=$(go version -m "$work/keypool" | awk '$2 ~ /^vcs.revision=/ {sub("vcs.revision=", "", $2); print $2}')
if [[ -n "$revision" ]]; then
  head=$(git rev-parse HEAD)
  [[ "$revision" == "$head" ]] || fail "the binary records revision $revision, HEAD is $head"
  [[ "$version" == *"revision $head"* ]] || fail "keypool -version does not name revision $head: $version"
  say "ok: $version"
else
  # cmd/go stamps only where .git is a folder: not in a git worktree (.git is a file).
  say "note: the build recorded no VCS revision (not a git clone, or a git worktree): $version"
fi

say "running the binary as uid $uid on a loopback port (setpriv)"
setpriv --reuid "$uid" --regid "$uid" --clear-groups -- \
  "$work/keypool" -addr 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
url=
for _ in $(seq 100); do
  url=$(sed -n 's|^keypool listening on \(http://[^/]*\)/.*|\1|p' "$work/stdout")
  [[ -n "$url" ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited at start: $(cat "$work/stderr")"
  sleep 0.1
done
[[ -n "$url" ]] || fail "the server did not say where it listens within 10s: $(cat "$work/stderr")"
ids=$(ids_of "$server_pid")
[[ "$ids" == "$want_ids" ]] || fail "the server runs as uid/gid $ids, want $want_ids"
healthz "$url"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
[[ $status == 0 ]] || fail "the server exited $status on SIGTERM, want 0: $(cat "$work/stderr")"
say "ok: as uid/gid $uid it answers $url/healthz, and exits 0 on SIGTERM"

# --- 2. the image --------------------------------------------------------------------
if ! command -v podman >/dev/null 2>&1; then
  say "podman is not installed (apt-get install podman runc): the image is not built here; the checks above stand in"
  say "passed (without podman)"
  exit 0
fi
if ! info=$(podman info 2>&1); then
  say "podman cannot work here ('podman info' fails: $(echo "$info" | tail -1)); the checks above stand in"
  say "passed (without a container)"
  exit 0
fi

say "building Dockerfile.local with podman"
podman build -q -f Dockerfile.local -t "$tag" "$work" >/dev/null || fail "podman build -f Dockerfile.local failed"

config=$(podman image inspect "$tag" --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.ExposedPorts}}')
[[ "$config" == "$uid:$uid|[\"/keypool\"]|{\"8080/tcp\":{}}" ]] ||
  fail "the image's user|entrypoint|ports are $config, want $uid:$uid|[\"/keypool\"]|{\"8080/tcp\":{}}"
# What the image holds, read without running it.
podman create -q --name "$name-export" "$tag" >/dev/null
files=$(podman export "$name-export" | tar -tvf - | awk '$1 !~ /^d/ {print $1, $6}' | sort)
podman rm -f "$name-export" >/dev/null
want_files=$(printf '%s\n' "-rw-r--r-- etc/ssl/certs/ca-certificates.crt" "-rwxr-xr-x keypool")
[[ "$files" == "$want_files" ]] || fail "the image holds:
$files
want:
$want_files"
say "ok: the image holds /keypool and the CA certificates only, runs as $uid:$uid, exposes 8080"

# --- 3. a container ------------------------------------------------------------------
# Whether this sandbox lets podman run a container at all: a probe image of the same
# binary, with a Containerfile of this script's, so that a fault of Dockerfile.local's
# cannot pass for one of the sandbox. The first way that runs the probe runs the image.
# Seen on this project's machines: crun refuses cgroups in hybrid mode, and raising
# RLIMIT_NOFILE or RLIMIT_NPROC is not permitted (no CAP_SYS_RESOURCE), so runc with
# the limits lowered is what works there.
printf 'FROM scratch\nCOPY keypool /probe\nENTRYPOINT ["/probe", "-version"]\n' >"$work/Containerfile.probe"
podman build -q -f "$work/Containerfile.probe" -t "$probe_tag" "$work" >/dev/null || fail "podman build of the probe image failed"
# Each way to run is "GLOBAL OPTIONS|RUN OPTIONS".
low_limits="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
ways=("|" "|$low_limits")
if command -v runc >/dev/null 2>&1; then
  ways+=("--runtime runc|" "--runtime runc|$low_limits")
fi
global_opts=()
run_opts=()
refusals=
runs=
for way in "${ways[@]}"; do
  read -r -a global_opts <<<"${way%%|*}"
  read -r -a run_opts <<<"${way#*|}"
  how="podman${global_opts[*]:+ ${global_opts[*]}} run${run_opts[*]:+ ${run_opts[*]}}"
  if out=$(podman "${global_opts[@]}" run --rm "${run_opts[@]}" "$probe_tag" 2>&1) && [[ "$out" == keypool\ * ]]; then
    runs=yes
    break
  fi
  refusals+="  $how: $(echo "$out" | tail -1)"$'\n'
done
if [[ -z "$runs" ]]; then
  say "podman cannot run containers here:"
  printf '%s' "$refusals"
  say "the image is built and its content checked; the checks of the binary above stand in for running it"
  say "passed (without a container)"
  exit 0
fi
if [[ -n "$refusals" ]]; then
  say "podman runs containers here as '$how'; before that:"
  printf '%s' "$refusals"
fi

say "running the image"
podman "${global_opts[@]}" run -d --name "$name" "${run_opts[@]}" -p 127.0.0.1::8080 "$tag" >/dev/null ||
  fail "podman run of the image failed, though the probe ran"
url=
for _ in $(seq 100); do
  [[ "$(podman inspect "$name" --format '{{.State.Running}}')" == true ]] ||
    fail "the container exited at start: $(podman logs "$name" 2>&1 | tail -5)"
  port=$(podman port "$name" 8080/tcp 2>/dev/null | head -1)
  if [[ -n "$port" ]] && curl -s -m 1 -o /dev/null "http://$port/healthz"; then
    url="http://$port"
    break
  fi
  sleep 0.1
done
[[ -n "$url" ]] || fail "no answer on the container's published port 8080 within 10s: $(podman logs "$name" 2>&1 | tail -5)"
healthz "$url"
ready=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$url/readyz") || fail "GET $url/readyz: no answer"
[[ "$ready" == 200 ]] || fail "GET $url/readyz: $ready, want 200"
pid=$(podman inspect "$name" --format '{{.State.Pid}}')
ids=$(ids_of "$pid")
[[ "$ids" == "$want_ids" ]] || fail "the container's process runs as uid/gid $ids, want $want_ids"
podman stop -t 10 "$name" >/dev/null
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
[[ "$code" == 0 ]] || fail "the container exited $code on podman stop, want 0: $(podman logs "$name" 2>&1 | tail -5)"
say "ok: the container answers $url/healthz and /readyz, runs as uid/gid $uid, exits 0 on podman stop"
say "passed"
