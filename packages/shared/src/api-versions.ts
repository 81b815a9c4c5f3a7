/**
 * API versions, oldest first. `x-nabla-next` is the newest, previews included
 * (the public sample client sends it), so it sorts after every dated version.
 */
export const API_VERSIONS = ['2026-02-13', '2026-03-23', 'x-nabla-next'] as const;
export type ApiVersion = (typeof API_VERSIONS)[number];

/** What an organization is pinned to when it is created without a choice: the latest dated version. */
export const DEFAULT_PINNED_API_VERSION: ApiVersion = '2026-03-23';

const DATED = /^\d{4}-\d{2}-\d{2}$/;

export function isApiVersion(value: string): value is ApiVersion {
  return (API_VERSIONS as readonly string[]).includes(value);
}

/** True when `value` has the right shape (a date or the preview literal) whether or not it is known. */
export function isWellFormedApiVersion(value: string): boolean {
  return DATED.test(value) || value === 'x-nabla-next';
}

/** `a` is at least `b` in the order of API_VERSIONS. */
export function apiVersionAtLeast(a: ApiVersion, b: ApiVersion): boolean {
  return API_VERSIONS.indexOf(a) >= API_VERSIONS.indexOf(b);
}
