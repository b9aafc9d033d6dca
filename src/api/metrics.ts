import type { GatewayStatus } from '../vxlan/gateway.js';

/** Prometheus text exposition (version 0.0.4) of the gateway's per-(peer, network) counters. */
export function renderMetrics(status: GatewayStatus): string {
  const lines: string[] = [];
  const family = (name: string, help: string, type: 'counter' | 'gauge') => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  const labels = (o: Record<string, string | number>) =>
    '{' +
    Object.entries(o)
      .map(([k, v]) => `${k}="${String(v).replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`)
      .join(',') +
    '}';

  const counters: Array<[string, string, (p: GatewayStatus['pairs'][number]) => number]> = [
    ['veil_tx_packets_total', 'Datagrams sent to a peer (sealed or plain).', (p) => p.txPackets],
    ['veil_tx_bytes_total', 'VXLAN bytes sent to a peer, before encryption.', (p) => p.txBytes],
    ['veil_rx_packets_total', 'Datagrams from a peer delivered to the local VTEP.', (p) => p.rxPackets],
    ['veil_rx_bytes_total', 'VXLAN bytes from a peer delivered to the local VTEP.', (p) => p.rxBytes],
  ];
  for (const [name, help, get] of counters) {
    family(name, help, 'counter');
    for (const p of status.pairs)
      lines.push(`${name}${labels({ peer: p.peer, vni: p.vni, encrypted: String(p.encrypted) })} ${get(p)}`);
  }
  family('veil_drops_total', 'Datagrams dropped, by reason; peer="" when no peer could be named.', 'counter');
  for (const p of status.pairs) {
    for (const [reason, n] of Object.entries(p.drops))
      lines.push(`veil_drops_total${labels({ peer: p.peer, vni: p.vni, reason })} ${n}`);
  }
  for (const [reason, n] of Object.entries(status.unattributedDrops))
    lines.push(`veil_drops_total${labels({ peer: '', vni: '', reason })} ${n}`);
  family('veil_sa_sequence_headroom', 'Sequence numbers the current outbound SA may still use.', 'gauge');
  for (const p of status.pairs) {
    if (p.outbound)
      lines.push(
        `veil_sa_sequence_headroom${labels({ peer: p.peer, vni: p.vni, spi: p.outbound.spi, epoch: p.outbound.epoch })} ${p.outbound.sequenceHeadroom}`,
      );
  }
  family(
    'veil_pair_protected',
    '1 when traffic to this peer on this network is sealed (encrypted network with an outbound SA), else 0.',
    'gauge',
  );
  for (const p of status.pairs)
    lines.push(`veil_pair_protected${labels({ peer: p.peer, vni: p.vni })} ${p.encrypted && p.outbound ? 1 : 0}`);
  family('veil_sa_sealed_total', 'Packets sealed with the current outbound SA.', 'counter');
  for (const p of status.pairs) {
    if (p.outbound)
      lines.push(
        `veil_sa_sealed_total${labels({ peer: p.peer, vni: p.vni, spi: p.outbound.spi, epoch: p.outbound.epoch })} ${p.outbound.sealed}`,
      );
  }
  family('veil_sa_opened_total', 'Packets opened with each installed inbound SA.', 'counter');
  for (const p of status.pairs) {
    for (const i of p.inbound)
      lines.push(`veil_sa_opened_total${labels({ peer: p.peer, vni: p.vni, spi: i.spi, epoch: i.epoch })} ${i.opened}`);
  }
  if (status.vtepFirewall && 'packets' in status.vtepFirewall) {
    family(
      'veil_vtep_injection_dropped_packets_total',
      'Datagrams to the local VTEP (UDP 4789) that did not come from the gateway, dropped by its firewall.',
      'counter',
    );
    lines.push(`veil_vtep_injection_dropped_packets_total ${status.vtepFirewall.packets}`);
  }
  if (status.portSecurity && 'spoofed' in status.portSecurity) {
    family(
      'veil_port_security_dropped_packets_total',
      "Frames from container ports dropped by port security: a source MAC, IPv4 source or ARP sender not the port's own (spoofed-source), or neither IPv4 nor ARP (not-ipv4).",
      'counter',
    );
    lines.push(
      `veil_port_security_dropped_packets_total${labels({ reason: 'spoofed-source' })} ${status.portSecurity.spoofed.packets}`,
      `veil_port_security_dropped_packets_total${labels({ reason: 'not-ipv4' })} ${status.portSecurity.notIpv4.packets}`,
    );
  }
  if (status.plainNetworks && 'networks' in status.plainNetworks) {
    const plain = status.plainNetworks;
    family(
      'veil_plain_vxlan_dropped_packets_total',
      "Plain VXLAN to the host (UDP 4789) dropped by the underlay firewall: from no peer (not-a-peer), or with an encrypted network's VNI (plaintext-on-encrypted).",
      'counter',
    );
    lines.push(
      `veil_plain_vxlan_dropped_packets_total${labels({ reason: 'not-a-peer' })} ${plain.notAPeer.packets}`,
      `veil_plain_vxlan_dropped_packets_total${labels({ reason: 'plaintext-on-encrypted' })} ${plain.plaintextOnEncrypted.packets}`,
    );
    family('veil_plain_network_packets_total', "Packets through a plain network's kernel VXLAN device.", 'counter');
    for (const n of plain.networks)
      lines.push(
        `veil_plain_network_packets_total${labels({ vni: n.vni, direction: 'rx' })} ${n.rxPackets}`,
        `veil_plain_network_packets_total${labels({ vni: n.vni, direction: 'tx' })} ${n.txPackets}`,
      );
  }
  family('veil_send_failures_total', 'Datagrams the gateway could not hand to a socket.', 'counter');
  lines.push(`veil_send_failures_total ${status.sendFailures}`);
  return lines.join('\n') + '\n';
}
