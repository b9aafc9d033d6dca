// What CNI SPEC.md (spec-v1.0.0, and 0.4.0 for the "version" field of ips) says a result and an error
// look like, as a list of problems: empty means the JSON is what a runtime may rely on.

const CIDR4 = /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/;
const IP4 = /^(\d{1,3}\.){3}\d{1,3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const extraKeys = (o: Record<string, unknown>, allowed: string[]) => Object.keys(o).filter((k) => !allowed.includes(k));

export function resultProblems(r: unknown, version: string): string[] {
  const p: string[] = [];
  if (!isObject(r)) return ['result is not an object'];
  if (r.cniVersion !== version) p.push(`cniVersion ${String(r.cniVersion)}, asked ${version}`);
  for (const k of extraKeys(r, ['cniVersion', 'interfaces', 'ips', 'routes', 'dns'])) p.push(`unknown key ${k}`);
  const interfaces = r.interfaces;
  if (!Array.isArray(interfaces)) p.push('interfaces is not a list');
  else
    interfaces.forEach((i: unknown, n) => {
      if (!isObject(i)) return p.push(`interfaces[${n}] is not an object`);
      if (typeof i.name !== 'string' || i.name === '') p.push(`interfaces[${n}].name`);
      if (typeof i.mac !== 'string' || !MAC.test(i.mac)) p.push(`interfaces[${n}].mac ${String(i.mac)}`);
      if (i.sandbox !== undefined && typeof i.sandbox !== 'string') p.push(`interfaces[${n}].sandbox`);
      for (const k of extraKeys(i, ['name', 'mac', 'sandbox', 'mtu'])) p.push(`interfaces[${n}] unknown key ${k}`);
    });
  if (!Array.isArray(r.ips)) p.push('ips is not a list');
  else
    r.ips.forEach((ip: unknown, n) => {
      if (!isObject(ip)) return p.push(`ips[${n}] is not an object`);
      if (typeof ip.address !== 'string' || !CIDR4.test(ip.address)) p.push(`ips[${n}].address ${String(ip.address)}`);
      if (ip.gateway !== undefined && (typeof ip.gateway !== 'string' || !IP4.test(ip.gateway)))
        p.push(`ips[${n}].gateway`);
      if (
        ip.interface !== undefined &&
        (!Number.isInteger(ip.interface) ||
          !Array.isArray(interfaces) ||
          (ip.interface as number) < 0 ||
          (ip.interface as number) >= interfaces.length)
      )
        p.push(`ips[${n}].interface does not index interfaces`);
      // 1.0.0 dropped "version"; before it, it was required.
      if (version === '1.0.0' && ip.version !== undefined) p.push(`ips[${n}].version in a 1.0.0 result`);
      if (version !== '1.0.0' && ip.version !== '4') p.push(`ips[${n}].version missing`);
      for (const k of extraKeys(ip, ['address', 'gateway', 'interface', 'version']))
        p.push(`ips[${n}] unknown key ${k}`);
    });
  if (r.routes !== undefined) {
    if (!Array.isArray(r.routes)) p.push('routes is not a list');
    else
      r.routes.forEach((rt: unknown, n) => {
        if (!isObject(rt) || typeof rt.dst !== 'string' || !CIDR4.test(rt.dst)) p.push(`routes[${n}].dst`);
        else if (rt.gw !== undefined && (typeof rt.gw !== 'string' || !IP4.test(rt.gw))) p.push(`routes[${n}].gw`);
      });
  }
  if (r.dns !== undefined) {
    if (!isObject(r.dns)) p.push('dns is not an object');
    else {
      for (const k of ['nameservers', 'search', 'options'])
        if (
          r.dns[k] !== undefined &&
          (!Array.isArray(r.dns[k]) || (r.dns[k] as unknown[]).some((v) => typeof v !== 'string'))
        )
          p.push(`dns.${k} is not a list of strings`);
      if (r.dns.domain !== undefined && typeof r.dns.domain !== 'string') p.push('dns.domain');
      for (const k of extraKeys(r.dns, ['nameservers', 'domain', 'search', 'options'])) p.push(`dns unknown key ${k}`);
    }
  }
  return p;
}

export function errorProblems(e: unknown, version: string): string[] {
  if (!isObject(e)) return ['error is not an object'];
  const p: string[] = [];
  if (e.cniVersion !== version) p.push(`cniVersion ${String(e.cniVersion)}, expected ${version}`);
  if (!Number.isInteger(e.code) || (e.code as number) < 1) p.push(`code ${String(e.code)}`);
  if (typeof e.msg !== 'string' || e.msg === '') p.push('msg');
  if (e.details !== undefined && typeof e.details !== 'string') p.push('details');
  for (const k of extraKeys(e, ['cniVersion', 'code', 'msg', 'details'])) p.push(`unknown key ${k}`);
  return p;
}
