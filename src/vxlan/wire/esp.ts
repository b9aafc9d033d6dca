import type { AeadAlgorithm, AeadProvider, Aead } from '../../crypto/aead.js';
import { readU32, writeU32 } from '../../crypto/bytes.js';
import type { SecretKey } from '../../crypto/secret.js';
import {
  ESP_AAD_ESN_LENGTH,
  ESP_AAD_LENGTH,
  ESP_ALIGNMENT,
  ESP_IV_LENGTH,
  ESP_IV_OFFSET,
  ESP_MAX_PAD_LENGTH,
  ESP_MIN_LENGTH,
  ESP_NONCE_LENGTH,
  ESP_PAYLOAD_OFFSET,
  ESP_SALT_LENGTH,
  ESP_SEQ_OFFSET,
  ESP_SPI_OFFSET,
  ESP_TRAILER_LENGTH,
} from './constants.js';
import type { Dropped } from './drops.js';

/*
 * ESP with AES-GCM, RFC 4303 §2 and RFC 4106 §3 (transport mode, 16-byte ICV):
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |               Security Parameters Index (SPI)                 |  ─┐ AAD
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   │ (with ESN the high 32 bits of
 *  |                 Sequence Number (low 32 bits)                 |  ─┘  the sequence go between them)
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |                 Initialization Vector (8 octets)              |     nonce = salt(4) || IV(8)
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |  Payload: inner UDP header | VXLAN header | Ethernet frame    ~  ─┐
 *  +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   │ encrypted
 *  |               |  Padding (1, 2, 3 ... ; 0-255 bytes)          |   │
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   │
 *  |                               |  Pad Length   | Next Header=17|  ─┘
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |             Integrity Check Value (16 octets)                 |
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Carried as the payload of UDP 4500 (RFC 3948 §2.1).
 */

/** The keyed state of one ESP SA: SPI, AEAD and salt (RFC 4106 §8.1), ESN on or off. */
export interface EspCipher {
  readonly spi: number;
  readonly esn: boolean;
  readonly aead: Aead;
  readonly salt: Uint8Array;
}

/** RFC 4106 §8.1: KEYMAT is the AES key followed by the 4-byte salt. */
export function gcmAlgorithmForKeymat(keymatLength: number): AeadAlgorithm | undefined {
  switch (keymatLength - ESP_SALT_LENGTH) {
    case 16:
      return 'aes-128-gcm';
    case 24:
      return 'aes-192-gcm';
    case 32:
      return 'aes-256-gcm';
    default:
      return undefined;
  }
}

export function createEspCipher(spi: number, keymat: SecretKey, esn: boolean, provider: AeadProvider): EspCipher {
  const algorithm = gcmAlgorithmForKeymat(keymat.length);
  if (!algorithm)
    throw new RangeError(`ESP KEYMAT must be 20, 28 or 36 bytes (key || 4-byte salt), got ${keymat.length}`);
  const keyLength = keymat.length - ESP_SALT_LENGTH;
  return {
    spi,
    esn,
    aead: provider.create(algorithm, keymat.slice(0, keyLength)),
    salt: Uint8Array.from(keymat.exposeDanger().subarray(keyLength)),
  };
}

// ---- the one place that builds nonces and AAD ----

/** RFC 4106 §4: nonce = salt || IV. */
export function espNonce(salt: Uint8Array, iv: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(ESP_NONCE_LENGTH);
  nonce.set(salt, 0);
  nonce.set(iv, ESP_SALT_LENGTH);
  return nonce;
}

/** RFC 4106 §5: SPI || seq low (8 bytes), or SPI || seq high || seq low with ESN (12 bytes). */
export function espAad(spi: number, seqHi: number, seqLo: number, esn: boolean): Uint8Array {
  const aad = new Uint8Array(esn ? ESP_AAD_ESN_LENGTH : ESP_AAD_LENGTH);
  writeU32(aad, 0, spi);
  if (esn) {
    writeU32(aad, 4, seqHi);
    writeU32(aad, 8, seqLo);
  } else {
    writeU32(aad, 4, seqLo);
  }
  return aad;
}

/** veil's IV: the 64-bit sequence number, unique per key by construction (RFC 4106 §3.1 allows a counter). */
export function ivFromSequence(seqHi: number, seqLo: number): Uint8Array {
  const iv = new Uint8Array(ESP_IV_LENGTH);
  writeU32(iv, 0, seqHi);
  writeU32(iv, 4, seqLo);
  return iv;
}

