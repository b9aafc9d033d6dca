/*
 * Fault injection for the tests of failure paths (test/vxlan/native/faults.test.ts). Only the
 * veil_native_faults target (binding.gyp) defines VEIL_FAULTS: there, faultAfter(n) from JavaScript
 * makes the nth checked allocation or system call from then on fail, as if memory or descriptors had
 * run out. In veil_native, the addon that runs, fault_now() is the constant 0 and the wrappers are
 * the plain calls. Only the JavaScript thread reaches a checked call (control plane, create, start).
 */
#ifndef VEIL_FAULT_H
#define VEIL_FAULT_H

#include <errno.h>
#include <stdlib.h>

#ifdef VEIL_FAULTS
extern int fault_countdown; /* 0: off */
static inline int fault_now(void) { return fault_countdown > 0 && --fault_countdown == 0; }
#else
static inline int fault_now(void) { return 0; }
#endif

static inline void *dp_malloc(size_t n) { return fault_now() ? NULL : malloc(n); }
static inline void *dp_calloc(size_t n, size_t size) { return fault_now() ? NULL : calloc(n, size); }
static inline void *dp_realloc(void *p, size_t n) { return fault_now() ? NULL : realloc(p, n); }
/* A system call that fails with errno e when a fault is due. */
#define FAULT_OR(call, failed, e) (fault_now() ? (errno = (e), (failed)) : (call))

#endif
