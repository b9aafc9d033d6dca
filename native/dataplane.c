#include "dataplane.h"

#include <openssl/crypto.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define DROP_NAME(e, s) s,
const char *const DROP_NAMES[DROP_COUNT] = { DROP_REASON_LIST(DROP_NAME) };
#undef DROP_NAME

#define RX_BATCH 64              /* datagrams per recvmmsg */
#define RX_SLOT 65536            /* one UDP datagram or GRO super-datagram */
#define RX_BUDGET 8              /* batches per readiness event before epoll_wait again (fairness) */
#define TX_MAX 4096              /* packets queued before a sendmmsg flush (a whole GRO batch, normally) */
#define TX_ARENA (8u << 20)      /* sealed packets of one flush */
#define GSO_MAX_SEGMENTS 64      /* UDP_MAX_SEGMENTS of older kernels */
#define GSO_MAX_BYTES 65000      /* below the 64 KiB IP limit with headers */
#define SEND_RETRY_MS 10
#define SEND_RETRIES 100
#define MAX_LIVE_EPOCHS 3        /* sa-table.ts */

#define TAG_WAKE 0xffffffffffffffffULL
#define TAG_ESP 1
#define TAG_PLAIN 2

typedef struct tx_entry {
  int fd;
  struct sockaddr_in dst;
  uint8_t *data;
  uint32_t len;
} tx_entry;

typedef struct dp_thread {
  dataplane *dp;
  pthread_t tid;
  int started;
  int epfd;
  uint8_t *rx;
  struct mmsghdr rmsg[RX_BATCH];
  struct iovec riov[RX_BATCH];
  struct sockaddr_in rname[RX_BATCH];
  union { char buf[CMSG_SPACE(sizeof(int))]; size_t align; /* cmsghdr alignment */ } rctl[RX_BATCH];
  uint8_t *arena;
  size_t arena_used;
  tx_entry tx[TX_MAX];
  int ntx;
  struct mmsghdr smsg[TX_MAX];
  struct iovec siov[TX_MAX];
  union { char buf[CMSG_SPACE(sizeof(uint16_t))]; size_t align; /* cmsghdr alignment */ } sctl[TX_MAX];
  int sfd[TX_MAX], sfirst[TX_MAX], scount[TX_MAX];
  uint64_t *unattributed; /* this thread's drops that belong to no pair */
  io_counters io;
} dp_thread;

struct dataplane {
  dp_config cfg;
  pthread_rwlock_t lock;
  int esp_fd, plain_fd, deliver_fd, wake_fd;
  peer *peers[PEER_INDEX_MAX + 1];
  uint32_t generation;
  table peer_by_address; /* s_addr → peer */
  table networks;        /* vni → network */
  table inbound;         /* spi → inbound_sa */
  table outbound;        /* pair key → outbound_sa */
  table pairs;           /* pair key → pair_stats */
  /*
   * SAs taken out of service (peer or network removed, SA replaced or removed) but not forgotten:
   * re-activating the same key must resume its sequence (never restart GCM nonces at 1) and keep
   * its replay window (never accept old packets again). Pruned two epochs behind, then wiped.
   */
  struct retired_sa { int outbound; void *sa; } *retired;
  size_t n_retired, cap_retired;
  uint64_t unattributed_tx[DROP_COUNT], unattributed_rx[DROP_COUNT];
  dp_thread out, in;
  atomic_int stopping;
  int started;
};

static uint64_t pair_key(uint16_t peer, uint32_t vni) { return ((uint64_t)peer << 32) | vni; }

static void set_err(char *err, size_t len, const char *fmt, const char *a, int e) {
  if (err && len) snprintf(err, len, fmt, a, e ? strerror(e) : "");
}

// ---------------------------------------------------------------- sockets

static int udp_socket(struct in_addr addr, uint16_t port, int buffer, int gro, char *err, size_t err_len) {
  char where[64];
  snprintf(where, sizeof where, "%s:%u", inet_ntoa(addr), port);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    set_err(err, err_len, "socket for %s: %s", where, errno);
    return -1;
  }
  /* SO_*BUFFORCE passes net.core.[rw]mem_max (CAP_NET_ADMIN); otherwise the capped plain option. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer, sizeof buffer) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  int one = 1;
  if (gro) (void)setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one); /* a kernel without it just sends single datagrams */
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr };
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
    set_err(err, err_len, "cannot bind %s: %s", where, errno);
    close(fd);
    return -1;
  }
  return fd;
}

// ---------------------------------------------------------------- transmit queue

static void count_unattributed(dp_thread *t, enum drop_reason r, uint64_t n) { counter_add(&t->unattributed[r], n); }

/* Queues a datagram that lives elsewhere (an rx slot) until the next flush. */
static void tx_flush(dp_thread *t);
static void tx_queue(dp_thread *t, int fd, struct in_addr addr, uint16_t port, uint8_t *data, uint32_t len) {
  if (t->ntx == TX_MAX) tx_flush(t);
  tx_entry *e = &t->tx[t->ntx++];
  e->fd = fd;
  e->dst = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr };
  e->data = data;
  e->len = len;
}

/* Room for a packet built in the arena, or NULL if it can never fit. */
static uint8_t *tx_reserve(dp_thread *t, size_t need) {
  if (need > TX_ARENA) return NULL;
  if (t->ntx == TX_MAX || t->arena_used + need > TX_ARENA) tx_flush(t);
  return t->arena + t->arena_used;
}

static void tx_commit_arena(dp_thread *t, int fd, struct in_addr addr, uint16_t port, uint32_t len) {
  uint8_t *p = t->arena + t->arena_used;
  t->arena_used += (len + 15u) & ~15u;
  tx_queue(t, fd, addr, port, p, len);
}

