/*
 * The control plane (each entry point takes the write lock): peers, networks, SAs, the epoch
 * high-water marks and the retired SAs that keep a reused key's sequence and replay window
 * (docs/wire.md "Sequence numbers and replay"). src/vxlan/ts/datapath.ts takes the same decisions.
 *
 * Key identity. An SA's key is known by its fingerprint, SHA-256("veil sa key v1\0" ‖ key ‖ salt), and
 * one key is in one place: per direction, the key index holds every SA in service or retired, of every
 * peer and network. Installed again under its name (SPI, ESN, epoch, VNI) a key is the same SA: kept if
 * in service, resumed if retired. Under another name it is refused (VEIL_ERR_SA_KEY_REUSED), since a
 * fresh counter under a used key repeats GCM nonces and a fresh window under it opens old packets again.
 * A new key under a name in service (the peer restarted: new incarnation, new keys) retires the SA it
 * replaces.
 *
 * A known key asked for another peer index moves there, counter or window and all. Keys are derived from
 * the hosts' ids, never their indexes (docs/keys.md "SA keys"), and our outbound SPI is made from our own
 * index: a peer whose host record came back under another index (an etcd restore) brings the same
 * outbound key under the same name. Moving it keeps one counter, so no nonce repeats, and keeps the
 * peer's traffic flowing, as the TypeScript path does (it knows peers by id); refusing would be as safe
 * but cut the peer off until its keys change. Its inbound key comes under another SPI (the sender's
 * index is in it): another name, refused.
 *
 * Retirement. An SA taken out of service (removed, replaced, its peer removed) loses its cipher, so
 * the key schedule is freed and wiped, and keeps its name, fingerprint and counter or replay window:
 * the same key back in service resumes them. A retirement never fails half-way: room in the retired
 * list is reserved before anything changes, and a call that cannot reserve it fails as a whole.
 *
 * Epoch high-water marks, one per network. Retired SAs cannot be kept forever, so an epoch more than two
 * behind the highest one installed or activated in the network is refused (VEIL_ERR_SA_EPOCH_TOO_OLD),
 * and retired SAs that far behind are forgotten. Epochs number the network's key generations and at
 * most three consecutive ones live (docs/keys.md "Rotation"), so two behind is the reach of rotation for
 * every peer. The mark is the network's, not a peer index's: it holds under whatever index a peer comes
 * back, so a forgotten key can only be refused, never started again.
 *
 * What goes with what. A removed peer's SAs are retired, not forgotten: the same host may come back
 * (under its index or another) with the same incarnation, hence the same keys, which must resume; a
 * restarted one brings new keys, which start fresh without any reuse. A removed network takes its SAs,
 * retired ones, pairs and mark with it, all wiped: a network is removed when its record is gone, and one
 * created again under the VNI has a new id and new random epoch secrets, so none of its keys can be an
 * old one (docs/keys.md "SA keys"), while its epochs start again at 1.
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
#define EPOCH_REACH 2     /* how far behind its network's mark an epoch may still be installed (same source) */

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
  b->retired_at = -1;
  if (fingerprint(key, key_len, salt, b->fingerprint) < 0 ||
      esp_cipher_init(&b->cipher, key, key_len, salt, spi, esn, outbound) < 0 ||
      (!outbound && replay_init(&((inbound_sa *)b)->replay, esn, dp->cfg.replay_window) < 0)) {
    free_sa(outbound, b);
    refuse(err, err_len, NOMEM);
    return NULL;
  }
  return b;
}

// ---------------------------------------------------------------- the key index (write lock)

/* A deleted slot: probes go on past it. */
static sa_base key_gone;
#define KEY_GONE (&key_gone)

/* Where a fingerprint's probe starts: its first bytes, already uniform (a SHA-256 output). */
static uint32_t key_home(const key_index *x, const uint8_t fp[SA_FINGERPRINT_LENGTH]) {
  uint32_t h;
  memcpy(&h, fp, sizeof h);
  return h & (x->cap - 1);
}

