/*
 * The control plane (each entry point takes the write lock): peers, networks, SAs, the epoch
 * high-water marks and the retired SAs that keep a reused key's sequence and replay window
 * (docs/wire.md "Sequence numbers and replay"). src/vxlan/ts/datapath.ts takes the same decisions.
 *
 * Key identity. An SA's key is known by its fingerprint, SHA-256("veil sa key v1\0" ‖ key ‖ salt).
 * Within a (peer, network) pair and a direction, one key has one name (SPI, ESN, epoch): installing it
 * under another is refused (VEIL_ERR_SA_KEY_REUSED), since a fresh counter under a used key repeats
 * GCM nonces and a fresh window under it opens old packets again. The same key under the same name
 * is the same SA: kept if in service, resumed if retired. A new key under a name in service (the peer
 * restarted: new incarnation, new keys) retires the SA it replaces.
 *
 * Retirement. An SA taken out of service (removed, replaced, its peer removed) loses its cipher, so
 * the key schedule is freed and wiped, and keeps its name, fingerprint and counter or replay window:
 * the same key back in service resumes them. A retirement never fails half-way: room in the retired
 * list is reserved before anything changes, and a call that cannot reserve it fails as a whole.
 *
 * Epoch high-water marks (pair_stats.epoch_mark). Retired SAs cannot be kept forever, so an epoch more
 * than two behind the highest one installed or activated for the pair is refused
 * (VEIL_ERR_SA_EPOCH_TOO_OLD); retired SAs that far behind are forgotten. Two behind is the reach of
 * rotation: at most three consecutive epochs live (docs/keys.md "Rotation"). Epochs number the network's
 * key generations, so when any pair of a network moves past a removed peer's retired SAs, they are
 * forgotten too and that peer's mark is raised past them: its live epochs are the network's.
 *
 * What goes with what. A removed peer keeps its mark and its retired SAs: the same host (the index is
 * claimed once per host) may come back with the same incarnation, hence the same keys, which must
 * resume; a restarted one brings new keys, which start fresh without any reuse. A removed network
 * takes its SAs, retired ones and marks with it, all wiped: a network is removed when its record is
 * gone, and one created again under the VNI has a new id and new random epoch secrets, so none of its
 * keys can be an old one (docs/keys.md "SA keys"), while its epochs start again at 1.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bind.h"
#include "fault.h"

#define MAX_LIVE_EPOCHS 3 /* src/vxlan/sa/table.ts: previous, current, next (docs/keys.md "Rotation") */
#define EPOCH_REACH 2     /* how far behind its pair's mark an epoch may still be installed (same source) */

static const char NOMEM[] = "VEIL_ERR_NATIVE_NOMEM: out of memory";

static int refuse(char *err, size_t err_len, const char *why) {
  set_err(err, err_len, "%s%s", why, 0);
  return -1;
}

// ---------------------------------------------------------------- SA lifetime and retirement

static void free_sa(int outbound, sa_base *b) {
  esp_cipher_free(&b->cipher);
  if (!outbound) replay_free(&((inbound_sa *)b)->replay);
  OPENSSL_cleanse(b, outbound ? sizeof(outbound_sa) : sizeof(inbound_sa));
  free(b);
}

/* 0, or -1 when out of memory. */
static int fingerprint(const uint8_t *key, size_t key_len, const uint8_t salt[ESP_SALT_LENGTH],
                       uint8_t out[SA_FINGERPRINT_LENGTH]) {
  static const char label[] = "veil sa key v1"; /* with its NUL */
  uint8_t buf[sizeof label + 32 + ESP_SALT_LENGTH];
  memcpy(buf, label, sizeof label);
  memcpy(buf + sizeof label, key, key_len);
  memcpy(buf + sizeof label + key_len, salt, ESP_SALT_LENGTH);
  unsigned int len = 0;
  int ok = !fault_now() && EVP_Digest(buf, sizeof label + key_len + ESP_SALT_LENGTH, out, &len, EVP_sha256(), NULL) == 1 &&
           len == SA_FINGERPRINT_LENGTH;
  OPENSSL_cleanse(buf, sizeof buf);
  return ok ? 0 : -1;
}

