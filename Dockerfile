# The production image: one image for the API, the worker, the CLI and the demo
# receiver (docker-compose.yml picks the command). Two stages:
#   build   installs everything, compiles TypeScript to JavaScript (`pnpm build`)
#           and stages the compiled packages with their production dependencies;
#   runtime holds only that staged folder and runs `node .../dist/main.js`: no tsx,
#           no TypeScript sources, no tests, no dev dependencies, not root.
# How the pieces fit and how to measure the staged folder: docs/operations.md.
FROM node:20-bookworm-slim AS build
ENV CI=1
RUN npm install -g pnpm@10.34.9
WORKDIR /src
# Everything (minus .dockerignore): the install must see every workspace package
# the lockfile names, and this stage is never shipped.
COPY . .
RUN pnpm install --frozen-lockfile && pnpm build
# What runs: compiled packages and production dependencies only.
RUN ./scripts/stage-image.sh /app

FROM node:20-bookworm-slim AS runtime
# "built": workspace packages resolve to their dist/ (their exports' "built"
# condition), not to the TypeScript sources the repository runs with tsx.
# --max-old-space-size: a heap cap, so that memory stays flat (docs/operations.md,
# Memory); the bench runs the API and the worker with these same V8 flags.
ENV NODE_ENV=production NODE_OPTIONS="--conditions=built --max-old-space-size=1024"
WORKDIR /app
# Owned by root, run as `node`: the application cannot rewrite itself.
COPY --from=build /app /app
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "apps/api/dist/main.js"]
