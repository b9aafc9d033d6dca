/*
 * N-API face of the native data path. Four groups:
 *   - per-packet ESP (createSa, sealRawDanger, openRawDanger) and plain GCM (gcmSeal, gcmOpen),
 *     for vectors and differential tests; src/vxlan/native/addon.ts wraps them behind EspCipher-like objects;
 *   - the replay window (replayCreate, replayCheck, replayUpdate), to test it against src/vxlan/sa/replay.ts;
 *   - the data plane (dp*) of dataplane.h; dataplane-internal.h lists the files that make it;
 *   - host commands without fork (spawnRun, spawn.c), for src/host/exec.ts, and flock (lock.c), for
 *     src/host/data-dir.ts.
 * Argument checking is done here; the typed wrappers in src/vxlan/native/addon.ts are the only intended callers.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane.h"
#include "esp.h"
#include "replay.h"
#include "spawn.h"
#include "lock.h"
#include "tap.h"

#define THROW(env, code, msg) do { napi_throw_error(env, code, msg); return NULL; } while (0)
#define CHECK(env, call) do { if ((call) != napi_ok) THROW(env, "VEIL_ERR_NATIVE_ARGS", #call " failed"); } while (0)

/* The data plane names a refusal "VEIL_ERR_<CODE>: why" (codes of src/errors.ts): that code is thrown, else `fallback`. */
static napi_value throw_dp_error(napi_env env, const char *err, const char *fallback) {
  char code[64];
  snprintf(code, sizeof code, "%s", fallback);
  const char *colon = strchr(err, ':');
  if (strncmp(err, "VEIL_ERR_", 9) == 0 && colon && (size_t)(colon - err) < sizeof code) {
    memcpy(code, err, (size_t)(colon - err));
    code[colon - err] = '\0';
  }
  napi_throw_error(env, code, err);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) {
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "too few arguments");
    return -1;
  }
  return 0;
}

/* A Uint8Array (Buffer included) → pointer and length. */
static int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    void *p;
    napi_value ab;
    size_t off;
    if (napi_get_typedarray_info(env, v, &type, len, &p, &ab, &off) != napi_ok || type != napi_uint8_array) goto bad;
    *data = p;
    return 0;
  }
bad:
  napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "expected a Uint8Array");
  return -1;
}

/*
 * Every number from JS comes through here: an integer in min..max (both exactly representable), else a
 * RangeError. NaN fails the range test (every comparison with it is false), so nothing out of range or
 * fractional is ever converted: that conversion is undefined behaviour in C.
 */
static int arg_integer(napi_env env, napi_value v, double min, double max, const char *msg, double *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= min && d <= max) || d != floor(d)) {
    napi_throw_range_error(env, "VEIL_ERR_NATIVE_ARGS", msg);
    return -1;
  }
  *out = d;
  return 0;
}

static int arg_u32(napi_env env, napi_value v, uint32_t *out) {
  double d;
  if (arg_integer(env, v, 0, 4294967295.0, "expected an integer in 0..2^32-1", &d)) return -1;
  *out = (uint32_t)d;
  return 0;
}

static int get_bool(napi_env env, napi_value v, int *out) {
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) {
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "expected a boolean");
    return -1;
  }
  *out = b;
  return 0;
}

static napi_value make_buffer(napi_env env, const uint8_t *data, size_t len) {
  napi_value out;
  void *copy;
  if (napi_create_buffer_copy(env, len, data, &copy, &out) != napi_ok) return NULL;
  return out;
}

static napi_value null_value(napi_env env) {
  napi_value v;
  napi_get_null(env, &v);
  return v;
}

/* Externals carry a tag so one kind is never taken for another. */
static const napi_type_tag CIPHER_TAG = { 0x7665696c65737063ULL, 0x0000000000000001ULL };
static const napi_type_tag REPLAY_TAG = { 0x7665696c65737063ULL, 0x0000000000000002ULL };
static const napi_type_tag DP_TAG = { 0x7665696c65737063ULL, 0x0000000000000003ULL };

static void *get_external(napi_env env, napi_value v, const napi_type_tag *tag) {
  bool ok = false;
  void *p = NULL;
  if (napi_check_object_type_tag(env, v, tag, &ok) != napi_ok || !ok || napi_get_value_external(env, v, &p) != napi_ok) {
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "wrong handle");
    return NULL;
  }
  return p;
}

static napi_value wrap(napi_env env, void *p, napi_finalize fin, const napi_type_tag *tag) {
  napi_value ext;
  if (napi_create_external(env, p, fin, NULL, &ext) != napi_ok) {
    fin(env, p, NULL);
    return NULL;
  }
  napi_type_tag_object(env, ext, tag);
  return ext;
}

// ---------------------------------------------------------------- per-packet ESP

static void cipher_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  esp_cipher_free(data);
  free(data);
}