/* A new SA of either direction, its cipher keyed; NULL with err filled. */
static sa_base *new_sa(dataplane *dp, int outbound, uint32_t spi, const uint8_t *key, size_t key_len,
                       const uint8_t salt[ESP_SALT_LENGTH], int esn, uint16_t peer_index, uint32_t vni, uint32_t epoch,
                       char *err, size_t err_len) {
  if (key_len != 16 && key_len != 24 && key_len != 32) {
    refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: the key must be 16, 24 or 32 bytes");
    return NULL;
  }
  sa_base *b = dp_calloc(1, outbound ? sizeof(outbound_sa) : sizeof(inbound_sa));
  if (!b) {
    refuse(err, err_len, NOMEM);
    return NULL;
  }
  b->spi = spi;
  b->esn = esn;
  b->peer = peer_index;
  b->vni = vni;
  b->epoch = epoch;
  if (fingerprint(key, key_len, salt, b->fingerprint) < 0 ||
      esp_cipher_init(&b->cipher, key, key_len, salt, spi, esn, outbound) < 0 ||
      (!outbound && replay_init(&((inbound_sa *)b)->replay, esn, dp->cfg.replay_window) < 0)) {
    free_sa(outbound, b);
    refuse(err, err_len, NOMEM);
    return NULL;
  }
  return b;
}

/* Room for `more` retired SAs, so that no retirement can fail once a change has begun. */
static int reserve_retired(dataplane *dp, size_t more) {
  size_t need = dp->n_retired + more;
  if (need <= dp->cap_retired) return 0;
  size_t cap = dp->cap_retired ? dp->cap_retired : 16;
  while (cap < need) cap *= 2;
  struct retired_sa *r = dp_realloc(dp->retired, cap * sizeof *r);
  if (!r) return -1;
  dp->retired = r;
  dp->cap_retired = cap;
  return 0;
}

/* Takes an SA out of service, room reserved: the key schedule is wiped; name, fingerprint and counter or window stay. */
static void retire(dataplane *dp, int outbound, sa_base *sa) {
  esp_cipher_free(&sa->cipher);
  dp->retired[dp->n_retired++] = (struct retired_sa){ outbound, sa };
}

static void forget_retired(dataplane *dp, size_t i) {
  free_sa(dp->retired[i].outbound, dp->retired[i].sa);
  dp->retired[i] = dp->retired[--dp->n_retired];
}

/* Retired SA i back in service, keyed by fresh's cipher (the same key): its counter or window resume. */
static sa_base *reclaim(dataplane *dp, size_t i, sa_base *fresh) {
  sa_base *b = dp->retired[i].sa;
  dp->retired[i] = dp->retired[--dp->n_retired];
  b->cipher = fresh->cipher;
  fresh->cipher.ctx = NULL;
  return b;
}

/*
 * The SA of (peer, vni) in this direction, in service or retired, whose key has fingerprint fp; NULL if
 * none. *retired_at is its index in the retired list, or -1 when it is in service. Write lock held.
 */
static sa_base *find_key(dataplane *dp, int outbound, uint16_t peer_index, uint32_t vni,
                         const uint8_t fp[SA_FINGERPRINT_LENGTH], ptrdiff_t *retired_at) {
  *retired_at = -1;
  if (outbound) {
    outbound_sa *o = table_get(&dp->outbound, pair_key(peer_index, vni));
    if (o && CRYPTO_memcmp(o->base.fingerprint, fp, SA_FINGERPRINT_LENGTH) == 0) return &o->base;
  } else {
    for (uint32_t i = 0; i < dp->inbound.cap; i++) {
      if (dp->inbound.state[i] != 1) continue;
      sa_base *b = dp->inbound.vals[i];
      if (b->peer == peer_index && b->vni == vni && CRYPTO_memcmp(b->fingerprint, fp, SA_FINGERPRINT_LENGTH) == 0)
        return b;
    }
  }
  for (size_t i = 0; i < dp->n_retired; i++) {
    sa_base *b = dp->retired[i].sa;
    if (dp->retired[i].outbound != outbound || b->peer != peer_index || b->vni != vni) continue;
    if (CRYPTO_memcmp(b->fingerprint, fp, SA_FINGERPRINT_LENGTH) != 0) continue;
    *retired_at = (ptrdiff_t)i;
    return b;
  }
  return NULL;
}