static int same_destination(const tx_entry *a, const tx_entry *b) {
  return a->fd == b->fd && a->dst.sin_addr.s_addr == b->dst.sin_addr.s_addr && a->dst.sin_port == b->dst.sin_port;
}

/* Waits for send buffer room; 0 when the data plane is stopping or the wait timed out too often. */
static int wait_writable(dp_thread *t, int fd, int *tries) {
  if (atomic_load(&t->dp->stopping) || ++*tries > SEND_RETRIES) return 0;
  struct pollfd pf = { .fd = fd, .events = POLLOUT };
  (void)poll(&pf, 1, SEND_RETRY_MS);
  return 1;
}

/* A GSO message the kernel refused (e.g. a segment above the MTU): its packets one by one. */
static void send_segments(dp_thread *t, int m) {
  for (int k = t->sfirst[m]; k < t->sfirst[m] + t->scount[m]; k++) {
    struct msghdr h = { .msg_name = &t->tx[k].dst, .msg_namelen = sizeof t->tx[k].dst, .msg_iov = &t->siov[k], .msg_iovlen = 1 };
    int tries = 0;
    for (;;) {
      ssize_t r = sendmsg(t->tx[k].fd, &h, 0);
      if (r >= 0) {
        counter_add(&t->io.tx_calls, 1);
        counter_add(&t->io.tx_messages, 1);
        break;
      }
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == ENOBUFS) && wait_writable(t, t->tx[k].fd, &tries)) continue;
      counter_add(&t->io.send_errors, 1);
      count_unattributed(t, DROP_SEND_FAILED, 1);
      break;
    }
  }
}

/*
 * Sends the queue with sendmmsg. With GSO, runs of packets to the same destination
 * whose sizes are equal (the last may be shorter) leave as one message carrying
 * UDP_SEGMENT: the kernel splits it into datagrams of that size.
 */
static void tx_flush(dp_thread *t) {
  const dp_config *cfg = &t->dp->cfg;
  int nm = 0;
  for (int i = 0; i < t->ntx;) {
    tx_entry *e = &t->tx[i];
    int j = i + 1;
    size_t total = e->len;
    if (cfg->gso && e->len <= cfg->gso_max_segment) {
      while (j < t->ntx && j - i < GSO_MAX_SEGMENTS) {
        tx_entry *f = &t->tx[j];
        if (!same_destination(e, f) || f->len > e->len || f->len == 0 || total + f->len > GSO_MAX_BYTES) break;
        total += f->len;
        j++;
        if (f->len < e->len) break; /* a shorter segment ends the run */
      }
    }
    for (int k = i; k < j; k++) t->siov[k] = (struct iovec){ .iov_base = t->tx[k].data, .iov_len = t->tx[k].len };
    struct msghdr *h = &t->smsg[nm].msg_hdr;
    *h = (struct msghdr){ .msg_name = &e->dst, .msg_namelen = sizeof e->dst, .msg_iov = &t->siov[i], .msg_iovlen = (size_t)(j - i) };
    if (j - i > 1) {
      h->msg_control = t->sctl[nm].buf;
      h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      struct cmsghdr *c = CMSG_FIRSTHDR(h);
      c->cmsg_level = IPPROTO_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t size = (uint16_t)e->len;
      memcpy(CMSG_DATA(c), &size, sizeof size);
    }
    t->sfd[nm] = e->fd;
    t->sfirst[nm] = i;
    t->scount[nm] = j - i;
    nm++;
    i = j;
  }
  int tries = 0;
  for (int s = 0; s < nm;) {
    int run = 1;
    while (s + run < nm && t->sfd[s + run] == t->sfd[s]) run++;
    int r = sendmmsg(t->sfd[s], &t->smsg[s], (unsigned)run, 0);
    if (r > 0) {
      counter_add(&t->io.tx_calls, 1);
      counter_add(&t->io.tx_messages, (uint64_t)r);
      s += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == ENOBUFS) && wait_writable(t, t->sfd[s], &tries)) continue;
    /* This message failed: a refused GSO message goes out packet by packet, a single packet is lost. */
    if (t->scount[s] > 1 && r < 0 && (errno == EINVAL || errno == EMSGSIZE || errno == EIO)) {
      send_segments(t, s);
    } else {
      counter_add(&t->io.send_errors, 1);
      count_unattributed(t, DROP_SEND_FAILED, (uint64_t)t->scount[s]);
    }
    s++;
  }
  counter_add(&t->io.tx_packets, (uint64_t)t->ntx);
  t->ntx = 0;
  t->arena_used = 0;
}

// ---------------------------------------------------------------- receive

/* One recvmmsg; returns the number of datagrams (0 when none is ready). */
static int rx_batch(dp_thread *t, int fd) {
  for (int i = 0; i < RX_BATCH; i++) {
    t->riov[i] = (struct iovec){ .iov_base = t->rx + (size_t)i * RX_SLOT, .iov_len = RX_SLOT };
    t->rmsg[i].msg_hdr = (struct msghdr){
      .msg_name = &t->rname[i], .msg_namelen = sizeof t->rname[i], .msg_iov = &t->riov[i], .msg_iovlen = 1,
      .msg_control = t->rctl[i].buf, .msg_controllen = sizeof t->rctl[i].buf,
    };
  }
  int n = recvmmsg(fd, t->rmsg, RX_BATCH, MSG_DONTWAIT, NULL);
  if (n <= 0) return 0;
  counter_add(&t->io.rx_calls, 1);
  counter_add(&t->io.rx_datagrams, (uint64_t)n);
  return n;
}

