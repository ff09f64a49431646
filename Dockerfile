# syntax=docker/dockerfile:1
#
# Lifeboat: etcd backup and disaster recovery for kubeadm clusters.
#
#   docker build -t ghcr.io/lifeboat-backup/lifeboat:0.1.0 .
#
# Three build stages and one runtime stage:
#   etcd    the official etcd release image, only to copy etcdutl (snapshot status and restore)
#           and etcd (restore drills start a throwaway member on loopback). Both are static Go
#           binaries, so they run on any Linux base.
#   build   `npm ci` with the dev dependencies, then tsc (`npm run build`) into dist/.
#   deps    the production dependencies only (`npm ci --omit=dev`), without install scripts.
#   runtime Node slim, dist/, production node_modules, package.json (the version comes from it).
#
# Runs as uid/gid 65532 (no login, no home) by default. The DaemonSet runs it as uid 0 with every
# capability dropped: deploy/README.md, section 4, says why.
#
# Versions are pinned here. Keep the etcd minor at 3.5 or later: restores use
# `etcdutl snapshot restore --bump-revision --mark-compacted` (3.5.10+).
ARG NODE_VERSION=24.21.0
ARG DEBIAN_RELEASE=bookworm
ARG ETCD_VERSION=3.5.21

FROM gcr.io/etcd-development/etcd:v${ETCD_VERSION} AS etcd

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No install scripts: the one that matters here, the `node` dev dependency's download of a second
# Node, is not needed; this image's Node runs the compiler (`npm run build` is the same tsc).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src/ src/
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json && chmod 0755 dist/cli/main.js

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS deps
WORKDIR /src
COPY package.json package-lock.json ./
# No dependency needs an install script; skipping them keeps the image to what the lock file says.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim
ARG NODE_VERSION
ARG DEBIAN_RELEASE
ARG ETCD_VERSION
LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="etcd backup and disaster recovery for kubeadm clusters: verified, encrypted, streaming backups to a local directory or S3/Ceph RGW" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/lifeboat-backup/lifeboat" \
      org.opencontainers.image.url="https://github.com/lifeboat-backup/lifeboat" \
      org.opencontainers.image.documentation="https://github.com/lifeboat-backup/lifeboat/blob/main/deploy/README.md" \
      org.opencontainers.image.vendor="Lifeboat" \
      org.opencontainers.image.base.name="docker.io/library/node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim" \
      io.lifeboat.etcd.version="${ETCD_VERSION}"

# - A user for uid/gid 65532, so tools that look the user up find one.
# - No setuid/setgid programs: nothing in the image can raise a process's privileges.
RUN groupadd --gid 65532 lifeboat \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin lifeboat \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && install -d -o 65532 -g 65532 -m 0700 /var/lib/lifeboat /var/lib/lifeboat/state /var/lib/lifeboat/backups

COPY --from=etcd /usr/local/bin/etcdutl /usr/local/bin/etcd /usr/local/bin/
COPY --from=deps /src/node_modules /app/node_modules
COPY --from=build /src/dist /app/dist
COPY package.json /app/package.json
RUN ln -s /app/dist/cli/main.js /usr/local/bin/lifeboat

ENV NODE_ENV=production
WORKDIR /app
USER 65532:65532
# 8443: the HTTPS API (api.listen). 9464: /metrics, /healthz and /readyz over plain HTTP (metrics.listen).
EXPOSE 8443 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/dist/cli/main.js"]
CMD ["serve", "--config", "/etc/lifeboat/config.yaml"]
