#!/usr/bin/env bash
# Checks an installed libcoffer (under the prefix given as $1) the way a packager would:
#  - the SONAME is libcoffer.so.<COFFER_ABI_VERSION> and the .so / .so.N links resolve to it;
#  - the library exports exactly the functions include/coffer.h declares, and nothing else
#    (no Swift runtime or Coffer symbol leaks into the dynamic symbol table);
#  - it needs no Swift library at run time: only libc, libm, libstdc++, libgcc_s, OpenSSL, Nettle and SQLite.
set -euo pipefail
prefix=${1:?usage: check-library.sh PREFIX}
header="$prefix/include/coffer.h"
abi=$(sed -n 's/^#define COFFER_ABI_VERSION \([0-9]*\)$/\1/p' "$header")
lib="$prefix/lib/libcoffer.so.$abi"
status=0
fail() { echo "check-library: $*" >&2; status=1; }

[ -e "$prefix/lib/libcoffer.so" ] || fail "$prefix/lib/libcoffer.so (the link the compiler uses) is missing"
[ -e "$lib" ] || { fail "$lib is missing"; exit 1; }
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libcoffer.so.$abi" ] || fail "SONAME is '$soname', expected libcoffer.so.$abi"

declared=$(grep -oE '^[a-z][a-z_ *]*\bcoffer_[a-z_]+\(' "$header" | grep -oE 'coffer_[a-z_]+' | sort -u)
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | sort -u)
extra=$(comm -13 <(echo "$declared") <(echo "$exported"))
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
[ -z "$extra" ] || fail "exports symbols that are not in coffer.h: $(echo $extra | head -c 600)"
[ -z "$missing" ] || fail "does not export functions coffer.h declares: $(echo $missing)"
[ "$(echo "$declared" | wc -l)" -ge 10 ] || fail "found only $(echo "$declared" | wc -l) functions in coffer.h; the pattern is broken"

allowed='^(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|libssl\.so\.3|libcrypto\.so\.3|libnettle\.so\.8|libsqlite3\.so\.0)$'
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for n in $needed; do
    [[ "$n" =~ $allowed ]] || fail "needs $n at run time; only libc, libm, libstdc++, libgcc_s, OpenSSL, Nettle and SQLite are allowed"
done
if ldd "$lib" | grep -q 'not found'; then fail "ldd finds unresolved libraries: $(ldd "$lib" | grep 'not found')"; fi

[ $status = 0 ] && echo "check-library: $lib: SONAME $soname, exports exactly the $(echo "$declared" | wc -l) functions of coffer.h, needs only: $(echo $needed)"
exit $status
