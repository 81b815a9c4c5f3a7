import type { Command } from './command.ts';
import { clientCommands } from './client-commands.ts';
import { deliveriesCommands } from './deliveries-command.ts';
import { orgCommands } from './org-commands.ts';
import { recoverCommand } from './recover-command.ts';
import { resyncCommand } from './resync-command.ts';
import { targetsCommands } from './targets-command.ts';
import { userCommands } from './user-commands.ts';

/** Every command of `pnpm cli`, in the order the global --help lists them (main.ts dispatches over it). */
export const COMMANDS: readonly Command[] = [
  ...orgCommands,
  ...clientCommands,
  ...userCommands,
  ...deliveriesCommands,
  recoverCommand,
  ...targetsCommands,
  resyncCommand,
];
