// The nft scripts of the vtep netns (docs/plumbing.md "Port security"): each a single transaction,
// their text checked here; test/system/netns/plumbing.test.ts and port-security.test.ts apply them.
import { describe, expect, it } from 'vitest';
import { endpointLinkName } from '../../src/host/names.js';
import {
  PORT_NOT_IPV4_COUNTER,
  PORT_SECURITY_TABLE,
  PORT_SPOOFED_COUNTER,
  portRemovalScript,
  portRulesScript,
  portSecurityScript,
} from '../../src/vxlan/plumbing.js';

const PORT = endpointLinkName(4096, 'ep-1');

describe('port security scripts', () => {
  it('the table: both counters, the port map, and a prerouting chain that drops any container port the map does not name', () => {
    const lines = portSecurityScript().split('\n');
    expect(lines).toEqual([
      `add table bridge ${PORT_SECURITY_TABLE}`,
      `add counter bridge ${PORT_SECURITY_TABLE} ${PORT_SPOOFED_COUNTER}`,
      `add counter bridge ${PORT_SECURITY_TABLE} ${PORT_NOT_IPV4_COUNTER}`,
      `add map bridge ${PORT_SECURITY_TABLE} ports { type ifname : verdict; }`,
      `add chain bridge ${PORT_SECURITY_TABLE} prerouting { type filter hook prerouting priority filter; policy accept; }`,
      `flush chain bridge ${PORT_SECURITY_TABLE} prerouting`,
      `add rule bridge ${PORT_SECURITY_TABLE} prerouting iifname vmap @ports`,
      `add rule bridge ${PORT_SECURITY_TABLE} prerouting iifname "ve*" counter name "${PORT_SPOOFED_COUNTER}" drop`,
    ]);
    // Idempotent: nothing that would fail on a second run, nothing that empties the map.
    expect(portSecurityScript()).not.toMatch(/^(create|flush map|delete)/m);
  });

  it('a port: its own MAC only, then IPv4 from its address and ARP with its own sender, everything else dropped', () => {
    const script = portRulesScript(PORT, '02:42:0A:0A:01:05', '10.10.1.5');
    const t = `bridge ${PORT_SECURITY_TABLE}`;
    expect(script.split('\n')).toEqual([
      `add chain ${t} port_${PORT}`,
      `flush chain ${t} port_${PORT}`,
      `add rule ${t} port_${PORT} ether saddr != 02:42:0a:0a:01:05 counter name "port_spoofed" drop`,
      `add rule ${t} port_${PORT} ether type ip ip saddr 10.10.1.5 accept`,
      `add rule ${t} port_${PORT} ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 02:42:0a:0a:01:05 arp saddr ip 10.10.1.5 accept`,
      `add rule ${t} port_${PORT} ether type { ip, arp } counter name "port_spoofed" drop`,
      `add rule ${t} port_${PORT} counter name "port_not_ipv4" drop`,
      `add element ${t} ports { "${PORT}" : jump port_${PORT} }`,
    ]);
  });

  it('refuses what is not a container port, a MAC or an IPv4 address (nothing reaches nft unchecked)', () => {
    for (const port of ['vx4096', 'br4096', 've12', 've0123456789AB', 'veth0', 've0123456789ab; flush ruleset'])
      expect(() => portRulesScript(port, '02:00:00:00:00:01', '10.0.0.1'), port).toThrow(RangeError);
    expect(() => portRulesScript(PORT, '02:00:00:00:00', '10.0.0.1')).toThrow(RangeError);
    expect(() => portRulesScript(PORT, '02:00:00:00:00:01', '10.0.0.1/24')).toThrow(RangeError);
    expect(() => portRemovalScript(['br1'])).toThrow(RangeError);
  });

  it('removal succeeds whether the port is pinned or not: each element and chain is added before it is deleted', () => {
    const other = endpointLinkName(4096, 'ep-2');
    const t = `bridge ${PORT_SECURITY_TABLE}`;
    expect(portRemovalScript([PORT, other]).split('\n')).toEqual(
      [PORT, other].flatMap((p) => [
        `add chain ${t} port_${p}`,
        `add element ${t} ports { "${p}" : jump port_${p} }`,
        `delete element ${t} ports { "${p}" }`,
        `flush chain ${t} port_${p}`,
        `delete chain ${t} port_${p}`,
      ]),
    );
  });
});
