/*
 * The CNI protocol as veil's plugin speaks it (CNI SPEC.md, spec-v1.0.0, and 0.4.0, which podman 4
 * writes): the runtime runs the plugin with CNI_* variables and the network configuration on stdin;
 * the plugin prints a result or an error on stdout (docs/cni.md "Protocol").
 */

/** The binary's name, which is the configuration's "type" (CNI SPEC "Network configuration"). */
export const CNI_TYPE = 'veil-cni';
/** What the plugin answers to VERSION; results are printed in the configuration's version. */
export const CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
export type CniVersion = (typeof CNI_VERSIONS)[number];
export const CNI_LATEST: CniVersion = '1.0.0';
/** CHECK exists from 0.4.0 on (CNI SPEC "CHECK"). */
export const CHECK_SINCE: readonly CniVersion[] = ['0.4.0', '1.0.0'];

/** CNI SPEC "Error": 1-99 are the spec's, 100 and up the plugin's own. */
export const CNI_ERR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENVIRONMENT: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** veil refused the request for a reason the codes below do not name. */
  VEIL_REFUSED: 100,
  ADDRESS_TAKEN: 101,
  INTERFACE_EXISTS: 102,
  POOL_EXHAUSTED: 103,
  /** CHECK: the interface, address or record is not what ADD made. */
  DRIFTED: 104,
} as const;

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

/** The environment (CNI SPEC "Parameters"). */
export interface CniEnvironment {
  command: CniCommand;
  containerId: string;
  /** Empty on a DEL whose namespace is gone. */
  netns: string;
  ifName: string;
  /** CNI_ARGS, parsed: K=V;K=V. */
  args: Map<string, string>;
}

/** The keys veil reads from the network configuration (docs/cni.md "Configuration"). */
export interface VeilNetConf {
  cniVersion: CniVersion;
  /** The runtime's name for the network. */
  name: string;
  type: string;
  /** The veil network (default: name). */
  network: string;
  /** The gateway's API (default: unix:/run/veil/veil.sock). */
  api?: string;
  tls?: { ca?: string; cert?: string; key?: string };
  runtimeConfig?: {
    ips?: string[];
    mac?: string;
    /** podman: network name → aliases. */
    aliases?: Record<string, string[]>;
  };
  /** CONVENTIONS.md "args in network config". */
  args?: { cni?: { ips?: string[]; mac?: string } };
  prevResult?: CniResult;
}

export interface CniInterface {
  name: string;
  mac: string;
  sandbox?: string;
}

export interface CniIp {
  /** 0.3.x and 0.4.0 only. */
  version?: '4';
  address: string;
  gateway?: string;
  interface?: number;
}

export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIp[];
  routes?: Array<{ dst: string; gw?: string }>;
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}

export interface CniError {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/** CNI_ARGS keys veil uses (CONVENTIONS.md "CNI_ARGS"); others need IgnoreUnknown. */
export const KNOWN_ARGS = [
  'IgnoreUnknown',
  'IP',
  'MAC',
  'K8S_POD_NAME',
  'K8S_POD_NAMESPACE',
  'K8S_POD_INFRA_CONTAINER_ID',
  'K8S_POD_UID',
] as const;
