# syntax=docker/dockerfile:1
# wb-bridge: build the native sqlite3 module in a full image, run in a slim one.

FROM node:20-bookworm AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; sqlite3 compiles here (python3, make, g++ are in this image).
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    CONFIG_DIR=/app/config \
    STATE_PATH=/data/state_store.db \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8099
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY app ./app
COPY config ./config
RUN mkdir -p /data && chown -R node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8099 18830
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||8099)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--import", "tsx", "app/main.ts"]
