#include "table.h"

#include "fault.h"

static uint64_t mix(uint64_t x) {
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27; x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static int alloc(table *t, uint32_t cap) {
  t->keys = dp_calloc(cap, sizeof *t->keys);
  t->vals = dp_calloc(cap, sizeof *t->vals);
  t->state = dp_calloc(cap, 1);
  if (!t->keys || !t->vals || !t->state) {
    table_free(t); /* NULLs them too: the caller's table_free must not free them again */
    return -1;
  }
  t->cap = cap;
  t->used = t->live = 0;
  return 0;
}

int table_init(table *t) { return alloc(t, 64); }

void table_free(table *t) {
  free(t->keys); free(t->vals); free(t->state);
  t->keys = NULL; t->vals = NULL; t->state = NULL;
  t->cap = t->used = t->live = 0;
}

static uint32_t find(const table *t, uint64_t key, int *found) {
  uint32_t i = (uint32_t)mix(key) & (t->cap - 1), first_free = UINT32_MAX;
  for (;;) {
    if (t->state[i] == 0) {
      *found = 0;
      return first_free != UINT32_MAX ? first_free : i;
    }
    if (t->state[i] == 2) {
      if (first_free == UINT32_MAX) first_free = i;
    } else if (t->keys[i] == key) {
      *found = 1;
      return i;
    }
    i = (i + 1) & (t->cap - 1);
  }
}

void *table_get(const table *t, uint64_t key) {
  int found;
  uint32_t i = find(t, key, &found);
  return found ? t->vals[i] : NULL;
}

static int grow(table *t) {
  table old = *t;
  uint32_t cap = 64;
  while (cap < t->live * 4) cap *= 2; /* a power of two: indexes are masked */
  if (alloc(t, cap) < 0) {
    *t = old;
    return -1;
  }
  for (uint32_t i = 0; i < old.cap; i++) {
    if (old.state[i] != 1) continue;
    int found;
    uint32_t j = find(t, old.keys[i], &found);
    t->keys[j] = old.keys[i]; t->vals[j] = old.vals[i]; t->state[j] = 1;
    t->used++; t->live++;
  }
  table_free(&old);
  return 0;
}

int table_put(table *t, uint64_t key, void *val) {
  if ((t->used + 1) * 2 > t->cap && grow(t) < 0) return -1;
  int found;
  uint32_t i = find(t, key, &found);
  if (!found) {
    if (t->state[i] == 0) t->used++;
    t->live++;
    t->state[i] = 1;
    t->keys[i] = key;
  }
  t->vals[i] = val;
  return 0;
}

void *table_del(table *t, uint64_t key) {
  int found;
  uint32_t i = find(t, key, &found);
  if (!found) return NULL;
  void *v = t->vals[i];
  t->state[i] = 2;
  t->vals[i] = NULL;
  t->live--;
  return v;
}
