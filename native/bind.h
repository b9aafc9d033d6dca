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

/* A non-blocking UDP socket bound to addr:port (GRO on if asked); -1 with err filled. */
int udp_socket(struct in_addr addr, uint16_t port, int buffer, int gro, char *err, size_t err_len);
/* One recvmmsg into t's rx slots; returns the number of datagrams (0 when none is ready). */
int rx_batch(dp_thread *t, int fd);
/* Sends and empties t's queue. */
void tx_flush(dp_thread *t);

#pragma GCC visibility pop

/* Queues a datagram that lives elsewhere (an rx slot) until the next flush. */
static inline void tx_queue(dp_thread *t, int fd, struct in_addr addr, uint16_t port, uint8_t *data, uint32_t len) {
  if (t->ntx == TX_MAX) tx_flush(t);
  tx_entry *e = &t->tx[t->ntx++];
  e->fd = fd;
  e->dst = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr };
  e->data = data;
  e->len = len;
}

/* Room for a packet built in the arena, or NULL if it can never fit. */
static inline uint8_t *tx_reserve(dp_thread *t, size_t need) {
  if (need > TX_ARENA) return NULL;
  if (t->ntx == TX_MAX || t->arena_used + need > TX_ARENA) tx_flush(t);
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

typedef void (*packet_fn)(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *data, uint32_t len);

/*
 * Splits each received datagram into its GRO segments and hands each packet to fn.
 * Inline, with fn a constant at each caller (packet.c): the per-packet call is direct.
 */
static inline void for_each_packet(dp_thread *t, int n, packet_fn fn, void *ctx) {
  for (int i = 0; i < n; i++) {
    uint8_t *base = t->rx + (size_t)i * RX_SLOT;
    uint32_t len = t->rmsg[i].msg_len;
    if (t->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
      count_unattributed(t, DROP_OVERSIZE, 1);
      counter_add(&t->io.rx_packets, 1);
      continue;
    }
    if (len == 0) { /* an empty datagram is one packet too */
      counter_add(&t->io.rx_packets, 1);
      fn(t, ctx, &t->rname[i], base, 0);
      continue;
    }
    uint32_t seg = rx_segment(t, i);
    for (uint32_t off = 0; off < len; off += seg) {
      counter_add(&t->io.rx_packets, 1);
      fn(t, ctx, &t->rname[i], base + off, len - off < seg ? len - off : seg);
    }
  }
}

#endif
