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
# same DESC WANT GOT: exact comparison, with a diff on failure.
same() {
	if [ "$2" == "$3" ]; then
		ok "$1"
	else
		bad "$1"
		diff -u <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/       /'
	fi
}
# finish: the summary line, named by TAP_NAME; exit status 1 on any failure.
finish() {
	echo "${TAP_NAME:?set TAP_NAME before sourcing tap.sh}: $pass passed, $fail failed, $skip skipped"
	[ "$fail" -eq 0 ]
	exit
}
# need_tools HINT TOOL...: one failure naming every missing tool and where to
# get them (HINT), then finish.
need_tools() {
	local hint=$1 tool missing=
	shift
	for tool in "$@"; do
		command -v "$tool" >/dev/null || missing="$missing $tool"
	done
	if [ -n "$missing" ]; then
		bad "missing tools:$missing ($hint)"
		finish
	fi
}
