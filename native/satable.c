/*
 * The control plane (each entry point takes the write lock): peers, networks,
 * SAs, and the retired SAs that keep a reused key's sequence and replay window.
 */
#include <openssl/crypto.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bind.h"
#include "fault.h"

#define MAX_LIVE_EPOCHS 3        /* src/vxlan/sa/table.ts: previous, current, next (docs/keys.md "Rotation") */

// ---------------------------------------------------------------- SA lifetime and retirement

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
    struct retired_sa *r = dp_realloc(dp->retired, cap * sizeof *r);
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

// ---------------------------------------------------------------- the tables, for dp_create / dp_destroy

int satable_init(dataplane *dp) {
  return table_init(&dp->peer_by_address) || table_init(&dp->networks) || table_init(&dp->inbound) ||
         table_init(&dp->outbound) || table_init(&dp->pairs) ? -1 : 0;
}

void satable_free(dataplane *dp) {
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
}

// ---------------------------------------------------------------- control plane (write lock)

static pair_stats *ensure_pair(dataplane *dp, uint16_t peer_index, uint32_t vni) {
  uint64_t key = pair_key(peer_index, vni);
  pair_stats *ps = table_get(&dp->pairs, key);
  if (ps) return ps;
  ps = dp_calloc(1, sizeof *ps);
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
  peer *p = dp_calloc(1, sizeof *p);
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
  int rc = FAULT_OR(epoll_ctl(dp->out.epfd, EPOLL_CTL_ADD, fd, &ev), -1, ENOMEM);
  pthread_rwlock_unlock(&dp->lock);
  if (rc < 0) {
    set_err(err, err_len, "%s: %s", "epoll", errno);
    dp_remove_peer(dp, index);
    return -1;
  }
  return 0;
}

/* Retires every SA of peer_index (if by_peer) and of vni (if by_vni). Write lock held. */
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
    n = dp_calloc(1, sizeof *n);
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
  inbound_sa *sa = dp_calloc(1, sizeof *sa);
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
  outbound_sa *sa = dp_calloc(1, sizeof *sa);
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
  uint64_t retired[2] = { 0, 0 };
  for (size_t i = 0; i < dp->n_retired; i++) retired[dp->retired[i].outbound ? 1 : 0]++;
  v->retired(v->ctx, retired[0], retired[1]);
  pthread_rwlock_unlock(&dp->lock);
}