/* createSa(key 16|24|32, salt 4, spi, esn, encrypt) → handle (one EVP_CIPHER_CTX, keyed once) */
static napi_value CreateSa(napi_env env, napi_callback_info info) {
  napi_value a[5];
  uint8_t *key, *salt;
  size_t key_len, salt_len;
  uint32_t spi;
  int esn, encrypt;
  if (get_args(env, info, 5, a) || get_bytes(env, a[0], &key, &key_len) || get_bytes(env, a[1], &salt, &salt_len) ||
      arg_u32(env, a[2], &spi) || get_bool(env, a[3], &esn) || get_bool(env, a[4], &encrypt)) return NULL;
  if (salt_len != ESP_SALT_LENGTH) THROW(env, "VEIL_ERR_NATIVE_ARGS", "salt must be 4 bytes");
  esp_cipher *c = malloc(sizeof *c);
  if (!c) THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  if (esp_cipher_init(c, key, key_len, salt, spi, esn, encrypt) < 0) {
    free(c);
    THROW(env, "VEIL_ERR_NATIVE_ARGS", "key must be 16, 24 or 32 bytes");
  }
  return wrap(env, c, cipher_finalize, &CIPHER_TAG);
}

/* sealRawDanger(sa, seqHi, seqLo, iv 8, paddedPlaintext) → SPI..ICV */
static napi_value SealRaw(napi_env env, napi_callback_info info) {
  napi_value a[5];
  uint32_t hi, lo;
  uint8_t *iv, *pt;
  size_t iv_len, pt_len;
  if (get_args(env, info, 5, a)) return NULL;
  esp_cipher *c = get_external(env, a[0], &CIPHER_TAG);
  if (!c || arg_u32(env, a[1], &hi) || arg_u32(env, a[2], &lo) || get_bytes(env, a[3], &iv, &iv_len) ||
      get_bytes(env, a[4], &pt, &pt_len)) return NULL;
  if (iv_len != ESP_IV_LENGTH) THROW(env, "VEIL_ERR_NATIVE_ARGS", "IV must be 8 bytes");
  if (!c->encrypt) THROW(env, "VEIL_ERR_NATIVE_ARGS", "not a sealing SA");
  uint8_t *out = malloc(pt_len + ESP_PAYLOAD_OFFSET + ESP_ICV_LENGTH);
  if (!out) THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  struct iovec v = { pt, pt_len };
  int n = esp_seal_danger(c, hi, lo, iv, &v, 1, out);
  napi_value r = n < 0 ? NULL : make_buffer(env, out, (size_t)n);
  free(out);
  if (n < 0) THROW(env, "VEIL_ERR_NATIVE_CRYPTO", "seal failed");
  return r;
}

/* openRawDanger(sa, datagram, seqHi) → padded plaintext, or null if the ICV does not verify */
static napi_value OpenRaw(napi_env env, napi_callback_info info) {
  napi_value a[3];
  uint8_t *d;
  size_t len;
  uint32_t hi;
  if (get_args(env, info, 3, a)) return NULL;
  esp_cipher *c = get_external(env, a[0], &CIPHER_TAG);
  if (!c || get_bytes(env, a[1], &d, &len) || arg_u32(env, a[2], &hi)) return NULL;
  if (c->encrypt) THROW(env, "VEIL_ERR_NATIVE_ARGS", "not an opening SA");
  if (len < ESP_MIN_LENGTH) return null_value(env);
  uint8_t *out = malloc(len);
  if (!out) THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  int n = esp_open_danger(c, d, len, hi, out);
  napi_value r = n < 0 ? null_value(env) : make_buffer(env, out, (size_t)n);
  free(out);
  return r;
}

/* gcmSeal(sa, nonce 12, aad, plaintext) → ct || tag; gcmOpen(sa, nonce, aad, ct || tag) → pt | null */
static napi_value Gcm(napi_env env, napi_callback_info info, int seal) {
  napi_value a[4];
  uint8_t *nonce, *aad, *in;
  size_t nonce_len, aad_len, in_len;
  if (get_args(env, info, 4, a)) return NULL;
  esp_cipher *c = get_external(env, a[0], &CIPHER_TAG);
  if (!c || get_bytes(env, a[1], &nonce, &nonce_len) || get_bytes(env, a[2], &aad, &aad_len) ||
      get_bytes(env, a[3], &in, &in_len)) return NULL;
  if (nonce_len != ESP_NONCE_LENGTH) THROW(env, "VEIL_ERR_NATIVE_ARGS", "nonce must be 12 bytes");
  if (seal != c->encrypt) THROW(env, "VEIL_ERR_NATIVE_ARGS", "wrong direction for this SA");
  if (!seal && in_len < ESP_ICV_LENGTH) return null_value(env);
  uint8_t *out = malloc(in_len + ESP_ICV_LENGTH + 1);
  if (!out) THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  int n = seal ? gcm_seal(c, nonce, aad, aad_len, in, in_len, out) : gcm_open(c, nonce, aad, aad_len, in, in_len, out);
  napi_value r = n < 0 ? null_value(env) : make_buffer(env, out, (size_t)n);
  free(out);
  return r;
}
static napi_value GcmSeal(napi_env env, napi_callback_info info) { return Gcm(env, info, 1); }
static napi_value GcmOpen(napi_env env, napi_callback_info info) { return Gcm(env, info, 0); }

// ---------------------------------------------------------------- replay window

static void replay_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  replay_free(data);
  free(data);
}

