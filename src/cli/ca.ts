import { parseArgs } from 'node:util';
import { VeilError } from '../errors.js';
import {
  DEFAULT_CA_COMMON_NAME,
  DEFAULT_CA_DAYS,
  DEFAULT_LEAF_DAYS,
  initCa,
  issueCertificate,
  type IssuedCertificate,
} from '../tls/ca.js';

/*
 * `veil ca init` and `veil ca issue`: the API's built-in CA (src/tls/ca.ts).
 * Exit 0 done, 1 failed (a VeilError, printed with its code), 2 usage.
 */

export const CA_USAGE = `usage:
  veil ca init --dir DIR [--cn NAME] [--days N]
      create the CA (DIR/ca.crt, DIR/ca.key); default CN "${DEFAULT_CA_COMMON_NAME}", ${DEFAULT_CA_DAYS} days
  veil ca issue --dir DIR --name NAME (--server|--client) [--ip IP]... [--dns NAME]... [--days N]
      sign DIR/NAME.crt and DIR/NAME.key; --server needs at least one --ip or --dns; default ${DEFAULT_LEAF_DAYS} days
`;

export interface CliOutput {
  out(line: string): void;
  err(line: string): void;
}

const stdio: CliOutput = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
};

/** `argv` is what follows `veil ca`. */
export async function runCa(argv: string[], io: CliOutput = stdio): Promise<number> {
  const [command, ...rest] = argv;
  const usage = (problem?: string): number => {
    if (problem) io.err(`veil ca: ${problem}`);
    io.err(CA_USAGE.trimEnd());
    return 2;
  };
  if (command === 'help' || command === '--help' || command === '-h') {
    io.out(CA_USAGE.trimEnd());
    return 0;
  }
  if (command !== 'init' && command !== 'issue')
    return usage(command === undefined ? undefined : `unknown command "${command}"`);

  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        dir: { type: 'string' },
        cn: { type: 'string' },
        name: { type: 'string' },
        server: { type: 'boolean' },
        client: { type: 'boolean' },
        ip: { type: 'string', multiple: true },
        dns: { type: 'string', multiple: true },
        days: { type: 'string' },
      },
    }));
  } catch (err) {
    return usage((err as Error).message);
  }
  if (!values.dir) return usage('--dir DIR is required');
  let days: number | undefined;
  if (values.days !== undefined) {
    days = /^\d+$/.test(values.days) ? Number(values.days) : NaN;
    if (Number.isNaN(days)) return usage(`--days ${values.days}: a whole number of days`);
  }

  try {
    if (command === 'init') {
      for (const flag of ['name', 'server', 'client', 'ip', 'dns'] as const)
        if (values[flag] !== undefined) return usage(`--${flag} belongs to "veil ca issue"`);
      const ca = await initCa(values.dir, {
        ...(values.cn !== undefined ? { commonName: values.cn } : {}),
        ...(days !== undefined ? { days } : {}),
      });
      report(io, ca, 'CA');
      io.out(
        `copy ${ca.certPath} to every API client and gateway; keep ${ca.keyPath} private (it signs every API certificate)`,
      );
      return 0;
    }
    if (values.cn !== undefined) return usage('--cn belongs to "veil ca init" (the certificate CN is --name)');
    if (!values.name) return usage('--name NAME is required');
    if (values.server === values.client) return usage('give exactly one of --server and --client');
    const role = values.server ? 'server' : 'client';
    if (role === 'client' && (values.ip || values.dns)) return usage('--ip and --dns are for --server certificates');
    if (role === 'server' && !values.ip && !values.dns)
      return usage('--server needs at least one --ip or --dns (clients check the name they connect to)');
    const issued = await issueCertificate(values.dir, {
      name: values.name,
      role,
      ...(values.ip ? { ips: values.ip } : {}),
      ...(values.dns ? { dnsNames: values.dns } : {}),
      ...(days !== undefined ? { days } : {}),
    });
    report(io, issued, role);
    return 0;
  } catch (err) {
    if (!(err instanceof VeilError)) throw err;
    io.err(`veil ca: ${err.code}: ${err.message}`);
    return 1;
  }
}

function report(io: CliOutput, c: IssuedCertificate, what: string): void {
  io.out(`wrote ${c.certPath} (${what} certificate)`);
  io.out(`wrote ${c.keyPath} (private key, mode 0600)`);
  io.out(`  subject  ${c.subject.replaceAll('\n', ', ')}`);
  if (c.issuer !== c.subject) io.out(`  issuer   ${c.issuer.replaceAll('\n', ', ')}`);
  if (c.subjectAltName) io.out(`  names    ${c.subjectAltName}`);
  io.out(`  serial   ${c.serial}`);
  io.out(`  valid    ${c.notBefore.toISOString()} to ${c.notAfter.toISOString()}`);
  io.out(`  sha256   ${c.fingerprint256}`);
}
