/*
 * Socket batching (bind.c): UDP sockets, recvmmsg batches split at their GRO
 * segment size, and the tx queue sent with sendmmsg and UDP_SEGMENT runs.
 * The per-packet helpers are inline here so packet.c inlines them as before.
 */
#ifndef VEIL_BIND_H
#define VEIL_BIND_H

#include <netinet/in.h>
#include <string.h>

#include "dataplane-internal.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#pragma GCC visibility push(hidden)

typedef struct udp_options {
  int gro;            /* UDP_GRO on receive */
  int pktinfo;        /* IP_PKTINFO: each datagram's destination address (rx_destination) */
  const char *device; /* SO_BINDTODEVICE before bind, unless NULL or "" */
} udp_options;

/* A non-blocking UDP socket bound to addr:port; -1 with err filled. */
int udp_socket(struct in_addr addr, uint16_t port, int buffer, const udp_options *o, char *err, size_t err_len);
/* One recvmmsg into t's rx slots; returns the number of datagrams (0 when none is ready). */
int rx_batch(dp_thread *t, int fd);
/* Sends and empties t's queue, waiting for the underlay cfg.send_wait_ms at most. Never under the table lock. */
void tx_flush(dp_thread *t);

#pragma GCC visibility pop

/* The most one packet takes in the arena: a whole rx slot sealed, aligned. */
#define TX_PACKET_MAX (RX_SLOT + UDP_HEADER_LENGTH + ESP_MAX_OVERHEAD + 16)

/* Whether the queue has room for one more packet, whatever its size. */
static inline int tx_room(const dp_thread *t) { return t->ntx < TX_MAX && t->arena_used + TX_PACKET_MAX <= TX_ARENA; }

/* Queues a datagram that lives elsewhere (an rx slot) until the next flush; for_each_packet made room. */
static inline void tx_queue(dp_thread *t, int fd, struct in_addr addr, uint16_t port, uint8_t *data, uint32_t len) {
  if (t->ntx == TX_MAX) { /* not reached: for_each_packet stops while there is no room */
    count_unattributed(t, DROP_SEND_FAILED, 1);
    return;
  }
  tx_entry *e = &t->tx[t->ntx++];
  e->fd = fd;
  e->dst = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr };
  e->data = data;
  e->len = len;
}

/* Queues a frame for network vni's TAP port (tap.c tap_write_run); for_each_packet made room. */
static inline void tx_queue_tap(dp_thread *t, uint32_t vni, uint8_t *frame, uint32_t len) {
  if (t->ntx == TX_MAX) { /* not reached, as for tx_queue: never let the VNI land on another entry */
    count_unattributed(t, DROP_SEND_FAILED, 1);
    return;
  }
  tx_queue(t, TX_TAP, (struct in_addr){ 0 }, 0, frame, len);
  t->tx[t->ntx - 1].vni = vni;
}

/* Room for a packet built in the arena, or NULL if it does not fit (never, for a received packet: see tx_room). */
static inline uint8_t *tx_reserve(dp_thread *t, size_t need) {
  if (t->ntx == TX_MAX || need > TX_ARENA - t->arena_used) return NULL;
  return t->arena + t->arena_used;
}

static inline void tx_commit_arena(dp_thread *t, int fd, struct in_addr addr, uint16_t port, uint32_t len) {
  uint8_t *p = t->arena + t->arena_used;
  t->arena_used += (len + 15u) & ~15u;
  tx_queue(t, fd, addr, port, p, len);
}

/* The GRO segment size of datagram i (its whole length without GRO). */
static inline uint32_t rx_segment(dp_thread *t, int i) {
  struct msghdr *h = &t->rmsg[i].msg_hdr;
  uint32_t seg = t->rmsg[i].msg_len;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
      int size;
      memcpy(&size, CMSG_DATA(c), sizeof size);
      if (size > 0) seg = (uint32_t)size;
    }
  }
  return seg ? seg : 1;
}

/* The destination address of datagram i, from IP_PKTINFO (network order; 0 without it). */
static inline uint32_t rx_destination(dp_thread *t, int i) {
  struct msghdr *h = &t->rmsg[i].msg_hdr;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo info;
      memcpy(&info, CMSG_DATA(c), sizeof info);
      return info.ipi_addr.s_addr;
    }
  }
  return 0;
}

typedef void (*packet_fn)(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *data, uint32_t len);

/*
 * Splits each received datagram into its GRO segments and hands each packet to fn, from where the
 * previous call stopped (rx_batch starts at the first; fn's datagram is t->rx_next). Returns 1 when
 * the batch is done, 0 when the tx queue is full: it never flushes itself, the caller does, without
 * the table lock (dataplane.c).
 * Inline, with fn a constant at each caller (packet.c): the per-packet call is direct.
 */
static inline int for_each_packet(dp_thread *t, int n, packet_fn fn, void *ctx) {
  for (; t->rx_next < n; t->rx_next++, t->rx_next_off = 0) {
    int i = t->rx_next;
    uint8_t *base = t->rx + (size_t)i * RX_SLOT;
    uint32_t len = t->rmsg[i].msg_len;
    if (t->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
      count_unattributed(t, DROP_OVERSIZE, 1);
      counter_add(&t->io.rx_packets, 1);
      continue;
    }
    if (len == 0) { /* an empty datagram is one packet too */
      if (!tx_room(t)) return 0;
      counter_add(&t->io.rx_packets, 1);
      fn(t, ctx, &t->rname[i], base, 0);
      continue;
    }
    uint32_t seg = rx_segment(t, i);
    for (; t->rx_next_off < len; t->rx_next_off += seg) {
      if (!tx_room(t)) return 0;
      uint32_t off = t->rx_next_off;
      counter_add(&t->io.rx_packets, 1);
      fn(t, ctx, &t->rname[i], base + off, len - off < seg ? len - off : seg);
    }
  }
  return 1;
}

#endif
