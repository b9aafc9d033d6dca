/*
 * veil's batched native data plane (see src/vxlan/native/datapath.ts for its JS face).
 *
 *   outbound thread: the gateway socket (*:1021, IP_PKTINFO) → recvmmsg (UDP_GRO) → source must be the
 *                    VTEP → peer = destination − peer net → VXLAN header → network → plain: as is to peer:4789,
 *                    encrypted: SA(peer, vni) → seq → seal → sendmmsg (+UDP_SEGMENT) from UDP 4500
 *                    and each encrypted network's TAP port (tap.h) → a frame or TCP super-segment per read
 *                    → segments → peer by destination MAC (or every peer: flood) → VXLAN → seal → sendmmsg
 *   inbound thread:  underlay UDP 4500 (UDP_GRO) → split by gso_size → RFC 3948 class → length → SPI
 *                    → replay check → ICV+decrypt (in place) → replay update → trailer → inner UDP
 *                    → VXLAN → VNI = SA's → the network's TAP port (segments of one TCP stream merged), or
 *                    sendmmsg (+UDP_SEGMENT) from hostAddress:1022 to vtepAddress:4789;
 *                    underlay UDP 4789: known peer source, plain network only → VTEP.
 *
 * Each peer has one gateway address, peer net + its host index (src/model/peer-net.ts); the VTEP sends
 * that peer's VXLAN there, to the privileged gateway port 1021, and the datagram's destination names
 * the peer. Deliveries to the VTEP leave from hostAddress:1022 (docs/plumbing.md "Gateway addresses").
 *
 * Tables (peers, networks, SAs) change from JS while the threads run. One
 * writer-preferring rwlock: each data thread holds the read lock while it
 * processes a batch, JS takes the write lock to change a table. So no thread
 * ever sees an SA or a peer that is being freed, and both data threads run
 * concurrently. No thread sends while it holds the lock: a send may wait for the
 * underlay, and a table change must never wait on the underlay (dataplane.c).
 * Each counter has exactly one writing thread; stats() reads them with relaxed
 * atomic loads.
 */
#ifndef VEIL_DATAPLANE_H
#define VEIL_DATAPLANE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "esp.h"
#include "replay.h"
#include "table.h"

/* The names and order of src/vxlan/wire/drops.ts DROP_REASONS (checked by the TS loader; docs/wire.md "Drop reasons"). */
#define DROP_REASON_LIST(X) \
  X(NAT_KEEPALIVE, "nat-keepalive") X(NON_ESP_MARKER, "non-esp-marker") X(TRUNCATED, "truncated") \
  X(UNKNOWN_SPI, "unknown-spi") X(REPLAY_TOO_OLD, "replay-too-old") X(REPLAY_DUPLICATE, "replay-duplicate") \
  X(AUTH_FAILED, "auth-failed") X(BAD_ALIGNMENT, "bad-alignment") X(BAD_PAD_LENGTH, "bad-pad-length") \
  X(BAD_PADDING, "bad-padding") X(BAD_NEXT_HEADER, "bad-next-header") X(BAD_INNER_UDP, "bad-inner-udp") \
  X(BAD_VXLAN_HEADER, "bad-vxlan-header") X(VNI_MISMATCH, "vni-mismatch") \
  X(PLAINTEXT_ON_ENCRYPTED, "plaintext-on-encrypted") X(UNKNOWN_VNI, "unknown-vni") \
  X(UNKNOWN_PEER, "unknown-peer") X(NO_OUTBOUND_SA, "no-outbound-sa") X(SEQ_EXHAUSTED, "seq-exhausted") \
  X(OVERSIZE, "oversize") X(SEND_FAILED, "send-failed") X(UNAUTHORIZED_SOURCE, "unauthorized-source") \
  X(BAD_FRAME, "bad-frame")

#define DROP_ENUM(e, s) DROP_##e,
enum drop_reason { DROP_REASON_LIST(DROP_ENUM) DROP_COUNT };
#undef DROP_ENUM
extern const char *const DROP_NAMES[DROP_COUNT];