/* The SA of this direction, in service or retired, whose key has fingerprint fp; NULL if none. */
static sa_base *key_find(const key_index *x, const uint8_t fp[SA_FINGERPRINT_LENGTH]) {
  for (uint32_t i = x->cap ? key_home(x, fp) : 0; x->cap && x->slots[i]; i = (i + 1) & (x->cap - 1))
    if (x->slots[i] != KEY_GONE && CRYPTO_memcmp(x->slots[i]->fingerprint, fp, SA_FINGERPRINT_LENGTH) == 0)
      return x->slots[i];
  return NULL;
}

/* Adds an SA whose key is not in the index yet; room reserved (key_reserve). */
static void key_add(key_index *x, sa_base *sa) {
  uint32_t i = key_home(x, sa->fingerprint);
  while (x->slots[i] && x->slots[i] != KEY_GONE) i = (i + 1) & (x->cap - 1);
  if (!x->slots[i]) x->used++;
  x->slots[i] = sa;
  x->live++;
}

/* Room for one more key (at most half the slots used), so that adding it cannot fail once a change has begun. */
static int key_reserve(key_index *x) {
  if ((x->used + 1) * 2 <= x->cap) return 0;
  uint32_t cap = 64;
  while (cap < (x->live + 1) * 4) cap *= 2; /* a power of two: probes are masked */
  key_index grown = { dp_calloc(cap, sizeof(sa_base *)), cap, 0, 0 };
  if (!grown.slots) return -1;
  for (uint32_t i = 0; i < x->cap; i++)
    if (x->slots[i] && x->slots[i] != KEY_GONE) key_add(&grown, x->slots[i]);
  free(x->slots);
  *x = grown;
  return 0;
}

static void key_drop(key_index *x, const sa_base *sa) {
  for (uint32_t i = x->cap ? key_home(x, sa->fingerprint) : 0; x->cap && x->slots[i]; i = (i + 1) & (x->cap - 1)) {
    if (x->slots[i] != sa) continue;
    x->slots[i] = KEY_GONE;
    x->live--;
    return;
  }
}

// ---------------------------------------------------------------- retirement (write lock)

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
  sa->retired_at = (ptrdiff_t)dp->n_retired;
  dp->retired[dp->n_retired++] = (struct retired_sa){ outbound, sa };
}

/* Takes entry i off the retired list; the last entry moves into its place. */
static sa_base *unlist_retired(dataplane *dp, size_t i) {
  sa_base *b = dp->retired[i].sa;
  dp->retired[i] = dp->retired[--dp->n_retired];
  if (i < dp->n_retired) dp->retired[i].sa->retired_at = (ptrdiff_t)i;
  b->retired_at = -1;
  return b;
}

static void forget_retired(dataplane *dp, size_t i) {
  int outbound = dp->retired[i].outbound;
  sa_base *b = unlist_retired(dp, i);
  key_drop(&dp->keys[outbound], b);
  free_sa(outbound, b);
}

/* Retired SA b back in service, keyed by fresh's cipher (the same key): its counter or window resume. */
static void reclaim(dataplane *dp, sa_base *b, sa_base *fresh) {
  unlist_retired(dp, (size_t)b->retired_at);
  b->cipher = fresh->cipher;
  fresh->cipher.ctx = NULL;
}

static int same_name(const sa_base *b, uint32_t spi, int esn, uint32_t epoch, uint32_t vni) {
  return b->spi == spi && b->esn == esn && b->epoch == epoch && b->vni == vni;
}

// ---------------------------------------------------------------- epoch marks (write lock)

static int too_old(dataplane *dp, uint32_t vni, uint32_t epoch) {
  const uint32_t *mark = table_get(&dp->marks, vni);
  return mark && (uint64_t)epoch + EPOCH_REACH < *mark;
}

/* The mark of network vni, 0 when new; NULL when out of memory. */
static uint32_t *ensure_mark(dataplane *dp, uint32_t vni) {
  uint32_t *mark = table_get(&dp->marks, vni);
  if (mark) return mark;
  mark = dp_calloc(1, sizeof *mark);
  if (mark && table_put(&dp->marks, vni, mark) < 0) {
    free(mark);
    return NULL;
  }
  return mark;
}

