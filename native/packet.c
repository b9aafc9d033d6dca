/* Per-packet work, under the data plane's read lock: outbound seal, inbound open, plain VXLAN. Never a send: bind.h queues. */
#include "packet.h"

#include <arpa/inet.h>

#include "bind.h"
#include "tap.h"

// ---------------------------------------------------------------- outbound: VTEP → seal → underlay (docs/wire.md "Outbound")

/* The peer whose gateway address (peer net + its index) the datagram was sent to, if it is one. */
static peer *gateway_peer(const dataplane *dp, uint32_t destination) {
  uint32_t index = ntohl(destination) - ntohl(dp->cfg.peer_net.s_addr);
  return index >= 1 && index <= PEER_INDEX_MAX ? dp->peers[index] : NULL;
}

/*
 * Seals a VXLAN datagram (given as iovecs, len bytes) for peer p on an encrypted network and queues it
 * (docs/wire.md "Outbound"). Fail closed: no SA, no packet (CVE-2023-28841 sent plaintext instead).
 */
static void seal_vxlan(dp_thread *t, peer *p, uint32_t vni, pair_stats *ps, const struct iovec *vx, int nvx, uint32_t len,
                       uint16_t src_port) {
  dataplane *dp = t->dp;
  outbound_sa *sa = table_get(&dp->outbound, pair_key(p->index, vni));
  if (!sa) { counter_add(&ps->tx.drops[DROP_NO_OUTBOUND_SA], 1); return; }
  if (sa->next > sa->limit) { counter_add(&ps->tx.drops[DROP_SEQ_EXHAUSTED], 1); return; }
  uint8_t *out = tx_reserve(t, (size_t)len + UDP_HEADER_LENGTH + ESP_MAX_OVERHEAD);
  if (!out) { counter_add(&ps->tx.drops[DROP_OVERSIZE], 1); return; }

  uint64_t seq = sa->next;
  __atomic_store_n(&sa->next, seq + 1, __ATOMIC_RELAXED); /* stats() reads the headroom concurrently */
  uint32_t hi = (uint32_t)(seq >> 32), lo = (uint32_t)seq;
  uint8_t iv[ESP_IV_LENGTH], udp[UDP_HEADER_LENGTH], trailer[ESP_ALIGNMENT - 1 + ESP_TRAILER_LENGTH];
  put_u32(iv, hi); /* veil's IV: the 64-bit sequence number, unique per key (RFC 4106 §3.1) */
  put_u32(iv + 4, lo);
  /* Transport mode over UDP/4789: the source port as flow entropy, checksum 0 (src/vxlan/wire/udp.ts). */
  uint32_t payload = UDP_HEADER_LENGTH + len;
  put_u16(udp + UDP_SRC_PORT_OFFSET, src_port);
  put_u16(udp + UDP_DST_PORT_OFFSET, VXLAN_PORT);
  put_u16(udp + UDP_LENGTH_OFFSET, (uint16_t)payload);
  put_u16(udp + UDP_CHECKSUM_OFFSET, 0);
  /* RFC 4303 §2.4: pad with 1, 2, 3 ... to a 4-byte boundary, then pad length and next header. */
  uint32_t pad = (ESP_ALIGNMENT - ((payload + ESP_TRAILER_LENGTH) % ESP_ALIGNMENT)) % ESP_ALIGNMENT;
  for (uint32_t i = 0; i < pad; i++) trailer[i] = (uint8_t)(i + 1);
  trailer[pad] = (uint8_t)pad;
  trailer[pad + 1] = IPPROTO_UDP_NUMBER;
  struct iovec pt[2 + 3] = { { udp, sizeof udp } };
  for (int i = 0; i < nvx; i++) pt[1 + i] = vx[i];
  pt[1 + nvx] = (struct iovec){ trailer, pad + ESP_TRAILER_LENGTH };
  int sealed = esp_seal_danger(&sa->base.cipher, hi, lo, iv, pt, 2 + nvx, out);
  if (sealed < 0) { counter_add(&ps->tx.drops[DROP_SEND_FAILED], 1); return; }
  tx_commit_arena(t, dp->esp_fd, p->address, dp->cfg.peer_esp_port, (uint32_t)sealed);
  counter_add(&sa->sealed, 1);
  counter_add(&sa->bytes, payload);
  counter_add(&ps->tx.packets, 1);
  counter_add(&ps->tx.bytes, len);
}

