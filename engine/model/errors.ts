/**
 * A problem with the user's model files or settings: always reported as one clear line naming the
 * file, the field and, where there is one, the fix. Anything else escaping the engine is a bug.
 */
export class ModelError extends Error {
  override readonly name = 'ModelError';
}
