export { importUsers, ImportAbortedError, unreachableLimit } from './import-users.ts';
export type { ImportCounts, ImportOptions } from './import-users.ts';
export { readUserRows, validateRow, bodyOfFlatRow, CSV_COLUMNS, InputFileError } from './read-user-rows.ts';
export type { UserRow } from './read-user-rows.ts';
