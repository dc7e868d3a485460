#!/usr/bin/env bash
# The external tools the test suite needs, installed when missing (root, apt-get); any that cannot
# be installed stops here with one line, so no test skips for lack of it:
#   Java >= 8: pycocoevalcap's PTB tokenizer, METEOR and SPICE (the caption metrics);
#   slurm-wlm + munge: the test that runs the workflow on a real one-node Slurm (slurm-local.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! java -version >/dev/null 2>&1; then
    echo "test-tools: java not found; installing openjdk-17-jre-headless" >&2
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless; } >&2 \
        || ! java -version >/dev/null 2>&1; then
        echo "test-tools: error: Java is required (java -version failed) and could not be installed;" \
             "install a JRE >= 8 (e.g. apt-get install openjdk-17-jre-headless)" >&2
        exit 1
    fi
fi
bash scripts/slurm-local.sh install
