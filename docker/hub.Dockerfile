# syntax=docker/dockerfile:1
# (a parser directive: only read on the very first line)
# agentcom hub replica. Build from the repository root (its .dockerignore keeps host builds out):
#   docker build -f docker/hub.Dockerfile -t agentcom-hub .
# Base images are pinned to a release; bump them deliberately (and rebuild) for security fixes.

FROM node:20.20.2-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY hub/package.json hub/
COPY sidecar/package.json sidecar/
RUN npm ci --no-audit --no-fund
COPY shared/ shared/
COPY hub/ hub/
# `npm prune --omit=dev` of the whole tree: with a --workspace filter npm 11 keeps the root's
# devDependencies (jest, eslint, typescript, playwright-core: 236 MB instead of 101 MB)
RUN npx tsc --build shared hub \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:20.20.2-bookworm-slim AS runtime
ENV NODE_ENV=production PORT=8080
WORKDIR /app
# only what the hub runs: compiled JS, its Lua scripts, production node_modules
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/shared/package.json shared/
COPY --from=build /app/shared/dist shared/dist
COPY --from=build /app/hub/package.json hub/
COPY --from=build /app/hub/dist hub/dist
COPY --from=build /app/hub/src/redis/lua hub/src/redis/lua
USER node
EXPOSE 8080
# liveness only: an image-level check must not call a replica unhealthy (and get it replaced) for
# a Redis outage; compose checks /readyz instead, to start HAProxy once the hubs can serve
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node as PID 1 gets SIGTERM directly (no npm in between); compose adds `init: true` for reaping
CMD ["node", "hub/dist/main.js"]
