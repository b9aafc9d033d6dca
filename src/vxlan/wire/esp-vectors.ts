import type { AeadProvider } from '../../crypto/aead.js';
import { bytesToHex, concatBytes, equalBytes, hexToBytes } from '../../crypto/bytes.js';
import { SecretKey } from '../../crypto/secret.js';
import { ESP_IN_UDP_PORT, UDP_HEADER_LENGTH } from './constants.js';
import { createEspCipher, encodeEspPlaintext, openEspDanger, parseEspPlaintext, sealEspDanger } from './esp.js';
import { encodeUdpHeader } from './udp.js';
import { parseVxlanHeader } from './vxlan.js';

/** One case of an ESP vector file (schema: vectors/README.md). */
export interface EspVector {
  tcId: number;
  cipher: string;
  keymat: string;
  spi: number;
  seqHi: number;
  seqLo: number;
  esn: boolean;
  iv: string;
  nextHeader: number;
  vni?: number;
  payload: string;
  esp: string;
  udpEncapsulated?: string;
  ipv4Packet?: string;
}

export interface EspVectorFile {
  source?: string;
  tests: EspVector[];
}

export class VectorFileError extends Error {
  override readonly name = 'VectorFileError';
}

const REQUIRED: ReadonlyArray<[keyof EspVector, string]> = [
  ['tcId', 'number'],
  ['keymat', 'string'],
  ['spi', 'number'],
  ['seqHi', 'number'],
  ['seqLo', 'number'],
  ['esn', 'boolean'],
  ['iv', 'string'],
  ['nextHeader', 'number'],
  ['payload', 'string'],
  ['esp', 'string'],
];

/** Validates the shape of a parsed vector file; throws VectorFileError naming the first bad field. */
export function parseEspVectorFile(json: unknown): EspVectorFile {
  const tests = (json as { tests?: unknown })?.tests;
  if (!Array.isArray(tests)) throw new VectorFileError('not an ESP vector file: no "tests" array');
  tests.forEach((t, i) => {
    for (const [field, type] of REQUIRED) {
      if (typeof (t as Record<string, unknown>)?.[field] !== type) {
        throw new VectorFileError(`tests[${i}]: field "${field}" must be a ${type}`);
      }
    }
  });
  return json as EspVectorFile;
}

/** Runs one case through the sealer and the opener of one implementation; returns what failed (empty = pass). */
export function checkEspVector(v: EspVector, provider: AeadProvider): string[] {
  const failures: string[] = [];
  let keymat: Uint8Array, iv: Uint8Array, payload: Uint8Array, esp: Uint8Array;
  try {
    [keymat, iv, payload, esp] = [hexToBytes(v.keymat), hexToBytes(v.iv), hexToBytes(v.payload), hexToBytes(v.esp)];
  } catch {
    return ['a hex field is not valid hex'];
  }
  let cipher;
  try {
    cipher = createEspCipher(v.spi, new SecretKey(keymat), v.esn, provider);
  } catch (err) {
    return [`cannot key the SA: ${(err as Error).message}`];
  }

  // Seal: reproduce the vector's bytes from keymat, SPI, sequence and IV.
  const sealed = sealEspDanger(cipher, v.seqHi, v.seqLo, iv, encodeEspPlaintext(payload, v.nextHeader));
  if (!equalBytes(sealed, esp))
    failures.push(`seal: got ${bytesToHex(sealed).slice(0, 48)}..., want ${v.esp.slice(0, 48)}...`);
  if (v.udpEncapsulated !== undefined) {
    const udp = concatBytes(encodeUdpHeader(ESP_IN_UDP_PORT, ESP_IN_UDP_PORT, sealed.length), sealed);
    if (v.udpEncapsulated !== bytesToHex(udp)) failures.push('UDP 4500 encapsulation differs (RFC 3948 §2.1)');
  }

  // Open: recover the payload and next header.
  const plaintext = openEspDanger(cipher, esp, v.seqHi);
  if (!plaintext) return [...failures, 'open: ICV did not verify'];
  const inner = parseEspPlaintext(plaintext);
  if (!inner.ok) return [...failures, `open: trailer rejected (${inner.drop})`];
  if (!equalBytes(inner.payload, payload)) failures.push('open: payload differs');
  if (inner.nextHeader !== v.nextHeader) failures.push(`open: next header ${inner.nextHeader}, want ${v.nextHeader}`);
  if (v.vni !== undefined) {
    const vxlan = parseVxlanHeader(inner.payload, UDP_HEADER_LENGTH);
    if (!vxlan.ok || vxlan.vni !== v.vni) failures.push(`open: inner VNI differs from ${v.vni}`);
  }
  return failures;
}