/* The GRO segment size of datagram i (its whole length without GRO). */
static uint32_t rx_segment(dp_thread *t, int i) {
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

/* Splits each received datagram into its GRO segments and hands each packet to fn. */
static void for_each_packet(dp_thread *t, int n, packet_fn fn, void *ctx) {
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

// ---------------------------------------------------------------- outbound: VTEP → seal → underlay

static void outbound_packet(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *vx, uint32_t len) {
  dataplane *dp = t->dp;
  peer *p = ctx;
  /* Only the local VTEP may use the gateway ports (DESIGN "No local injection"). */
  if (src->sin_addr.s_addr != dp->cfg.vtep.s_addr) { count_unattributed(t, DROP_UNAUTHORIZED_SOURCE, 1); return; }
  if (len < VXLAN_HEADER_LENGTH || !(vx[0] & VXLAN_FLAG_I)) { count_unattributed(t, DROP_BAD_VXLAN_HEADER, 1); return; }
  uint32_t vni = get_u32(vx + 4) >> 8;
  network *net = table_get(&dp->networks, vni);
  if (!net) { count_unattributed(t, DROP_UNKNOWN_VNI, 1); return; }
  pair_stats *ps = table_get(&dp->pairs, pair_key(p->index, vni));
  if (!ps) { count_unattributed(t, DROP_UNKNOWN_PEER, 1); return; } /* not reached: pairs exist for every peer × network */

  if (!net->encrypted) {
    counter_add(&ps->tx.packets, 1);
    counter_add(&ps->tx.bytes, len);
    tx_queue(t, dp->plain_fd, p->address, dp->cfg.peer_plain_port, vx, len);
    return;
  }
  /* Fail closed: no SA, no packet (CVE-2023-28841 sent plaintext instead). */
  outbound_sa *sa = table_get(&dp->outbound, pair_key(p->index, vni));
  if (!sa) { counter_add(&ps->tx.drops[DROP_NO_OUTBOUND_SA], 1); return; }
  if (sa->next > sa->limit) { counter_add(&ps->tx.drops[DROP_SEQ_EXHAUSTED], 1); return; }
  uint8_t *out = tx_reserve(t, (size_t)len + UDP_HEADER_LENGTH + ESP_MAX_OVERHEAD);
  if (!out) { counter_add(&ps->tx.drops[DROP_OVERSIZE], 1); return; }

  uint64_t seq = sa->next;
  __atomic_store_n(&sa->next, seq + 1, __ATOMIC_RELAXED); /* stats() reads the headroom concurrently */
  uint32_t hi = (uint32_t)(seq >> 32), lo = (uint32_t)seq;
  uint8_t iv[ESP_IV_LENGTH], udp[UDP_HEADER_LENGTH], trailer[ESP_ALIGNMENT - 1 + ESP_TRAILER_LENGTH];
  put_u32(iv, hi); /* veil's IV: the 64-bit sequence number */
  put_u32(iv + 4, lo);
  /* Transport mode over UDP/4789: the VTEP's source port kept as flow entropy, checksum 0 (udp.ts). */
  uint32_t payload = UDP_HEADER_LENGTH + len;
  put_u16(udp, ntohs(src->sin_port));
  put_u16(udp + 2, VXLAN_PORT);
  put_u16(udp + 4, (uint16_t)payload);
  put_u16(udp + 6, 0);
  /* RFC 4303 §2.4: pad with 1, 2, 3 ... to a 4-byte boundary, then pad length and next header. */
  uint32_t pad = (ESP_ALIGNMENT - ((payload + ESP_TRAILER_LENGTH) % ESP_ALIGNMENT)) % ESP_ALIGNMENT;
  for (uint32_t i = 0; i < pad; i++) trailer[i] = (uint8_t)(i + 1);
  trailer[pad] = (uint8_t)pad;
  trailer[pad + 1] = IPPROTO_UDP_NUMBER;
  struct iovec pt[3] = { { udp, sizeof udp }, { vx, len }, { trailer, pad + ESP_TRAILER_LENGTH } };
  int sealed = esp_seal_danger(&sa->cipher, hi, lo, iv, pt, 3, out);
  if (sealed < 0) { counter_add(&ps->tx.drops[DROP_SEND_FAILED], 1); return; }
  tx_commit_arena(t, dp->esp_fd, p->address, dp->cfg.peer_esp_port, (uint32_t)sealed);
  counter_add(&sa->sealed, 1);
  counter_add(&sa->bytes, payload);
  counter_add(&ps->tx.packets, 1);
  counter_add(&ps->tx.bytes, len);
}

// ---------------------------------------------------------------- inbound: underlay → open → VTEP

static void deliver(dp_thread *t, uint8_t *vx, uint32_t len) {
  tx_queue(t, t->dp->deliver_fd, t->dp->cfg.vtep, t->dp->cfg.vtep_port, vx, len);
}

/* The fixed order of src/vxlan/inbound.ts; the window never moves before authentication. */
static void inbound_esp_packet(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *d, uint32_t len) {
  (void)ctx;
  (void)src;
  dataplane *dp = t->dp;
  /* 1. RFC 3948 §2: keepalives and IKE share the port. */
  if (len == 1 && d[0] == 0xff) { count_unattributed(t, DROP_NAT_KEEPALIVE, 1); return; }
  if (len >= 4 && get_u32(d) == 0) { count_unattributed(t, DROP_NON_ESP_MARKER, 1); return; }
  /* 2. Length, then the SPI names the SA. */
  if (len < ESP_MIN_LENGTH) { count_unattributed(t, DROP_TRUNCATED, 1); return; }
  inbound_sa *sa = table_get(&dp->inbound, get_u32(d + ESP_SPI_OFFSET));
  if (!sa) { count_unattributed(t, DROP_UNKNOWN_SPI, 1); return; }
  uint64_t *drops = sa->pair->rx.drops;
  /* 3. Replay check, before decryption. */
  uint32_t lo = get_u32(d + ESP_SEQ_OFFSET);
  int64_t hi = replay_check(&sa->replay, lo);
  if (hi == REPLAY_TOO_OLD) { counter_add(&drops[DROP_REPLAY_TOO_OLD], 1); return; }
  if (hi == REPLAY_DUPLICATE) { counter_add(&drops[DROP_REPLAY_DUPLICATE], 1); return; }
  /* 4. ICV verify and decrypt, in place. */
  uint8_t *pt = d + ESP_PAYLOAD_OFFSET;
  int n = esp_open_danger(&sa->cipher, d, len, (uint32_t)hi, pt);
  if (n < 0) { counter_add(&drops[DROP_AUTH_FAILED], 1); return; }
  /* 5. Replay update, only now that the packet is authentic. */
  if (!replay_update(&sa->replay, (uint32_t)hi, lo)) { counter_add(&drops[DROP_REPLAY_DUPLICATE], 1); return; }
  /* 6. Trailer (RFC 4303 §2.4), next header, inner UDP to 4789, VXLAN. */
  if (n < ESP_TRAILER_LENGTH || n % ESP_ALIGNMENT != 0) { counter_add(&drops[DROP_BAD_ALIGNMENT], 1); return; }
  uint32_t pad = pt[n - 2], next_header = pt[n - 1];
  int payload = n - ESP_TRAILER_LENGTH - (int)pad;
  if (payload < 0) { counter_add(&drops[DROP_BAD_PAD_LENGTH], 1); return; }
  for (uint32_t i = 1; i <= pad; i++)
    if (pt[payload + (int)i - 1] != i) { counter_add(&drops[DROP_BAD_PADDING], 1); return; }
  if (next_header != IPPROTO_UDP_NUMBER) { counter_add(&drops[DROP_BAD_NEXT_HEADER], 1); return; }
  if (payload < UDP_HEADER_LENGTH || get_u16(pt + 4) != (uint32_t)payload || get_u16(pt + 2) != VXLAN_PORT)
    { counter_add(&drops[DROP_BAD_INNER_UDP], 1); return; }
  uint8_t *vx = pt + UDP_HEADER_LENGTH;
  uint32_t vlen = (uint32_t)payload - UDP_HEADER_LENGTH;
  if (vlen < VXLAN_HEADER_LENGTH || !(vx[0] & VXLAN_FLAG_I)) { counter_add(&drops[DROP_BAD_VXLAN_HEADER], 1); return; }
  /* 7. Isolation: an SA carries exactly one network. */
  if ((get_u32(vx + 4) >> 8) != sa->vni) { counter_add(&drops[DROP_VNI_MISMATCH], 1); return; }
  counter_add(&sa->opened, 1);
  counter_add(&sa->bytes, vlen);
  counter_add(&sa->pair->rx.packets, 1);
  counter_add(&sa->pair->rx.bytes, vlen);
  deliver(t, vx, vlen);
}

/* Standard VXLAN on 4789: known peers only, plain networks only (a claimed encrypted VNI is a downgrade). */
static void inbound_plain_packet(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *vx, uint32_t len) {
  (void)ctx;
  dataplane *dp = t->dp;
  peer *p = table_get(&dp->peer_by_address, src->sin_addr.s_addr);
  if (!p) { count_unattributed(t, DROP_UNKNOWN_PEER, 1); return; }
  if (len < VXLAN_HEADER_LENGTH || !(vx[0] & VXLAN_FLAG_I)) { count_unattributed(t, DROP_BAD_VXLAN_HEADER, 1); return; }
  uint32_t vni = get_u32(vx + 4) >> 8;
  network *net = table_get(&dp->networks, vni);
  if (!net) { count_unattributed(t, DROP_UNKNOWN_VNI, 1); return; }
  pair_stats *ps = table_get(&dp->pairs, pair_key(p->index, vni));
  if (!ps) { count_unattributed(t, DROP_UNKNOWN_PEER, 1); return; }
  if (net->encrypted) { counter_add(&ps->rx.drops[DROP_PLAINTEXT_ON_ENCRYPTED], 1); return; }
  counter_add(&ps->rx.packets, 1);
  counter_add(&ps->rx.bytes, len);
  deliver(t, vx, len);
}

// ---------------------------------------------------------------- threads

static void *outbound_main(void *arg) {
  dp_thread *t = arg;
  dataplane *dp = t->dp;
  struct epoll_event ev[64];
  while (!atomic_load(&dp->stopping)) {
    int n = epoll_wait(t->epfd, ev, 64, -1);
    for (int e = 0; e < n; e++) {
      if (ev[e].data.u64 == TAG_WAKE) continue;
      uint16_t index = (uint16_t)(ev[e].data.u64 & 0xffff);
      uint32_t generation = (uint32_t)(ev[e].data.u64 >> 32);
      for (int b = 0, got = 1; b < RX_BUDGET && got; b++) {
        pthread_rwlock_rdlock(&dp->lock);
        peer *p = index <= PEER_INDEX_MAX ? dp->peers[index] : NULL;
        got = 0;
        if (p && p->generation == generation) {
          /* receiving under the read lock: removePeer cannot close this socket meanwhile */
          got = rx_batch(t, p->fd);
          for_each_packet(t, got, outbound_packet, p);
        }
        pthread_rwlock_unlock(&dp->lock);
        tx_flush(t);
      }
    }
  }
  return NULL;
}

static void *inbound_main(void *arg) {
  dp_thread *t = arg;
  dataplane *dp = t->dp;
  struct epoll_event ev[4];
  while (!atomic_load(&dp->stopping)) {
    int n = epoll_wait(t->epfd, ev, 4, -1);
    for (int e = 0; e < n; e++) {
      if (ev[e].data.u64 == TAG_WAKE) continue;
      int esp = ev[e].data.u64 == TAG_ESP;
      for (int b = 0; b < RX_BUDGET; b++) {
        int got = rx_batch(t, esp ? dp->esp_fd : dp->plain_fd);
        if (!got) break;
        pthread_rwlock_rdlock(&dp->lock);
        for_each_packet(t, got, esp ? inbound_esp_packet : inbound_plain_packet, NULL);
        pthread_rwlock_unlock(&dp->lock);
        tx_flush(t);
      }
    }
  }
  return NULL;
}

static int thread_init(dataplane *dp, dp_thread *t, uint64_t *unattributed, char *err, size_t err_len) {
  t->dp = dp;
  t->unattributed = unattributed;
  t->rx = malloc((size_t)RX_BATCH * RX_SLOT);
  t->arena = malloc(TX_ARENA);
  t->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!t->rx || !t->arena || t->epfd < 0) {
    set_err(err, err_len, "%s: %s", "data plane thread", errno);
    return -1;
  }
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_WAKE };
  return epoll_ctl(t->epfd, EPOLL_CTL_ADD, dp->wake_fd, &ev);
}

