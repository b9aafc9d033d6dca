/* Lifecycle of the data plane: create, start, destroy, and the two thread loops (see dataplane.h). */
#include "dataplane-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bind.h"
#include "fault.h"
#include "packet.h"
#include "tap.h"

#ifdef VEIL_FAULTS
int fault_countdown;
#endif

#define DROP_NAME(e, s) s,
const char *const DROP_NAMES[DROP_COUNT] = { DROP_REASON_LIST(DROP_NAME) };
#undef DROP_NAME

#define RX_BUDGET 8              /* batches per readiness event before epoll_wait again (fairness) */

#define TAG_WAKE 0xffffffffffffffffULL
#define TAG_ESP 1
#define TAG_PLAIN 2
#define TAG_GATEWAY 3
#define TAG_TAP (1ULL << 62) /* | VNI << 32 | the TAP's descriptor */
#define TAP_BUDGET 64 /* frames per readiness event of a TAP port */

void set_err(char *err, size_t len, const char *fmt, const char *a, int e) {
  if (err && len) snprintf(err, len, fmt, a, e ? strerror(e) : "");
}

// ---------------------------------------------------------------- threads

/*
 * A network's TAP port is readable. Each read and its frame happen under the read lock, after checking
 * that the network still has this TAP: dp_detach_tap closes it under the write lock, so a stale event
 * never reads a descriptor that was closed, or reused for something else.
 */
static void tap_ready(dp_thread *t, uint32_t vni, int fd) {
  dataplane *dp = t->dp;
  for (int b = 0; b < TAP_BUDGET; b++) {
    pthread_rwlock_rdlock(&dp->lock);
    network *net = table_get(&dp->networks, vni);
    ssize_t n = net && net->tap_fd == fd ? read(fd, t->tap_buf, TAP_READ_MAX) : -1;
    if (n < 0) {
      pthread_rwlock_unlock(&dp->lock);
      break;
    }
    counter_add(&t->io.rx_calls, 1);
    counter_add(&t->io.rx_datagrams, 1);
    if (n > TAP_READ_MAX) { /* the kernel says how long the frame was, even when it cut the copy short */
      pthread_rwlock_unlock(&dp->lock);
      count_unattributed(t, DROP_OVERSIZE, 1);
      continue;
    }
    while (!tap_outbound(t, vni, t->tap_buf, (uint32_t)n)) {
      pthread_rwlock_unlock(&dp->lock);
      tx_flush(t);
      pthread_rwlock_rdlock(&dp->lock);
    }
    pthread_rwlock_unlock(&dp->lock);
  }
  tx_flush(t);
}

/*
 * Both loops process a batch under the read lock and flush it without: a flush may wait for the
 * underlay (up to cfg.send_wait_ms), and a table change, which takes the write lock, must never wait on
 * the underlay, nor the JS thread behind it (docs/security.md "Guarantees"). A flush touches nothing in
 * the tables: sealed packets are in the thread's arena, received ones in its rx slots, destinations
 * copied into the queue, and it sends from the data plane's own sockets (UDP 4500, 4789, the delivery
 * port), which live until dp_destroy has joined the threads. A peer removed while its packets wait for
 * a flush is looked up again by the next datagram: the rest of its batch counts as unknown-peer.
 */
