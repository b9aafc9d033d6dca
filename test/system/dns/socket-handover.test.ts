// The resolver's sockets are bound by a helper process and handed over its IPC channel
// (docs/dns.md "Resolver"); here the helper runs without a namespace, as node -e.
import { createSocket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { openSocketsVia } from '../../../src/dns/plumbing.js';

describe('socket handover (openSocketsVia)', () => {
  // The same handover as socket-helper.js, run without a namespace: node -e with an IPC channel.
  const helper = `
    const dgram = require('node:dgram'); const net = require('node:net');
    const u = dgram.createSocket('udp4');
    u.bind(0, '127.0.0.1', () => { const t = net.createServer(); t.listen(u.address().port, '127.0.0.1', () => {
      process.send({ kind: 'udp' }, u, undefined, () => process.send({ kind: 'tcp' }, t, undefined, () => process.exit(0))); }); });`;

  it('receives a bound UDP socket and a listening TCP server that keep working after the helper exited', async () => {
    const { udp, tcp } = await openSocketsVia([process.execPath, '-e', helper]);
    try {
      const port = udp.address().port;
      expect((tcp.address() as { port: number }).port).toBe(port);
      const echoed = await new Promise<string>((resolve) => {
        udp.once('message', (m, r) => udp.send(m, r.port, r.address));
        const c = createSocket('udp4');
        c.on('message', (m) => {
          c.close();
          resolve(m.toString());
        });
        c.send('ping', port, '127.0.0.1');
      });
      expect(echoed).toBe('ping');
    } finally {
      udp.close();
      tcp.close();
    }
  });

  it("rejects with the helper's stderr when it exits without handing over", async () => {
    await expect(
      openSocketsVia([process.execPath, '-e', 'process.stderr.write("cannot bind: EADDRINUSE"); process.exit(1)']),
    ).rejects.toThrow(/exited before handing over.*EADDRINUSE/);
  });
});
