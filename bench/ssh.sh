#!/usr/bin/env bash
# SSH micro-benchmark against the real namespace lab (root, and the lab's packages: see
# .ci/run). Builds remedy in release mode, brings a lab up, measures connect + auth, a command
# on a reused connection, and jumped against direct, with OpenSSH alongside; tears the lab down.
#
#   bench/ssh.sh            # 30 rounds of each
#   ROUNDS=100 bench/ssh.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p remedy-tests --bin ssh-bench
exec target/release/ssh-bench