static int same_name(const sa_base *b, uint32_t spi, int esn, uint32_t epoch) {
  return b->spi == spi && b->esn == esn && b->epoch == epoch;
}

static int too_old(const pair_stats *ps, uint32_t epoch) {
  return ps && (uint64_t)epoch + EPOCH_REACH < ps->epoch_mark;
}

/*
 * (peer, vni) reached `mark`: forgets (wipes and frees) the retired SAs of network vni that can never
 * come back: the pair's own more than two epochs behind, and those of removed peers as far behind,
 * whose mark is raised past them (a forgotten key must be refused, never restarted). Write lock held.
 */
static void prune_retired(dataplane *dp, uint16_t peer_index, uint32_t vni, uint32_t mark) {
  for (size_t i = 0; i < dp->n_retired;) {
    sa_base *b = dp->retired[i].sa;
    if (b->vni != vni || (uint64_t)b->epoch + EPOCH_REACH >= mark || (b->peer != peer_index && dp->peers[b->peer])) {
      i++;
      continue;
    }
    if (b->pair->epoch_mark < b->epoch + EPOCH_REACH + 1) b->pair->epoch_mark = b->epoch + EPOCH_REACH + 1;
    forget_retired(dp, i);
  }
}

static void raise_mark(dataplane *dp, pair_stats *ps, uint32_t epoch) {
  if (epoch > ps->epoch_mark) ps->epoch_mark = epoch;
  prune_retired(dp, ps->peer, ps->vni, ps->epoch_mark);
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
    for (uint32_t i = 0; t->state && i < t->cap; i++)
      if (t->state[i] == 1) free_sa(k, t->vals[i]);
  }
  while (dp->n_retired) forget_retired(dp, dp->n_retired - 1);
  free(dp->retired);
  for (uint32_t i = 0; dp->networks.state && i < dp->networks.cap; i++)
    if (dp->networks.state[i] == 1) free(dp->networks.vals[i]);
  for (uint32_t i = 0; dp->pairs.state && i < dp->pairs.cap; i++)
    if (dp->pairs.state[i] == 1) free(dp->pairs.vals[i]);
  table_free(&dp->peer_by_address);
  table_free(&dp->networks);
  table_free(&dp->inbound);
  table_free(&dp->outbound);
  table_free(&dp->pairs);
}