/*
 * An SA of network vni went into service at `epoch` (or stayed): the mark rises to it, and the retired
 * SAs of the network more than two epochs behind are forgotten (wiped and freed): they could only be
 * refused. After every install or activation that succeeds, as src/vxlan/ts/datapath.ts does.
 */
static void raise_mark(dataplane *dp, uint32_t *mark, uint32_t vni, uint32_t epoch) {
  if (epoch > *mark) *mark = epoch;
  for (size_t i = 0; i < dp->n_retired;) {
    const sa_base *b = dp->retired[i].sa;
    if (b->vni == vni && (uint64_t)b->epoch + EPOCH_REACH < *mark) forget_retired(dp, i);
    else i++;
  }
}

// ---------------------------------------------------------------- the tables, for dp_create / dp_destroy

/*
 * Out of the outbound thread's epoll set first: epoll forgets a descriptor only when the last reference
 * to its file goes, and a command spawned meanwhile may hold one until it execs. The device goes with it.
 */
void close_tap(dataplane *dp, network *n) {
  if (n->tap_fd < 0) return;
  if (dp->out.epfd >= 0) (void)epoll_ctl(dp->out.epfd, EPOLL_CTL_DEL, n->tap_fd, NULL);
  close(n->tap_fd);
  n->tap_fd = -1;
}

/* A network's TAP port, forwarding table and flood list. */
static void free_network(dataplane *dp, network *n) {
  close_tap(dp, n);
  table_free(&n->fdb);
  free(n->flood);
  free(n);
}

static void unflood(network *n, uint16_t peer_index) {
  for (uint32_t i = 0; i < n->n_flood; i++)
    if (n->flood[i] == peer_index) {
      n->flood[i] = n->flood[--n->n_flood];
      return;
    }
}

int satable_init(dataplane *dp) {
  return table_init(&dp->peer_by_address) || table_init(&dp->networks) || table_init(&dp->inbound) ||
         table_init(&dp->outbound) || table_init(&dp->pairs) || table_init(&dp->marks) ? -1 : 0;
}

