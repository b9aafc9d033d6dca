import { randomInt } from 'node:crypto';

/**
 * A loopback address of this test's own (127.0.0.0/8 is all local, RFC 1122 §3.2.1.3): unit tests run
 * in parallel, and ports picked by the kernel on 127.0.0.1 can clash between a UDP and a TCP socket of
 * different tests. Never 127.0.0.x, which the host's own services use.
 */
export function privateLoopback(): string {
  return `127.${1 + randomInt(254)}.${randomInt(256)}.${1 + randomInt(254)}`;
}
