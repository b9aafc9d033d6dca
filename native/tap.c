/* The TAP port: see tap.h. */
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bind.h"
#include "fault.h"

#define MERGE_MAX_BYTES 65000 /* a merged write's IP packet stays below 64 KiB with its headers */
#define MERGE_MAX_SEGMENTS TAP_MERGE_MAX

static uint16_t get_h16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

// ---------------------------------------------------------------- checksums (RFC 1071)

/* The sums below take bytes in memory order, which with the odd last byte is right on little-endian only. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "tap.c's checksums assume a little-endian host");

static uint64_t sum_bytes(uint64_t s, const uint8_t *p, size_t n) {
  while (n >= 8) { uint64_t v; memcpy(&v, p, 8); s += v; if (s < v) s++; p += 8; n -= 8; }
  if (n >= 4) { uint32_t v; memcpy(&v, p, 4); s += v; if (s < v) s++; p += 4; n -= 4; }
  if (n >= 2) { uint16_t v; memcpy(&v, p, 2); s += v; if (s < v) s++; p += 2; n -= 2; }
  if (n) { uint64_t v = *p; s += v; if (s < v) s++; } /* the odd byte is the high one in network order: little-endian host */
  return s;
}

/* The one's complement sum folded to 16 bits, in network byte order as it lies in memory. */
static uint16_t fold(uint64_t s) {
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return (uint16_t)((s & 0xffff) + (s >> 16));
}

static void ipv4_checksum(uint8_t *ip, uint32_t ihl) {
  memset(ip + IPV4_CHECKSUM_OFFSET, 0, 2);
  uint16_t c = (uint16_t)~fold(sum_bytes(0, ip, ihl));
  memcpy(ip + IPV4_CHECKSUM_OFFSET, &c, 2);
}

/* The TCP pseudo-header's sum (RFC 9293 §3.1): addresses, protocol, TCP length. */
static uint64_t tcp_pseudo(const uint8_t *ip, uint32_t tcp_len) {
  uint8_t tail[4] = { 0, IPV4_PROTOCOL_TCP, (uint8_t)(tcp_len >> 8), (uint8_t)tcp_len };
  return sum_bytes(sum_bytes(0, ip + IPV4_SOURCE_OFFSET, 8), tail, 4);
}

// ---------------------------------------------------------------- open

typedef struct open_args {
  const char *netns, *name;
  int fd, offloads, err;
  const char *step;
} open_args;

/* On a thread of its own: setns changes the calling thread's namespace only, and this thread ends. */
static void *open_in_netns(void *arg) {
  open_args *a = arg;
  a->fd = -1;
  if (a->netns[0]) {
    int ns = open(a->netns, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
      a->err = errno;
      a->step = "setns";
      if (ns >= 0) close(ns);
      return NULL;
    }
    close(ns);
  }
  int fd = FAULT_OR(open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC), -1, ENOENT);
  if (fd < 0) {
    a->err = errno;
    a->step = "open /dev/net/tun";
    return NULL;
  }
  struct ifreq ifr = { 0 };
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", a->name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  int size = VNET_HEADER_LENGTH;
  a->step = ioctl(fd, TUNSETIFF, &ifr) < 0 ? "TUNSETIFF" : ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 ? "TUNSETVNETHDRSZ" : NULL;
  if (a->step) {
    a->err = errno;
    close(fd);
    return NULL;
  }
  /* Without offloads the kernel segments and checksums before the read: slower, still correct. */
  a->offloads = ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) == 0;
  a->fd = fd;
  return NULL;
}

int tap_open(const char *netns_path, const char *name, int *offloads, char *err, size_t err_len) {
  open_args a = { .netns = netns_path, .name = name, .fd = -1 };
  pthread_t tid;
  int e = pthread_create(&tid, NULL, open_in_netns, &a);
  if (e) {
    set_err(err, err_len, "%s: %s", "the TAP's thread", e);
    return -1;
  }
  pthread_join(tid, NULL);
  if (a.fd < 0) {
    char what[96];
    snprintf(what, sizeof what, "%s for TAP %s", a.step, name);
    set_err(err, err_len, "%s: %s", what, a.err);
    return -1;
  }
  *offloads = a.offloads;
  return a.fd;
}

// ---------------------------------------------------------------- outbound: parse and segment