static void thread_free(dp_thread *t) {
  free(t->rx);
  free(t->arena);
  if (t->epfd >= 0) close(t->epfd);
  t->rx = t->arena = NULL;
  t->epfd = -1;
}

// ---------------------------------------------------------------- lifecycle

dataplane *dp_create(const dp_config *cfg, char *err, size_t err_len) {
  dataplane *dp = calloc(1, sizeof *dp);
  if (!dp) return NULL;
  dp->cfg = *cfg;
  dp->esp_fd = dp->plain_fd = dp->deliver_fd = dp->wake_fd = dp->out.epfd = dp->in.epfd = -1;
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  /* writers (JS table changes) must not starve behind two readers that alternate forever */
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&dp->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (table_init(&dp->peer_by_address) || table_init(&dp->networks) || table_init(&dp->inbound) ||
      table_init(&dp->outbound) || table_init(&dp->pairs)) {
    set_err(err, err_len, "%s%s", "out of memory", 0);
    dp_destroy(dp);
    return NULL;
  }
  dp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (dp->wake_fd < 0 ||
      (dp->esp_fd = udp_socket(cfg->underlay, cfg->esp_port, cfg->buffer_bytes, cfg->gro, err, err_len)) < 0 ||
      (dp->plain_fd = udp_socket(cfg->underlay, cfg->plain_port, cfg->buffer_bytes, cfg->gro, err, err_len)) < 0 ||
      (dp->deliver_fd = udp_socket(cfg->host, cfg->delivery_port, cfg->buffer_bytes, 0, err, err_len)) < 0 ||
      thread_init(dp, &dp->out, dp->unattributed_tx, err, err_len) < 0 ||
      thread_init(dp, &dp->in, dp->unattributed_rx, err, err_len) < 0) {
    dp_destroy(dp);
    return NULL;
  }
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_ESP };
  epoll_ctl(dp->in.epfd, EPOLL_CTL_ADD, dp->esp_fd, &ev);
  ev.data.u64 = TAG_PLAIN;
  epoll_ctl(dp->in.epfd, EPOLL_CTL_ADD, dp->plain_fd, &ev);
  return dp;
}