// ---------------------------------------------------------------- peers and networks (write lock)

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
  if (index < 1 || index > PEER_INDEX_MAX) return refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: peer index out of range");
  pthread_rwlock_wrlock(&dp->lock);
  peer *old = dp->peers[index];
  if (old && old->port == port) {
    /* same socket; the underlay address may change */
    int rc = 0;
    if (old->address.s_addr != address.s_addr) {
      if (table_put(&dp->peer_by_address, address.s_addr, old) < 0) {
        rc = refuse(err, err_len, NOMEM);
      } else {
        if (table_get(&dp->peer_by_address, old->address.s_addr) == old) table_del(&dp->peer_by_address, old->address.s_addr);
        old->address = address;
      }
    }
    pthread_rwlock_unlock(&dp->lock);
    return rc;
  }
  pthread_rwlock_unlock(&dp->lock);
  if (old && dp_remove_peer(dp, index, err, err_len) < 0) return -1;

  int fd = udp_socket(dp->cfg.host, port, dp->cfg.buffer_bytes, dp->cfg.gro, err, err_len);
  if (fd < 0) return -1;
  peer *p = dp_calloc(1, sizeof *p);
  if (!p) {
    close(fd);
    return refuse(err, err_len, NOMEM);
  }
  p->index = index;
  p->port = port;
  p->address = address;
  p->fd = fd;
  pthread_rwlock_wrlock(&dp->lock);
  /* Whatever can fail comes before the peer is published: a peer without its pairs would lose its traffic. */
  int ok = 1;
  for (uint32_t i = 0; ok && i < dp->networks.cap; i++)
    if (dp->networks.state[i] == 1 && !ensure_pair(dp, index, (uint32_t)dp->networks.keys[i])) ok = 0;
  if (!ok) refuse(err, err_len, NOMEM);
  p->generation = dp->generation + 1;
  struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ((uint64_t)p->generation << 32) | index };
  if (ok && FAULT_OR(epoll_ctl(dp->out.epfd, EPOLL_CTL_ADD, fd, &ev), -1, ENOMEM) < 0) {
    set_err(err, err_len, "VEIL_ERR_NATIVE_IO: %s: %s", "epoll", errno);
    ok = 0;
  }
  if (ok && table_put(&dp->peer_by_address, address.s_addr, p) < 0) {
    epoll_ctl(dp->out.epfd, EPOLL_CTL_DEL, fd, NULL);
    refuse(err, err_len, NOMEM);
    ok = 0;
  }
  if (ok) {
    dp->generation = p->generation;
    dp->peers[index] = p;
  }
  pthread_rwlock_unlock(&dp->lock);
  if (ok) return 0;
  close(fd);
  free(p);
  return -1;
}

/* Retires every SA of peer_index, room reserved. Write lock held. */
static void retire_peer_sas(dataplane *dp, uint16_t peer_index) {
  table *sa_tables[2] = { &dp->inbound, &dp->outbound };
  for (int k = 0; k < 2; k++) {
    table *t = sa_tables[k];
    for (uint32_t i = 0; i < t->cap; i++) {
      if (t->state[i] != 1 || ((sa_base *)t->vals[i])->peer != peer_index) continue;
      retire(dp, k, table_del(t, t->keys[i]));
    }
  }
}

static size_t count_peer_sas(dataplane *dp, uint16_t peer_index) {
  size_t n = 0;
  table *sa_tables[2] = { &dp->inbound, &dp->outbound };
  for (int k = 0; k < 2; k++)
    for (uint32_t i = 0; i < sa_tables[k]->cap; i++)
      if (sa_tables[k]->state[i] == 1 && ((sa_base *)sa_tables[k]->vals[i])->peer == peer_index) n++;
  return n;
}

