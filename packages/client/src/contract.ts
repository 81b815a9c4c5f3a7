/**
 * The wire contract (request, user and callback schemas, zod only), compiled
 * into this package: the SDK installs on its own, outside this repository, so
 * it cannot depend on @connect/shared, the server's domain with its MongoDB and
 * BullMQ dependencies. `pnpm build` follows this import and emits the contract
 * into this package's dist/ (docs/operations.md, "The SDK packages").
 */
export * from '../../shared/src/contract.ts';
