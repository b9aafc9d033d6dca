/*
 * flockExclusive(fd) → boolean: takes flock(2) LOCK_EX on an open descriptor without waiting.
 * true: taken; false: another open file description holds it (EWOULDBLOCK); any other error
 * throws with its errno's name as the code. Node has no flock. The kernel drops the lock when the
 * last descriptor of its open file description closes, at exit and at SIGKILL alike, which is
 * what makes a free lock proof that its last holder is gone (docs/etcd.md "Leases").
 */
#include <errno.h>
#include <node_api.h>
#include <string.h>
#include <sys/file.h>

#include "lock.h"

static napi_value FlockExclusive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "flockExclusive(fd): fd must be a descriptor");
    return NULL;
  }
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EWOULDBLOCK) {
    int e = errno;
    const char *name = strerrorname_np(e);
    napi_throw_error(env, name ? name : "EIO", strerror(e));
    return NULL;
  }
  napi_value out;
  napi_get_boolean(env, r == 0, &out);
  return out;
}

napi_status lock_define(napi_env env, napi_value exports) {
  napi_property_descriptor d = {"flockExclusive", NULL, FlockExclusive, NULL, NULL, NULL, napi_enumerable, NULL};
  return napi_define_properties(env, exports, 1, &d);
}
