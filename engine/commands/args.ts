// Checking command-line values: every problem is a UsageError naming the option and what it takes.
import { UsageError, type CommandContext } from './types';

export function positional(ctx: CommandContext, index: number, what: string): string {
  const v = ctx.positionals[index];
  if (v === undefined) throw new UsageError(`missing ${what}`);
  return v;
}

export function noExtraPositionals(ctx: CommandContext, count: number): void {
  if (ctx.positionals.length > count) throw new UsageError(`unexpected argument "${ctx.positionals[count]}"`);
}

export function str(ctx: CommandContext, name: string): string | undefined {
  const v = ctx.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function flag(ctx: CommandContext, name: string): boolean {
  return ctx.values[name] === true;
}

export function int(ctx: CommandContext, name: string, fallback: number, min = 0): number {
  const v = str(ctx, name);
  if (v === undefined) return fallback;
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`--${name} must be an integer, got "${v}"`);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

export function num(ctx: CommandContext, name: string, fallback: number, min = -Infinity, max = Infinity): number {
  const v = str(ctx, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number in [${min}, ${max}], got "${v}"`);
  return n;
}

export function intList(ctx: CommandContext, name: string, min = 0): number[] | undefined {
  const v = str(ctx, name);
  if (v === undefined) return undefined;
  const parts = v.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) throw new UsageError(`--${name} must be a comma-separated list of non-negative integers, got "${v}"`);
  const out = parts.map(Number);
  if (out.some((n) => !Number.isSafeInteger(n) || n < min)) throw new UsageError(`--${name} values must be integers ≥ ${min}`);
  return out;
}

export function choice<T extends string>(ctx: CommandContext, name: string, choices: readonly T[], fallback: T): T {
  const v = str(ctx, name);
  if (v === undefined) return fallback;
  if (!(choices as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got "${v}"`);
  return v as T;
}
