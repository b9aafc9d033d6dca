// Captures what a namespace's underlay (eth0) carries while `traffic` runs, as UDP datagrams.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parsePcap, udpDatagrams, type UdpDatagram } from '../support/pcap.js';
import { waitFor } from '../../support/wait.js';
import type { Bed } from './bed.js';

export async function captureUdp(
  bed: Bed,
  ns: string,
  dir: string,
  name: string,
  filter: string,
  traffic: () => Promise<unknown>,
): Promise<UdpDatagram[]> {
  const file = join(dir, `${name}-${Date.now()}.pcap`);
  const tcpdump = bed.spawn(ns, [
    'tcpdump',
    '-i',
    'eth0',
    '-n',
    '-U',
    '--immediate-mode',
    '-s',
    '2048',
    '-w',
    file,
    filter,
  ]);
  try {
    await waitFor(() => /listening on/.test(tcpdump.stderr()), 5000, 'tcpdump listening');
    await traffic();
    // Let the last datagrams reach the capture before it stops.
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    await tcpdump.stop();
  }
  return existsSync(file) ? udpDatagrams(parsePcap(readFileSync(file))) : [];
}
