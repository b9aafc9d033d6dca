// The underlay MTU at start (docs/wire.md "MTU"): --mtu wins; else the MTU of the interface holding the
// advertised address, clamped into the range --mtu takes; the default when no interface holds it.
import { describe, expect, it } from 'vitest';
import type { CommandRunner } from '../../src/host/exec.js';
import { underlayMtuFor } from '../../src/main.js';

/** `ip -j addr show` of a host with lo, eth0 (198.18.0.1) and a jumbo eth1 (10.0.0.1). */
const ADDRS = JSON.stringify([
  { ifname: 'lo', mtu: 65536, addr_info: [{ family: 'inet', local: '127.0.0.1' }] },
  {
    ifname: 'eth0',
    mtu: 1460,
    addr_info: [
      { family: 'inet', local: '198.18.0.1' },
      { family: 'inet6', local: 'fe80::1' },
    ],
  },
  { ifname: 'eth1', mtu: 9001, addr_info: [{ family: 'inet', local: '10.0.0.1' }] },
]);
const run: CommandRunner = async (cmd, args) => {
  expect([cmd, ...args]).toEqual(['ip', '-j', 'addr', 'show']);
  return { stdout: ADDRS, stderr: '' };
};

function recorder() {
  const lines: Array<{ level: string; msg: string; fields: unknown }> = [];
  return {
    lines,
    log: {
      info: (fields: unknown, msg: string) => void lines.push({ level: 'info', msg, fields }),
      warn: (fields: unknown, msg: string) => void lines.push({ level: 'warn', msg, fields }),
    } as never,
  };
}

describe('underlay MTU', () => {
  it('--mtu wins without looking at the interfaces', async () => {
    const r = recorder();
    const never: CommandRunner = async () => {
      throw new Error('not asked');
    };
    expect(await underlayMtuFor(1400, '198.18.0.1', never, r.log)).toEqual({ mtu: 1400, from: '--mtu' });
  });

  it('is the MTU of the interface holding the advertised address', async () => {
    const r = recorder();
    expect(await underlayMtuFor(undefined, '198.18.0.1', run, r.log)).toEqual({ mtu: 1460, from: 'eth0' });
    expect(r.lines).toEqual([
      { level: 'info', msg: 'underlay MTU from the interface', fields: { interface: 'eth0', mtu: 1460 } },
    ]);
  });

  it('is clamped into 1280..9000, and says so', async () => {
    const r = recorder();
    expect(await underlayMtuFor(undefined, '10.0.0.1', run, r.log)).toEqual({ mtu: 9000, from: 'eth1' });
    expect(await underlayMtuFor(undefined, '127.0.0.1', run, r.log)).toEqual({ mtu: 9000, from: 'lo' });
    expect(r.lines.map((l) => l.level)).toEqual(['warn', 'warn']);
  });

  it('is the default, with a warning, when no interface holds the address (NAT) or ip fails', async () => {
    const r = recorder();
    expect(await underlayMtuFor(undefined, '203.0.113.7', run, r.log)).toEqual({ mtu: 1500, from: 'default' });
    const failing: CommandRunner = async () => {
      throw new Error('ip: not found');
    };
    expect(await underlayMtuFor(undefined, '198.18.0.1', failing, r.log)).toEqual({ mtu: 1500, from: 'default' });
    expect(r.lines.map((l) => `${l.level} ${l.msg}`)).toEqual([
      'warn no interface holds the advertised address; underlay MTU is the default (--mtu sets it)',
      'warn could not read the interfaces',
      'warn no interface holds the advertised address; underlay MTU is the default (--mtu sets it)',
    ]);
  });
});
