import { describe, expect, it } from 'vitest';
import { buildApp } from '../../src/api/app.js';
import type { GatewayStatus } from '../../src/vxlan/gateway.js';

const status: GatewayStatus = {
  host: 'h1',
  peers: [{ id: 'h2', address: '198.18.0.2', gateway: '169.254.64.2' }],
  networks: [{ id: 'enc', index: 1, vni: 4096, encrypted: true }],
  pairs: [
    {
      peer: 'h2',
      vni: 4096,
      encrypted: true,
      txPackets: 5,
      txBytes: 500,
      rxPackets: 4,
      rxBytes: 400,
      drops: { 'replay-duplicate': 2 },
      outbound: { spi: 0x40010001, epoch: 1, sealed: 5, sequenceHeadroom: 1000 },
      inbound: [{ spi: 0x40020001, epoch: 1, opened: 4 }],
    },
  ],
  unattributedDrops: { 'unknown-spi': 3 },
  sendFailures: 0,
  vtepFirewall: { packets: 7, bytes: 700, readAt: '2026-01-01T00:00:00.000Z' },
  portSecurity: {
    spoofed: { packets: 11, bytes: 1100 },
    notIpv4: { packets: 13, bytes: 1300 },
    readAt: '2026-01-01T00:00:00.000Z',
  },
  plainNetworks: {
    notAPeer: { packets: 17, bytes: 1700 },
    plaintextOnEncrypted: { packets: 19, bytes: 1900 },
    networks: [{ vni: 4097, rxPackets: 23, rxBytes: 2300, txPackets: 29, txBytes: 2900, rxDropped: 0, txDropped: 1 }],
    readAt: '2026-01-01T00:00:00.000Z',
  },
};

describe('API', () => {
  const app = buildApp({ gatewayStatus: () => status });

  it('GET /healthz', async () => {
    const r = await app.inject({ method: 'GET', url: '/healthz' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ status: 'ok' });
  });

  it('GET /metrics speaks Prometheus text with per-pair counters and drops by reason', async () => {
    const r = await app.inject({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.body).toContain('# TYPE veil_tx_packets_total counter');
    expect(r.body).toContain('veil_tx_packets_total{peer="h2",vni="4096",encrypted="true"} 5');
    expect(r.body).toContain('veil_drops_total{peer="h2",vni="4096",reason="replay-duplicate"} 2');
    expect(r.body).toContain('veil_drops_total{peer="",vni="",reason="unknown-spi"} 3');
    expect(r.body).toContain('veil_sa_sequence_headroom{peer="h2",vni="4096",spi="1073807361",epoch="1"} 1000');
    expect(r.body).toContain('veil_vtep_injection_dropped_packets_total 7');
    expect(r.body).toContain('# TYPE veil_port_security_dropped_packets_total counter');
    expect(r.body).toContain('veil_port_security_dropped_packets_total{reason="spoofed-source"} 11');
    expect(r.body).toContain('veil_port_security_dropped_packets_total{reason="not-ipv4"} 13');
    expect(r.body).toContain('veil_plain_vxlan_dropped_packets_total{reason="not-a-peer"} 17');
    expect(r.body).toContain('veil_plain_vxlan_dropped_packets_total{reason="plaintext-on-encrypted"} 19');
    expect(r.body).toContain('veil_plain_network_packets_total{vni="4097",direction="tx"} 29');
  });

  it('GET /status carries the vtep firewall, port security and plain network counters', async () => {
    const r = await app.inject({ method: 'GET', url: '/status' });
    expect(r.json()).toMatchObject({
      vtepFirewall: { packets: 7, bytes: 700 },
      portSecurity: { spoofed: { packets: 11, bytes: 1100 }, notIpv4: { packets: 13, bytes: 1300 } },
      plainNetworks: status.plainNetworks,
    });
  });

  it("GET /status carries the data path's table sizes and the process's own figures", async () => {
    const tables = { pairs: 4, inboundSas: 6, outboundSas: 2, retiredSas: 8 };
    const withTables = buildApp({ gatewayStatus: () => ({ ...status, tables }) });
    const body = (await withTables.inject({ method: 'GET', url: '/status' })).json();
    expect(body.tables).toEqual(tables);
    expect(body.process.rssBytes).toBeGreaterThan(1 << 20);
    expect(body.process.heapUsedBytes).toBeGreaterThan(0);
    expect(body.process.openFds).toBeGreaterThan(2); // at least stdin, stdout, stderr
    // Timers made here show among what keeps the event loop alive (others may come and go meanwhile).
    const before = body.process.activeResources.Timeout ?? 0;
    const timers = Array.from({ length: 50 }, () => setTimeout(() => undefined, 60_000));
    try {
      const again = (await withTables.inject({ method: 'GET', url: '/status' })).json();
      expect(again.process.activeResources.Timeout).toBeGreaterThanOrEqual(before + 40);
    } finally {
      for (const t of timers) clearTimeout(t);
    }
  });

  it('GET /status passes only what its schema lists', async () => {
    const leaky = buildApp({
      gatewayStatus: () =>
        ({ ...status, secret: 'deadbeef', pairs: [{ ...status.pairs[0]!, key: 'cafe' }] }) as unknown as GatewayStatus,
    });
    const r = await leaky.inject({ method: 'GET', url: '/status' });
    expect(r.statusCode).toBe(200);
    expect(r.body).not.toContain('deadbeef');
    expect(r.body).not.toContain('cafe');
    expect(r.json().pairs[0].drops).toEqual({ 'replay-duplicate': 2 });
  });

  it('unknown routes answer 404 with a code from the registry', async () => {
    const r = await app.inject({ method: 'GET', url: '/nope' });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toMatchObject({ code: 'VEIL_ERR_NOT_FOUND' });
  });
});