static napi_value ReplayCreate(napi_env env, napi_callback_info info) {
  napi_value a[2];
  int esn;
  uint32_t size;
  if (get_args(env, info, 2, a) || get_bool(env, a[0], &esn) || arg_u32(env, a[1], &size)) return NULL;
  replay_window *w = malloc(sizeof *w);
  if (!w) THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  if (replay_init(w, esn, size) < 0) {
    free(w);
    THROW(env, "VEIL_ERR_NATIVE_ARGS", "replay window must be a power of two from 1024 to 2^24");
  }
  return wrap(env, w, replay_finalize, &REPLAY_TAG);
}

static napi_value ReplayCheck(napi_env env, napi_callback_info info) {
  napi_value a[2], r;
  uint32_t lo;
  if (get_args(env, info, 2, a)) return NULL;
  replay_window *w = get_external(env, a[0], &REPLAY_TAG);
  if (!w || arg_u32(env, a[1], &lo)) return NULL;
  napi_create_double(env, (double)replay_check(w, lo), &r);
  return r;
}

static napi_value ReplayUpdate(napi_env env, napi_callback_info info) {
  napi_value a[3], r;
  uint32_t hi, lo;
  if (get_args(env, info, 3, a)) return NULL;
  replay_window *w = get_external(env, a[0], &REPLAY_TAG);
  if (!w || arg_u32(env, a[1], &hi) || arg_u32(env, a[2], &lo)) return NULL;
  napi_get_boolean(env, replay_update(w, hi, lo) != 0, &r);
  return r;
}

// ---------------------------------------------------------------- data plane

typedef struct dp_handle {
  dataplane *dp;
} dp_handle;

static void dp_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  dp_handle *h = data;
  dp_destroy(h->dp); /* a forgotten close() still stops the threads */
  free(h);
}

static dataplane *get_dp(napi_env env, napi_value v) {
  dp_handle *h = get_external(env, v, &DP_TAG);
  if (!h) return NULL;
  if (!h->dp) {
    napi_throw_error(env, "VEIL_ERR_NATIVE_CLOSED", "the data plane is closed");
    return NULL;
  }
  return h->dp;
}

static int prop(napi_env env, napi_value o, const char *name, napi_value *v) {
  bool has = false;
  if (napi_has_named_property(env, o, name, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, o, name, v) != napi_ok) return 0;
  napi_valuetype t;
  napi_typeof(env, *v, &t);
  return t != napi_undefined;
}

static int prop_u32(napi_env env, napi_value o, const char *name, uint32_t def, uint32_t *out) {
  napi_value v;
  if (!prop(env, o, name, &v)) {
    *out = def;
    return 0;
  }
  return arg_u32(env, v, out);
}

static int prop_bool(napi_env env, napi_value o, const char *name, int def, int *out) {
  napi_value v;
  if (!prop(env, o, name, &v)) {
    *out = def;
    return 0;
  }
  return get_bool(env, v, out);
}

static int prop_addr(napi_env env, napi_value o, const char *name, struct in_addr *out) {
  napi_value v;
  char s[64];
  size_t l;
  if (!prop(env, o, name, &v) || napi_get_value_string_utf8(env, v, s, sizeof s, &l) != napi_ok ||
      inet_pton(AF_INET, s, out) != 1) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be an IPv4 address", name);
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", msg);
    return -1;
  }
  return 0;
}

/* An optional string that must fit in `size` with its terminator; "" when absent. */
static int prop_string(napi_env env, napi_value o, const char *name, char *out, size_t size) {
  napi_value v;
  size_t l;
  out[0] = 0;
  if (!prop(env, o, name, &v)) return 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &l) != napi_ok || l >= size ||
      napi_get_value_string_utf8(env, v, out, size, &l) != napi_ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a string shorter than %zu bytes", name, size);
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", msg);
    return -1;
  }
  return 0;
}

static int prop_bytes(napi_env env, napi_value o, const char *name, uint8_t **data, size_t *len) {
  napi_value v;
  if (!prop(env, o, name, &v)) {
    char msg[64];
    snprintf(msg, sizeof msg, "%s is required", name);
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", msg);
    return -1;
  }
  return get_bytes(env, v, data, len);
}

static int port_ok(napi_env env, uint32_t p) {
  if (p > 65535) {
    napi_throw_range_error(env, "VEIL_ERR_NATIVE_ARGS", "port out of range");
    return 0;
  }
  return 1;
}

/* dpCreate({underlayAddress, hostAddress, vtepAddress, peerNet, gatewayDevice, espPort, plainPort, vtepPort,
 *           peerEspPort, peerPlainPort, deliveryPort, gatewayPort, bufferBytes, gso, gro, relayPlain, underlayMtu, replayWindow,
 *           sendWaitMs}) → handle (sockets bound) */
