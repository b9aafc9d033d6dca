{
  "targets": [{
    "target_name": "veil_native",
    "sources": ["esp.c", "replay.c", "table.c", "bind.c", "packet.c", "satable.c", "dataplane.c", "tap.c", "spawn.c", "lock.c", "binding.c"],
    "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    "cflags!": ["-O3"],
    "libraries": ["-lpthread", "-lm"]
  }, {
    # The same code with native/fault.h's fault injection, for test/vxlan/native/faults.test.ts only
    # (the image ships veil_native.node alone).
    "target_name": "veil_native_faults",
    "sources": ["esp.c", "replay.c", "table.c", "bind.c", "packet.c", "satable.c", "dataplane.c", "tap.c", "spawn.c", "lock.c", "binding.c"],
    "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "VEIL_FAULTS"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    "cflags!": ["-O3"],
    "libraries": ["-lpthread", "-lm"]
  }]
}
