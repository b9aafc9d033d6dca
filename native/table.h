/* A small open-addressing hash map, u64 key → pointer. Not thread-safe: the
 * data plane reads it under its read lock and changes it under the write lock. */
#ifndef VEIL_TABLE_H
#define VEIL_TABLE_H

#include <stdint.h>

typedef struct table {
  uint64_t *keys;
  void **vals;
  uint8_t *state; /* 0 empty, 1 full, 2 deleted */
  uint32_t cap, used, live;
} table;

int table_init(table *t);
void table_free(table *t);
void *table_get(const table *t, uint64_t key);
int table_put(table *t, uint64_t key, void *val); /* replaces; 0 ok, -1 out of memory */
void *table_del(table *t, uint64_t key);          /* returns the removed value */
/* Iteration: for (uint32_t i = 0; i < t->cap; i++) if (t->state[i] == 1) ... */

#endif
