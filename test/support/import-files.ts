import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Models } from '@connect/shared';

/** A CSV in `dir` of `n` new users (ids unique to this call), and the ids: the importer tests' input. */
export function writeNewUsersCsv(dir: string, name: string, n: number): { file: string; ids: string[] } {
  const prefix = `${name}-${randomUUID().slice(0, 8)}`;
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  const file = join(dir, `${name}.csv`);
  writeFileSync(file, `provider_email,external_provider_id,speech_locale\n${ids.map((id) => `${id}@example.com,${id},ENGLISH_US`).join('\n')}\n`);
  return { file, ids };
}

/** How many of these users the organization has stored. */
export function storedUsers(models: Models, organizationId: string, ids: string[]): Promise<number> {
  return models.ProviderUser.countDocuments({ organization_id: organizationId, external_provider_id: { $in: ids } });
}
