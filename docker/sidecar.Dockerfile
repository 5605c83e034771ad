# Example agentcom sidecar image (the real thing is `npm install -g agentcom-sidecar` on the
# agent's machine). Build from the repository root:
#   docker build -f docker/sidecar.Dockerfile -t agentcom-sidecar .
# syntax=docker/dockerfile:1

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY hub/package.json hub/
COPY sidecar/package.json sidecar/
RUN npm ci --no-audit --no-fund
COPY shared/ shared/
COPY sidecar/ sidecar/
RUN node sidecar/build.mjs && cd sidecar && npm pack --pack-destination /tmp

FROM node:20-bookworm-slim AS runtime
COPY --from=build /tmp/agentcom-sidecar-*.tgz /tmp/
RUN npm install -g --no-audit --no-fund /tmp/agentcom-sidecar-*.tgz && rm /tmp/*.tgz
COPY scripts/demo-handler.mjs /opt/agentcom/demo-handler.mjs
USER node
ENV AGENTCOM_STATE_DIR=/home/node/.local/state/agentcom
CMD ["agentcom-sidecar", "run"]