#define PEER_INDEX_MAX 16383 /* src/vxlan/wire/spi.ts SPI_HOST_INDEX_MAX (docs/wire.md "SPI layout") */
/* src/vxlan/wire/constants.ts VTEP_DELIVERY_PORT: the privileged source port of every delivery to the VTEP;
 * the vtep namespace's firewall accepts VXLAN from nothing else (docs/plumbing.md "No local injection") */
#define VTEP_DELIVERY_PORT 1022
/* src/vxlan/wire/constants.ts VTEP_GATEWAY_PORT: the privileged port every peer's gateway address is sent to */
#define VTEP_GATEWAY_PORT 1021
/* src/vxlan/sa/sequence.ts: with ESN (RFC 4303 §2.2.1) veil stops at 2^53 - 1, without at 2^32 - 1 (§2.2)
 * (docs/wire.md "Sequence numbers and replay") */
#define SEQ64_MAX ((1ULL << 53) - 1)
#define SEQ32_MAX 0xffffffffULL
/* How long one flush may wait for send buffer room in all before it drops the rest as send-failed: the
 * underlay is not draining, and the thread must get back to fresh traffic (docs/wire.md "Drop reasons"). */
#define SEND_WAIT_MS_DEFAULT 100

/* Counters of one direction, written by one thread only. */
typedef struct dir_counters {
  uint64_t packets, bytes;
  uint64_t drops[DROP_COUNT];
} dir_counters;

/* One (peer, network) pair; created by the control plane, freed with its network (or the data plane). */
typedef struct pair_stats {
  uint16_t peer;
  uint32_t vni;
  dir_counters tx; /* outbound thread */
  dir_counters rx; /* inbound thread */
} pair_stats;

#define SA_FINGERPRINT_LENGTH 32 /* SHA-256 */

/* What both directions of an SA have: its name, its key's fingerprint, its cipher. */
typedef struct sa_base {
  esp_cipher cipher; /* the key schedule; freed and wiped when the SA is retired (ctx NULL) */
  /* SHA-256 of the key material: tells "the same key again" without keeping the key */
  uint8_t fingerprint[SA_FINGERPRINT_LENGTH];
  uint32_t spi, vni, epoch;
  int esn;
  uint16_t peer;
  pair_stats *pair;
  ptrdiff_t retired_at; /* its place in the retired list; -1 while in service (control plane only) */
} sa_base;

/* Each SA starts with its sa_base, so a pointer to one is a pointer to the other. */
typedef struct inbound_sa {
  sa_base base;
  replay_window replay;
  uint64_t opened, bytes; /* inbound thread */
} inbound_sa;

typedef struct outbound_sa {
  sa_base base;
  uint64_t next, limit; /* next sequence number to use; the last one allowed (never wraps) */
  uint64_t sealed, bytes; /* outbound thread */
} outbound_sa;

typedef struct peer {
  uint16_t index;
  struct in_addr address; /* underlay */
} peer;

typedef struct network {
  uint32_t vni;
  int encrypted;
  /* The TAP port (docs/plumbing.md "The TAP port"): its descriptor (-1: the kernel VXLAN device serves
   * the network), where remote MACs are (MAC → peer index) and the peers a frame for no known MAC goes to. */
  int tap_fd;
  int tap_offloads; /* whether the kernel took the TAP's offloads */
  table fdb;
  uint16_t *flood;
  uint32_t n_flood, cap_flood;
} network;

typedef struct dp_config {
  struct in_addr underlay, host, vtep;
  uint16_t esp_port, plain_port, vtep_port, peer_esp_port, peer_plain_port;
  uint16_t delivery_port; /* source port of deliveries to the VTEP (VTEP_DELIVERY_PORT; 0 = any, tests) */
  struct in_addr peer_net; /* gateway address of peer i = peer_net + i */
  uint16_t gateway_port;   /* VTEP_GATEWAY_PORT */
  char gateway_device[16]; /* the host end of the vtep link: the gateway socket hears nothing else ("" = any, tests) */
  int buffer_bytes;
  int gso, gro;
  int relay_plain; /* plain networks pass through (UDP 4789 bound); 0: they run in the kernel, docs/plumbing.md "Plain networks" */
  uint32_t gso_max_segment; /* largest UDP payload per GSO segment (underlay MTU - 28) */
  uint32_t replay_window;
  uint32_t send_wait_ms; /* SEND_WAIT_MS_DEFAULT unless a test asks otherwise */
} dp_config;

