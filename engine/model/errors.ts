/**
 * A problem with the user's model files or settings: always reported as one clear line naming the
 * file, the field and, where there is one, the fix. Anything else escaping the engine is a bug.
 */
export class ModelError extends Error {
  override readonly name = 'ModelError';
}

/**
 * Text taken from a user's file (a name, a value), cut to `max` characters for an error message, so a
 * hostile or corrupt file cannot turn the one-line message into megabytes.
 */
export function clip(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}
