#!/usr/bin/env bash
# govulncheck on the module against the Go vulnerability database, offline: the database's public
# endpoint cannot be reached from this project's machines, but its source, the golang.org/x/vulndb module,
# comes from the Go module proxy with every report as OSV JSON (data/osv). vulndb's own indexdb command
# turns those into the database layout that `govulncheck -db file://DIR` reads; it is built once per
# pinned VULNDB_VERSION and cached. scripts/vulncheck then fails on every called vulnerability that
# scripts/vulncheck/accepted.txt does not list with a reason.
#
#   scripts/vulncheck.sh                   (make vulncheck; part of make lint and scripts/test.sh)
# To take newer reports, raise VULNDB_VERSION to a newer pseudo-version of golang.org/x/vulndb.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
db=${XDG_CACHE_HOME:-$HOME/.cache}/tributary/vulndb-$VULNDB_VERSION

if [ ! -s "$db/index/modules.json" ]; then
	echo "vulncheck.sh: building the vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION"
	# Outside the module, so that neither go.mod nor go.sum learns of vulndb.
	src=$(cd / && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | jq -r .Dir)
	rm -rf "$db.partial"
	mkdir -p "$(dirname "$db")"
	(cd / && go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$db.partial")
	rm -rf "$db"
	mv -T "$db.partial" "$db"
fi
go run "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" -db "file://$db" -format json ./... |
	go run ./scripts/vulncheck -accept scripts/vulncheck/accepted.txt