typedef struct io_counters {
  uint64_t rx_calls, rx_datagrams, rx_packets, tx_calls, tx_messages, tx_packets, send_errors;
  uint64_t send_waits; /* waits for send buffer room */
  uint64_t tx_flushes; /* flushes of a non-empty tx queue, completed */
} io_counters;

struct dp_thread;
typedef struct dataplane dataplane;

dataplane *dp_create(const dp_config *cfg, char *err, size_t err_len);
int dp_start(dataplane *dp, char *err, size_t err_len);
void dp_destroy(dataplane *dp); /* stops the threads, closes every socket, frees every table */

/*
 * Control plane: each takes the write lock. 0 ok, -1 with err filled as "VEIL_ERR_<CODE>: why" (a code
 * of src/errors.ts). A call that fails changes nothing.
 */
int dp_add_peer(dataplane *dp, uint16_t index, struct in_addr address, char *err, size_t err_len);
int dp_remove_peer(dataplane *dp, uint16_t index, char *err, size_t err_len);
int dp_set_network(dataplane *dp, uint32_t vni, int encrypted, char *err, size_t err_len);
int dp_remove_network(dataplane *dp, uint32_t vni);
int dp_install_inbound(dataplane *dp, uint32_t spi, const uint8_t *key, size_t key_len, const uint8_t salt[4], int esn,
                       uint32_t vni, uint16_t peer, uint32_t epoch, char *err, size_t err_len);
int dp_remove_inbound(dataplane *dp, uint32_t spi, char *err, size_t err_len);
int dp_set_outbound(dataplane *dp, uint16_t peer, uint32_t vni, uint32_t spi, const uint8_t *key, size_t key_len,
                    const uint8_t salt[4], int esn, uint32_t epoch, uint64_t budget, char *err, size_t err_len);
int dp_remove_outbound(dataplane *dp, uint16_t peer, uint32_t vni, char *err, size_t err_len);

/*
 * The TAP port of an encrypted network, made in the network namespace at netns_path (tap.h): the
 * network's frames come from it and go to it instead of the VTEP. Idempotent while the network has one;
 * removing the network closes it. *offloads: whether the kernel took TSO and checksum offloads.
 */
int dp_attach_tap(dataplane *dp, uint32_t vni, const char *netns_path, const char *name, int *offloads, char *err, size_t err_len);
int dp_detach_tap(dataplane *dp, uint32_t vni);
/* The TAP port's forwarding table: mac (48 bits) → peer; and the peers that get frames for no known MAC. */
int dp_fdb_set(dataplane *dp, uint32_t vni, uint64_t mac, uint16_t peer, char *err, size_t err_len);
int dp_fdb_remove(dataplane *dp, uint32_t vni, uint64_t mac);
int dp_flood_add(dataplane *dp, uint32_t vni, uint16_t peer, char *err, size_t err_len);
int dp_flood_remove(dataplane *dp, uint32_t vni, uint16_t peer);

/* Stats, read under the read lock through callbacks (the N-API layer builds JS objects). */
typedef struct dp_stats_visitor {
  void *ctx;
  void (*pair)(void *ctx, const pair_stats *p, const outbound_sa *out);
  void (*inbound)(void *ctx, uint32_t spi, const inbound_sa *sa);
  void (*unattributed)(void *ctx, const uint64_t tx[DROP_COUNT], const uint64_t rx[DROP_COUNT]);
  void (*io)(void *ctx, const char *dir, const io_counters *io);
  void (*retired)(void *ctx, uint64_t inbound, uint64_t outbound); /* SAs out of service, remembered */
} dp_stats_visitor;
void dp_visit_stats(dataplane *dp, const dp_stats_visitor *v);

static inline uint64_t counter_load(const uint64_t *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }
/* Single writer: no lock prefix needed, but the store is atomic for concurrent readers. */
static inline void counter_add(uint64_t *c, uint64_t n) {
  __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

#endif
