/**
 * Where every container finds its resolver (docs/dns.md): a link-local address (RFC 3927) outside the
 * /30s veil uses between host and vtep netns and outside 169.254.169.0/24 (cloud metadata). Each host
 * answers its own containers at it (a permanent neighbour entry inside the container: it is never ARPed
 * for). Here, apart from the DNS code, because the CNI plugin announces it and loads nothing else.
 */
export const RESOLVER_ADDRESS = '169.254.53.53';
