/*
 * Windows hosts cannot encrypt overlay traffic (Docker's overlay has no IPsec on
 * Windows, and says nothing). veil says it, in three places: an encrypted network
 * created while Windows hosts are registered, a Windows host registering while
 * encrypted networks exist, and a Windows host's container connecting to an
 * encrypted network. Each answers with a Warning and logs it; with the network
 * option `strict` the request is refused instead (VEIL_ERR_STRICT_UNENCRYPTED_HOST).
 */

const CANNOT = 'Windows hosts cannot encrypt overlay traffic';

/** Docker's `--opt encrypted` arrives as {"encrypted": ""}; any value but "false" turns an option on. */
export function optionEnabled(options: Record<string, string> | undefined, name: string): boolean {
  return options !== undefined && Object.hasOwn(options, name) && options[name] !== 'false';
}

/** The facts about a host the Windows rules need (a HostRecord has them). */
export interface HostOs {
  readonly id: string;
  readonly os: string;
}

export function isWindows(host: Pick<HostOs, 'os'>): boolean {
  return host.os.toLowerCase() === 'windows';
}

export function windowsHosts(hosts: readonly HostOs[]): string[] {
  return hosts
    .filter(isWindows)
    .map((h) => h.id)
    .sort();
}

export function windowsNetworkWarning(windowsHostIds: string[]): string {
  return `${CANNOT}: traffic of the Windows host(s) ${windowsHostIds.join(', ')} on this encrypted network will not be protected`;
}

export function windowsHostWarning(hostIds: string[], encryptedNetworks: string[]): string {
  return `${CANNOT}: traffic of the Windows host(s) ${hostIds.join(', ')} on the encrypted network(s) ${[...encryptedNetworks].sort().join(', ')} will not be protected`;
}

export function windowsEndpointWarning(hostId: string, network: string): string {
  return `${CANNOT}: this container is on Windows host ${hostId}, so its traffic on the encrypted network ${network} will not be protected`;
}
