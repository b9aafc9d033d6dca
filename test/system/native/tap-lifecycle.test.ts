// A TAP port's life in the native data path (docs/plumbing.md "The TAP port"), in a namespace of the
// bed: made in the namespace it is asked for, once however often it is asked, gone with its network,
// and never a descriptor left behind over 200 networks made and removed; refused, with nothing made,
// for a plain network or an unknown one.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBed, type Bed } from '../netns/bed.js';

const DIST = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'dist');
const VNI = 4130;
const ROUNDS = 200;

/** In the host netns: a native data path whose networks get TAP ports in the namespace argv[2]. */
const SCRIPT = `
const { readdirSync } = await import('node:fs');
const [dist, netns, vniText, roundsText] = process.argv.slice(1);
const vni = Number(vniText), rounds = Number(roundsText);
const { NativeDataPath } = await import(dist + '/src/vxlan/native/datapath.js');
const dp = new NativeDataPath({ underlayAddress: '127.0.0.1', hostAddress: '127.0.0.1', vtepAddress: '127.0.0.2',
  peerNet: '169.254.64.0', relayPlain: true, ports: { esp: 24500, plain: 24789, delivery: 0, gateway: 24021 } });
await dp.start();
const fds = () => readdirSync('/proc/self/fd').length;
const refusal = (f) => { try { f(); return 'none'; } catch (e) { return e.code; } };
const out = {};
out.unknown = refusal(() => dp.tapPort.attach(vni, netns, 'tp' + vni));
dp.setNetwork({ vni: vni + 1, encrypted: false });
out.plain = refusal(() => dp.tapPort.attach(vni + 1, netns, 'tp' + (vni + 1)));
out.badName = refusal(() => dp.tapPort.attach(vni, netns, 'tp%d'));
dp.setNetwork({ vni, encrypted: true });
// Before fd0 is counted, whatever opens descriptors of its own once: signals' first listeners, and
// stdout and stderr on pipes.
console.log('start');
console.error('start');
process.on('SIGTERM', async () => { await dp.stop(); process.exit(0); });
process.once('SIGUSR1', () => {
  dp.removeNetwork(vni);
  const before = fds();
  for (let i = 0; i < rounds; i++) {
    dp.setNetwork({ vni, encrypted: true });
    dp.tapPort.attach(vni, netns, 'tp' + vni);
    if (i % 2) dp.tapPort.detach(vni);
    dp.removeNetwork(vni);
  }
  console.log('churned ' + JSON.stringify({ closed: before - fd0, fdsLeft: fds() - before }));
});
const fd0 = fds();
out.offloads = dp.tapPort.attach(vni, netns, 'tp' + vni).offloads;
out.again = dp.tapPort.attach(vni, netns, 'tp' + vni).offloads;
out.fdsWithPort = fds() - fd0;
console.log('attached ' + JSON.stringify(out));
setInterval(() => {}, 1 << 30);
`;

let bed: Bed;

beforeAll(async () => {
  bed = await createBed({ hosts: 1 });
}, 60_000);

afterAll(async () => {
  await bed?.destroy();
});

async function tapIn(ns: string): Promise<string[]> {
  const r = await bed.exec(ns, ['ip', '-j', 'link', 'show', 'type', 'tun'], { allowFail: true });
  return r.code === 0 && r.stdout.trim()
    ? (JSON.parse(r.stdout) as Array<{ ifname: string }>).map((l) => l.ifname)
    : [];
}

it('is made where asked, once, goes with its network, and 200 networks later no descriptor is left', async () => {
  const host = bed.hosts[0]!;
  const elsewhere = await bed.namespace('t');
  const gw = bed.spawn(host.netns, [
    process.execPath,
    '--input-type=module',
    '-e',
    SCRIPT,
    DIST,
    `/run/netns/${elsewhere}`,
    String(VNI),
    String(ROUNDS),
  ]);
  const attached = JSON.parse((await gw.waitFor(/^attached /, 20_000)).slice('attached '.length));
  expect(attached).toEqual({
    unknown: 'VEIL_ERR_NATIVE_ARGS',
    plain: 'VEIL_ERR_NATIVE_ARGS',
    badName: 'VEIL_ERR_NATIVE_ARGS',
    offloads: true,
    again: true, // already there: nothing made, the same answer
    fdsWithPort: 1,
  });
  expect(await tapIn(elsewhere)).toEqual([`tp${VNI}`]);
  expect(await tapIn(host.netns)).toEqual([]);
  process.kill(gw.pid, 'SIGUSR1');
  const churned = JSON.parse((await gw.waitFor(/^churned /, 60_000)).slice('churned '.length));
  expect(churned).toEqual({ closed: 0, fdsLeft: 0 }); // the port's descriptor went with its network
  expect(await tapIn(elsewhere)).toEqual([]);
}, 120_000);