enum drop_reason tap_parse(uint8_t *buf, uint32_t len, tap_frame_info *f) {
  if (len < VNET_HEADER_LENGTH + ETH_HEADER_LENGTH) return DROP_BAD_FRAME;
  uint8_t flags = buf[VNET_FLAGS_OFFSET], gso = buf[VNET_GSO_TYPE_OFFSET];
  uint32_t gso_size = get_h16(buf + VNET_GSO_SIZE_OFFSET), csum_start = get_h16(buf + VNET_CSUM_START_OFFSET),
           csum_offset = get_h16(buf + VNET_CSUM_OFFSET_OFFSET);
  *f = (tap_frame_info){ .frame = buf + VNET_HEADER_LENGTH, .len = len - VNET_HEADER_LENGTH, .segments = 1 };
  uint8_t *e = f->frame;
  if (gso == VNET_GSO_NONE) {
    if (!(flags & VNET_F_NEEDS_CSUM)) return DROP_COUNT;
    if (csum_start >= f->len || csum_offset + 2u > f->len - csum_start) return DROP_BAD_FRAME;
    /* The field holds the pseudo-header's sum; the rest is ours to add (virtio 1.1 §5.1.6.2). */
    uint16_t c = (uint16_t)~fold(sum_bytes(0, e + csum_start, f->len - csum_start));
    if (c == 0 && csum_offset == 6) c = 0xffff; /* UDP sends a zero checksum as all ones (RFC 768) */
    memcpy(e + csum_start + csum_offset, &c, 2);
    return DROP_COUNT;
  }
  /* Only TCPv4 is offered (tap_open): anything else is malformed here. */
  if ((gso & ~VNET_GSO_ECN) != VNET_GSO_TCPV4 || !(flags & VNET_F_NEEDS_CSUM) || gso_size < TCP_MSS_MIN) return DROP_BAD_FRAME;
  if (get_u16(e + ETH_TYPE_OFFSET) != ETH_TYPE_IPV4 || f->len < ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH) return DROP_BAD_FRAME;
  uint8_t *ip = e + ETH_HEADER_LENGTH;
  uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
  if ((ip[0] >> 4) != 4 || ihl < IPV4_HEADER_LENGTH || ip[IPV4_PROTOCOL_OFFSET] != IPV4_PROTOCOL_TCP ||
      csum_start != ETH_HEADER_LENGTH + ihl || csum_offset != TCP_CHECKSUM_OFFSET || csum_start + TCP_HEADER_MIN > f->len)
    return DROP_BAD_FRAME;
  uint32_t thl = (uint32_t)(e[csum_start + TCP_DATA_OFFSET_OFFSET] >> 4) * 4;
  if (thl < TCP_HEADER_MIN || csum_start + thl >= f->len) return DROP_BAD_FRAME;
  f->headers = csum_start + thl;
  f->gso_size = gso_size;
  f->segments = (f->len - f->headers + gso_size - 1) / gso_size;
  return DROP_COUNT;
}

/* RFC 9293 §3.1, as the kernel's own segmentation does: each segment a TCP packet of its own, the
 * sequence number advanced, FIN and PSH on the last only, CWR on the first only, the IP identifier counted up. */
uint32_t tap_segment(const tap_frame_info *f, uint32_t i, uint8_t *hdr, struct iovec *payload) {
  if (!f->gso_size) {
    *payload = (struct iovec){ f->frame, f->len };
    return 0;
  }
  uint32_t hl = f->headers, data = f->len - hl;
  uint32_t start = i * f->gso_size, n = data - start < f->gso_size ? data - start : f->gso_size;
  memcpy(hdr, f->frame, hl);
  uint8_t *ip = hdr + ETH_HEADER_LENGTH;
  uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
  uint8_t *tcp = ip + ihl;
  uint32_t tcp_len = hl - ETH_HEADER_LENGTH - ihl + n;
  put_u16(ip + IPV4_TOTAL_LENGTH_OFFSET, (uint16_t)(ihl + tcp_len));
  put_u16(ip + IPV4_ID_OFFSET, (uint16_t)(get_u16(ip + IPV4_ID_OFFSET) + i));
  ipv4_checksum(ip, ihl);
  put_u32(tcp + TCP_SEQ_OFFSET, get_u32(tcp + TCP_SEQ_OFFSET) + start);
  if (i + 1 < f->segments) tcp[TCP_FLAGS_OFFSET] &= (uint8_t)~(TCP_FIN | TCP_PSH);
  if (i > 0) tcp[TCP_FLAGS_OFFSET] &= (uint8_t)~TCP_CWR;
  memset(tcp + TCP_CHECKSUM_OFFSET, 0, 2);
  uint8_t *body = f->frame + hl + start;
  uint64_t s = sum_bytes(sum_bytes(tcp_pseudo(ip, tcp_len), tcp, tcp_len - n), body, n);
  uint16_t c = (uint16_t)~fold(s);
  memcpy(tcp + TCP_CHECKSUM_OFFSET, &c, 2);
  *payload = (struct iovec){ body, n };
  return hl;
}

