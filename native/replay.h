/*
 * Anti-replay window, RFC 4303 §3.4.3, with the ESN high-half inference of
 * RFC 4303 Appendix A2.2: a faithful port of src/vxlan/sa/replay.ts (same
 * decisions on every input; test/vxlan/native/replay.test.ts compares them).
 * check() before decrypting; update() only after the ICV verified; update()
 * re-checks so a duplicate that passed check() twice is delivered once.
 */
#ifndef VEIL_REPLAY_H
#define VEIL_REPLAY_H

#include <stdint.h>

#define REPLAY_WINDOW_DEFAULT 4096
#define REPLAY_WINDOW_MIN 1024
#define REPLAY_WINDOW_MAX (1u << 24)
#define REPLAY_TOO_OLD (-1)
#define REPLAY_DUPLICATE (-2)

typedef struct replay_window {
  uint32_t *bits;
  uint32_t size, mask;
  int esn;
  uint32_t top_hi, top_lo; /* highest authenticated sequence number; 0 = none yet */
} replay_window;

int replay_init(replay_window *w, int esn, uint32_t size);
void replay_free(replay_window *w);
/* The inferred high half (>= 0), REPLAY_TOO_OLD or REPLAY_DUPLICATE. */
int64_t replay_check(const replay_window *w, uint32_t seq_lo);
/* 1 if recorded, 0 if already recorded or too old. */
int replay_update(replay_window *w, uint32_t seq_hi, uint32_t seq_lo);

#endif
