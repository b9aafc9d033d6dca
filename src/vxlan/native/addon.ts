/*
 * The native data path (native/*.c, an N-API addon): the typed loader and thin
 * wrappers. Three of the addon's four parts are the data path's (the fourth, spawnRun, is
 * src/host/exec.ts's):
 *
 *   - ESP seal/open with one EVP_CIPHER_CTX per SA, keyed once (NativeEspSa), and
 *     plain AES-GCM behind the AeadProvider seam (nativeAeadProvider): vectors,
 *     differential tests, and anything in TypeScript that wants the faster AEAD;
 *   - the RFC 4303 replay window ported from replay.ts (NativeReplayWindow), for
 *     the test that holds both to the same decisions;
 *   - the batched data plane on its own threads (native/datapath.ts drives it).
 *
 * Where the addon is and how it is loaded: src/host/native.ts.
 */
import {
  AEAD_TAG_LENGTH,
  AeadInputError,
  checkKey,
  checkNonce,
  type Aead,
  type AeadAlgorithm,
  type AeadProvider,
} from '../../crypto/aead.js';
import type { SecretKey } from '../../crypto/secret.js';
import { NativeUnavailableError, requireNativeAddon } from '../../host/native.js';
import { ESP_IV_LENGTH, ESP_SALT_LENGTH } from '../wire/constants.js';
import { DROP_REASONS, type DropReason } from '../wire/drops.js';
import { gcmAlgorithmForKeymat } from '../wire/esp.js';

declare const handle: unique symbol;
/** An opaque addon object (an N-API external with a type tag checked on every call). */
export type NativeHandle<Kind extends string> = { readonly [handle]: Kind };

export interface NativeSaSpec {
  spi: number;
  key: Uint8Array;
  salt: Uint8Array;
  esn: boolean;
  vni: number;
  /** The peer's host index (1..16383), as in the SPI and the gateway port. */
  peer: number;
  epoch: number;
}

export interface NativeDataplaneConfig {
  underlayAddress: string;
  hostAddress: string;
  vtepAddress: string;
  /** A /18 network address: a datagram to its address + i is peer i's. */
  peerNet: string;
  /** SO_BINDTODEVICE for the gateway socket (the vtep link's host end); absent: any device. */
  gatewayDevice?: string;
  /** The port of every gateway address (default 1021, VTEP_GATEWAY_PORT). */
  gatewayPort?: number;
  espPort?: number;
  plainPort?: number;
  vtepPort?: number;
  peerEspPort?: number;
  peerPlainPort?: number;
  /** Source port of deliveries to the VTEP (default 1022, VTEP_DELIVERY_PORT); 0: any. */
  deliveryPort?: number;
  bufferBytes?: number;
  gso?: boolean;
  gro?: boolean;
  /** Plain networks pass through (default true); false: 4789 is not bound and dpSetNetwork refuses a plain network. */
  relayPlain?: boolean;
  underlayMtu?: number;
  replayWindow?: number;
  /** How long one flush may wait for the underlay in all before it drops the rest (default 100 ms). */
  sendWaitMs?: number;
}

export interface NativePairStats {
  peer: number;
  vni: number;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  drops: Partial<Record<DropReason, number>>;
  outbound?: { spi: number; epoch: number; sealed: number; sequenceHeadroom: number };
}

export interface NativeIoStats {
  rxCalls: number;
  rxDatagrams: number;
  rxPackets: number;
  txCalls: number;
  txMessages: number;
  txPackets: number;
  sendErrors: number;
  /** Waits for send buffer room (the underlay was not draining). */
  sendWaits: number;
  /** Flushes of a non-empty send queue, completed. */
  txFlushes: number;
}

export interface NativeStats {
  pairs: NativePairStats[];
  inbound: Array<{ spi: number; peer: number; vni: number; epoch: number; opened: number }>;
  unattributed: Partial<Record<DropReason, number>>;
  io: { outbound: NativeIoStats; inbound: NativeIoStats };
  /** SAs out of service that the table still remembers (docs/wire.md "Sequence numbers and replay"). */
  retired: { inbound: number; outbound: number };
}