int dp_start(dataplane *dp, char *err, size_t err_len) {
  if (dp->started) return 0;
  int e = pthread_create(&dp->out.tid, NULL, outbound_main, &dp->out);
  if (e) {
    set_err(err, err_len, "%s: %s", "outbound thread", e);
    return -1;
  }
  dp->out.started = 1;
  e = pthread_create(&dp->in.tid, NULL, inbound_main, &dp->in);
  if (e) {
    set_err(err, err_len, "%s: %s", "inbound thread", e);
    return -1;
  }
  dp->in.started = 1;
  dp->started = 1;
  return 0;
}

static void free_inbound(inbound_sa *sa) {
  esp_cipher_free(&sa->cipher);
  replay_free(&sa->replay);
  OPENSSL_cleanse(sa, sizeof *sa);
  free(sa);
}
static void free_outbound(outbound_sa *sa) {
  esp_cipher_free(&sa->cipher);
  OPENSSL_cleanse(sa, sizeof *sa);
  free(sa);
}

static void free_sa(int outbound, void *sa) {
  if (outbound) free_outbound(sa);
  else free_inbound(sa);
}

/* The identity of an SA's key material: (SPI, peer, VNI, epoch) and the key and salt bytes. */
static int same_key(const esp_cipher *c, const uint8_t *k, size_t k_len, uint32_t spi, const uint8_t *key, size_t key_len, const uint8_t salt[4]) {
  return c->spi == spi && k_len == key_len && CRYPTO_memcmp(k, key, key_len) == 0 && CRYPTO_memcmp(c->salt, salt, 4) == 0;
}