// ---- plaintext: payload || padding || pad length || next header (RFC 4303 §2.4) ----

/** RFC 4303 §2.4: pad so that payload + trailer ends on a 4-byte boundary, with bytes 1, 2, 3, ... */
export function encodeEspPlaintext(payload: Uint8Array, nextHeader: number): Uint8Array {
  const padLength = (ESP_ALIGNMENT - ((payload.length + ESP_TRAILER_LENGTH) % ESP_ALIGNMENT)) % ESP_ALIGNMENT;
  const out = new Uint8Array(payload.length + padLength + ESP_TRAILER_LENGTH);
  out.set(payload, 0);
  for (let i = 1; i <= padLength; i++) out[payload.length + i - 1] = i;
  out[out.length - 2] = padLength;
  out[out.length - 1] = nextHeader;
  return out;
}

export type ParsedEspPlaintext = { ok: true; payload: Uint8Array; nextHeader: number } | Dropped;

/** Strips and checks the trailer. The padding must be the default 1, 2, 3, ... (RFC 4303 §2.4: "SHOULD inspect"). */
export function parseEspPlaintext(plaintext: Uint8Array): ParsedEspPlaintext {
  if (plaintext.length < ESP_TRAILER_LENGTH || plaintext.length % ESP_ALIGNMENT !== 0)
    return { ok: false, drop: 'bad-alignment' };
  const padLength = plaintext[plaintext.length - 2]!;
  const nextHeader = plaintext[plaintext.length - 1]!;
  const payloadLength = plaintext.length - ESP_TRAILER_LENGTH - padLength;
  if (padLength > ESP_MAX_PAD_LENGTH || payloadLength < 0) return { ok: false, drop: 'bad-pad-length' };
  for (let i = 1; i <= padLength; i++) {
    if (plaintext[payloadLength + i - 1] !== i) return { ok: false, drop: 'bad-padding' };
  }
  return { ok: true, payload: plaintext.subarray(0, payloadLength), nextHeader };
}

// ---- header ----

export type ParsedEspHeader = { ok: true; spi: number; seqLo: number } | Dropped;

export function parseEspHeader(datagram: Uint8Array): ParsedEspHeader {
  if (datagram.length < ESP_MIN_LENGTH) return { ok: false, drop: 'truncated' };
  return { ok: true, spi: readU32(datagram, ESP_SPI_OFFSET), seqLo: readU32(datagram, ESP_SEQ_OFFSET) };
}

// ---- raw seal and open: the caller vouches for the IV and the sequence ----

/**
 * Seals an already padded `plaintext` (see encodeEspPlaintext) with the caller's
 * sequence number and IV. Danger: reusing an IV under one key breaks GCM; only
 * OutboundSa (IV = its never-wrapping sequence counter) and test tools call this.
 */
export function sealEspDanger(
  cipher: EspCipher,
  seqHi: number,
  seqLo: number,
  iv: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const sealed = cipher.aead.seal(espNonce(cipher.salt, iv), plaintext, espAad(cipher.spi, seqHi, seqLo, cipher.esn));
  const datagram = new Uint8Array(ESP_PAYLOAD_OFFSET + sealed.length);
  writeU32(datagram, ESP_SPI_OFFSET, cipher.spi);
  writeU32(datagram, ESP_SEQ_OFFSET, seqLo);
  datagram.set(iv, ESP_IV_OFFSET);
  datagram.set(sealed, ESP_PAYLOAD_OFFSET);
  return datagram;
}

/**
 * Verifies and decrypts an ESP datagram (SPI through ICV) given the high 32 bits
 * of its sequence number. Returns the padded plaintext, or null if the ICV does
 * not verify. Danger: it does no replay check; InboundSa's window must run
 * before and after it (RFC 4303 §3.4.3).
 */
export function openEspDanger(cipher: EspCipher, datagram: Uint8Array, seqHi: number): Uint8Array | null {
  if (datagram.length < ESP_MIN_LENGTH) return null;
  const seqLo = readU32(datagram, ESP_SEQ_OFFSET);
  const iv = datagram.subarray(ESP_IV_OFFSET, ESP_PAYLOAD_OFFSET);
  return cipher.aead.open(
    espNonce(cipher.salt, iv),
    datagram.subarray(ESP_PAYLOAD_OFFSET),
    espAad(cipher.spi, seqHi, seqLo, cipher.esn),
  );
}
