#!/usr/bin/env bash
# Refreshes the vendored GraphiQL, React and ReactDOM files that web/ embeds.
#
# Usage: web/refresh-assets.sh [GRAPHIQL_VERSION [REACT_VERSION]]
#
# The packages are fetched from the npm registry with `npm pack` into a temporary
# directory (no node_modules is left behind), their ready-built browser files and
# LICENSE files are copied into web/assets/vendor/, and the exact versions are
# recorded in web/assets/vendor/VERSIONS. GraphiQL stays on 3.x: it is the last
# major that ships a self-contained UMD bundle (React 18 UMD globals, graphql-ws
# bundled in), where 4.x and later ship ES modules with many dependencies.
set -euo pipefail

graphiql_version="${1:-3.9.0}"
react_version="${2:-18.3.1}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendor="$here/assets/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --json "graphiql@$graphiql_version" "react@$react_version" "react-dom@$react_version" >packed.json
for pkg in graphiql react react-dom; do
  mkdir -p "$pkg"
  tar -xzf "$pkg"-[0-9]*.tgz -C "$pkg" --strip-components=1
done

rm -rf "$vendor"
mkdir -p "$vendor/graphiql" "$vendor/react" "$vendor/react-dom"
cp graphiql/graphiql.min.js graphiql/graphiql.min.css graphiql/LICENSE "$vendor/graphiql/"
cp react/umd/react.production.min.js react/LICENSE "$vendor/react/"
cp react-dom/umd/react-dom.production.min.js react-dom/LICENSE "$vendor/react-dom/"
# The bundle's trailing sourceMappingURL points at a map we do not ship; drop it so
# browser dev tools do not request a file that would only 404.
sed -i '/^\/\/# sourceMappingURL=/d' "$vendor"/*/*.js

{
  echo "# npm packages embedded by web/: name, exact version, tarball integrity (written by web/refresh-assets.sh)."
  node -e '
    for (const p of require("./packed.json")) console.log(p.name, p.version, p.integrity);
  '
} >"$vendor/VERSIONS"

cat "$vendor/VERSIONS"
du -ch "$vendor"/*/* | tail -1
