// The `titan` command line. Every command: --help, --json where it reports, exit 0 on success and
// a one-line reason with a non-zero exit on failure (1: the work failed, 2: the command line is wrong).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ModelError } from './model/errors';
import { COMMANDS, UsageError, type Command } from './commands/index';

function usage(): string {
  const lines = ['usage: titan <command> [options]', '', 'commands:'];
  for (const c of COMMANDS) lines.push(`  ${c.name.padEnd(11)} ${c.summary}`);
  lines.push('', 'Run `titan <command> --help` for a command\'s options.');
  return lines.join('\n');
}

function commandHelp(c: Command): string {
  const lines = [`usage: titan ${c.usage}`, '', c.summary, ''];
  for (const [name, o] of Object.entries(c.options)) {
    const flag = `--${name}${o.type === 'string' ? ' <value>' : ''}`;
    lines.push(`  ${flag.padEnd(26)} ${o.help}`);
  }
  lines.push(`  ${'--help'.padEnd(26)} show this help`);
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`titan: unknown command "${name}" (commands: ${COMMANDS.map((c) => c.name).join(', ')})\n`);
    return 2;
  }
  const options: ParseArgsConfig['options'] = { help: { type: 'boolean', short: 'h' } };
  for (const [k, o] of Object.entries(command.options)) options[k] = { type: o.type, ...(o.multiple ? { multiple: true } : {}) };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
  } catch (e) {
    process.stderr.write(`titan ${name}: ${(e as Error).message.split('\n')[0]} (see titan ${name} --help)\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(commandHelp(command) + '\n');
    return 0;
  }
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    await command.run({ positionals: parsed.positionals, values: parsed.values as Record<string, string | boolean | string[] | undefined>, signal: controller.signal });
    // A command may set its own exit status (generate: 130 when interrupted); run() would overwrite it.
    return Number(process.exitCode ?? 0);
  } catch (e) {
    const err = e as Error;
    if (err instanceof UsageError) {
      process.stderr.write(`titan ${name}: ${err.message} (see titan ${name} --help)\n`);
      return 2;
    }
    if (err instanceof ModelError || err.name === 'CancelledError' || err.name === 'MemoryError') {
      process.stderr.write(`titan ${name}: ${err.message}\n`);
      return 1;
    }
    // Anything else is a bug; still one line on stderr, with the stack only when asked for.
    process.stderr.write(`titan ${name}: internal error: ${err.message?.split('\n')[0] ?? String(e)}\n`);
    if (process.env.TITAN_DEBUG) process.stderr.write(`${err.stack}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Runs the CLI with this process's arguments and sets the exit code. */
export function run(): void {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`titan: internal error: ${String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

if (require.main === module) run();
