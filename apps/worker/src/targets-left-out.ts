import { collectionsOf, type Models } from '@connect/shared';

/**
 * A worker with no target fans every event out to nobody and marks it published: right for a
 * deployment whose targets come later (they get the users through `targets resync`), a silent
 * loss of callbacks for one whose worker was restarted without its settings (an env file left out
 * of a rolling restart). The two are told apart by what MongoDB holds: a target that was ever
 * delivered to has sync states until `targets forget` removes them.
 *
 * So when neither DOWNSTREAM_TARGETS nor DOWNSTREAM_TARGETS_FILE is set and a sync state exists,
 * this answers the problem to refuse to start with; an explicit `DOWNSTREAM_TARGETS='[]'` (or a
 * file holding `[]`) says "no target, on purpose" and is never refused (docs/operations.md).
 */
export async function targetsLeftOut(models: Models, env: NodeJS.ProcessEnv, configured: number): Promise<string | undefined> {
  if (configured > 0 || env.DOWNSTREAM_TARGETS?.trim() || env.DOWNSTREAM_TARGETS_FILE?.trim()) return undefined;
  // Any one document (no filter, so the limit of one is pushed down): cheap on MongoDB and FerretDB alike.
  const known = await collectionsOf(models).syncStates.findOne({}, { projection: { target: 1 } });
  if (!known) return undefined;
  return (
    `is not set, but this deployment delivers to "${known.target}" (its sync states are in MongoDB): a worker without targets ` +
    `would count every event published and send it nowhere. Set DOWNSTREAM_TARGETS (or DOWNSTREAM_TARGETS_FILE) as for the other workers; ` +
    `to run without targets on purpose, set DOWNSTREAM_TARGETS='[]' (and \`pnpm cli targets forget ${known.target}\` if it is gone for good)`
  );
}