static napi_value DpCreate(napi_env env, napi_callback_info info) {
  napi_value a[1];
  dp_config cfg = { 0 };
  uint32_t esp, plain, vtep, peer_esp, peer_plain, delivery, gateway, buffer, mtu, window, send_wait;
  if (get_args(env, info, 1, a) || prop_addr(env, a[0], "underlayAddress", &cfg.underlay) ||
      prop_addr(env, a[0], "hostAddress", &cfg.host) || prop_addr(env, a[0], "vtepAddress", &cfg.vtep) ||
      prop_addr(env, a[0], "peerNet", &cfg.peer_net) ||
      prop_string(env, a[0], "gatewayDevice", cfg.gateway_device, sizeof cfg.gateway_device) ||
      prop_u32(env, a[0], "gatewayPort", VTEP_GATEWAY_PORT, &gateway) ||
      prop_u32(env, a[0], "espPort", ESP_IN_UDP_PORT, &esp) || prop_u32(env, a[0], "plainPort", VXLAN_PORT, &plain) ||
      prop_u32(env, a[0], "vtepPort", VXLAN_PORT, &vtep) || prop_u32(env, a[0], "peerEspPort", ESP_IN_UDP_PORT, &peer_esp) ||
      prop_u32(env, a[0], "peerPlainPort", VXLAN_PORT, &peer_plain) ||
      prop_u32(env, a[0], "deliveryPort", VTEP_DELIVERY_PORT, &delivery) ||
      prop_u32(env, a[0], "bufferBytes", 4u << 20, &buffer) || prop_u32(env, a[0], "underlayMtu", 1500, &mtu) ||
      prop_u32(env, a[0], "replayWindow", REPLAY_WINDOW_DEFAULT, &window) ||
      prop_u32(env, a[0], "sendWaitMs", SEND_WAIT_MS_DEFAULT, &send_wait) ||
      prop_bool(env, a[0], "gso", 1, &cfg.gso) || prop_bool(env, a[0], "gro", 1, &cfg.gro) ||
      prop_bool(env, a[0], "relayPlain", 1, &cfg.relay_plain)) return NULL;
  if (!port_ok(env, esp) || !port_ok(env, plain) || !port_ok(env, vtep) || !port_ok(env, peer_esp) || !port_ok(env, peer_plain) || !port_ok(env, delivery) || !port_ok(env, gateway)) return NULL;
  /* peer net + 1 .. + PEER_INDEX_MAX: an aligned /18 (src/model/peer-net.ts) */
  if ((ntohl(cfg.peer_net.s_addr) & PEER_INDEX_MAX) != 0) THROW(env, "VEIL_ERR_NATIVE_ARGS", "peerNet must be a /18 network address");
  if (mtu < 576 || mtu > 65535 || buffer > (1u << 30)) THROW(env, "VEIL_ERR_NATIVE_ARGS", "underlayMtu or bufferBytes out of range");
  if (window < REPLAY_WINDOW_MIN || window > REPLAY_WINDOW_MAX || (window & (window - 1)) != 0)
    THROW(env, "VEIL_ERR_NATIVE_ARGS", "replayWindow must be a power of two from 1024 to 2^24");
  if (send_wait > 600000) THROW(env, "VEIL_ERR_NATIVE_ARGS", "sendWaitMs must be at most 600000");
  cfg.esp_port = (uint16_t)esp;
  cfg.plain_port = (uint16_t)plain;
  cfg.vtep_port = (uint16_t)vtep;
  cfg.peer_esp_port = (uint16_t)peer_esp;
  cfg.peer_plain_port = (uint16_t)peer_plain;
  cfg.delivery_port = (uint16_t)delivery;
  cfg.gateway_port = (uint16_t)gateway;
  cfg.buffer_bytes = (int)buffer;
  cfg.gso_max_segment = mtu - IPV4_HEADER_LENGTH - UDP_HEADER_LENGTH;
  cfg.replay_window = window;
  cfg.send_wait_ms = send_wait;
  char err[256] = "cannot create the data plane";
  dataplane *dp = dp_create(&cfg, err, sizeof err);
  if (!dp) return throw_dp_error(env, err, "VEIL_ERR_NATIVE_IO");
  dp_handle *h = malloc(sizeof *h);
  if (!h) {
    dp_destroy(dp);
    THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  }
  h->dp = dp;
  return wrap(env, h, dp_finalize, &DP_TAG);
}

