import type { CliContext } from './main.ts';

/** `deliveries list|replay`: wired to the worker's dead-letter functions. */
export async function runDeliveriesCommand(
  _ctx: CliContext,
  _verb: string | undefined,
  _args: { status?: string; allFailed: boolean; id?: string },
): Promise<unknown> {
  throw new Error('deliveries commands arrive with the worker');
}
