import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, cpSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CNI_TYPE } from './spec.js';

/*
 * `veil cni install DIR` (docs/cni.md "Installing"): puts veil-cni into a runtime's plugin directory
 * (/opt/cni/bin, /usr/lib/cni) with the Node that runs this command, so a host needs neither Node nor
 * npm, and the appliance image can install it on its host through a bind mount. The plugin loads only
 * Node's own modules, so the compiled sources are all it takes.
 */

/** The compiled sources this code runs from (dist/src). */
const SOURCES = resolve(import.meta.dirname, '..');
/** Beside the launcher: DIR/veil-cni.d/<install>/{node, package.json, src/}. */
const BUNDLES = `${CNI_TYPE}.d`;

export function installCni(dir: string, node: string = process.execPath): string {
  const bundles = join(dir, BUNDLES);
  mkdirSync(bundles, { recursive: true });
  // Each install in a directory of its own, and the launcher swapped by rename: a runtime calling the
  // plugin meanwhile runs the old one or the new one, never a half-written one.
  const id = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const staging = join(bundles, `.${id}`);
  mkdirSync(staging);
  try {
    copyFileSync(node, join(staging, 'node'));
    chmodSync(join(staging, 'node'), 0o755);
    // The sources are ES modules: the package.json beside them says so.
    writeFileSync(join(staging, 'package.json'), '{ "type": "module", "private": true }\n');
    cpSync(SOURCES, join(staging, 'src'), { recursive: true, filter: (p) => !p.endsWith('.map') });
    renameSync(staging, join(bundles, id));
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  const launcher = join(dir, CNI_TYPE);
  writeFileSync(
    `${launcher}.new`,
    [
      '#!/bin/sh',
      '# veil-cni (docs/cni.md): the CNI plugin, run by the Node installed beside it.',
      `here=$(dirname "$(readlink -f "$0")")`,
      `exec "$here/${BUNDLES}/${id}/node" "$here/${BUNDLES}/${id}/src/cni/main.js" "$@"`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  renameSync(`${launcher}.new`, launcher);
  // Earlier installs go once nothing points at them any more.
  for (const old of readdirSync(bundles)) if (old !== id) rmSync(join(bundles, old), { recursive: true, force: true });
  return launcher;
}
