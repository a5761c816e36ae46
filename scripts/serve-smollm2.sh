#!/usr/bin/env bash
# Serves SmolLM2-135M-Instruct through an OpenAI-compatible server
# (llama-cpp-python, from PyPI) on 127.0.0.1, for the HTTP LLM-judge tests.
#
#   scripts/serve-smollm2.sh start [PORT]   # installs once (compiles llama.cpp,
#                                           # minutes), starts in the background,
#                                           # waits until ready, prints the URL
#   scripts/serve-smollm2.sh stop [PORT]
#
# The venv is cached in $CGPO_CACHE (default ~/.cache/cgpo); the model comes
# from scripts/fetch-smollm2.sh.
set -euo pipefail

VERSION=0.3.36
CACHE=${CGPO_CACHE:-$HOME/.cache/cgpo}
VENV=$CACHE/llama-server-venv
here=$(cd "$(dirname "$0")" && pwd)

install() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
        return
    fi
    echo "installing llama-cpp-python[server]==$VERSION into $VENV (compiles llama.cpp; a few minutes)..." >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip >&2
    "$VENV/bin/pip" install --quiet "llama-cpp-python[server]==$VERSION" >&2
}

start() {
    local port=${1:-8765}
    local model
    model=$("$here/fetch-smollm2.sh")
    install
    stop_quietly "$port"
    local PIDFILE=$CACHE/llama-server-$port.pid LOG=$CACHE/llama-server-$port.log
    mkdir -p "$CACHE"
    # Bound to loopback only; logits_all lets chat completions return logprobs.
    nohup "$VENV/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
        --n_ctx 2048 --logits_all true --model_alias smollm2 >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=1)" 2>/dev/null; then
            echo "http://127.0.0.1:$port"
            return
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            echo "error: the server exited; see $LOG" >&2
            tail -20 "$LOG" >&2
            exit 1
        fi
        sleep 1
    done
    echo "error: the server did not answer within 120 s; see $LOG" >&2
    exit 1
}

stop_quietly() {
    local PIDFILE=$CACHE/llama-server-${1:-8765}.pid
    if [ -f "$PIDFILE" ]; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
    fi
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop_quietly "${2:-}" ;;
    *) echo "usage: $0 start [PORT] | stop [PORT]" >&2; exit 2 ;;
esac
