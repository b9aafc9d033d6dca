/*
 * Shared by the data plane's own files, never by binding.c (it sees dataplane.h):
 *   dataplane.c  lifecycle and the two thread loops
 *   bind.c       sockets, recvmmsg/GRO batches, the tx queue and its sendmmsg/GSO flush
 *   packet.c     per-packet work: outbound seal, inbound open, plain VXLAN
 *   satable.c    peers, networks, SAs and their retirement (the control plane)
 * Symbols declared here are hidden: calls across these files bind directly, no PLT.
 */
#ifndef VEIL_DATAPLANE_INTERNAL_H
#define VEIL_DATAPLANE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "dataplane.h"

#define RX_BATCH 64              /* datagrams per recvmmsg */
#define RX_SLOT 65536            /* one UDP datagram or GRO super-datagram */
#define TX_MAX 4096              /* packets queued before a sendmmsg flush (a whole GRO batch, normally) */
#define TX_ARENA (8u << 20)      /* sealed packets of one flush */

#define TX_TAP (-2) /* a tx entry's fd: the frame goes to its network's TAP port (tap.c tap_write_run) */

typedef struct tx_entry {
  int fd;
  struct sockaddr_in dst;
  uint8_t *data;
  uint32_t len;
  uint32_t vni; /* TX_TAP only */
} tx_entry;

/* A segment's headers at most: Ethernet (14), IPv4 and TCP with all their options (60 each). */
#define TAP_HEADERS_MAX (14 + 60 + 60)
#define TAP_MERGE_MAX 64 /* frames merged into one TAP write at most */

/* One frame read from a TAP, checked (tap.c tap_parse): its segments (one without GSO) and where their headers end. */
typedef struct tap_frame_info {
  uint8_t *frame;
  uint32_t len;
  uint32_t headers;  /* GSO: Ethernet + IPv4 + TCP header lengths */
  uint32_t gso_size; /* 0: the frame goes as it is */
  uint32_t segments;
} tap_frame_info;

typedef struct dp_thread {
  dataplane *dp;
  pthread_t tid;
  int started;
  int epfd;
  uint8_t *rx;
  struct mmsghdr rmsg[RX_BATCH];
  struct iovec riov[RX_BATCH];
  struct sockaddr_in rname[RX_BATCH];
  int rx_next;          /* where processing of the received batch stands: datagram, */
  uint32_t rx_next_off; /* and offset of the next GRO segment in it (bind.h for_each_packet) */
  int rx_dst_slot;      /* the datagram whose destination rx_dst holds (-1: none yet): read once, */
  uint32_t rx_dst;      /* not once per GRO segment (packet.c outbound_packet) */
  /* UDP_GRO's segment size and, on the gateway socket, IP_PKTINFO's destination */
  union { char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct in_pktinfo))]; size_t align; /* cmsghdr alignment */ } rctl[RX_BATCH];
  uint8_t *arena;
  size_t arena_used;
  tx_entry tx[TX_MAX];
  int ntx;
  struct mmsghdr smsg[TX_MAX];
  struct iovec siov[TX_MAX];
  union { char buf[CMSG_SPACE(sizeof(uint16_t))]; size_t align; /* cmsghdr alignment */ } sctl[TX_MAX];
  int sfd[TX_MAX], sfirst[TX_MAX], scount[TX_MAX];
  /* The TAP port: the outbound thread's read buffer and where its frame stands (packet.c tap_outbound),
   * which a full queue interrupts like a batch; both threads' segment headers and merged writes. */
  uint8_t *tap_buf;
  tap_frame_info tap_frame;
  int tap_busy;
  uint32_t tap_seg, tap_target;
  uint16_t tap_sport;
  uint8_t tap_hdr[TAP_HEADERS_MAX];
  struct iovec tap_iov[2 + TAP_MERGE_MAX];
  uint64_t *unattributed; /* this thread's drops that belong to no pair */
  io_counters io;
} dp_thread;

/*
 * Every SA of one direction, in service or retired, by its key's fingerprint: one key is in one place
 * (satable.c "Key identity"). Open addressing; NULL is an empty slot, satable.c's KEY_GONE a deleted one.
 */
typedef struct key_index {
  sa_base **slots;
  uint32_t cap, used, live; /* used: live and deleted slots */
} key_index;

struct dataplane {
  dp_config cfg;
  pthread_rwlock_t lock;
  int esp_fd, plain_fd, deliver_fd, gateway_fd, wake_fd;
  peer *peers[PEER_INDEX_MAX + 1];
  table peer_by_address; /* s_addr → peer */
  table networks;        /* vni → network */
  table inbound;         /* spi → inbound_sa */
  table outbound;        /* pair key → outbound_sa */
  table pairs;           /* pair key → pair_stats */
  table marks;           /* vni → uint32_t: the network's epoch high-water mark (satable.c) */
  key_index keys[2];     /* [0] inbound, [1] outbound SAs by fingerprint */
  /*
   * SAs taken out of service (peer removed, SA replaced or removed) but not forgotten: re-activating the
   * same key resumes its sequence (never GCM nonces from 1 again) and its replay window (never an old
   * packet accepted again). They keep no key, only its fingerprint (satable.c "Retirement").
   */
  struct retired_sa { int outbound; sa_base *sa; } *retired;
  size_t n_retired, cap_retired;
  uint64_t unattributed_tx[DROP_COUNT], unattributed_rx[DROP_COUNT];
  dp_thread out, in;
  atomic_int stopping;
  int started;
};

static inline uint64_t pair_key(uint16_t peer, uint32_t vni) { return ((uint64_t)peer << 32) | vni; }

static inline void count_unattributed(dp_thread *t, enum drop_reason r, uint64_t n) { counter_add(&t->unattributed[r], n); }

#pragma GCC visibility push(hidden)

/* dataplane.c: fills err with fmt(a, strerror(e)) ("" when e is 0). */
void set_err(char *err, size_t len, const char *fmt, const char *a, int e);

/* satable.c: a network's TAP port closed and out of the epoll set (write lock held). */
void close_tap(dataplane *dp, network *n);

/* satable.c: the tables empty; and everything in them freed. */
int satable_init(dataplane *dp);
void satable_free(dataplane *dp);

#pragma GCC visibility pop

#endif
