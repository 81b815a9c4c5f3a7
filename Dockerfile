# One image for the API, the worker, the CLI and the demo receiver; the compose
# file picks the command. Runs TypeScript through tsx, as `pnpm start:*` does.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
RUN npm install -g pnpm@10
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
COPY apps/api/package.json apps/api/
COPY apps/worker/package.json apps/worker/
COPY apps/importer/package.json apps/importer/
COPY packages/shared/package.json packages/shared/
COPY packages/local-services/package.json packages/local-services/
COPY packages/cli/package.json packages/cli/
COPY packages/client/package.json packages/client/
COPY packages/receiver/package.json packages/receiver/
COPY test/package.json test/
RUN pnpm install --frozen-lockfile

FROM deps AS build
COPY tsconfig.base.json tsconfig.json vitest.config.ts ./
COPY apps apps
COPY packages packages
COPY scripts scripts
COPY test test
# Type-check in the image build so a broken tree never becomes an image.
RUN pnpm typecheck

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=node:node /app /app
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--import", "tsx", "apps/api/src/main.ts"]