uint16_t tap_flow_port(const uint8_t *frame, uint32_t len) {
  uint32_t h = 2166136261u; /* FNV-1a over the flow's addresses and ports, or the MACs */
  const uint8_t *p = frame;
  uint32_t n = 12;
  if (len >= ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH + 4 && get_u16(frame + ETH_TYPE_OFFSET) == ETH_TYPE_IPV4) {
    const uint8_t *ip = frame + ETH_HEADER_LENGTH;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    p = ip + IPV4_SOURCE_OFFSET;
    n = 8;
    for (uint32_t k = 0; k < n; k++) h = (h ^ p[k]) * 16777619u;
    /* Ports only where they are: not in a fragment, whose pieces must share one source port. */
    int fragment = (get_u16(ip + IPV4_FRAGMENT_OFFSET) & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_MASK)) != 0;
    if (!fragment && ihl >= IPV4_HEADER_LENGTH && len >= ETH_HEADER_LENGTH + ihl + 4) {
      p = ip + ihl; /* TCP and UDP both start with the two ports */
      n = 4;
    } else {
      n = 0;
    }
  }
  for (uint32_t k = 0; k < n; k++) h = (h ^ p[k]) * 16777619u;
  return (uint16_t)(49152 + (h ^ (h >> 16)) % 16384); /* RFC 6335 §6: the dynamic ports */
}

// ---------------------------------------------------------------- inbound: merged writes

/* A frame that can join a merged write: IPv4 without options, not a fragment and not to be fragmented (so
 * GRO would not look at the identifier), TCP with data, only ACK and PSH. */
static int mergeable(const uint8_t *e, uint32_t len, uint32_t *hl, uint32_t *data) {
  if (len < ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH + TCP_HEADER_MIN || get_u16(e + ETH_TYPE_OFFSET) != ETH_TYPE_IPV4) return 0;
  const uint8_t *ip = e + ETH_HEADER_LENGTH;
  if (ip[0] != 0x45 || ip[IPV4_PROTOCOL_OFFSET] != IPV4_PROTOCOL_TCP ||
      (get_u16(ip + IPV4_FRAGMENT_OFFSET) & (IPV4_DONT_FRAGMENT | IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_MASK)) != IPV4_DONT_FRAGMENT ||
      get_u16(ip + IPV4_TOTAL_LENGTH_OFFSET) != len - ETH_HEADER_LENGTH) return 0;
  const uint8_t *tcp = ip + IPV4_HEADER_LENGTH;
  uint32_t thl = (uint32_t)(tcp[TCP_DATA_OFFSET_OFFSET] >> 4) * 4;
  uint8_t flags = tcp[TCP_FLAGS_OFFSET];
  if (thl < TCP_HEADER_MIN || (flags & ~(TCP_ACK | TCP_PSH)) || !(flags & TCP_ACK)) return 0;
  *hl = ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH + thl;
  if (*hl >= len) return 0;
  *data = len - *hl;
  return 1;
}

/* Whether frame b continues frame a's segment run as the kernel's GRO would take it: same flow, the next
 * sequence number, same acknowledgment, IP fields and TCP options (RFC 9293 §3.1). */
static int continues(const uint8_t *a, uint32_t hl, uint32_t next_seq, const uint8_t *b, uint32_t b_hl) {
  const uint8_t *ia = a + ETH_HEADER_LENGTH, *ib = b + ETH_HEADER_LENGTH;
  const uint8_t *ta = ia + IPV4_HEADER_LENGTH, *tb = ib + IPV4_HEADER_LENGTH;
  return b_hl == hl && memcmp(a, b, ETH_HEADER_LENGTH) == 0 && ia[1] == ib[1] && ia[8] == ib[8] &&
         get_u16(ia + IPV4_FRAGMENT_OFFSET) == get_u16(ib + IPV4_FRAGMENT_OFFSET) &&
         memcmp(ia + IPV4_SOURCE_OFFSET, ib + IPV4_SOURCE_OFFSET, 8) == 0 && memcmp(ta, tb, 4) == 0 &&
         get_u32(tb + TCP_SEQ_OFFSET) == next_seq && memcmp(ta + TCP_ACK_OFFSET, tb + TCP_ACK_OFFSET, 4) == 0 &&
         ta[TCP_DATA_OFFSET_OFFSET] == tb[TCP_DATA_OFFSET_OFFSET] &&
         memcmp(ta + TCP_HEADER_MIN, tb + TCP_HEADER_MIN, hl - ETH_HEADER_LENGTH - IPV4_HEADER_LENGTH - TCP_HEADER_MIN) == 0;
}

static int write_frames(dp_thread *t, int fd, struct iovec *iov, int n, uint64_t frames) {
  for (;;) {
    ssize_t r = writev(fd, iov, n);
    if (r >= 0) {
      counter_add(&t->io.tx_calls, 1);
      counter_add(&t->io.tx_messages, 1);
      return 0;
    }
    if (errno == EINTR) continue;
    counter_add(&t->io.send_errors, 1);
    count_unattributed(t, DROP_SEND_FAILED, frames);
    return -1;
  }
}