/*
 * A VXLAN datagram from or to peer p: its header, its network and the pair's counters, or NULL with the
 * drop counted (docs/wire.md "Inbound order", "Outbound").
 */
static pair_stats *vxlan_pair(dp_thread *t, const peer *p, const uint8_t *vx, uint32_t len, network **net, uint32_t *vni) {
  dataplane *dp = t->dp;
  if (len < VXLAN_HEADER_LENGTH || !(vx[VXLAN_FLAGS_OFFSET] & VXLAN_FLAG_I)) { count_unattributed(t, DROP_BAD_VXLAN_HEADER, 1); return NULL; }
  *vni = get_u32(vx + VXLAN_VNI_OFFSET) >> VXLAN_VNI_SHIFT;
  *net = table_get(&dp->networks, *vni);
  if (!*net) { count_unattributed(t, DROP_UNKNOWN_VNI, 1); return NULL; }
  pair_stats *ps = table_get(&dp->pairs, pair_key(p->index, *vni));
  if (!ps) count_unattributed(t, DROP_UNKNOWN_PEER, 1); /* not reached: pairs exist for every peer × network */
  return ps;
}

static void outbound_packet(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *vx, uint32_t len) {
  (void)ctx;
  dataplane *dp = t->dp;
  /* Only the local VTEP may use the gateway addresses (docs/plumbing.md "No local injection"). */
  if (src->sin_addr.s_addr != dp->cfg.vtep.s_addr) { count_unattributed(t, DROP_UNAUTHORIZED_SOURCE, 1); return; }
  if (t->rx_dst_slot != t->rx_next) {
    t->rx_dst = rx_destination(t, t->rx_next);
    t->rx_dst_slot = t->rx_next;
  }
  peer *p = gateway_peer(dp, t->rx_dst); /* looked up per packet: the peer may have gone during a flush */
  if (!p) { count_unattributed(t, DROP_UNKNOWN_PEER, 1); return; }
  network *net;
  uint32_t vni;
  pair_stats *ps = vxlan_pair(t, p, vx, len, &net, &vni);
  if (!ps) return;

  if (!net->encrypted) {
    counter_add(&ps->tx.packets, 1);
    counter_add(&ps->tx.bytes, len);
    tx_queue(t, dp->plain_fd, p->address, dp->cfg.peer_plain_port, vx, len);
    return;
  }
  struct iovec frame = { vx, len };
  seal_vxlan(t, p, vni, ps, &frame, 1, len, ntohs(src->sin_port));
}

// ---------------------------------------------------------------- outbound: TAP port → seal → underlay

static uint64_t mac_key(const uint8_t *m) {
  return ((uint64_t)m[0] << 40) | ((uint64_t)m[1] << 32) | ((uint64_t)get_u32(m + 2));
}

/*
 * A frame from an encrypted network's TAP port: each of its segments, VXLAN-framed as the kernel's
 * VTEP would (RFC 7348 §5), sealed for the peer its destination MAC is at, or for every peer of the
 * network when the MAC is a group's or unknown, as the kernel floods. Resumes where a full queue
 * stopped it (t->tap_seg, t->tap_target); the tables may have changed meanwhile, so everything is looked
 * up again, and a flood list changed in between may give the rest of that segment to a peer twice or
 * skip one (TCP retransmits, as for any loss), never an index outside the list.
 */