static napi_value undefined_value(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

static napi_value DpStart(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (get_args(env, info, 1, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  char err[256] = "";
  if (!dp) return NULL;
  if (dp_start(dp, err, sizeof err) < 0) THROW(env, "VEIL_ERR_NATIVE_IO", err);
  return undefined_value(env);
}

/* dpClose(handle): joins the threads and frees everything; idempotent. */
static napi_value DpClose(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (get_args(env, info, 1, a)) return NULL;
  dp_handle *h = get_external(env, a[0], &DP_TAG);
  if (!h) return NULL;
  dp_destroy(h->dp);
  h->dp = NULL;
  return undefined_value(env);
}

static napi_value DpAddPeer(napi_env env, napi_callback_info info) {
  napi_value a[3];
  uint32_t index;
  struct in_addr addr;
  char s[64];
  size_t l;
  if (get_args(env, info, 3, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_u32(env, a[1], &index)) return NULL;
  if (napi_get_value_string_utf8(env, a[2], s, sizeof s, &l) != napi_ok || inet_pton(AF_INET, s, &addr) != 1)
    THROW(env, "VEIL_ERR_NATIVE_ARGS", "peer address must be IPv4");
  if (index < 1 || index > PEER_INDEX_MAX) THROW(env, "VEIL_ERR_NATIVE_ARGS", "peer index must be in 1..16383");
  char err[256] = "";
  if (dp_add_peer(dp, (uint16_t)index, addr, err, sizeof err) < 0) return throw_dp_error(env, err, "VEIL_ERR_NATIVE_IO");
  return undefined_value(env);
}

static napi_value DpRemovePeer(napi_env env, napi_callback_info info) {
  napi_value a[2];
  uint32_t index;
  if (get_args(env, info, 2, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_u32(env, a[1], &index)) return NULL;
  char err[256] = "";
  if (index <= PEER_INDEX_MAX && dp_remove_peer(dp, (uint16_t)index, err, sizeof err) < 0)
    return throw_dp_error(env, err, "VEIL_ERR_NATIVE_NOMEM");
  return undefined_value(env);
}

static napi_value DpSetNetwork(napi_env env, napi_callback_info info) {
  napi_value a[3];
  uint32_t vni;
  int encrypted;
  if (get_args(env, info, 3, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_u32(env, a[1], &vni) || get_bool(env, a[2], &encrypted)) return NULL;
  if (vni > VXLAN_VNI_MAX) THROW(env, "VEIL_ERR_NATIVE_ARGS", "VNI out of range");
  char err[256] = "";
  if (dp_set_network(dp, vni, encrypted, err, sizeof err) < 0) return throw_dp_error(env, err, "VEIL_ERR_NATIVE_NOMEM");
  return undefined_value(env);
}

static int arg_vni(napi_env env, napi_value v, uint32_t *vni) {
  if (arg_u32(env, v, vni)) return -1;
  if (*vni > VXLAN_VNI_MAX) {
    napi_throw_range_error(env, "VEIL_ERR_NATIVE_ARGS", "VNI out of range");
    return -1;
  }
  return 0;
}

/* (handle, vni) → fn(dp, vni), which cannot fail: dpRemoveNetwork, dpDetachTap. */
static napi_value with_vni(napi_env env, napi_callback_info info, int (*fn)(dataplane *, uint32_t)) {
  napi_value a[2];
  uint32_t vni;
  if (get_args(env, info, 2, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_vni(env, a[1], &vni)) return NULL;
  fn(dp, vni);
  return undefined_value(env);
}

static napi_value DpRemoveNetwork(napi_env env, napi_callback_info info) { return with_vni(env, info, dp_remove_network); }


static int arg_peer(napi_env env, napi_value v, uint16_t *peer) {
  uint32_t p;
  if (arg_u32(env, v, &p)) return -1;
  if (p < 1 || p > PEER_INDEX_MAX) {
    napi_throw_range_error(env, "VEIL_ERR_NATIVE_ARGS", "peer index must be in 1..16383");
    return -1;
  }
  *peer = (uint16_t)p;
  return 0;
}

/* "aa:bb:cc:dd:ee:ff" → 48 bits */
static int arg_mac(napi_env env, napi_value v, uint64_t *mac) {
  char s[32];
  size_t l;
  unsigned b[6];
  char tail;
  int hex = 1;
  if (napi_get_value_string_utf8(env, v, s, sizeof s, &l) == napi_ok && l == 17)
    for (int i = 0; i < 17; i++) hex &= i % 3 == 2 ? s[i] == ':' : isxdigit((unsigned char)s[i]) != 0;
  if (l != 17 || !hex || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6) {
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "a MAC address is six hex octets joined by colons");
    return -1;
  }
  *mac = 0;
  for (int i = 0; i < 6; i++) *mac = (*mac << 8) | b[i];
  return 0;
}

/* dpAttachTap(handle, vni, netnsPath, name) → whether the kernel took the offloads */
static napi_value DpAttachTap(napi_env env, napi_callback_info info) {
  napi_value a[4], r;
  uint32_t vni;
  char netns[256], name[16];
  size_t l;
  if (get_args(env, info, 4, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_vni(env, a[1], &vni)) return NULL;
  size_t name_len = 0;
  int ok = napi_get_value_string_utf8(env, a[2], netns, sizeof netns, &l) == napi_ok && l < sizeof netns - 1 &&
           netns[0] == '/' && napi_get_value_string_utf8(env, a[3], name, sizeof name, &name_len) == napi_ok &&
           name_len > 0 && name_len < sizeof name - 1;
  for (size_t i = 0; ok && i < name_len; i++) ok = isalnum((unsigned char)name[i]) || strchr("_.-", name[i]); /* no %d */
  if (!ok) THROW(env, "VEIL_ERR_NATIVE_ARGS", "an absolute namespace path and a device name of 1 to 14 of [A-Za-z0-9_.-]");
  char err[256] = "";
  int offloads = 0;
  if (dp_attach_tap(dp, vni, netns, name, &offloads, err, sizeof err) < 0) return throw_dp_error(env, err, "VEIL_ERR_NATIVE_IO");
  napi_get_boolean(env, offloads != 0, &r);
  return r;
}

static napi_value DpDetachTap(napi_env env, napi_callback_info info) { return with_vni(env, info, dp_detach_tap); }

/* dpFdbSet(handle, vni, mac, peer), dpFdbRemove(handle, vni, mac) */
static napi_value DpFdb(napi_env env, napi_callback_info info, int set) {
  napi_value a[4];
  uint32_t vni;
  uint64_t mac;
  uint16_t peer = 0;
  if (get_args(env, info, set ? 4 : 3, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_vni(env, a[1], &vni) || arg_mac(env, a[2], &mac) || (set && arg_peer(env, a[3], &peer))) return NULL;
  char err[256] = "";
  if (set ? dp_fdb_set(dp, vni, mac, peer, err, sizeof err) < 0 : dp_fdb_remove(dp, vni, mac) < 0)
    return throw_dp_error(env, err, "VEIL_ERR_NATIVE_ARGS");
  return undefined_value(env);
}
static napi_value DpFdbSet(napi_env env, napi_callback_info info) { return DpFdb(env, info, 1); }
static napi_value DpFdbRemove(napi_env env, napi_callback_info info) { return DpFdb(env, info, 0); }

/* dpFloodAdd(handle, vni, peer), dpFloodRemove(handle, vni, peer) */
static napi_value DpFlood(napi_env env, napi_callback_info info, int add) {
  napi_value a[3];
  uint32_t vni;
  uint16_t peer;
  if (get_args(env, info, 3, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_vni(env, a[1], &vni) || arg_peer(env, a[2], &peer)) return NULL;
  char err[256] = "";
  if (add ? dp_flood_add(dp, vni, peer, err, sizeof err) < 0 : dp_flood_remove(dp, vni, peer) < 0)
    return throw_dp_error(env, err, "VEIL_ERR_NATIVE_ARGS");
  return undefined_value(env);
}
static napi_value DpFloodAdd(napi_env env, napi_callback_info info) { return DpFlood(env, info, 1); }
static napi_value DpFloodRemove(napi_env env, napi_callback_info info) { return DpFlood(env, info, 0); }

/* Common SA fields: {spi, key, salt, esn, vni, peer, epoch} */
typedef struct sa_args {
  uint32_t spi, vni, peer, epoch;
  uint8_t *key, *salt;
  size_t key_len, salt_len;
  int esn;
} sa_args;

static int get_sa_args(napi_env env, napi_value o, sa_args *s) {
  if (prop_u32(env, o, "spi", 0, &s->spi) || prop_bytes(env, o, "key", &s->key, &s->key_len) ||
      prop_bytes(env, o, "salt", &s->salt, &s->salt_len) || prop_bool(env, o, "esn", 1, &s->esn) ||
      prop_u32(env, o, "vni", 0, &s->vni) || prop_u32(env, o, "peer", 0, &s->peer) ||
      prop_u32(env, o, "epoch", 0, &s->epoch)) return -1;
  if (s->salt_len != ESP_SALT_LENGTH || s->peer < 1 || s->peer > PEER_INDEX_MAX || s->vni > VXLAN_VNI_MAX || s->spi < ESP_SPI_MIN) {
    napi_throw_range_error(env, "VEIL_ERR_NATIVE_ARGS", "salt must be 4 bytes, peer in 1..16383, VNI in 0..2^24-1, SPI >= 256");
    return -1;
  }
  return 0;
}

static napi_value DpInstallInbound(napi_env env, napi_callback_info info) {
  napi_value a[2];
  sa_args s;
  if (get_args(env, info, 2, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || get_sa_args(env, a[1], &s)) return NULL;
  char err[256] = "";
  if (dp_install_inbound(dp, s.spi, s.key, s.key_len, s.salt, s.esn, s.vni, (uint16_t)s.peer, s.epoch, err, sizeof err) < 0)
    return throw_dp_error(env, err, "VEIL_ERR_NATIVE_ARGS");
  return undefined_value(env);
}

static napi_value DpRemoveInbound(napi_env env, napi_callback_info info) {
  napi_value a[2];
  uint32_t spi;
  if (get_args(env, info, 2, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_u32(env, a[1], &spi)) return NULL;
  char err[256] = "";
  if (dp_remove_inbound(dp, spi, err, sizeof err) < 0) return throw_dp_error(env, err, "VEIL_ERR_NATIVE_NOMEM");
  return undefined_value(env);
}

/* dpSetOutbound(handle, {spi, key, salt, esn, vni, peer, epoch, budget}) */
static napi_value DpSetOutbound(napi_env env, napi_callback_info info) {
  napi_value a[2], v;
  sa_args s;
  double budget = 0;
  if (get_args(env, info, 2, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || get_sa_args(env, a[1], &s)) return NULL;
  if (prop(env, a[1], "budget", &v) &&
      arg_integer(env, v, 1, 9007199254740991.0, "budget must be a positive safe integer", &budget)) return NULL;
  char err[256] = "";
  if (dp_set_outbound(dp, (uint16_t)s.peer, s.vni, s.spi, s.key, s.key_len, s.salt, s.esn, s.epoch, (uint64_t)budget, err, sizeof err) < 0)
    return throw_dp_error(env, err, "VEIL_ERR_NATIVE_ARGS");
  return undefined_value(env);
}

static napi_value DpRemoveOutbound(napi_env env, napi_callback_info info) {
  napi_value a[3];
  uint32_t peer, vni;
  if (get_args(env, info, 3, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp || arg_u32(env, a[1], &peer) || arg_u32(env, a[2], &vni)) return NULL;
  char err[256] = "";
  if (peer <= PEER_INDEX_MAX && dp_remove_outbound(dp, (uint16_t)peer, vni, err, sizeof err) < 0)
    return throw_dp_error(env, err, "VEIL_ERR_NATIVE_NOMEM");
  return undefined_value(env);
}

// stats

typedef struct stats_ctx {
  napi_env env;
  napi_value pairs, inbound, root;
  uint32_t npairs, ninbound;
} stats_ctx;

static void set_num(napi_env env, napi_value o, const char *k, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, o, k, n);
}

/* {reason: count} with the non-zero counters of a + b */
static napi_value drops_object(napi_env env, const uint64_t *a, const uint64_t *b) {
  napi_value o;
  napi_create_object(env, &o);
  for (int r = 0; r < DROP_COUNT; r++) {
    uint64_t n = counter_load(&a[r]) + (b ? counter_load(&b[r]) : 0);
    if (n) set_num(env, o, DROP_NAMES[r], (double)n);
  }
  return o;
}

static void visit_pair(void *ctx, const pair_stats *p, const outbound_sa *out) {
  stats_ctx *s = ctx;
  napi_env env = s->env;
  napi_value o;
  napi_create_object(env, &o);
  set_num(env, o, "peer", p->peer);
  set_num(env, o, "vni", p->vni);
  set_num(env, o, "txPackets", (double)counter_load(&p->tx.packets));
  set_num(env, o, "txBytes", (double)counter_load(&p->tx.bytes));
  set_num(env, o, "rxPackets", (double)counter_load(&p->rx.packets));
  set_num(env, o, "rxBytes", (double)counter_load(&p->rx.bytes));
  napi_set_named_property(env, o, "drops", drops_object(env, p->tx.drops, p->rx.drops));
  if (out) {
    napi_value sa;
    napi_create_object(env, &sa);
    set_num(env, sa, "spi", out->base.spi);
    set_num(env, sa, "epoch", out->base.epoch);
    set_num(env, sa, "sealed", (double)counter_load(&out->sealed));
    uint64_t next = __atomic_load_n(&out->next, __ATOMIC_RELAXED);
    set_num(env, sa, "sequenceHeadroom", next > out->limit ? 0 : (double)(out->limit - next + 1));
    napi_set_named_property(env, o, "outbound", sa);
  }
  napi_set_element(env, s->pairs, s->npairs++, o);
}

static void visit_inbound(void *ctx, uint32_t spi, const inbound_sa *sa) {
  stats_ctx *s = ctx;
  napi_env env = s->env;
  napi_value o;
  napi_create_object(env, &o);
  set_num(env, o, "spi", spi);
  set_num(env, o, "peer", sa->base.peer);
  set_num(env, o, "vni", sa->base.vni);
  set_num(env, o, "epoch", sa->base.epoch);
  set_num(env, o, "opened", (double)counter_load(&sa->opened));
  napi_set_element(env, s->inbound, s->ninbound++, o);
}

static void visit_unattributed(void *ctx, const uint64_t tx[DROP_COUNT], const uint64_t rx[DROP_COUNT]) {
  stats_ctx *s = ctx;
  napi_set_named_property(s->env, s->root, "unattributed", drops_object(s->env, tx, rx));
}

static void visit_io(void *ctx, const char *dir, const io_counters *io) {
  stats_ctx *s = ctx;
  napi_env env = s->env;
  napi_value o, all;
  napi_create_object(env, &o);
  set_num(env, o, "rxCalls", (double)counter_load(&io->rx_calls));
  set_num(env, o, "rxDatagrams", (double)counter_load(&io->rx_datagrams));
  set_num(env, o, "rxPackets", (double)counter_load(&io->rx_packets));
  set_num(env, o, "txCalls", (double)counter_load(&io->tx_calls));
  set_num(env, o, "txMessages", (double)counter_load(&io->tx_messages));
  set_num(env, o, "txPackets", (double)counter_load(&io->tx_packets));
  set_num(env, o, "sendErrors", (double)counter_load(&io->send_errors));
  set_num(env, o, "sendWaits", (double)counter_load(&io->send_waits));
  set_num(env, o, "txFlushes", (double)counter_load(&io->tx_flushes));
  bool has = false;
  napi_has_named_property(env, s->root, "io", &has);
  if (!has) {
    napi_create_object(env, &all);
    napi_set_named_property(env, s->root, "io", all);
  }
  napi_get_named_property(env, s->root, "io", &all);
  napi_set_named_property(env, all, dir, o);
}

static void visit_retired(void *ctx, uint64_t inbound, uint64_t outbound) {
  stats_ctx *s = ctx;
  napi_value o;
  napi_create_object(s->env, &o);
  set_num(s->env, o, "inbound", (double)inbound);
  set_num(s->env, o, "outbound", (double)outbound);
  napi_set_named_property(s->env, s->root, "retired", o);
}

/* dpStats(handle) → {pairs: [...], inbound: [...], unattributed: {...}, io: {outbound, inbound}, retired: {inbound, outbound}} */
static napi_value DpStats(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (get_args(env, info, 1, a)) return NULL;
  dataplane *dp = get_dp(env, a[0]);
  if (!dp) return NULL;
  stats_ctx s = { .env = env };
  napi_create_object(env, &s.root);
  napi_create_array(env, &s.pairs);
  napi_create_array(env, &s.inbound);
  napi_set_named_property(env, s.root, "pairs", s.pairs);
  napi_set_named_property(env, s.root, "inbound", s.inbound);
  dp_stats_visitor v = { &s, visit_pair, visit_inbound, visit_unattributed, visit_io, visit_retired };
  dp_visit_stats(dp, &v);
  return s.root;
}

static napi_value DropReasons(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr, s;
  napi_create_array_with_length(env, DROP_COUNT, &arr);
  for (uint32_t i = 0; i < DROP_COUNT; i++) {
    napi_create_string_utf8(env, DROP_NAMES[i], NAPI_AUTO_LENGTH, &s);
    napi_set_element(env, arr, i, s);
  }
  return arr;
}

/*
 * tapSegment(read): what the outbound thread makes of one TAP read (vnet header and frame), without
 * sealing: the frames its segments become, or the drop reason's name. For tests of the codec (tap.c).
 */
static napi_value TapSegment(napi_env env, napi_callback_info info) {
  napi_value a[1], out, v;
  uint8_t *data;
  size_t len;
  if (get_args(env, info, 1, a) || get_bytes(env, a[0], &data, &len)) return NULL;
  if (len > TAP_READ_MAX) THROW(env, "VEIL_ERR_NATIVE_ARGS", "longer than a TAP read");
  uint8_t *copy = malloc(len ? len : 1), hdr[TAP_HEADERS_MAX];
  if (!copy) THROW(env, "VEIL_ERR_NATIVE_NOMEM", "out of memory");
  memcpy(copy, data, len); /* tap_parse completes checksums in place */
  tap_frame_info f;
  enum drop_reason why = tap_parse(copy, (uint32_t)len, &f);
  if (why != DROP_COUNT) {
    free(copy);
    napi_create_string_utf8(env, DROP_NAMES[why], NAPI_AUTO_LENGTH, &out);
    return out;
  }
  napi_create_array_with_length(env, f.segments, &out);
  for (uint32_t i = 0; i < f.segments; i++) {
    struct iovec payload;
    uint32_t hl = tap_segment(&f, i, hdr, &payload);
    void *dst;
    napi_create_buffer(env, hl + payload.iov_len, &dst, &v);
    memcpy(dst, hdr, hl);
    memcpy((uint8_t *)dst + hl, payload.iov_base, payload.iov_len);
    napi_set_element(env, out, i, v);
  }
  free(copy);
  return out;
}

#ifdef VEIL_FAULTS
extern int fault_countdown;

/* faultAfter(n): the nth checked allocation or system call from now fails (native/fault.h); 0: none. */
static napi_value FaultAfter(napi_env env, napi_callback_info info) {
  napi_value a[1];
  uint32_t n;
  if (get_args(env, info, 1, a) || arg_u32(env, a[0], &n)) return NULL;
  if (n > INT_MAX) THROW(env, "VEIL_ERR_NATIVE_ARGS", "at most 2^31-1");
  fault_countdown = (int)n;
  return undefined_value(env);
}

/* faultPending() → true while the fault set by faultAfter has not happened yet. */
static napi_value FaultPending(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_get_boolean(env, fault_countdown > 0, &r);
  return r;
}
#endif

static napi_value Init(napi_env env, napi_value exports) {
#define FN(name, fn) { name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL }
  napi_property_descriptor d[] = {
    FN("createSa", CreateSa), FN("sealRawDanger", SealRaw), FN("openRawDanger", OpenRaw),
    FN("gcmSeal", GcmSeal), FN("gcmOpen", GcmOpen),
    FN("replayCreate", ReplayCreate), FN("replayCheck", ReplayCheck), FN("replayUpdate", ReplayUpdate),
    FN("dropReasons", DropReasons), FN("tapSegment", TapSegment),
    FN("dpCreate", DpCreate), FN("dpStart", DpStart), FN("dpClose", DpClose),
    FN("dpAddPeer", DpAddPeer), FN("dpRemovePeer", DpRemovePeer),
    FN("dpSetNetwork", DpSetNetwork), FN("dpRemoveNetwork", DpRemoveNetwork),
    FN("dpInstallInbound", DpInstallInbound), FN("dpRemoveInbound", DpRemoveInbound),
    FN("dpSetOutbound", DpSetOutbound), FN("dpRemoveOutbound", DpRemoveOutbound),
    FN("dpStats", DpStats),
    FN("dpAttachTap", DpAttachTap), FN("dpDetachTap", DpDetachTap), FN("dpFdbSet", DpFdbSet), FN("dpFdbRemove", DpFdbRemove),
    FN("dpFloodAdd", DpFloodAdd), FN("dpFloodRemove", DpFloodRemove),
#ifdef VEIL_FAULTS
    FN("faultAfter", FaultAfter), FN("faultPending", FaultPending),
#endif
  };
#undef FN
  if (napi_define_properties(env, exports, sizeof d / sizeof *d, d) != napi_ok) return NULL;
  if (spawn_define(env, exports) != napi_ok) return NULL;
  if (lock_define(env, exports) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