/* Takes an SA out of service without forgetting it. Write lock held. */
static void retire(dataplane *dp, int outbound, void *sa) {
  if (dp->n_retired == dp->cap_retired) {
    size_t cap = dp->cap_retired ? 2 * dp->cap_retired : 16;
    struct retired_sa *r = realloc(dp->retired, cap * sizeof *r);
    if (!r) {
      free_sa(outbound, sa); /* out of memory: nothing safer to do than forget it */
      return;
    }
    dp->retired = r;
    dp->cap_retired = cap;
  }
  dp->retired[dp->n_retired++] = (struct retired_sa){ outbound, sa };
}

/* A retired SA with exactly this key and name, removed from the retired list; else NULL. Write lock held. */
static void *reclaim(dataplane *dp, int outbound, uint32_t spi, uint16_t peer_index, uint32_t vni, uint32_t epoch,
                     const uint8_t *key, size_t key_len, const uint8_t salt[4]) {
  for (size_t i = 0; i < dp->n_retired; i++) {
    struct retired_sa *r = &dp->retired[i];
    if (r->outbound != outbound) continue;
    int match;
    if (outbound) {
      outbound_sa *o = r->sa;
      match = o->peer == peer_index && o->vni == vni && o->epoch == epoch && same_key(&o->cipher, o->key, o->key_len, spi, key, key_len, salt);
    } else {
      inbound_sa *n = r->sa;
      match = n->peer == peer_index && n->vni == vni && n->epoch == epoch && same_key(&n->cipher, n->key, n->key_len, spi, key, key_len, salt);
    }
    if (!match) continue;
    void *sa = r->sa;
    dp->retired[i] = dp->retired[--dp->n_retired];
    return sa;
  }
  return NULL;
}

/* Forgets (and wipes) retired SAs of (peer, vni) more than two epochs behind `epoch`. Write lock held. */
static void prune_retired(dataplane *dp, uint16_t peer_index, uint32_t vni, uint32_t epoch) {
  for (size_t i = 0; i < dp->n_retired;) {
    struct retired_sa *r = &dp->retired[i];
    uint16_t p = r->outbound ? ((outbound_sa *)r->sa)->peer : ((inbound_sa *)r->sa)->peer;
    uint32_t v = r->outbound ? ((outbound_sa *)r->sa)->vni : ((inbound_sa *)r->sa)->vni;
    uint32_t e = r->outbound ? ((outbound_sa *)r->sa)->epoch : ((inbound_sa *)r->sa)->epoch;
    if (p == peer_index && v == vni && (uint64_t)e + 2 < epoch) {
      free_sa(r->outbound, r->sa);
      dp->retired[i] = dp->retired[--dp->n_retired];
    } else {
      i++;
    }
  }
}

void dp_destroy(dataplane *dp) {
  if (!dp) return;
  atomic_store(&dp->stopping, 1);
  if (dp->wake_fd >= 0) {
    uint64_t one = 1;
    (void)!write(dp->wake_fd, &one, sizeof one); /* level-triggered: wakes both threads */
  }
  if (dp->out.started) pthread_join(dp->out.tid, NULL);
  if (dp->in.started) pthread_join(dp->in.tid, NULL);
  dp->out.started = dp->in.started = 0;
  for (int i = 0; i <= PEER_INDEX_MAX; i++) {
    if (!dp->peers[i]) continue;
    close(dp->peers[i]->fd);
    free(dp->peers[i]);
  }
  table *sa_tables[2] = { &dp->inbound, &dp->outbound };
  for (int k = 0; k < 2; k++) {
    table *t = sa_tables[k];
    for (uint32_t i = 0; i < t->cap; i++) {
      if (t->state[i] != 1) continue;
      if (k == 0) free_inbound(t->vals[i]);
      else free_outbound(t->vals[i]);
    }
  }
  for (size_t i = 0; i < dp->n_retired; i++) free_sa(dp->retired[i].outbound, dp->retired[i].sa);
  free(dp->retired);
  for (uint32_t i = 0; i < dp->networks.cap; i++) if (dp->networks.state[i] == 1) free(dp->networks.vals[i]);
  for (uint32_t i = 0; i < dp->pairs.cap; i++) if (dp->pairs.state[i] == 1) free(dp->pairs.vals[i]);
  table_free(&dp->peer_by_address);
  table_free(&dp->networks);
  table_free(&dp->inbound);
  table_free(&dp->outbound);
  table_free(&dp->pairs);
  int fds[4] = { dp->esp_fd, dp->plain_fd, dp->deliver_fd, dp->wake_fd };
  for (int i = 0; i < 4; i++) if (fds[i] >= 0) close(fds[i]);
  thread_free(&dp->out);
  thread_free(&dp->in);
  pthread_rwlock_destroy(&dp->lock);
  free(dp);
}

// ---------------------------------------------------------------- control plane (write lock)

static pair_stats *ensure_pair(dataplane *dp, uint16_t peer_index, uint32_t vni) {
  uint64_t key = pair_key(peer_index, vni);
  pair_stats *ps = table_get(&dp->pairs, key);
  if (ps) return ps;
  ps = calloc(1, sizeof *ps);
  if (!ps) return NULL;
  ps->peer = peer_index;
  ps->vni = vni;
  if (table_put(&dp->pairs, key, ps) < 0) {
    free(ps);
    return NULL;
  }
  return ps;
}

