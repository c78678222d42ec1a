#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a bounded time each, one
# after another, in one process each: docs/security.md#fuzzing. Not part
# of CI.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, all)
#
# FUZZ_SANITIZER=none if AddressSanitizer does not link or run here.
# Corpora grow in fuzz/corpus/<target>/ (not committed); crashes land in
# fuzz/artifacts/<target>/ and, once understood, are kept in
# fuzz/regressions/<target>/, which every run replays first.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module):
# a stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# Seeds: the shipped files and a few well-formed inputs, so that each
# target starts past the first checks.
seed() { mkdir -p "corpus/$1"; printf '%b' "$3" >"corpus/$1/seed-$2"; }
seed_file() { mkdir -p "corpus/$1"; { printf '%b' "$3"; cat "$4"; } >"corpus/$1/seed-$2"; }
seed token_parse random 'tok_AAAAAAAAAAAAAAAAAAAAAA'
seed token_parse card '4111111111111112'
seed credential_token whole 'vt1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
seed credential_token parts 'vt1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
seed shamir_share body '\x01vault-share-v1:0123abcd:2:1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'
seed_file config_load example '' ../docs/vault.example.toml
seed_file schema_load fields '' ../policies/fields.toml
for f in ../policies/*.cedar; do
  seed_file policy_check "$(basename "$f")" '\x00' "$f"
done
seed_file policy_check schema '\x01' ../policies/vault.cedarschema

cargo fuzz build --sanitizer "$sanitizer"
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t"
  echo "=== $t: ${secs}s"
  rc=0
  # One process (libFuzzer's default; -jobs=1 would fork one worker that
  # logs to fuzz-0.log instead), for at most $secs seconds.
  cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"logs/$t.log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ +(DONE|INITED)|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY)' \
    "logs/$t.log" || true
  echo "corpus: $(find "corpus/$t" -type f | wc -l) files"
  if [ "$rc" -ne 0 ]; then
    echo "!!! $t stopped with status $rc (a crash?): see fuzz/logs/$t.log and fuzz/artifacts/$t/"
  fi
done