static void *outbound_main(void *arg) {
  dp_thread *t = arg;
  dataplane *dp = t->dp;
  struct epoll_event ev[4];
  while (!atomic_load(&dp->stopping)) {
    int n = epoll_wait(t->epfd, ev, 4, -1);
    for (int e = 0; e < n; e++) {
      if (ev[e].data.u64 == TAG_WAKE) continue;
      if (ev[e].data.u64 & TAG_TAP) {
        tap_ready(t, (uint32_t)(ev[e].data.u64 >> 32) & VXLAN_VNI_MAX, (int)(uint32_t)ev[e].data.u64);
        continue;
      }
      for (int b = 0; b < RX_BUDGET; b++) {
        int got = rx_batch(t, dp->gateway_fd);
        if (!got) break;
        pthread_rwlock_rdlock(&dp->lock);
        while (!outbound_batch(t, got)) {
          pthread_rwlock_unlock(&dp->lock);
          tx_flush(t);
          pthread_rwlock_rdlock(&dp->lock);
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
        while (!inbound_batch(t, esp, got)) { /* the queue is full: flush it without the lock, as above */
          pthread_rwlock_unlock(&dp->lock);
          tx_flush(t);
          pthread_rwlock_rdlock(&dp->lock);
        }
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
  t->rx = dp_malloc((size_t)RX_BATCH * RX_SLOT);
  t->arena = dp_malloc(TX_ARENA);
  t->tap_buf = dp_malloc(TAP_READ_MAX);
  if (!t->rx || !t->arena || !t->tap_buf) {
    set_err(err, err_len, "%s%s", "VEIL_ERR_NATIVE_NOMEM: out of memory for the data threads' buffers", 0);
    return -1;
  }
  t->epfd = FAULT_OR(epoll_create1(EPOLL_CLOEXEC), -1, EMFILE);
  if (t->epfd < 0) {
    set_err(err, err_len, "%s: %s", "epoll_create1", errno);
    return -1;
  }
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_WAKE };
  if (FAULT_OR(epoll_ctl(t->epfd, EPOLL_CTL_ADD, dp->wake_fd, &ev), -1, ENOMEM) < 0) {
    set_err(err, err_len, "%s: %s", "epoll_ctl (wake)", errno);
    return -1;
  }
  return 0;
}

static void thread_free(dp_thread *t) {
  free(t->rx);
  free(t->arena);
  free(t->tap_buf);
  if (t->epfd >= 0) close(t->epfd);
  t->rx = t->arena = t->tap_buf = NULL;
  t->epfd = -1;
}

/* Stops and joins the threads that run; the data plane can be started again afterwards. */
static void stop_threads(dataplane *dp) {
  atomic_store(&dp->stopping, 1);
  if (dp->wake_fd >= 0) {
    uint64_t one = 1;
    (void)!write(dp->wake_fd, &one, sizeof one); /* level-triggered: wakes both threads */
  }
  if (dp->out.started) pthread_join(dp->out.tid, NULL);
  if (dp->in.started) pthread_join(dp->in.tid, NULL);
  dp->out.started = dp->in.started = 0;
  dp->started = 0;
  uint64_t v;
  if (dp->wake_fd >= 0) (void)!read(dp->wake_fd, &v, sizeof v); /* empty again */
  atomic_store(&dp->stopping, 0);
}

// ---------------------------------------------------------------- lifecycle

dataplane *dp_create(const dp_config *cfg, char *err, size_t err_len) {
  dataplane *dp = dp_calloc(1, sizeof *dp);
  if (!dp) {
    set_err(err, err_len, "%s%s", "VEIL_ERR_NATIVE_NOMEM: out of memory", 0);
    return NULL;
  }
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  /* writers (JS table changes) must not starve behind two readers that alternate forever */
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  int e = pthread_rwlock_init(&dp->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (e) {
    set_err(err, err_len, "%s: %s", "the table lock", e);
    free(dp);
    return NULL;
  }
  dp->cfg = *cfg;
  dp->esp_fd = dp->plain_fd = dp->deliver_fd = dp->gateway_fd = dp->wake_fd = dp->out.epfd = dp->in.epfd = -1;
  if (satable_init(dp) < 0) {
    set_err(err, err_len, "%s%s", "VEIL_ERR_NATIVE_NOMEM: out of memory for the tables", 0);
    dp_destroy(dp);
    return NULL;
  }
  dp->wake_fd = FAULT_OR(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), -1, EMFILE);
  if (dp->wake_fd < 0) {
    set_err(err, err_len, "%s: %s", "eventfd", errno);
    dp_destroy(dp);
    return NULL;
  }
  /* The gateway socket: every address of the peer net at one port, bound to the vtep link's host end
   * (docs/plumbing.md "Gateway addresses"); the destination address names the peer. */
  udp_options gateway = { .gro = cfg->gro, .pktinfo = 1, .device = cfg->gateway_device };
  if ((dp->esp_fd = udp_socket(cfg->underlay, cfg->esp_port, cfg->buffer_bytes, &(udp_options){ .gro = cfg->gro }, err, err_len)) < 0 ||
      (cfg->relay_plain &&
       (dp->plain_fd = udp_socket(cfg->underlay, cfg->plain_port, cfg->buffer_bytes, &(udp_options){ .gro = cfg->gro }, err, err_len)) < 0) ||
      (dp->deliver_fd = udp_socket(cfg->host, cfg->delivery_port, cfg->buffer_bytes, &(udp_options){ 0 }, err, err_len)) < 0 ||
      (dp->gateway_fd = udp_socket((struct in_addr){ INADDR_ANY }, cfg->gateway_port, cfg->buffer_bytes, &gateway, err, err_len)) < 0 ||
      thread_init(dp, &dp->out, dp->unattributed_tx, err, err_len) < 0 ||
      thread_init(dp, &dp->in, dp->unattributed_rx, err, err_len) < 0) {
    dp_destroy(dp);
    return NULL;
  }
  struct epoll_event esp = { .events = EPOLLIN, .data.u64 = TAG_ESP }, plain = { .events = EPOLLIN, .data.u64 = TAG_PLAIN },
                     gw = { .events = EPOLLIN, .data.u64 = TAG_GATEWAY };
  if (FAULT_OR(epoll_ctl(dp->in.epfd, EPOLL_CTL_ADD, dp->esp_fd, &esp), -1, ENOMEM) < 0 ||
      (cfg->relay_plain && FAULT_OR(epoll_ctl(dp->in.epfd, EPOLL_CTL_ADD, dp->plain_fd, &plain), -1, ENOMEM) < 0) ||
      FAULT_OR(epoll_ctl(dp->out.epfd, EPOLL_CTL_ADD, dp->gateway_fd, &gw), -1, ENOMEM) < 0) {
    set_err(err, err_len, "%s: %s", "epoll_ctl (data sockets)", errno);
    dp_destroy(dp);
    return NULL;
  }
  return dp;
}

int dp_start(dataplane *dp, char *err, size_t err_len) {
  if (dp->started) return 0;
  int e = fault_now() ? EAGAIN : pthread_create(&dp->out.tid, NULL, outbound_main, &dp->out);
  if (e) {
    set_err(err, err_len, "%s: %s", "outbound thread", e);
    return -1;
  }
  dp->out.started = 1;
  pthread_setname_np(dp->out.tid, "veil-out"); /* named before dp_start returns: top -H, and the tests count them */
  e = fault_now() ? EAGAIN : pthread_create(&dp->in.tid, NULL, inbound_main, &dp->in);
  if (e) {
    set_err(err, err_len, "%s: %s", "inbound thread", e);
    stop_threads(dp); /* never half started: a later dp_start starts both */
    return -1;
  }
  dp->in.started = 1;
  pthread_setname_np(dp->in.tid, "veil-in");
  dp->started = 1;
  return 0;
}

void dp_destroy(dataplane *dp) {
  if (!dp) return;
  stop_threads(dp);
  satable_free(dp);
  int fds[5] = { dp->esp_fd, dp->plain_fd, dp->deliver_fd, dp->gateway_fd, dp->wake_fd };
  for (int i = 0; i < 5; i++) if (fds[i] >= 0) close(fds[i]);
  thread_free(&dp->out);
  thread_free(&dp->in);
  pthread_rwlock_destroy(&dp->lock);
  free(dp);
}

// ---------------------------------------------------------------- TAP ports (write lock)

int dp_attach_tap(dataplane *dp, uint32_t vni, const char *netns_path, const char *name, int *offloads, char *err, size_t err_len) {
  pthread_rwlock_rdlock(&dp->lock);
  network *net = table_get(&dp->networks, vni);
  int state = !net ? -1 : !net->encrypted ? -2 : net->tap_fd >= 0;
  if (state == 1) *offloads = net->tap_offloads;
  pthread_rwlock_unlock(&dp->lock);
  if (state == 1) return 0; /* it has one: only this thread (JS) attaches or detaches */
  if (state < 0) {
    set_err(err, err_len, "%s%s", state == -1 ? "VEIL_ERR_NATIVE_ARGS: no such network" : "VEIL_ERR_NATIVE_ARGS: a TAP port is for encrypted networks", 0);
    return -1;
  }
  int fd = tap_open(netns_path, name, offloads, err, err_len);
  if (fd < 0) return -1;
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_TAP | ((uint64_t)vni << 32) | (uint32_t)fd };
  pthread_rwlock_wrlock(&dp->lock);
  net = table_get(&dp->networks, vni);
  int rc = 0;
  if (!net || !net->encrypted || net->tap_fd >= 0) { /* changed meanwhile: only JS attaches, but never leak */
    set_err(err, err_len, "%s%s", "VEIL_ERR_NATIVE_ARGS: the network changed while its TAP port was made", 0);
    close(fd);
    rc = -1;
  } else if (FAULT_OR(epoll_ctl(dp->out.epfd, EPOLL_CTL_ADD, fd, &ev), -1, ENOMEM) < 0) {
    set_err(err, err_len, "%s: %s", "epoll_ctl (TAP)", errno);
    close(fd);
    rc = -1;
  } else {
    net->tap_fd = fd;
    net->tap_offloads = *offloads;
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_detach_tap(dataplane *dp, uint32_t vni) {
  pthread_rwlock_wrlock(&dp->lock);
  network *net = table_get(&dp->networks, vni);
  if (net) close_tap(dp, net);
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}
