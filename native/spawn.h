#ifndef VEIL_SPAWN_H
#define VEIL_SPAWN_H
#include <node_api.h>

/* Adds spawnRun (native/spawn.c) to the addon's exports. */
napi_status spawn_define(napi_env env, napi_value exports);

#endif
