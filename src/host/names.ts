import { createHash } from 'node:crypto';
import { VNI_MAX } from '../model/ids.js';

/*
 * Interface names on a host (docs/plumbing.md "Names and addresses"). Every name fits
 * IFNAMSIZ - 1 = 15 characters, and each is derived again from what it stands for, so no
 * state is needed to find a device later.
 */

/** The veth pair between the host netns and the vtep netns, each end named by where it leads. */
export const HOST_LINK = 'to-vtep';
export const VTEP_LINK = 'to-host';

/** What a kernel interface name may hold (IFNAMSIZ - 1 characters, no '/' or spaces). */
export const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function checkVni(vni: number): number {
  if (!Number.isInteger(vni) || vni < 1 || vni > VNI_MAX)
    throw new RangeError(`VNI must be an integer in 1..${VNI_MAX}, got ${vni}`);
  return vni;
}

/** The network's bridge; a VNI has at most 8 digits, so at most 10 characters. */
export function bridgeName(vni: number): string {
  return `br${checkVni(vni)}`;
}

/** The network's kernel VXLAN device. */
export function vxlanName(vni: number): string {
  return `vx${checkVni(vni)}`;
}

/** An encrypted network's TAP port on its bridge (docs/plumbing.md "The TAP port"). */
export function tapPortName(vni: number): string {
  return `tp${checkVni(vni)}`;
}

/** The vtep-side end of a container's veth: sha256("<VNI>/<endpointId>"), 14 characters. */
export function endpointLinkName(vni: number, endpointId: string): string {
  return `ve${linkHash(vni, endpointId)}`;
}

/**
 * The other end of a runtime's port while it waits in the host namespace for the runtime to move it
 * into the container (Docker's Join: docs/docker.md "Containers").
 */
export function hostPortLinkName(vni: number, endpointId: string): string {
  return `vh${linkHash(vni, endpointId)}`;
}

function linkHash(vni: number, endpointId: string): string {
  return createHash('sha256')
    .update(`${checkVni(vni)}/${endpointId}`)
    .digest('hex')
    .slice(0, 12);
}