int tap_outbound(dp_thread *t, uint32_t vni, uint8_t *buf, uint32_t len) {
  dataplane *dp = t->dp;
  tap_frame_info *f = &t->tap_frame;
  if (!t->tap_busy) {
    enum drop_reason why = tap_parse(buf, len, f);
    if (why != DROP_COUNT) { count_unattributed(t, why, 1); return 1; }
    /* Each sealed segment must fit one underlay datagram, as the overlay MTU makes every frame fit. */
    uint32_t largest = f->gso_size ? f->headers + f->gso_size : f->len;
    if ((uint64_t)largest + VXLAN_HEADER_LENGTH + UDP_HEADER_LENGTH + ESP_MAX_OVERHEAD > dp->cfg.gso_max_segment) {
      count_unattributed(t, DROP_OVERSIZE, f->segments);
      return 1;
    }
    t->tap_busy = 1;
    t->tap_seg = t->tap_target = 0;
    counter_add(&t->io.rx_packets, f->segments);
    t->tap_sport = tap_flow_port(f->frame, f->len);
  }
  network *net = table_get(&dp->networks, vni);
  if (!net || !net->encrypted || net->tap_fd < 0) {
    count_unattributed(t, DROP_UNKNOWN_VNI, f->segments - t->tap_seg);
    t->tap_busy = 0;
    return 1;
  }
  uint16_t known = (f->frame[0] & 1) ? 0 : (uint16_t)(uintptr_t)table_get(&net->fdb, mac_key(f->frame));
  const uint16_t *targets = known ? &known : net->flood;
  uint32_t n_targets = known ? 1 : net->n_flood;
  uint8_t vxh[VXLAN_HEADER_LENGTH] = { [VXLAN_FLAGS_OFFSET] = VXLAN_FLAG_I };
  put_u32(vxh + VXLAN_VNI_OFFSET, vni << VXLAN_VNI_SHIFT);
  for (; t->tap_seg < f->segments; t->tap_seg++, t->tap_target = 0) {
    struct iovec vx[3] = { { vxh, sizeof vxh } };
    int nvx = 2;
    uint32_t hl = tap_segment(f, t->tap_seg, t->tap_hdr, &vx[2]);
    if (hl) vx[1] = (struct iovec){ t->tap_hdr, hl }, nvx = 3;
    else vx[1] = vx[2];
    uint32_t vlen = (uint32_t)(sizeof vxh + hl + vx[nvx - 1].iov_len);
    for (; t->tap_target < n_targets; t->tap_target++) {
      if (!tx_room(t)) return 0;
      peer *p = dp->peers[targets[t->tap_target]];
      pair_stats *ps = p ? table_get(&dp->pairs, pair_key(p->index, vni)) : NULL;
      if (!ps) { count_unattributed(t, DROP_UNKNOWN_PEER, 1); continue; }
      seal_vxlan(t, p, vni, ps, vx, nvx, vlen, t->tap_sport);
    }
  }
  t->tap_busy = 0;
  return 1;
}

// ---------------------------------------------------------------- inbound: underlay → open → VTEP

static void deliver(dp_thread *t, uint8_t *vx, uint32_t len) {
  tx_queue(t, t->dp->deliver_fd, t->dp->cfg.vtep, t->dp->cfg.vtep_port, vx, len);
}

/* An opened frame of an encrypted network goes to its TAP port if it has one, else to the VTEP. */
static void deliver_opened(dp_thread *t, uint32_t vni, uint8_t *vx, uint32_t len) {
  network *net = table_get(&t->dp->networks, vni);
  if (!net || net->tap_fd < 0) { deliver(t, vx, len); return; }
  tx_queue_tap(t, vni, vx + VXLAN_HEADER_LENGTH, len - VXLAN_HEADER_LENGTH);
}

