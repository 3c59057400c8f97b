#!/usr/bin/env bash
# Checks the Dockerfile's steps without a Docker engine (not part of `npm test`: the
# sqlite3 build takes minutes):
#   1. copy what the image copies (package*.json, tsconfig.json, app/, config/) from the
#      files git knows (tracked + untracked-but-not-ignored, as a build context would see);
#   2. `npm ci --omit=dev` there (sqlite3 builds from source; python3, make, g++ needed);
#   3. `npm run build`, then start `node --max-semi-space-size=4 --heap-growing-percent=25 --no-allocation-site-pretenuring dist/wb-bridge.js` as a non-root user with the image's
#      environment, a temporary STATE_PATH and HTTP_PORT=0;
#   4. wait for the "wb-bridge listening" line, GET /health/live (the HEALTHCHECK);
#   5. SIGTERM, expect exit 0 and the database file written.
# Usage: scripts/verify-production-install.sh   (KEEP=1 keeps the temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

step() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d /tmp/wb-bridge-verify.XXXXXX)
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step "node $(node --version), npm $(npm --version 2>/dev/null)"
for tool in python3 make g++ curl; do
  command -v "$tool" >/dev/null || fail "$tool is missing (the build stage has it)"
done

step "copying the image's files to $work/app"
mkdir -p "$work/app"
git ls-files -z --cached --others --exclude-standard -- package.json package-lock.json tsconfig.json scripts/build.mjs app config \
  | (cd "$repo" && xargs -0 cp --parents -t "$work/app")
echo "$(find "$work/app" -type f | wc -l) files"

step "npm ci --omit=dev (sqlite3 may compile from source: a minute or two)"
started=$(date +%s)
(cd "$work/app" && npm ci --omit=dev --no-audit --no-fund 2>&1 | grep -v '^npm warn Unknown user config' | tail -n 5)
(cd "$work/app" && node -e "require('sqlite3')") || fail "sqlite3 native module failed to build/load"
echo "installed in $(( $(date +%s) - started )) s; dev dependencies absent: $(test ! -e "$work/app/node_modules/vitest" && test ! -e "$work/app/node_modules/typescript" && echo yes || echo NO)"
[[ ! -e "$work/app/node_modules/vitest" ]] || fail "dev dependencies were installed"

step "npm run build (esbuild bundles app/ into dist/wb-bridge.js, as the image does)"
(cd "$work/app" && npm run -s build) || fail "the build failed"

# The image runs as the unprivileged `node` user; here: nobody when root, else ourselves.
data="$work/data"
mkdir -p "$data"
run_as=()
if [[ $(id -u) == 0 ]]; then
  if command -v setpriv >/dev/null; then
    run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
  elif command -v runuser >/dev/null; then
    run_as=(runuser -u nobody --)
  fi
  if [[ ${#run_as[@]} -gt 0 ]]; then
    chown -R nobody "$data"
    chmod -R a+rX "$work/app"
    chmod 755 "$work"
    echo "running as nobody (uid $(id -u nobody))"
  else
    echo "note: no setpriv/runuser: running as root"
  fi
else
  echo "note: not root, cannot switch user: running as $(id -un) (uid $(id -u)), which is already non-root"
fi

step "starting the bridge (the image's environment; loopback bind, temporary STATE_PATH, HTTP_PORT=0)"
log="$work/bridge.log"
# HTTP_HOST=0.0.0.0 in the image needs auth configured; the demo config has none, so bind to loopback here.
(cd "$work/app" && exec env -i PATH="$PATH" HOME=/tmp NODE_ENV=production MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=32768 CONFIG_DIR="$work/app/config" \
  STATE_PATH="$data/state_store.db" HTTP_HOST=127.0.0.1 HTTP_PORT=0 \
  "${run_as[@]}" node --max-semi-space-size=4 --heap-growing-percent=25 --no-allocation-site-pretenuring dist/wb-bridge.js >"$log" 2>&1) &
pid=$!
address=""
for _ in $(seq 1 600); do
  address=$(grep '"msg":"wb-bridge listening"' "$log" | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' | head -n 1 || true)
  [[ -n "$address" ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "the bridge exited before listening"; }
  sleep 0.1
done
[[ -n "$address" ]] || { cat "$log"; fail "no listening line within 60 s"; }
echo "listening on $address (pid $pid, user $(ps -o user= -p "$pid" || echo '?'))"

step "GET $address/health/live"
body=$(curl -fsS --max-time 5 "$address/health/live") || { cat "$log"; fail "/health/live failed"; }
echo "$body"
[[ "$body" == '{"live":true}' ]] || fail "unexpected /health/live body"
curl -fsS --max-time 5 -X POST "$address/devices/living_room_tv/action" -H 'content-type: application/json' \
  -d '{"action":"volume","params":{"level":33}}' >/dev/null || { cat "$log"; fail "an action failed"; }
echo "action acknowledged"

step "SIGTERM"
kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
pid=""
tail -n 3 "$log"
[[ $code == 0 ]] || { cat "$log"; fail "exit code $code, expected 0"; }
[[ -s "$data/state_store.db" ]] || fail "no database at $data/state_store.db"
echo "exit 0; database $(stat -c '%s bytes, owner %U' "$data/state_store.db")"
step "OK: production install verified"
