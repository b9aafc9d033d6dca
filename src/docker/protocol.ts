/*
 * Docker's plugin protocol for network and IPAM drivers, as Docker 20.10 speaks it (libnetwork's
 * docs/remote.md and docs/ipam.md; the field names are Docker's). Every call is an HTTP POST of JSON
 * to /<Interface>.<Method> on the plugin's unix socket; a failure is answered as {"Err": "..."}.
 * docs/docker.md "Protocol" says which calls veil answers and how.
 */

/** The driver name users type: docker network create -d veil --ipam-driver veil. */
export const PLUGIN_NAME = 'veil';
/** Docker discovers the plugin as <plugins dir>/veil.sock (docs/docker.md "Enabling the plugin"). */
export const PLUGIN_SOCKET_FILE = `${PLUGIN_NAME}.sock`;
/**
 * How often the plugin frees this host's reservations no endpoint took (docs/docker.md "Addresses"):
 * one left by a Docker that died between RequestAddress and CreateEndpoint goes within two periods.
 */
export const RESERVATION_SWEEP_MS = 60_000;
export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

/** CreateNetwork Options: `-o k=v` arrive under this key, as a map of strings. */
export const GENERIC_OPTIONS = 'com.docker.network.generic';
export const INTERNAL_OPTION = 'com.docker.network.internal';
export const IPV6_OPTION = 'com.docker.network.enable_ipv6';
/** RequestAddress Options.RequestAddressType when Docker asks for the network's gateway. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS = 'com.docker.network.gateway';
/** veil's one address space: a pool in it is a veil network's subnet. */
export const ADDRESS_SPACE = 'veil';
/** Join's StaticRoutes RouteType: 1 routes through the joined interface itself (0 through a NextHop). */
export const ROUTE_CONNECTED = 1;
/** Docker names the moved interface <prefix><n>: eth0, eth1, ... in connect order. */
export const INTERFACE_PREFIX = 'eth';

/** The `-o` options a veil network takes (the same as `veil network create`'s). */
export const NETWORK_OPTIONS = ['encrypted', 'strict'] as const;

export interface IpamData {
  AddressSpace: string;
  /** CIDR. */
  Pool: string;
  /** Address with prefix length, e.g. 10.0.0.1/24. */
  Gateway?: string;
  AuxAddresses?: Record<string, string>;
}

export interface CreateNetworkRequest {
  NetworkID: string;
  Options?: Record<string, unknown>;
  IPv4Data?: IpamData[];
  IPv6Data?: IpamData[];
}

export interface EndpointInterface {
  /** Address with prefix length, from the IPAM driver. */
  Address?: string;
  AddressIPv6?: string;
  MacAddress?: string;
}

export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface?: EndpointInterface;
  Options?: Record<string, unknown>;
}

export interface EndpointRequest {
  NetworkID: string;
  EndpointID: string;
}

export interface JoinRequest extends EndpointRequest {
  SandboxKey?: string;
  Options?: Record<string, unknown>;
}

export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway?: string;
  StaticRoutes?: Array<{ Destination: string; RouteType: number; NextHop?: string }>;
  /** True: Docker gives the container no way out through its gateway bridge (an internal network). */
  DisableGatewayService: boolean;
}

export interface RequestPoolRequest {
  AddressSpace: string;
  Pool: string;
  SubPool: string;
  Options?: Record<string, string> | null;
  V6: boolean;
}

export interface RequestAddressRequest {
  PoolID: string;
  /** The requested address (docker run --ip), or empty. */
  Address: string;
  Options?: Record<string, string> | null;
}

export interface ReleaseAddressRequest {
  PoolID: string;
  Address: string;
}

/** What `GET /networks/{id}` of the Docker API says of a network (the fields veil reads). */
export interface EngineNetwork {
  Name: string;
  Id: string;
  Driver: string;
  Internal: boolean;
  Attachable: boolean;
  EnableIPv6: boolean;
  Labels: Record<string, string> | null;
  Options: Record<string, string> | null;
  IPAM: { Driver: string; Config: Array<{ Subnet?: string; IPRange?: string; Gateway?: string }> | null };
  /** Containers joined, by container id (only once they have joined). */
  Containers?: Record<string, { Name: string; EndpointID: string }> | null;
}

/** What `GET /containers/{id}/json` says of a container (the fields veil reads). */
export interface EngineContainer {
  Id: string;
  Name: string;
  State: { Pid: number; Running: boolean };
  NetworkSettings: { Networks: Record<string, { EndpointID: string; Aliases: string[] | null }> | null };
}
