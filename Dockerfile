# syntax=docker/dockerfile:1
# wb-bridge: build the native sqlite3 module in a full image, run in a slim one.
# scripts/verify-production-install.sh checks these steps without a Docker engine
# (same files, `npm ci --omit=dev`, start as a non-root user, /health/live, SIGTERM -> exit 0).

FROM node:20-bookworm AS build
WORKDIR /app
# node:20-bookworm already has python3, make and g++; listed so a base-image change fails loudly here.
RUN command -v python3 && command -v make && command -v g++
COPY package.json package-lock.json ./
# Production dependencies only. sqlite3 compiles from source here when no prebuilt binary
# can be downloaded. esbuild (a dependency) bundles the app into dist/wb-bridge.js.
RUN npm ci --omit=dev --no-audit --no-fund \
 && node -e "require('sqlite3')"
COPY tsconfig.json ./
COPY scripts/build.mjs ./scripts/build.mjs
COPY app ./app
RUN npm run build

FROM node:20-bookworm-slim AS runtime
# HTTP_HOST=0.0.0.0 makes the API reachable from outside the container. A non-loopback
# bind REQUIRES authentication: configure `auth` (mode "jwt" with a secret from the
# environment) in your config/system.json, or the bridge refuses to start. The image
# never sets `auth.allow_insecure_remote`; set HTTP_HOST=127.0.0.1 with host networking
# if the API must stay local.
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=32768 \
    CONFIG_DIR=/app/config \
    STATE_PATH=/data/state_store.db \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8099
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
# app/ stays for the CLI (bin/wb-bridge.js runs it under tsx); the service runs the bundle.
COPY app ./app
COPY --from=build /app/dist ./dist
COPY config ./config
# The database (and its backups/ beside it) live in the volume, owned by the non-root user.
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# 8099 HTTP API; 18830 the embedded MQTT broker (only when mqtt.embedded.enabled).
EXPOSE 8099 18830
# Liveness only: /health/live answers while the process serves HTTP, even with the broker away.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||8099)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# SIGTERM (docker stop) -> graceful shutdown within shutdown_timeout_ms (default 10 s):
# give `docker stop -t 15` / stop_grace_period: 15s so it is never cut short by SIGKILL.
STOPSIGNAL SIGTERM
CMD ["node", "--max-semi-space-size=4", "--heap-growing-percent=25", "--no-allocation-site-pretenuring", "dist/wb-bridge.js"]