/** The addon's exports, as binding.c defines them. */
export interface NativeAddon {
  createSa(key: Uint8Array, salt: Uint8Array, spi: number, esn: boolean, encrypt: boolean): NativeHandle<'sa'>;
  sealRawDanger(
    sa: NativeHandle<'sa'>,
    seqHi: number,
    seqLo: number,
    iv: Uint8Array,
    paddedPlaintext: Uint8Array,
  ): Buffer;
  openRawDanger(sa: NativeHandle<'sa'>, datagram: Uint8Array, seqHi: number): Buffer | null;
  gcmSeal(sa: NativeHandle<'sa'>, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer;
  gcmOpen(sa: NativeHandle<'sa'>, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Buffer | null;
  replayCreate(esn: boolean, size: number): NativeHandle<'replay'>;
  replayCheck(w: NativeHandle<'replay'>, seqLo: number): number;
  replayUpdate(w: NativeHandle<'replay'>, seqHi: number, seqLo: number): boolean;
  dropReasons(): string[];
  /** One TAP read (vnet header and frame) as the outbound thread segments it, or the drop reason (tests). */
  tapSegment(read: Uint8Array): Buffer[] | string;
  dpCreate(config: NativeDataplaneConfig): NativeHandle<'dp'>;
  dpStart(dp: NativeHandle<'dp'>): void;
  dpClose(dp: NativeHandle<'dp'>): void;
  dpAddPeer(dp: NativeHandle<'dp'>, index: number, address: string): void;
  dpRemovePeer(dp: NativeHandle<'dp'>, index: number): void;
  dpSetNetwork(dp: NativeHandle<'dp'>, vni: number, encrypted: boolean): void;
  dpRemoveNetwork(dp: NativeHandle<'dp'>, vni: number): void;
  dpInstallInbound(dp: NativeHandle<'dp'>, sa: NativeSaSpec): void;
  dpRemoveInbound(dp: NativeHandle<'dp'>, spi: number): void;
  dpSetOutbound(dp: NativeHandle<'dp'>, sa: NativeSaSpec & { budget?: number }): void;
  dpRemoveOutbound(dp: NativeHandle<'dp'>, peer: number, vni: number): void;
  dpStats(dp: NativeHandle<'dp'>): NativeStats;
  /** Returns whether the kernel took the TAP's checksum and TSO offloads. */
  dpAttachTap(dp: NativeHandle<'dp'>, vni: number, netnsPath: string, name: string): boolean;
  dpDetachTap(dp: NativeHandle<'dp'>, vni: number): void;
  dpFdbSet(dp: NativeHandle<'dp'>, vni: number, mac: string, peer: number): void;
  dpFdbRemove(dp: NativeHandle<'dp'>, vni: number, mac: string): void;
  dpFloodAdd(dp: NativeHandle<'dp'>, vni: number, peer: number): void;
  dpFloodRemove(dp: NativeHandle<'dp'>, vni: number, peer: number): void;
}

export { NativeUnavailableError, nativeAddonPath, packageRoot } from '../../host/native.js';

let cached: NativeAddon | undefined;

/** Loads the addon once; throws NativeUnavailableError (with the path and the reason) if it cannot. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const addon = requireNativeAddon() as NativeAddon;
  // The C side counts drops by index: its names and order must be drops.ts's exactly.
  const names = addon.dropReasons();
  if (names.length !== DROP_REASONS.length || names.some((n, i) => n !== DROP_REASONS[i])) {
    throw new NativeUnavailableError(`native drop reasons differ from drops.ts: ${names.join(',')}`);
  }
  cached = addon;
  return addon;
}

export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

// ---- per-packet ESP: the SA builds nonce and AAD in C (esp.c), like the data plane ----

/**
 * One direction of an ESP SA in the addon: the AES key scheduled once, the salt,
 * SPI and ESN flag kept in C. Same contract as sealEspDanger/openEspDanger in
 * esp.ts (Danger: the caller vouches for the IV and the sequence number).
 */
export class NativeEspSa {
  readonly #addon: NativeAddon;
  readonly #sa: NativeHandle<'sa'>;

  constructor(
    readonly spi: number,
    keymat: SecretKey,
    readonly esn: boolean,
    readonly direction: 'seal' | 'open',
  ) {
    if (!gcmAlgorithmForKeymat(keymat.length))
      throw new RangeError(`ESP KEYMAT must be 20, 28 or 36 bytes (key || 4-byte salt), got ${keymat.length}`);
    this.#addon = loadNative();
    const bytes = keymat.exposeDanger();
    const keyLength = bytes.length - ESP_SALT_LENGTH;
    this.#sa = this.#addon.createSa(
      bytes.subarray(0, keyLength),
      bytes.subarray(keyLength),
      spi,
      esn,
      direction === 'seal',
    );
  }

  /** SPI..ICV of an already padded plaintext (esp.ts encodeEspPlaintext). */
  sealDanger(seqHi: number, seqLo: number, iv: Uint8Array, paddedPlaintext: Uint8Array): Uint8Array {
    if (iv.length !== ESP_IV_LENGTH) throw new RangeError('ESP IV must be 8 bytes');
    return this.#addon.sealRawDanger(this.#sa, seqHi, seqLo, iv, paddedPlaintext);
  }

  /** The padded plaintext, or null when the datagram is too short or its ICV does not verify. */
  openDanger(datagram: Uint8Array, seqHi: number): Uint8Array | null {
    return this.#addon.openRawDanger(this.#sa, datagram, seqHi);
  }
}

// ---- plain AES-GCM behind the AeadProvider seam ----

/** The addon takes 96-bit nonces only (RFC 4106 §4); other lengths are refused with AeadInputError. */
const NATIVE_GCM_NONCE_LENGTHS = { min: 12, max: 12 };

class NativeAead implements Aead {
  readonly implementation = 'native';
  readonly #addon = loadNative();
  readonly #key: Uint8Array;
  #sealer?: NativeHandle<'sa'>;
  #opener?: NativeHandle<'sa'>;