int dp_add_peer(dataplane *dp, uint16_t index, struct in_addr address, uint16_t port, char *err, size_t err_len) {
  if (index < 1 || index > PEER_INDEX_MAX) {
    set_err(err, err_len, "%s%s", "peer index out of range", 0);
    return -1;
  }
  pthread_rwlock_wrlock(&dp->lock);
  peer *old = dp->peers[index];
  if (old && old->port == port) {
    /* same socket; the underlay address may change */
    if (table_get(&dp->peer_by_address, old->address.s_addr) == old) table_del(&dp->peer_by_address, old->address.s_addr);
    old->address = address;
    table_put(&dp->peer_by_address, address.s_addr, old);
    pthread_rwlock_unlock(&dp->lock);
    return 0;
  }
  pthread_rwlock_unlock(&dp->lock);
  if (old) dp_remove_peer(dp, index);

  int fd = udp_socket(dp->cfg.host, port, dp->cfg.buffer_bytes, dp->cfg.gro, err, err_len);
  if (fd < 0) return -1;
  peer *p = calloc(1, sizeof *p);
  if (!p) {
    close(fd);
    set_err(err, err_len, "%s%s", "out of memory", 0);
    return -1;
  }
  p->index = index;
  p->port = port;
  p->address = address;
  p->fd = fd;
  pthread_rwlock_wrlock(&dp->lock);
  p->generation = ++dp->generation;
  dp->peers[index] = p;
  table_put(&dp->peer_by_address, address.s_addr, p);
  for (uint32_t i = 0; i < dp->networks.cap; i++)
    if (dp->networks.state[i] == 1) ensure_pair(dp, index, (uint32_t)dp->networks.keys[i]);
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ((uint64_t)p->generation << 32) | index };
  int rc = epoll_ctl(dp->out.epfd, EPOLL_CTL_ADD, fd, &ev);
  pthread_rwlock_unlock(&dp->lock);
  if (rc < 0) {
    set_err(err, err_len, "%s: %s", "epoll", errno);
    dp_remove_peer(dp, index);
    return -1;
  }
  return 0;
}

/* Removes every SA matching (peer, vni); UINT32_MAX / 0 act as wildcards. Write lock held. */
static void remove_sas(dataplane *dp, int by_peer, uint16_t peer_index, int by_vni, uint32_t vni) {
  for (uint32_t i = 0; i < dp->outbound.cap; i++) {
    if (dp->outbound.state[i] != 1) continue;
    outbound_sa *sa = dp->outbound.vals[i];
    if ((by_peer && sa->peer != peer_index) || (by_vni && sa->vni != vni)) continue;
    table_del(&dp->outbound, dp->outbound.keys[i]);
    retire(dp, 1, sa);
  }
  for (uint32_t i = 0; i < dp->inbound.cap; i++) {
    if (dp->inbound.state[i] != 1) continue;
    inbound_sa *sa = dp->inbound.vals[i];
    if ((by_peer && sa->peer != peer_index) || (by_vni && sa->vni != vni)) continue;
    table_del(&dp->inbound, dp->inbound.keys[i]);
    retire(dp, 0, sa);
  }
}

