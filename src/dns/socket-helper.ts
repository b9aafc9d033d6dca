// Run by the gateway as `ip netns exec <vtep netns> node socket-helper.js ADDRESS PORT` with an IPC
// channel: binds the resolver's UDP socket and TCP server inside the vtep netns (a process cannot
// change its own namespace in Node), hands both to the gateway over the channel (SCM_RIGHTS) and
// exits. The gateway then owns them: no resolver process runs beside it, nothing to restart, and
// the sockets close when the gateway dies.

import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

function fail(message: string): never {
  process.stderr.write(`veil dns socket helper: ${message}\n`);
  process.exit(1);
}

const [address, portText] = process.argv.slice(2);
const port = Number(portText);
if (!address || !Number.isInteger(port) || port < 1 || port > 65_535) fail('usage: socket-helper.js ADDRESS PORT');
const send = process.send?.bind(process);
if (!send) fail('no IPC channel (run by the gateway)');

// The gateway died before taking the sockets: do not sit on the port.
process.on('disconnect', () => process.exit(1));

const udp = createSocket('udp4');
udp.once('error', (err) => fail(`udp ${address}:${port}: ${err.message}`));
udp.bind(port, address, () => {
  const tcp = createServer();
  tcp.once('error', (err) => fail(`tcp ${address}:${port}: ${err.message}`));
  tcp.listen({ port, host: address, backlog: 128 }, () => {
    send({ kind: 'udp' }, udp, undefined, (err) => {
      if (err) fail(`handing over the UDP socket: ${err.message}`);
      send({ kind: 'tcp' }, tcp, undefined, (err2) => {
        if (err2) fail(`handing over the TCP server: ${err2.message}`);
        process.disconnect?.();
        process.exit(0);
      });
    });
  });
});
