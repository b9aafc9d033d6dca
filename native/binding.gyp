{
  "targets": [{
    "target_name": "veil_native",
    "sources": ["esp.c", "replay.c", "table.c", "bind.c", "packet.c", "satable.c", "dataplane.c", "binding.c"],
    "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    "cflags!": ["-O3"],
    "libraries": ["-lpthread"]
  }]
}
