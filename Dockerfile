# Lifeboat: etcd backup and disaster recovery for kubeadm clusters.
#
# Two steps, from the repository's root, after `npm ci`:
#
#   bash scripts/image-context.sh
#   docker build -t ghcr.io/lifeboat-backup/lifeboat:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# The first prepares .cache/image/ (dist/ from tsc, package.json, the production node_modules
# from `npm ci --omit=dev`), the only part of the repository that .dockerignore lets into the
# build context. The build then downloads nothing: it pulls the official node and etcd images
# (and no frontend image: there is no `# syntax=` line, the builder's own reads this file),
# copies, and runs no package manager (no apt-get, no npm, no curl). The node_modules are all
# JavaScript, so the same context serves every platform both base images are built for.
#
# Two stages the runtime copies from, and the runtime stage:
#   etcd36, etcd35  the official etcd release images, only to copy etcdutl of each minor
#                   (snapshot status and restore: use the one that matches the cluster's etcd,
#                   tools.etcdutl) and etcd 3.6 (restore drills start a throwaway member). Static
#                   Go binaries, so they run on any Linux base.
#   runtime         Node slim (its node is the image's only one; the context carries none), dist/,
#                   the production node_modules, package.json (`lifeboat --version` reads it).
#
# Runs as uid/gid 65532 (no login, no home) by default. The DaemonSet runs it as uid 0 with every
# capability dropped: deploy/README.md, section 4, says why.
#
# Versions. NODE_VERSION is the node dev dependency's (package.json); ETCD_36 and ETCD_35 are
# scripts/versions.env's, which the tests' etcd binaries come from; VERSION is package.json's.
# test/integration/image.test.ts checks all four, and builds the context and assembles the runtime
# stage's files from the COPY lines below without a Docker engine. Restores need etcd 3.5.10 or
# later (`etcdutl snapshot restore --bump-revision --mark-compacted`).
ARG NODE_VERSION=24.21.0
ARG DEBIAN_RELEASE=bookworm
ARG ETCD_36=3.6.17
ARG ETCD_35=3.5.36

FROM gcr.io/etcd-development/etcd:v${ETCD_36} AS etcd36

FROM gcr.io/etcd-development/etcd:v${ETCD_35} AS etcd35

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim
ARG NODE_VERSION
ARG DEBIAN_RELEASE
ARG ETCD_36
ARG ETCD_35
# package.json's version; the tests check that they are the same.
ARG VERSION=0.1.0
# The commit and the build time (RFC 3339), given by the build command above.
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="etcd backup and disaster recovery for kubeadm clusters: verified, encrypted, streaming backups to a local directory or S3/Ceph RGW" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/lifeboat-backup/lifeboat" \
      org.opencontainers.image.url="https://github.com/lifeboat-backup/lifeboat" \
      org.opencontainers.image.documentation="https://github.com/lifeboat-backup/lifeboat/blob/main/deploy/README.md" \
      org.opencontainers.image.vendor="Lifeboat" \
      org.opencontainers.image.base.name="docker.io/library/node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim" \
      io.lifeboat.etcdutl.versions="${ETCD_36} ${ETCD_35}"

# - A user for uid/gid 65532, so tools that look the user up find one.
# - No setuid/setgid programs: nothing in the image can raise a process's privileges.
# - /usr/local/bin/lifeboat, the CLI on PATH.
RUN groupadd --gid 65532 lifeboat \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin lifeboat \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && install -d -o 65532 -g 65532 -m 0700 /var/lib/lifeboat /var/lib/lifeboat/state /var/lib/lifeboat/backups \
    && ln -s /app/dist/cli/main.js /usr/local/bin/lifeboat

# etcdutl is 3.6's, the default of tools.etcdutl; etcdutl-3.5 is for clusters on etcd 3.5.
COPY --from=etcd36 /usr/local/bin/etcdutl /usr/local/bin/etcd /usr/local/bin/
COPY --from=etcd35 /usr/local/bin/etcdutl /usr/local/bin/etcdutl-3.5
# The prepared context (scripts/image-context.sh); root-owned and world-readable in the image.
COPY .cache/image/node_modules /app/node_modules
COPY .cache/image/dist /app/dist
COPY .cache/image/package.json /app/package.json

ENV NODE_ENV=production
WORKDIR /app
USER 65532:65532
# 8443: the HTTPS API (api.listen). 9464: /metrics, /healthz and /readyz over plain HTTP (metrics.listen).
EXPOSE 8443 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:9464/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/dist/cli/main.js"]
CMD ["serve", "--config", "/etc/lifeboat/config.yaml"]
