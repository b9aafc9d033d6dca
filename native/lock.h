#ifndef VEIL_LOCK_H
#define VEIL_LOCK_H
#include <node_api.h>

/* Adds flockExclusive (native/lock.c) to the addon's exports. */
napi_status lock_define(napi_env env, napi_value exports);

#endif
