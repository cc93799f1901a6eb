#!/bin/sh
# Builds the decoder's libFuzzer target with clang (address + undefined
# sanitizers, against Lua 5.4) and runs it.
#   tools/fuzz.sh [seconds]      (default 60)
# Findings (crash-*, leak-*, timeout-*) are written to build/fuzz/; new inputs
# that widen coverage go to build/fuzz/corpus, the checked-in seed corpus
# fuzz/corpus/decode is only read.
set -eu
cd "$(dirname "$0")/.."
seconds=${1:-60}
out=build/fuzz
mkdir -p "$out/corpus"
clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -D_POSIX_C_SOURCE=200809L -DDEC_EXACT_BUFFERS -Icsrc $(pkg-config --cflags lua5.4) \
    -o "$out/decode_fuzz" fuzz/decode_fuzz.c csrc/decode*.c csrc/core_error.c \
    $(pkg-config --libs lua5.4) -lm
"$out/decode_fuzz" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -artifact_prefix="$out/" -print_final_stats=1 "$out/corpus" fuzz/corpus/decode
