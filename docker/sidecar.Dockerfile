# syntax=docker/dockerfile:1
# (a parser directive: only read on the very first line)
# Example agentcom sidecar image (the real thing is `npm install -g agentcom-sidecar` on the
# agent's machine). Build from the repository root (its .dockerignore keeps host builds out):
#   docker build -f docker/sidecar.Dockerfile -t agentcom-sidecar .
# Base images are pinned to a release; bump them deliberately (and rebuild) for security fixes.

FROM node:20.20.2-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY hub/package.json hub/
COPY sidecar/package.json sidecar/
RUN npm ci --no-audit --no-fund
COPY shared/ shared/
COPY sidecar/ sidecar/
RUN node sidecar/build.mjs && cd sidecar && npm pack --pack-destination /tmp

FROM node:20.20.2-bookworm-slim AS runtime
COPY --from=build /tmp/agentcom-sidecar-*.tgz /tmp/
RUN npm install -g --no-audit --no-fund /tmp/agentcom-sidecar-*.tgz && rm /tmp/*.tgz
COPY scripts/demo-handler.mjs /opt/agentcom/demo-handler.mjs
# The state dir holds the outbox of results not yet acknowledged: compose mounts a volume here.
# Created owner-only and owned by node, so a new named volume starts out the same.
ENV AGENTCOM_STATE_DIR=/home/node/.local/state/agentcom
RUN mkdir -p "$AGENTCOM_STATE_DIR" \
 && chown -R node:node /home/node/.local \
 && chmod 700 "$AGENTCOM_STATE_DIR"
USER node
CMD ["agentcom-sidecar", "run"]
