import { CNI_LATEST, CNI_TYPE, type CniVersion } from './spec.js';

/*
 * The network configuration list a runtime reads for a veil network (docs/cni.md "Configuration"):
 * what `veil cni config NETWORK` prints, so nobody writes it by hand.
 */

export interface ConfListOptions {
  /** The API address the plugin asks (the one the CLI was pointed at). */
  api: string;
  tls?: { ca?: string; cert?: string; key?: string };
  cniVersion?: CniVersion;
}

export function cniConfList(network: string, options: ConfListOptions): Record<string, unknown> {
  const tls = Object.fromEntries(Object.entries(options.tls ?? {}).filter(([, v]) => v !== undefined));
  return {
    cniVersion: options.cniVersion ?? CNI_LATEST,
    name: network,
    plugins: [
      {
        type: CNI_TYPE,
        network,
        api: options.api,
        ...(Object.keys(tls).length > 0 ? { tls } : {}),
        // Runtimes pass these in runtimeConfig only when the plugin asks for them (CONVENTIONS.md).
        capabilities: { ips: true, mac: true, aliases: true },
      },
    ],
  };
}
