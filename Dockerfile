# syntax=docker/dockerfile:1
# RippleCache server image.
#   docker build -t ripplecache:0.1.0 .
#   docker run --rm -p 7420:7420 -p 9090:9090 ripplecache:0.1.0
# Kubernetes manifests: k8s/ (see k8s/README.md). Node 22 LTS; the code also runs on Node 20.

# ---- build: compile TypeScript with the dev dependencies ----
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, the compiled server and the CLI launcher ----
FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY bin ./bin
# Not root, and no entry in /etc/passwd needed: Kubernetes runs it as 10001 too
# (runAsUser, runAsNonRoot). Files stay root-owned and read-only for the server.
USER 10001:10001
# 7420: Connect, gRPC and gRPC-Web (HTTP/1.1 and h2c); 9090: admin HTTP (/livez, /readyz, /metrics).
EXPOSE 7420 9090
# Node handles SIGTERM itself (graceful drain), so it can be PID 1 without an init.
# The V8 flag: see src/cli/node-flags.ts.
ENTRYPOINT ["node", "--initial-old-space-size=64", "bin/ripplecache.js"]
CMD ["serve", "--host", "0.0.0.0"]
