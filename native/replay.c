#include "replay.h"

#include <stdlib.h>

#include "fault.h"
#include <string.h>

#define TWO_POW_32 4294967296LL

int replay_init(replay_window *w, int esn, uint32_t size) {
  if (size < REPLAY_WINDOW_MIN || size > REPLAY_WINDOW_MAX || (size & (size - 1)) != 0) return -1;
  w->bits = dp_calloc(size / 32, sizeof(uint32_t));
  if (!w->bits) return -1;
  w->size = size;
  w->mask = size - 1;
  w->esn = esn;
  w->top_hi = 0;
  w->top_lo = 0;
  return 0;
}

void replay_free(replay_window *w) {
  free(w->bits);
  w->bits = NULL;
}

/* The slot of a sequence number is its value modulo the size; the size divides 2^32. */
static int is_set(const replay_window *w, uint32_t lo) {
  uint32_t slot = lo & w->mask;
  return (w->bits[slot >> 5] >> (slot & 31)) & 1;
}
static void set_bit(replay_window *w, uint32_t lo) {
  uint32_t slot = lo & w->mask;
  w->bits[slot >> 5] |= 1u << (slot & 31);
}
static void clear_bit(replay_window *w, uint32_t lo) {
  uint32_t slot = lo & w->mask;
  w->bits[slot >> 5] &= ~(1u << (slot & 31));
}

int64_t replay_check(const replay_window *w, uint32_t seq_lo) {
  int64_t th = w->top_hi, tl = w->top_lo, size = w->size;
  int64_t seq_hi = 0;
  if (w->esn) {
    if (tl >= size - 1) {
      /* Case A: the window lies within one 2^32 subspace. */
      seq_hi = seq_lo >= tl - size + 1 ? th : th + 1;
    } else {
      /* Case B: the window spans two subspaces. */
      seq_hi = seq_lo >= (uint32_t)(tl - size + 1) ? th - 1 : th;
    }
    if (seq_hi < 0 || seq_hi >= TWO_POW_32) return REPLAY_TOO_OLD;
  }
  if (seq_hi > th || (seq_hi == th && (int64_t)seq_lo > tl)) return seq_hi;
  /* At or below the top: seq_hi is th or th - 1, so the distance is exact. */
  int64_t distance = (th - seq_hi) * TWO_POW_32 + (tl - (int64_t)seq_lo);
  if (distance >= size || (seq_hi == 0 && seq_lo == 0)) return REPLAY_TOO_OLD;
  return is_set(w, seq_lo) ? REPLAY_DUPLICATE : seq_hi;
}

int replay_update(replay_window *w, uint32_t seq_hi, uint32_t seq_lo) {
  int64_t th = w->top_hi, tl = w->top_lo;
  if (seq_hi > th || (seq_hi == th && (int64_t)seq_lo > tl)) {
    int64_t shift = ((int64_t)seq_hi - th) * TWO_POW_32 + ((int64_t)seq_lo - tl);
    if (shift >= w->size) {
      memset(w->bits, 0, (w->size / 32) * sizeof(uint32_t));
    } else {
      /* Forget the slots the window slides over: they now stand for new numbers. */
      for (int64_t k = 1; k <= shift; k++) clear_bit(w, (uint32_t)(tl + k));
    }
    w->top_hi = seq_hi;
    w->top_lo = seq_lo;
    set_bit(w, seq_lo);
    return 1;
  }
  int64_t distance = (th - (int64_t)seq_hi) * TWO_POW_32 + (tl - (int64_t)seq_lo);
  if (distance >= w->size || is_set(w, seq_lo)) return 0;
  set_bit(w, seq_lo);
  return 1;
}
