import { chmodSync, copyFileSync, cpSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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
/** Beside the plugin's launcher: DIR/veil-cni.d/{node, package.json, src/}. */
const BUNDLE = `${CNI_TYPE}.d`;

export function installCni(dir: string, node: string = process.execPath): string {
  const bundle = join(dir, BUNDLE);
  const staging = `${bundle}.new`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  copyFileSync(node, join(staging, 'node'));
  chmodSync(join(staging, 'node'), 0o755);
  // The sources are ES modules: the package.json beside them says so.
  writeFileSync(join(staging, 'package.json'), '{ "type": "module", "private": true }\n');
  cpSync(SOURCES, join(staging, 'src'), { recursive: true, filter: (p) => !p.endsWith('.map') });
  // Swapped in whole: a runtime calling the plugin meanwhile runs the old one or the new one.
  rmSync(bundle, { recursive: true, force: true });
  renameSync(staging, bundle);
  const launcher = join(dir, CNI_TYPE);
  writeFileSync(
    `${launcher}.new`,
    [
      '#!/bin/sh',
      '# veil-cni (docs/cni.md): the CNI plugin, run by the Node installed beside it.',
      `here=$(dirname "$(readlink -f "$0")")`,
      `exec "$here/${BUNDLE}/node" "$here/${BUNDLE}/src/cni/main.js" "$@"`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  renameSync(`${launcher}.new`, launcher);
  return launcher;
}
