// The table of `titan` commands.
import { alignCommand } from './align-command';
import { benchCommand, perplexityCommand } from './bench-commands';
import { askCommand, memoryCommand } from './memory-commands';
import { convertCommand, generateCommand, logitsCommand } from './model-commands';
import { streamCommand } from './stream-command';
import { titanizeCommand } from './titanize-command';
import type { Command } from './types';

export { UsageError, type Command, type CommandContext, type OptionSpec } from './types';

export const COMMANDS: Command[] = [convertCommand, titanizeCommand, generateCommand, logitsCommand, memoryCommand, askCommand, perplexityCommand, benchCommand, streamCommand, alignCommand];