int tap_write_run(dp_thread *t, int first) {
  dataplane *dp = t->dp;
  uint32_t vni = t->tx[first].vni;
  int end = first + 1;
  while (end < t->ntx && t->tx[end].fd == TX_TAP && t->tx[end].vni == vni) end++;
  pthread_rwlock_rdlock(&dp->lock);
  network *net = table_get(&dp->networks, vni);
  int fd = net ? net->tap_fd : -1;
  if (fd < 0) { /* the network or its TAP went while the frames waited: nowhere to deliver them */
    pthread_rwlock_unlock(&dp->lock);
    count_unattributed(t, DROP_UNKNOWN_VNI, (uint64_t)(end - first));
    return end;
  }
  uint8_t one[VNET_HEADER_LENGTH] = { [VNET_FLAGS_OFFSET] = VNET_F_DATA_VALID };
  for (int i = first; i < end;) {
    tx_entry *e = &t->tx[i];
    uint32_t hl = 0, data = 0, total = 0;
    int j = i + 1;
    if (mergeable(e->data, e->len, &hl, &data) && !(e->data[ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH + TCP_FLAGS_OFFSET] & TCP_PSH)) {
      uint32_t seg = data, next = get_u32(e->data + ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH + TCP_SEQ_OFFSET) + data;
      total = data;
      while (j < end && j - i < MERGE_MAX_SEGMENTS) {
        tx_entry *g = &t->tx[j];
        uint32_t g_hl, g_data;
        if (!mergeable(g->data, g->len, &g_hl, &g_data) || g_data > seg || total + g_data > MERGE_MAX_BYTES ||
            !continues(e->data, hl, next, g->data, g_hl)) break;
        total += g_data;
        next += g_data;
        j++;
        if (g_data < seg || (g->data[ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH + TCP_FLAGS_OFFSET] & TCP_PSH)) break;
      }
    }
    if (j - i == 1) {
      struct iovec iov[2] = { { one, sizeof one }, { e->data, e->len } };
      write_frames(t, fd, iov, 2, 1);
      i = j;
      continue;
    }
    /* One TCP packet of all their data, with the first's headers and the last's window and PSH: one
     * write and one pass through the bridge. The kernel may cut it again at the container's veth (a
     * packet from user space is not trusted to be well formed), which is cheap by comparison. */
    tx_entry *last = &t->tx[j - 1];
    uint8_t *h = t->tap_hdr, vnet[VNET_HEADER_LENGTH];
    memcpy(h, e->data, hl);
    uint8_t *ip = h + ETH_HEADER_LENGTH, *tcp = ip + IPV4_HEADER_LENGTH;
    const uint8_t *last_tcp = last->data + ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH;
    uint32_t tcp_len = hl - ETH_HEADER_LENGTH - IPV4_HEADER_LENGTH + total;
    put_u16(ip + IPV4_TOTAL_LENGTH_OFFSET, (uint16_t)(IPV4_HEADER_LENGTH + tcp_len));
    ipv4_checksum(ip, IPV4_HEADER_LENGTH);
    tcp[TCP_FLAGS_OFFSET] |= last_tcp[TCP_FLAGS_OFFSET] & TCP_PSH;
    memcpy(tcp + TCP_WINDOW_OFFSET, last_tcp + TCP_WINDOW_OFFSET, 2);
    uint16_t partial = fold(tcp_pseudo(ip, tcp_len)); /* NEEDS_CSUM: the field holds the pseudo-header's sum */
    memcpy(tcp + TCP_CHECKSUM_OFFSET, &partial, 2);
    uint16_t v[4] = { (uint16_t)hl, (uint16_t)(e->len - hl), (uint16_t)(ETH_HEADER_LENGTH + IPV4_HEADER_LENGTH), TCP_CHECKSUM_OFFSET };
    vnet[VNET_FLAGS_OFFSET] = VNET_F_NEEDS_CSUM;
    vnet[VNET_GSO_TYPE_OFFSET] = VNET_GSO_TCPV4;
    memcpy(vnet + VNET_HDR_LEN_OFFSET, v, sizeof v);
    struct iovec *iov = t->tap_iov;
    iov[0] = (struct iovec){ vnet, sizeof vnet };
    iov[1] = (struct iovec){ h, hl };
    for (int k = i; k < j; k++) iov[2 + k - i] = (struct iovec){ t->tx[k].data + hl, t->tx[k].len - hl };
    write_frames(t, fd, iov, 2 + j - i, (uint64_t)(j - i));
    i = j;
  }
  pthread_rwlock_unlock(&dp->lock);
  return end;
}
