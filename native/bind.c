/* Socket batching: see bind.h. */
#include "bind.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "tap.h"

#define GSO_MAX_SEGMENTS 64      /* UDP_MAX_SEGMENTS of older kernels */
#define GSO_MAX_BYTES 65000      /* below the 64 KiB IP limit with headers */

int udp_socket(struct in_addr addr, uint16_t port, int buffer, const udp_options *o, char *err, size_t err_len) {
  char where[64];
  snprintf(where, sizeof where, "%s:%u", inet_ntoa(addr), port);
  int fd = FAULT_OR(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), -1, EMFILE);
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
  if (o->gro) (void)setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one); /* a kernel without it just sends single datagrams */
  if ((o->pktinfo && setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) < 0) ||
      (o->device && o->device[0] && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o->device, (socklen_t)strlen(o->device)) < 0)) {
    set_err(err, err_len, "cannot set up %s: %s", where, errno);
    close(fd);
    return -1;
  }
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = addr };
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
    set_err(err, err_len, "cannot bind %s: %s", where, errno);
    close(fd);
    return -1;
  }
  return fd;
}

static int same_destination(const tx_entry *a, const tx_entry *b) {
  return a->fd == b->fd && a->dst.sin_addr.s_addr == b->dst.sin_addr.s_addr && a->dst.sin_port == b->dst.sin_port;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Waits for send buffer room on fd until the flush's deadline (set at its first wait, cfg.send_wait_ms
 * on); 0 when the deadline has passed or the data plane is stopping: the caller drops what is left.
 */
static int wait_writable(dp_thread *t, int fd, uint64_t *deadline) {
  dataplane *dp = t->dp;
  if (atomic_load(&dp->stopping)) return 0;
  uint64_t now = now_ms();
  if (!*deadline) *deadline = now + dp->cfg.send_wait_ms;
  if (now >= *deadline) return 0;
  /* The wake eventfd too: dp_destroy ends the wait at once. */
  struct pollfd pf[2] = { { .fd = fd, .events = POLLOUT }, { .fd = dp->wake_fd, .events = POLLIN } };
  counter_add(&t->io.send_waits, 1);
  (void)poll(pf, 2, (int)(*deadline - now));
  return !atomic_load(&dp->stopping);
}

static void drop_message(dp_thread *t, int m) {
  counter_add(&t->io.send_errors, 1);
  count_unattributed(t, DROP_SEND_FAILED, (uint64_t)t->scount[m]);
}

/* A GSO message the kernel refused (e.g. a segment above the MTU): its packets one by one. */
static void send_segments(dp_thread *t, int m, uint64_t *deadline) {
  for (int k = t->sfirst[m]; k < t->sfirst[m] + t->scount[m]; k++) {
    struct msghdr h = { .msg_name = &t->tx[k].dst, .msg_namelen = sizeof t->tx[k].dst, .msg_iov = &t->siov[k], .msg_iovlen = 1 };
    for (;;) {
      ssize_t r = sendmsg(t->tx[k].fd, &h, 0);
      int e = errno;
      if (r >= 0) {
        counter_add(&t->io.tx_calls, 1);
        counter_add(&t->io.tx_messages, 1);
        break;
      }
      if (e == EINTR) continue;
      if ((e == EAGAIN || e == ENOBUFS) && wait_writable(t, t->tx[k].fd, deadline)) continue;
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
void tx_flush(dp_thread *t) {
  const dp_config *cfg = &t->dp->cfg;
  int nm = 0;
  for (int i = 0; i < t->ntx;) {
    tx_entry *e = &t->tx[i];
    if (e->fd == TX_TAP) { /* written now, under the read lock: tap.c */
      i = tap_write_run(t, i);
      continue;
    }
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
  uint64_t deadline = 0; /* the flush's, once it first waits */
  int gave_up = 0;
  for (int s = 0; s < nm;) {
    if (gave_up) { /* the underlay did not drain in time, or the data plane is stopping */
      drop_message(t, s++);
      continue;
    }
    int run = 1;
    while (s + run < nm && t->sfd[s + run] == t->sfd[s]) run++;
    int r = sendmmsg(t->sfd[s], &t->smsg[s], (unsigned)run, 0);
    int e = errno;
    if (r > 0) {
      counter_add(&t->io.tx_calls, 1);
      counter_add(&t->io.tx_messages, (uint64_t)r);
      s += r;
      continue;
    }
    if (r < 0 && e == EINTR) continue;
    if (r < 0 && (e == EAGAIN || e == ENOBUFS)) {
      if (!wait_writable(t, t->sfd[s], &deadline)) gave_up = 1;
      continue;
    }
    /* This message failed: a refused GSO message goes out packet by packet, a single packet is lost. */
    if (t->scount[s] > 1 && r < 0 && (e == EINVAL || e == EMSGSIZE || e == EIO)) send_segments(t, s, &deadline);
    else drop_message(t, s);
    s++;
  }
  counter_add(&t->io.tx_packets, (uint64_t)t->ntx);
  if (t->ntx) counter_add(&t->io.tx_flushes, 1);
  t->ntx = 0;
  t->arena_used = 0;
}

int rx_batch(dp_thread *t, int fd) {
  for (int i = 0; i < RX_BATCH; i++) {
    t->riov[i] = (struct iovec){ .iov_base = t->rx + (size_t)i * RX_SLOT, .iov_len = RX_SLOT };
    t->rmsg[i].msg_hdr = (struct msghdr){
      .msg_name = &t->rname[i], .msg_namelen = sizeof t->rname[i], .msg_iov = &t->riov[i], .msg_iovlen = 1,
      .msg_control = t->rctl[i].buf, .msg_controllen = sizeof t->rctl[i].buf,
    };
  }
  t->rx_next = 0;
  t->rx_next_off = 0;
  t->rx_dst_slot = -1;
  int n = recvmmsg(fd, t->rmsg, RX_BATCH, MSG_DONTWAIT, NULL);
  if (n <= 0) return 0;
  counter_add(&t->io.rx_calls, 1);
  counter_add(&t->io.rx_datagrams, (uint64_t)n);
  return n;
}
