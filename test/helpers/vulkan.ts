// Whether this machine has a Vulkan loader, so onnxruntime's WebGPU provider can start (CI installs
// Mesa's software driver, lavapipe; tests that need the provider skip without it).
import * as fs from 'node:fs';
import * as path from 'node:path';

export const hasVulkan = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'].some((d) => fs.existsSync(path.join(d, 'libvulkan.so.1')));