void satable_free(dataplane *dp) {
  for (int k = 0; k < 2; k++) {
    free(dp->keys[k].slots); /* first: nothing is looked up from here on */
    dp->keys[k] = (key_index){ 0 };
  }
  for (int i = 0; i <= PEER_INDEX_MAX; i++) {
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
    if (dp->networks.state[i] == 1) free_network(dp, dp->networks.vals[i]);
  for (uint32_t i = 0; dp->pairs.state && i < dp->pairs.cap; i++)
    if (dp->pairs.state[i] == 1) free(dp->pairs.vals[i]);
  for (uint32_t i = 0; dp->marks.state && i < dp->marks.cap; i++)
    if (dp->marks.state[i] == 1) free(dp->marks.vals[i]);
  table_free(&dp->peer_by_address);
  table_free(&dp->networks);
  table_free(&dp->inbound);
  table_free(&dp->outbound);
  table_free(&dp->pairs);
  table_free(&dp->marks);
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

/*
 * A peer is an entry, not a socket: its datagrams reach the one gateway socket at its gateway address
 * (docs/plumbing.md "Gateway addresses"). Adding a peer that is there changes only its underlay address.
 */
int dp_add_peer(dataplane *dp, uint16_t index, struct in_addr address, char *err, size_t err_len) {
  if (index < 1 || index > PEER_INDEX_MAX) return refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: peer index out of range");
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  peer *old = dp->peers[index];
  if (old) {
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
  peer *p = dp_calloc(1, sizeof *p);
  /* Whatever can fail comes before the peer is published: a peer without its pairs would lose its traffic. */
  int ok = p != NULL;
  for (uint32_t i = 0; ok && i < dp->networks.cap; i++)
    if (dp->networks.state[i] == 1 && !ensure_pair(dp, index, (uint32_t)dp->networks.keys[i])) ok = 0;
  if (ok) {
    p->index = index;
    p->address = address;
    ok = table_put(&dp->peer_by_address, address.s_addr, p) == 0;
  }
  if (ok) dp->peers[index] = p;
  else {
    free(p);
    rc = refuse(err, err_len, NOMEM);
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
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
    if (table_get(&dp->peer_by_address, p->address.s_addr) == p) table_del(&dp->peer_by_address, p->address.s_addr);
    dp->peers[index] = NULL;
    retire_peer_sas(dp, index);
    free(p);
    /* No frame of a TAP port goes to an index that a later peer may take (docs/plumbing.md "The TAP port"). */
    for (uint32_t i = 0; i < dp->networks.cap; i++) {
      if (dp->networks.state[i] != 1) continue;
      network *n = dp->networks.vals[i];
      unflood(n, index);
      for (uint32_t k = 0; k < n->fdb.cap; k++)
        if (n->fdb.state[k] == 1 && (uint16_t)(uintptr_t)n->fdb.vals[k] == index) table_del(&n->fdb, n->fdb.keys[k]);
    }
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_set_network(dataplane *dp, uint32_t vni, int encrypted, char *err, size_t err_len) {
  if (!encrypted && !dp->cfg.relay_plain)
    return refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: a plain network, and plain networks run in the kernel here");
  pthread_rwlock_wrlock(&dp->lock);
  int rc = 0;
  /* The pairs first: a network some peer has no pair for would count that peer's traffic as unknown-peer. */
  for (int i = 1; i <= PEER_INDEX_MAX && rc == 0; i++)
    if (dp->peers[i] && !ensure_pair(dp, (uint16_t)i, vni)) rc = refuse(err, err_len, NOMEM);
  network *n = rc == 0 ? table_get(&dp->networks, vni) : NULL;
  if (rc == 0 && !n) {
    n = dp_calloc(1, sizeof *n);
    if (n) n->tap_fd = -1;
    if (!n || table_init(&n->fdb) < 0 || table_put(&dp->networks, vni, n) < 0) {
      if (n) free_network(dp, n);
      n = NULL;
      rc = refuse(err, err_len, NOMEM);
    }
  }
  if (n) {
    n->vni = vni;
    n->encrypted = encrypted;
    if (!encrypted) { /* a plain network has no TAP port: opened frames never go to one */
      close_tap(dp, n);
      for (uint32_t i = 0; i < n->fdb.cap; i++)
        if (n->fdb.state[i] == 1) table_del(&n->fdb, n->fdb.keys[i]);
      n->n_flood = 0;
    }
  }
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

/* The network's SAs (in service and retired) and marks go with it, wiped: see the top of this file. */
int dp_remove_network(dataplane *dp, uint32_t vni) {
  pthread_rwlock_wrlock(&dp->lock);
  network *net = table_del(&dp->networks, vni);
  if (net) free_network(dp, net);
  table *sa_tables[2] = { &dp->inbound, &dp->outbound };
  for (int k = 0; k < 2; k++) {
    table *t = sa_tables[k];
    for (uint32_t i = 0; i < t->cap; i++) {
      if (t->state[i] != 1 || ((sa_base *)t->vals[i])->vni != vni) continue;
      key_drop(&dp->keys[k], t->vals[i]);
      free_sa(k, table_del(t, t->keys[i]));
    }
  }
  for (size_t i = 0; i < dp->n_retired;) {
    if (dp->retired[i].sa->vni == vni) forget_retired(dp, i);
    else i++;
  }
  /* Its pairs too, now that no SA points at them: a network created and deleted over and over must not
   * leave a pair per peer each time. Packets look the network up first, so none reaches a freed pair. */
  for (uint32_t i = 0; i < dp->pairs.cap; i++)
    if (dp->pairs.state[i] == 1 && ((pair_stats *)dp->pairs.vals[i])->vni == vni) free(table_del(&dp->pairs, dp->pairs.keys[i]));
  free(table_del(&dp->marks, vni));
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

// ---------------------------------------------------------------- SAs (write lock)

static const char EPOCH_TOO_OLD[] =
    "VEIL_ERR_SA_EPOCH_TOO_OLD: the epoch is more than two behind the newest installed in this network";
static const char KEY_REUSED[] =
    "VEIL_ERR_SA_KEY_REUSED: the key is in use under another SPI, ESN setting, epoch or network";

int dp_install_inbound(dataplane *dp, uint32_t spi, const uint8_t *key, size_t key_len, const uint8_t salt[4], int esn,
                       uint32_t vni, uint16_t peer_index, uint32_t epoch, char *err, size_t err_len) {
  sa_base *fresh = new_sa(dp, 0, spi, key, key_len, salt, esn, peer_index, vni, epoch, err, err_len);
  if (!fresh) return -1;
  sa_base *spare = fresh; /* freed at the end unless it went into service itself */
  int rc = -1;
  pthread_rwlock_wrlock(&dp->lock);
  pair_stats *ps = table_get(&dp->pairs, pair_key(peer_index, vni));
  uint32_t *mark = table_get(&dp->marks, vni);
  sa_base *known = key_find(&dp->keys[0], fresh->fingerprint);
  inbound_sa *in_service = table_get(&dp->inbound, spi);
  sa_base *existing = in_service ? &in_service->base : NULL;
  if (too_old(dp, vni, epoch)) {
    refuse(err, err_len, EPOCH_TOO_OLD);
  } else if (known && !same_name(known, spi, esn, epoch, vni)) {
    refuse(err, err_len, KEY_REUSED);
  } else if (existing && existing != known && (existing->peer != peer_index || existing->vni != vni || existing->epoch != epoch)) {
    refuse(err, err_len, "VEIL_ERR_SA_SPI_IN_USE: the SPI is in use by another peer, network or epoch");
  } else if (existing && existing == known && known->peer == peer_index) {
    if (mark) raise_mark(dp, mark, vni, epoch); /* the same SA again: it stays, replay window and all */
    rc = 0;
  } else {
    int live = 0;
    for (uint32_t i = 0; i < dp->inbound.cap; i++) {
      if (dp->inbound.state[i] != 1) continue;
      sa_base *o = dp->inbound.vals[i];
      if (o->peer == peer_index && o->vni == vni && o->epoch != epoch) live++;
    }
    /* Installed before: the same object serves, window and all (retired, or in service under this SPI for another peer index). */
    sa_base *sa = known ? known : fresh;
    if (live >= MAX_LIVE_EPOCHS) {
      refuse(err, err_len, "VEIL_ERR_SA_TOO_MANY_EPOCHS: the pair already has three live epochs");
    } else if ((!ps && !(ps = ensure_pair(dp, peer_index, vni))) || !(mark = ensure_mark(dp, vni)) ||
               (existing && existing != sa && reserve_retired(dp, 1) < 0) || (!known && key_reserve(&dp->keys[0]) < 0) ||
               (existing != sa && table_put(&dp->inbound, spi, sa) < 0)) {
      refuse(err, err_len, NOMEM); /* nothing changed: what can fail comes first */
    } else {
      if (!known) {
        key_add(&dp->keys[0], fresh);
        spare = NULL;
      } else if (known->retired_at >= 0) {
        reclaim(dp, known, fresh);
      }
      sa->peer = peer_index;
      sa->pair = ps;
      /* A new key under this name (the peer restarted): the old one is retired, not forgotten. */
      if (existing && existing != sa) retire(dp, 0, existing);
      raise_mark(dp, mark, vni, epoch);
      rc = 0;
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
  uint32_t *mark = table_get(&dp->marks, vni);
  sa_base *known = key_find(&dp->keys[1], fresh->fingerprint);
  outbound_sa *active = table_get(&dp->outbound, k);
  sa_base *old = active ? &active->base : NULL;
  /* Active before: the same object serves, counter and all (retired, or active for another peer index). */
  sa_base *sa = known ? known : fresh;
  if (too_old(dp, vni, epoch)) {
    refuse(err, err_len, EPOCH_TOO_OLD);
  } else if (known && !same_name(known, spi, esn, epoch, vni)) {
    refuse(err, err_len, KEY_REUSED);
  } else if (old && old == known) {
    if (mark) raise_mark(dp, mark, vni, epoch); /* already active: its counter goes on */
    rc = 0;
  } else if ((!ps && !(ps = ensure_pair(dp, peer_index, vni))) || !(mark = ensure_mark(dp, vni)) ||
             (old && reserve_retired(dp, 1) < 0) || (!known && key_reserve(&dp->keys[1]) < 0) ||
             table_put(&dp->outbound, k, sa) < 0) {
    refuse(err, err_len, NOMEM); /* nothing changed: what can fail comes first */
  } else {
    if (!known) {
      key_add(&dp->keys[1], fresh);
      spare = NULL;
    } else if (known->retired_at >= 0) {
      reclaim(dp, known, fresh);
    } else {
      table_del(&dp->outbound, pair_key(known->peer, vni)); /* it moves from its old pair */
    }
    sa->peer = peer_index;
    sa->pair = ps;
    if (old) retire(dp, 1, old);
    raise_mark(dp, mark, vni, epoch);
    rc = 0;
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

// ---------------------------------------------------------------- the TAP port's forwarding (write lock)

#define MAC_MAX 0xffffffffffffULL

static network *tap_network(dataplane *dp, uint32_t vni) {
  network *n = table_get(&dp->networks, vni);
  return n && n->encrypted ? n : NULL;
}

int dp_fdb_set(dataplane *dp, uint32_t vni, uint64_t mac, uint16_t peer_index, char *err, size_t err_len) {
  if (mac > MAC_MAX || (mac >> 40) & 1 || peer_index < 1 || peer_index > PEER_INDEX_MAX)
    return refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: a unicast MAC and a peer index in 1..16383");
  pthread_rwlock_wrlock(&dp->lock);
  network *n = tap_network(dp, vni);
  int rc = !n ? refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: no such encrypted network")
               : table_put(&n->fdb, mac, (void *)(uintptr_t)peer_index) < 0 ? refuse(err, err_len, NOMEM) : 0;
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_fdb_remove(dataplane *dp, uint32_t vni, uint64_t mac) {
  pthread_rwlock_wrlock(&dp->lock);
  network *n = tap_network(dp, vni);
  if (n) table_del(&n->fdb, mac);
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}

int dp_flood_add(dataplane *dp, uint32_t vni, uint16_t peer_index, char *err, size_t err_len) {
  if (peer_index < 1 || peer_index > PEER_INDEX_MAX) return refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: a peer index in 1..16383");
  pthread_rwlock_wrlock(&dp->lock);
  network *n = tap_network(dp, vni);
  int rc = n ? 0 : refuse(err, err_len, "VEIL_ERR_NATIVE_ARGS: no such encrypted network");
  for (uint32_t i = 0; n && i < n->n_flood; i++)
    if (n->flood[i] == peer_index) n = NULL; /* there already */
  if (n && n->n_flood == n->cap_flood) {
    uint32_t cap = n->cap_flood ? n->cap_flood * 2 : 8;
    uint16_t *grown = fault_now() ? NULL : realloc(n->flood, cap * sizeof *grown);
    if (!grown) {
      rc = refuse(err, err_len, NOMEM);
      n = NULL;
    } else {
      n->flood = grown;
      n->cap_flood = cap;
    }
  }
  if (n) n->flood[n->n_flood++] = peer_index;
  pthread_rwlock_unlock(&dp->lock);
  return rc;
}

int dp_flood_remove(dataplane *dp, uint32_t vni, uint16_t peer_index) {
  pthread_rwlock_wrlock(&dp->lock);
  network *n = tap_network(dp, vni);
  if (n) unflood(n, peer_index);
  pthread_rwlock_unlock(&dp->lock);
  return 0;
}