  constructor(
    readonly algorithm: AeadAlgorithm,
    key: SecretKey,
  ) {
    if (algorithm === 'chacha20-poly1305') throw new AeadInputError('the native provider implements AES-GCM only');
    checkKey(algorithm, key);
    this.#key = Uint8Array.from(key.exposeDanger());
  }

  // The SPI/salt/ESN of the handle are unused by gcmSeal/gcmOpen: the caller gives the whole nonce and AAD.
  seal(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    checkNonce(this.algorithm, nonce, NATIVE_GCM_NONCE_LENGTHS);
    this.#sealer ??= this.#addon.createSa(this.#key, new Uint8Array(ESP_SALT_LENGTH), 0, false, true);
    return this.#addon.gcmSeal(this.#sealer, nonce, aad, plaintext);
  }

  open(nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
    checkNonce(this.algorithm, nonce, NATIVE_GCM_NONCE_LENGTHS);
    if (sealed.length < AEAD_TAG_LENGTH) return null;
    this.#opener ??= this.#addon.createSa(this.#key, new Uint8Array(ESP_SALT_LENGTH), 0, false, false);
    return this.#addon.gcmOpen(this.#opener, nonce, aad, sealed);
  }
}

export const nativeAeadProvider: AeadProvider = {
  name: 'native',
  gcmNonceLengths: NATIVE_GCM_NONCE_LENGTHS,
  create: (algorithm, key) => new NativeAead(algorithm, key),
};

// ---- the replay window of the data plane, for tests ----

/** native/replay.c with the interface of replay.ts ReplayWindow (check/update). */
export class NativeReplayWindow {
  readonly #addon = loadNative();
  readonly #w: NativeHandle<'replay'>;

  constructor(
    readonly esn: boolean,
    readonly size = 4096,
  ) {
    this.#w = this.#addon.replayCreate(esn, size);
  }

  check(seqLo: number): number {
    return this.#addon.replayCheck(this.#w, seqLo);
  }

  update(seqHi: number, seqLo: number): boolean {
    return this.#addon.replayUpdate(this.#w, seqHi, seqLo);
  }
}
