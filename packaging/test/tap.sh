# Shared by the packaging test scripts: counters and one-line results.
# Source it; then call ok/bad/skipped with a description.
pass=0
fail=0
skip=0
ok() {
	pass=$((pass + 1))
	echo "ok   - $*"
}
bad() {
	fail=$((fail + 1))
	echo "FAIL - $*"
}
skipped() {
	skip=$((skip + 1))
	echo "skip - $*"
}