int dp_remove_peer(dataplane *dp, uint16_t index) {
  if (index < 1 || index > PEER_INDEX_MAX) return 0;
  pthread_rwlock_wrlock(&dp->lock);
  peer *p = dp->peers[index];
  if (p) {
    /* No reader is inside recvmmsg on this socket: they receive under the read lock. */
    epoll_ctl(dp->out.epfd, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    if (table_get(&dp->peer_by_address, p->address.s_addr) == p) table_del(&dp->peer_by_address, p->address.s_addr);
    dp->peers[index] = NULL;
    remove_sas(dp, 1, index, 0, 0);
    free(p);
  }
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

int dp_set_network(dataplane *dp, uint32_t vni, int encrypted) {
  pthread_rwlock_wrlock(&dp->lock);
  network *n = table_get(&dp->networks, vni);
  int rc = 0;
  if (!n) {
    n = calloc(1, sizeof *n);
    if (!n || table_put(&dp->networks, vni, n) < 0) {
      free(n);
      rc = -1;
      goto out;
    }
  }
  n->vni = vni;
  n->encrypted = encrypted;
  for (int i = 1; i <= PEER_INDEX_MAX; i++) if (dp->peers[i]) ensure_pair(dp, (uint16_t)i, vni);
out:
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_remove_network(dataplane *dp, uint32_t vni) {
  pthread_rwlock_wrlock(&dp->lock);
  free(table_del(&dp->networks, vni));
  remove_sas(dp, 0, 0, 1, vni);
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

int dp_install_inbound(dataplane *dp, uint32_t spi, const uint8_t *key, size_t key_len, const uint8_t salt[4], int esn,
                       uint32_t vni, uint16_t peer_index, uint32_t epoch, char *err, size_t err_len) {
  inbound_sa *sa = calloc(1, sizeof *sa);
  if (!sa || key_len > sizeof sa->key || esp_cipher_init(&sa->cipher, key, key_len, salt, spi, esn, 0) < 0 ||
      replay_init(&sa->replay, esn, dp->cfg.replay_window) < 0) {
    set_err(err, err_len, "%s%s", "cannot create the inbound SA (key length 16, 24 or 32; replay window)", 0);
    if (sa) free_inbound(sa);
    return -1;
  }
  memcpy(sa->key, key, key_len);
  sa->key_len = key_len;
  sa->vni = vni;
  sa->peer = peer_index;
  sa->epoch = epoch;
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  inbound_sa *existing = table_get(&dp->inbound, spi);
  if (existing) {
    if (existing->peer != peer_index || existing->vni != vni || existing->epoch != epoch) {
      set_err(err, err_len, "%s%s", "VEIL_ERR_SA_SPI_IN_USE: the SPI is in use by another peer, network or epoch", 0);
      rc = -1;
      goto out;
    }
    /* The same SA again: keep it, and its replay window (a fresh window would re-open old packets). */
    if (same_key(&existing->cipher, existing->key, existing->key_len, spi, key, key_len, salt)) goto out;
    /* A new key under the same name (the peer restarted: new incarnation): replace it, fresh window. */
    table_del(&dp->inbound, spi);
    free_inbound(existing);
  }
  prune_retired(dp, peer_index, vni, epoch);
  int live = 0;
  for (uint32_t i = 0; i < dp->inbound.cap; i++) {
    if (dp->inbound.state[i] != 1) continue;
    inbound_sa *o = dp->inbound.vals[i];
    if (o->peer == peer_index && o->vni == vni && o->epoch != epoch) live++;
  }
  if (live >= MAX_LIVE_EPOCHS) {
    set_err(err, err_len, "%s%s", "VEIL_ERR_SA_TOO_MANY_EPOCHS: the pair already has three live epochs", 0);
    rc = -1;
    goto out;
  }
  /* Installed before, taken out of service, installed again: the same object, window and all. */
  inbound_sa *back = existing ? NULL : reclaim(dp, 0, spi, peer_index, vni, epoch, key, key_len, salt);
  if (back) {
    free_inbound(sa);
    sa = back;
  }
  sa->pair = ensure_pair(dp, peer_index, vni);
  if (!sa->pair || table_put(&dp->inbound, spi, sa) < 0) {
    set_err(err, err_len, "%s%s", "out of memory", 0);
    rc = -1;
    if (back) {
      retire(dp, 0, sa);
      sa = NULL;
    }
    goto out;
  }
  sa = NULL;
out:
  pthread_rwlock_unlock(&dp->lock);
  if (sa) free_inbound(sa);
  return rc;
}

int dp_remove_inbound(dataplane *dp, uint32_t spi) {
  pthread_rwlock_wrlock(&dp->lock);
  inbound_sa *sa = table_del(&dp->inbound, spi);
  if (sa) retire(dp, 0, sa); /* no reader can hold it: they drop every pointer at unlock */
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

int dp_set_outbound(dataplane *dp, uint16_t peer_index, uint32_t vni, uint32_t spi, const uint8_t *key, size_t key_len,
                    const uint8_t salt[4], int esn, uint32_t epoch, uint64_t budget, char *err, size_t err_len) {
  outbound_sa *sa = calloc(1, sizeof *sa);
  if (!sa || key_len > sizeof sa->key || esp_cipher_init(&sa->cipher, key, key_len, salt, spi, esn, 1) < 0) {
    set_err(err, err_len, "%s%s", "cannot create the outbound SA (key length 16, 24 or 32)", 0);
    free(sa);
    return -1;
  }
  memcpy(sa->key, key, key_len);
  sa->key_len = key_len;
  sa->vni = vni;
  sa->peer = peer_index;
  sa->epoch = epoch;
  sa->next = 1; /* RFC 4303 §3.3.3: the first packet is number 1 */
  uint64_t protocol = esn ? SEQ64_MAX : SEQ32_MAX;
  sa->limit = budget && budget < protocol ? budget : protocol;
  uint64_t k = pair_key(peer_index, vni);
  pthread_rwlock_wrlock(&dp->lock);
  outbound_sa *old = table_get(&dp->outbound, k);
  int rc = 0;
  if (old && old->peer == peer_index && old->vni == vni && old->epoch == epoch && same_key(&old->cipher, old->key, old->key_len, spi, key, key_len, salt)) {
    /* Activating the SA that is already active: keep its counter, never restart a nonce sequence. */
    pthread_rwlock_unlock(&dp->lock);
    free_outbound(sa);
    return 0;
  }
  /* Active before and taken out of service: resume it, counter and all (same key, same nonces otherwise). */
  outbound_sa *back = reclaim(dp, 1, spi, peer_index, vni, epoch, key, key_len, salt);
  if (back) {
    free_outbound(sa);
    sa = back;
  }
  sa->pair = ensure_pair(dp, peer_index, vni);
  if (!sa->pair || table_put(&dp->outbound, k, sa) < 0) {
    set_err(err, err_len, "%s%s", "out of memory", 0);
    pthread_rwlock_unlock(&dp->lock);
    if (back) retire(dp, 1, sa); else free_outbound(sa);
    return -1;
  }
  if (old) retire(dp, 1, old);
  prune_retired(dp, peer_index, vni, epoch);
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_remove_outbound(dataplane *dp, uint16_t peer_index, uint32_t vni) {
  pthread_rwlock_wrlock(&dp->lock);
  outbound_sa *sa = table_del(&dp->outbound, pair_key(peer_index, vni));
  if (sa) retire(dp, 1, sa);
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

void dp_visit_stats(dataplane *dp, const dp_stats_visitor *v) {
  pthread_rwlock_rdlock(&dp->lock);
  for (uint32_t i = 0; i < dp->pairs.cap; i++) {
    if (dp->pairs.state[i] != 1) continue;
    pair_stats *ps = dp->pairs.vals[i];
    v->pair(v->ctx, ps, table_get(&dp->outbound, dp->pairs.keys[i]));
  }
  for (uint32_t i = 0; i < dp->inbound.cap; i++)
    if (dp->inbound.state[i] == 1) v->inbound(v->ctx, (uint32_t)dp->inbound.keys[i], dp->inbound.vals[i]);
  v->unattributed(v->ctx, dp->unattributed_tx, dp->unattributed_rx);
  v->io(v->ctx, "outbound", &dp->out.io);
  v->io(v->ctx, "inbound", &dp->in.io);
  pthread_rwlock_unlock(&dp->lock);
}
