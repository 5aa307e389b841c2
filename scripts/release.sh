#!/usr/bin/env bash
# Builds keypool's release binaries, keypool and keypoolctl, for linux/amd64, linux/arm64
# and darwin/arm64, into dist/ (NAME-OS-ARCH), with a SHA256SUMS file beside them:
#   bash scripts/release.sh [--check] [--platforms "linux/amd64 …"] [--out DIR]
#
# The build is reproducible: static (CGO_ENABLED=0), no file paths (-trimpath), no
# symbol tables and no build id (-ldflags="-s -w -buildid="), so the same commit and the
# same Go toolchain give the same bytes on any machine, in any folder, at any time. The
# binaries record the commit and its time (keypool -version), not the time of the build;
# Go reads no SOURCE_DATE_EPOCH, and needs none. Everything that changes the output is set
# here, so that the environment (GOFLAGS, GOAMD64, …) cannot.
#
# --check builds everything a second time, into a temporary folder with an empty build
# cache (so that every package is compiled again, not taken from the first build), and
# fails unless the two SHA256SUMS are the same.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
platforms=(linux/amd64 linux/arm64 darwin/arm64)
check=
while (($#)); do
  case "$1" in
  --check) check=1 ;;
  --platforms) read -r -a platforms <<<"${2:?--platforms needs a list}"; shift ;;
  --out) out=${2:?--out needs a folder}; shift ;;
  *)
    echo "usage: $0 [--check] [--platforms \"linux/amd64 linux/arm64 darwin/arm64\"] [--out DIR]" >&2
    exit 2
    ;;
  esac
  shift
done

# What decides the output, and nothing from the environment. -buildvcs=auto records the
# commit where the tree is a git clone (a git worktree's .git is a file: cmd/go records
# nothing there).
export CGO_ENABLED=0 GOFLAGS="-buildvcs=auto -mod=readonly" GOAMD64=v1 GOARM64=v8.0 GOEXPERIMENT=
unset GOARM GO386 GOPPC64 GOMIPS GOMIPS64 GORISCV64 GOWASM 2>/dev/null || true
commands=("keypool ." "keypoolctl ./cmd/keypoolctl")

# build_into DIR: every command for every platform into DIR, then DIR/SHA256SUMS.
build_into() {
  local dir=$1 platform goos goarch entry name pkg
  rm -rf "$dir"
  mkdir -p "$dir"
  for platform in "${platforms[@]}"; do
    goos=${platform%/*} goarch=${platform#*/}
    for entry in "${commands[@]}"; do
      read -r name pkg <<<"$entry"
      GOOS=$goos GOARCH=$goarch go build -trimpath -ldflags="-s -w -buildid=" -o "$dir/$name-$goos-$goarch" "$pkg"
    done
  done
  (cd "$dir" && LC_ALL=C sha256sum -- *-* >SHA256SUMS)
}

start=$SECONDS
echo "release: $(go version), ${platforms[*]}, into $out/"
build_into "$out"
cat "$out/SHA256SUMS"
echo "release: built in $((SECONDS - start))s"

if [[ -n "$check" ]]; then
  again=$(mktemp -d)
  trap 'rm -rf "$again"' EXIT
  start=$SECONDS
  echo "release: building again with an empty build cache, to check that the bytes are the same"
  GOCACHE="$again/cache" build_into "$again/dist"
  if ! diff -u "$out/SHA256SUMS" "$again/dist/SHA256SUMS"; then
    echo "release: FAIL: a second build gave other bytes (above: - the first, + the second)" >&2
    exit 1
  fi
  echo "release: the second build ($((SECONDS - start))s) gave the same SHA256SUMS: reproducible"
fi
