#!/usr/bin/env bash
# Fails when a file tracked by git is over 1 MiB or is an executable binary
# (an ELF or Mach-O file, or an executable or PE file that holds NUL bytes): build outputs belong in bin/, which is ignored. Run by make test.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

limit=$((1024 * 1024))
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue # deleted in the work tree, not yet committed
	size=$(stat -c %s -- "$f")
	if [ "$size" -gt "$limit" ]; then
		echo "tracked file over 1 MiB: $f ($size bytes); build outputs go to bin/" >&2
		bad=1
		continue
	fi
	magic=$(head -c 4 -- "$f" | od -An -tx1 | tr -d ' \n')
	case "$magic" in
	7f454c46 | cffaedfe | cefaedfe | feedfacf | feedface)
		echo "tracked executable binary: $f; build outputs go to bin/" >&2
		bad=1
		continue
		;;
	esac
	# Anything else executable (or starting as a PE file does) that is not text.
	if { [ -x "$f" ] || [[ "$magic" == 4d5a* ]]; } && [ "$(head -c 8000 -- "$f" | tr -d '\000' | wc -c)" -ne "$(head -c 8000 -- "$f" | wc -c)" ]; then
		echo "tracked executable binary: $f (executable bit, not text); build outputs go to bin/" >&2
		bad=1
	fi
done < <(git ls-files -z)
exit "$bad"
