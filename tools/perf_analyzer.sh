#!/bin/sh
# qwen-triton perf_analyzer wrapper (this line marks it: the Makefile never moves a file holding it).
#
# The tritonclient wheel's perf_analyzer (and perf_client, the same binary) needs libb64.so.0d and
# libcudart.so.12, which no system library provides here; the nvidia-pytriton wheel ships both under
# mangled names (nvidia_pytriton.libs/libb64-<hash>.so.0d). `make venv` moves the wheel's binaries to
# <venv>/libexec/ and installs this script as <venv>/bin/perf_analyzer and <venv>/bin/perf_client: it links
# the two libraries under their real names into <venv>/share/qwen-triton/perf-libs (the folder
# benchmarks/perf_analyzer.py's perf_analyzer_env uses) and execs the real binary with that folder on
# LD_LIBRARY_PATH. A symlink to this script (e.g. .venv-tools/bin/perf_analyzer, for GenAI-Perf) works too.
set -eu

self=$(readlink -f "$0")
venv=$(dirname "$(dirname "$self")")
name=$(basename "$0")
case "$name" in perf_analyzer | perf_client) ;; *) name=perf_analyzer ;; esac
real="$venv/libexec/$name"
if [ ! -x "$real" ]; then
    echo "perf_analyzer wrapper: $real is missing; run 'make venv' (tritonclient[all] installs the binary)" >&2
    exit 127
fi

links="$venv/share/qwen-triton/perf-libs"
link() {  # link PATTERN NAME: the wheel's library matching PATTERN as $links/NAME (kept if it still resolves)
    [ -e "$links/$2" ] && return 0
    for lib in "$venv"/lib/python3*/site-packages/nvidia_pytriton.libs/$1; do
        if [ -e "$lib" ]; then
            mkdir -p "$links" && ln -sfn "$lib" "$links/$2"
            return 0
        fi
    done
}
link 'libb64-*.so.0d' libb64.so.0d || true
link 'libcudart-*.so.12*' libcudart.so.12 || true

LD_LIBRARY_PATH="$links${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$real" "$@"
