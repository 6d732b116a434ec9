// Where tests find the shared material: `../shared` beside the repository (CI lays a copy there;
// it is not always /work/shared), the bundled demo model, and the repository root.
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const SHARED_DIR = process.env.TITAN_SHARED_DIR ?? path.resolve(REPO_ROOT, '..', 'shared');
export const SHARED_MODEL_DIR = path.join(SHARED_DIR, 'models', 'code-llama-19m');
export const GOLDENS_DIR = path.join(SHARED_DIR, 'reference', 'tptt-0.12.1-goldens');
export const BUNDLED_MODEL_DIR = path.join(REPO_ROOT, 'media', 'models', 'code-llama-19m');
