#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time, one after the
# other (go test -fuzz takes one package and one target per run), and prints
# how many inputs each one executed. Exits non-zero when any target fails;
# a failing input is saved by go test under <package>/testdata/fuzz/<Target>/.
#
#   bash scripts/fuzz.sh                    # 10s per target
#   FUZZTIME=1m bash scripts/fuzz.sh        # longer (any -fuzztime value: 30s, 5000x)
#   bash scripts/fuzz.sh FuzzConfinedDir    # only the targets named
#
# Targets are found with grep, so a new `func FuzzX(f *testing.F)` in any
# _test.go file is picked up without changing this script.
set -uo pipefail

FUZZTIME="${FUZZTIME:-10s}"
cd "$(dirname "$0")/.."

declare -a targets=()
while IFS= read -r file; do
	pkg="./$(dirname "$file")"
	while IFS= read -r name; do
		targets+=("$pkg $name")
	done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F).*/\1/p' "$file")
done < <(grep -rl 'func Fuzz' --include='*_test.go' --exclude-dir=testdata --exclude-dir=vendor --exclude-dir='.?*' . | sed 's|^\./||' | sort)

if [ "$#" -gt 0 ]; then
	declare -a wanted=()
	for t in "${targets[@]}"; do
		for w in "$@"; do
			[ "${t#* }" = "$w" ] && wanted+=("$t")
		done
	done
	targets=("${wanted[@]}")
fi
if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

echo "fuzz: ${#targets[@]} targets, $FUZZTIME each"
failed=0
declare -a summary=()
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	pkg="${t% *}"
	name="${t#* }"
	echo "=== $name ($pkg)"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$log"
	rc="${PIPESTATUS[0]}"
	execs="$(grep -oE 'fuzz: elapsed: [^,]+, execs: [0-9]+' "$log" | tail -n 1 | sed -E 's/.*execs: ([0-9]+)$/\1/')"
	execs="${execs:-?}"
	if [ "$rc" -eq 0 ]; then
		status=ok
	else
		status="FAIL (exit $rc)"
		failed=1
	fi
	summary+=("$(printf '%-22s %-14s %12s execs  %s' "$name" "$pkg" "$execs" "$status")")
done

echo
echo "fuzz summary ($FUZZTIME per target):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
