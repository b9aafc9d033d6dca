/* Per-packet work (packet.c): one received batch through the outbound or inbound path. */
#ifndef VEIL_PACKET_H
#define VEIL_PACKET_H

#include "dataplane-internal.h"

#pragma GCC visibility push(hidden)

/* The n datagrams just received on peer p's gateway socket: VTEP → seal → underlay. Read lock held. */
void outbound_batch(dp_thread *t, peer *p, int n);
/* The n datagrams just received on UDP 4500 (esp) or 4789: underlay → open → VTEP. Read lock held. */
void inbound_batch(dp_thread *t, int esp, int n);

#pragma GCC visibility pop

#endif