/* The fixed order of src/vxlan/ts/inbound.ts (docs/wire.md "Inbound order"); the window moves only after authentication. */
static void inbound_esp_packet(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *d, uint32_t len) {
  (void)ctx;
  (void)src;
  dataplane *dp = t->dp;
  /* 1. RFC 3948 §2.2, §2.3: IKE and keepalives share the port. */
  if (len == NAT_KEEPALIVE_LENGTH && d[0] == NAT_KEEPALIVE_BYTE) { count_unattributed(t, DROP_NAT_KEEPALIVE, 1); return; }
  if (len >= NON_ESP_MARKER_LENGTH && get_u32(d) == 0) { count_unattributed(t, DROP_NON_ESP_MARKER, 1); return; }
  /* 2. Length, then the SPI names the SA. */
  if (len < ESP_MIN_LENGTH) { count_unattributed(t, DROP_TRUNCATED, 1); return; }
  inbound_sa *sa = table_get(&dp->inbound, get_u32(d + ESP_SPI_OFFSET));
  if (!sa) { count_unattributed(t, DROP_UNKNOWN_SPI, 1); return; }
  uint64_t *drops = sa->base.pair->rx.drops;
  /* 3. Replay check, before decryption. */
  uint32_t lo = get_u32(d + ESP_SEQ_OFFSET);
  int64_t hi = replay_check(&sa->replay, lo);
  if (hi == REPLAY_TOO_OLD) { counter_add(&drops[DROP_REPLAY_TOO_OLD], 1); return; }
  if (hi == REPLAY_DUPLICATE) { counter_add(&drops[DROP_REPLAY_DUPLICATE], 1); return; }
  /* 4. ICV verify and decrypt, in place. */
  uint8_t *pt = d + ESP_PAYLOAD_OFFSET;
  int n = esp_open_danger(&sa->base.cipher, d, len, (uint32_t)hi, pt);
  if (n < 0) { counter_add(&drops[DROP_AUTH_FAILED], 1); return; }
  /* 5. Replay update, only now that the packet is authentic. */
  if (!replay_update(&sa->replay, (uint32_t)hi, lo)) { counter_add(&drops[DROP_REPLAY_DUPLICATE], 1); return; }
  /* 6. Trailer (RFC 4303 §2.4-2.6: padding, pad length, next header last), inner UDP to 4789, VXLAN. */
  if (n < ESP_TRAILER_LENGTH || n % ESP_ALIGNMENT != 0) { counter_add(&drops[DROP_BAD_ALIGNMENT], 1); return; }
  uint32_t pad = pt[n - 2], next_header = pt[n - 1];
  int payload = n - ESP_TRAILER_LENGTH - (int)pad;
  if (payload < 0) { counter_add(&drops[DROP_BAD_PAD_LENGTH], 1); return; }
  for (uint32_t i = 1; i <= pad; i++)
    if (pt[payload + (int)i - 1] != i) { counter_add(&drops[DROP_BAD_PADDING], 1); return; }
  if (next_header != IPPROTO_UDP_NUMBER) { counter_add(&drops[DROP_BAD_NEXT_HEADER], 1); return; }
  if (payload < UDP_HEADER_LENGTH || get_u16(pt + UDP_LENGTH_OFFSET) != (uint32_t)payload || get_u16(pt + UDP_DST_PORT_OFFSET) != VXLAN_PORT)
    { counter_add(&drops[DROP_BAD_INNER_UDP], 1); return; }
  uint8_t *vx = pt + UDP_HEADER_LENGTH;
  uint32_t vlen = (uint32_t)payload - UDP_HEADER_LENGTH;
  if (vlen < VXLAN_HEADER_LENGTH || !(vx[VXLAN_FLAGS_OFFSET] & VXLAN_FLAG_I)) { counter_add(&drops[DROP_BAD_VXLAN_HEADER], 1); return; }
  /* 7. Isolation: an SA carries exactly one network. */
  if ((get_u32(vx + VXLAN_VNI_OFFSET) >> VXLAN_VNI_SHIFT) != sa->base.vni) { counter_add(&drops[DROP_VNI_MISMATCH], 1); return; }
  counter_add(&sa->opened, 1);
  counter_add(&sa->bytes, vlen);
  counter_add(&sa->base.pair->rx.packets, 1);
  counter_add(&sa->base.pair->rx.bytes, vlen);
  deliver_opened(t, sa->base.vni, vx, vlen);
}

/* Standard VXLAN on 4789: known peers only, plain networks only (a claimed encrypted VNI is a downgrade). */
static void inbound_plain_packet(dp_thread *t, void *ctx, const struct sockaddr_in *src, uint8_t *vx, uint32_t len) {
  (void)ctx;
  dataplane *dp = t->dp;
  peer *p = table_get(&dp->peer_by_address, src->sin_addr.s_addr);
  if (!p) { count_unattributed(t, DROP_UNKNOWN_PEER, 1); return; }
  network *net;
  uint32_t vni;
  pair_stats *ps = vxlan_pair(t, p, vx, len, &net, &vni);
  if (!ps) return;
  if (net->encrypted) { counter_add(&ps->rx.drops[DROP_PLAINTEXT_ON_ENCRYPTED], 1); return; }
  counter_add(&ps->rx.packets, 1);
  counter_add(&ps->rx.bytes, len);
  deliver(t, vx, len);
}

// ---------------------------------------------------------------- batches

int outbound_batch(dp_thread *t, int n) { return for_each_packet(t, n, outbound_packet, NULL); }

int inbound_batch(dp_thread *t, int esp, int n) {
  return esp ? for_each_packet(t, n, inbound_esp_packet, NULL) : for_each_packet(t, n, inbound_plain_packet, NULL);
}