int dp_remove_peer(dataplane *dp, uint16_t index, char *err, size_t err_len) {
  if (index < 1 || index > PEER_INDEX_MAX) return 0;
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  peer *p = dp->peers[index];
  if (p && reserve_retired(dp, count_peer_sas(dp, index)) < 0) {
    rc = refuse(err, err_len, NOMEM); /* the peer stays, SAs and all */
  } else if (p) {
    /* No reader is inside recvmmsg on this socket (they receive under the read lock), and no flush
     * sends from it (flushes use the data plane's own sockets, bind.c). */
    epoll_ctl(dp->out.epfd, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    if (table_get(&dp->peer_by_address, p->address.s_addr) == p) table_del(&dp->peer_by_address, p->address.s_addr);
    dp->peers[index] = NULL;
    retire_peer_sas(dp, index);
    free(p);
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_set_network(dataplane *dp, uint32_t vni, int encrypted, char *err, size_t err_len) {
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  /* The pairs first: a network some peer has no pair for would count that peer's traffic as unknown-peer. */
  for (int i = 1; i <= PEER_INDEX_MAX && rc == 0; i++)
    if (dp->peers[i] && !ensure_pair(dp, (uint16_t)i, vni)) rc = refuse(err, err_len, NOMEM);
  network *n = rc == 0 ? table_get(&dp->networks, vni) : NULL;
  if (rc == 0 && !n) {
    n = dp_calloc(1, sizeof *n);
    if (!n || table_put(&dp->networks, vni, n) < 0) {
      free(n);
      n = NULL;
      rc = refuse(err, err_len, NOMEM);
    }
  }
  if (n) {
    n->vni = vni;
    n->encrypted = encrypted;
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

/* The network's SAs (in service and retired) and marks go with it, wiped: see the top of this file. */
int dp_remove_network(dataplane *dp, uint32_t vni) {
  pthread_rwlock_wrlock(&dp->lock);
  free(table_del(&dp->networks, vni));
  table *sa_tables[2] = { &dp->inbound, &dp->outbound };
  for (int k = 0; k < 2; k++) {
    table *t = sa_tables[k];
    for (uint32_t i = 0; i < t->cap; i++)
      if (t->state[i] == 1 && ((sa_base *)t->vals[i])->vni == vni) free_sa(k, table_del(t, t->keys[i]));
  }
  for (size_t i = 0; i < dp->n_retired;) {
    if (dp->retired[i].sa->vni == vni) forget_retired(dp, i);
    else i++;
  }
  for (uint32_t i = 0; i < dp->pairs.cap; i++)
    if (dp->pairs.state[i] == 1 && ((pair_stats *)dp->pairs.vals[i])->vni == vni) ((pair_stats *)dp->pairs.vals[i])->epoch_mark = 0;
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

// ---------------------------------------------------------------- SAs (write lock)

static const char EPOCH_TOO_OLD[] =
    "VEIL_ERR_SA_EPOCH_TOO_OLD: the epoch is more than two behind the newest installed for this peer and network";
static const char KEY_REUSED[] = "VEIL_ERR_SA_KEY_REUSED: the key is in use under another SPI, ESN setting or epoch";

int dp_install_inbound(dataplane *dp, uint32_t spi, const uint8_t *key, size_t key_len, const uint8_t salt[4], int esn,
                       uint32_t vni, uint16_t peer_index, uint32_t epoch, char *err, size_t err_len) {
  sa_base *fresh = new_sa(dp, 0, spi, key, key_len, salt, esn, peer_index, vni, epoch, err, err_len);
  if (!fresh) return -1;
  sa_base *spare = fresh; /* freed at the end unless it went into service itself */
  int rc = -1;
  pthread_rwlock_wrlock(&dp->lock);
  pair_stats *ps = table_get(&dp->pairs, pair_key(peer_index, vni));
  ptrdiff_t at;
  sa_base *known = find_key(dp, 0, peer_index, vni, fresh->fingerprint, &at);
  inbound_sa *existing = table_get(&dp->inbound, spi);
  if (too_old(ps, epoch)) {
    refuse(err, err_len, EPOCH_TOO_OLD);
  } else if (known && !same_name(known, spi, esn, epoch)) {
    refuse(err, err_len, KEY_REUSED);
  } else if (existing && (existing->base.peer != peer_index || existing->base.vni != vni || existing->base.epoch != epoch)) {
    refuse(err, err_len, "VEIL_ERR_SA_SPI_IN_USE: the SPI is in use by another peer, network or epoch");
  } else if (existing && &existing->base == known) {
    rc = 0; /* the same SA again: it stays, replay window and all */
  } else {
    int live = 0;
    for (uint32_t i = 0; i < dp->inbound.cap; i++) {
      if (dp->inbound.state[i] != 1) continue;
      sa_base *o = dp->inbound.vals[i];
      if (o->peer == peer_index && o->vni == vni && o->epoch != epoch) live++;
    }
    if (live >= MAX_LIVE_EPOCHS) {
      refuse(err, err_len, "VEIL_ERR_SA_TOO_MANY_EPOCHS: the pair already has three live epochs");
    } else if ((!ps && !(ps = ensure_pair(dp, peer_index, vni))) || (existing && reserve_retired(dp, 1) < 0)) {
      refuse(err, err_len, NOMEM);
    } else {
      /* Installed before and retired: the same object comes back, window and all. */
      sa_base *sa = known ? reclaim(dp, (size_t)at, fresh) : fresh;
      sa->pair = ps;
      if (table_put(&dp->inbound, spi, sa) < 0) {
        if (known) retire(dp, 0, sa); /* back where it was: reclaim freed its slot */
        refuse(err, err_len, NOMEM);
      } else {
        if (sa == fresh) spare = NULL;
        /* A new key under this name (the peer restarted): the old one is retired, not forgotten. */
        if (existing) retire(dp, 0, &existing->base);
        raise_mark(dp, ps, epoch);
        rc = 0;
      }
    }
  }
  pthread_rwlock_unlock(&dp->lock);
  if (spare) free_sa(0, spare);
  return rc;
}

int dp_remove_inbound(dataplane *dp, uint32_t spi, char *err, size_t err_len) {
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  if (table_get(&dp->inbound, spi)) {
    if (reserve_retired(dp, 1) < 0) rc = refuse(err, err_len, NOMEM); /* it stays in service rather than be forgotten */
    else retire(dp, 0, table_del(&dp->inbound, spi)); /* no reader holds it: they drop every pointer at unlock */
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_set_outbound(dataplane *dp, uint16_t peer_index, uint32_t vni, uint32_t spi, const uint8_t *key, size_t key_len,
                    const uint8_t salt[4], int esn, uint32_t epoch, uint64_t budget, char *err, size_t err_len) {
  sa_base *fresh = new_sa(dp, 1, spi, key, key_len, salt, esn, peer_index, vni, epoch, err, err_len);
  if (!fresh) return -1;
  outbound_sa *f = (outbound_sa *)fresh;
  f->next = 1; /* RFC 4303 §3.3.3: the first packet is number 1 */
  uint64_t protocol = esn ? SEQ64_MAX : SEQ32_MAX;
  f->limit = budget && budget < protocol ? budget : protocol;
  sa_base *spare = fresh;
  int rc = -1;
  uint64_t k = pair_key(peer_index, vni);
  pthread_rwlock_wrlock(&dp->lock);
  pair_stats *ps = table_get(&dp->pairs, k);
  ptrdiff_t at;
  sa_base *known = find_key(dp, 1, peer_index, vni, fresh->fingerprint, &at);
  outbound_sa *old = table_get(&dp->outbound, k);
  if (too_old(ps, epoch)) {
    refuse(err, err_len, EPOCH_TOO_OLD);
  } else if (known && !same_name(known, spi, esn, epoch)) {
    refuse(err, err_len, KEY_REUSED);
  } else if (old && &old->base == known) {
    rc = 0; /* already active: its counter goes on */
  } else if ((!ps && !(ps = ensure_pair(dp, peer_index, vni))) || (old && reserve_retired(dp, 1) < 0)) {
    refuse(err, err_len, NOMEM);
  } else {
    /* Active before and retired: it resumes, counter and all. */
    sa_base *sa = known ? reclaim(dp, (size_t)at, fresh) : fresh;
    sa->pair = ps;
    if (table_put(&dp->outbound, k, sa) < 0) {
      if (known) retire(dp, 1, sa);
      refuse(err, err_len, NOMEM);
    } else {
      if (sa == fresh) spare = NULL;
      if (old) retire(dp, 1, &old->base);
      raise_mark(dp, ps, epoch);
      rc = 0;
    }
  }
  pthread_rwlock_unlock(&dp->lock);
  if (spare) free_sa(1, spare);
  return rc;
}

int dp_remove_outbound(dataplane *dp, uint16_t peer_index, uint32_t vni, char *err, size_t err_len) {
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  uint64_t k = pair_key(peer_index, vni);
  if (table_get(&dp->outbound, k)) {
    if (reserve_retired(dp, 1) < 0) rc = refuse(err, err_len, NOMEM);
    else retire(dp, 1, table_del(&dp->outbound, k));
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
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
