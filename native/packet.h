/* Per-packet work (packet.c): one received batch through the outbound or inbound path. */
#ifndef VEIL_PACKET_H
#define VEIL_PACKET_H

#include "dataplane-internal.h"

#pragma GCC visibility push(hidden)

/*
 * Each goes on with the batch of n datagrams just received from where it stopped, read lock held, and
 * returns 1 when the batch is done, 0 when the tx queue is full: the caller flushes it without the
 * lock and calls again.
 */
/* Received on the gateway socket: VTEP → (peer by destination) → seal → underlay. */
int outbound_batch(dp_thread *t, int n);
/* Received on UDP 4500 (esp) or 4789: underlay → open → VTEP. */
int inbound_batch(dp_thread *t, int esp, int n);
/* Read from network vni's TAP port (vnet header and frame): → seal → underlay. Same contract, one frame. */
int tap_outbound(dp_thread *t, uint32_t vni, uint8_t *buf, uint32_t len);

#pragma GCC visibility pop

#endif
