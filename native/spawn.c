/*
 * Host commands (ip, bridge, nft, sysctl) run with posix_spawn, on a libuv worker thread.
 *
 * Node's child_process forks: the parent's page tables are copied on its event loop, so each
 * command costs the gateway CPU in proportion to its memory (about 10 ms at 200 MiB, against
 * 5 ms for the command itself). glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK) and
 * copies nothing (docs/performance.md "the control plane's host commands"). The child gets
 * what child_process gives it: stdin, stdout and stderr as pipes, the environment, every
 * signal at its default and none blocked, and no other descriptor.
 *
 * spawnRun(file, args, input, timeoutMs, maxOutput) → Promise<{ status, signal, stdout, stderr,
 * timedOut, overflowed }>; a command that could not be started rejects with an Error whose code
 * is its errno's name (ENOENT, EACCES...).
 */
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spawn.h"

extern char **environ;

/* After the timeout: SIGTERM (as child_process does), then SIGKILL if the command is still there. */
#define KILL_GRACE_MS 2000

typedef struct {
  uint8_t *data;
  size_t len, cap;
} out_buf;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char **argv; /* argv[0] is the file; NULL-terminated */
  uint8_t *input;
  size_t input_len;
  uint32_t timeout_ms;
  size_t max_output;
  /* results */
  int spawn_errno;
  int status, signal, timed_out, overflowed;
  out_buf out, err;
} job_t;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads what is there; 0 at end of file, 1 if more may come. Past max_output the bytes are dropped. */
static int drain(int fd, out_buf *b, job_t *j) {
  uint8_t chunk[16384];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n == 0) return 0;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 1 : 0;
    if (j->out.len + j->err.len + (size_t)n > j->max_output) {
      j->overflowed = 1;
      continue;
    }
    if (b->len + (size_t)n > b->cap) {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + (size_t)n) cap *= 2;
      uint8_t *p = realloc(b->data, cap);
      if (!p) {
        j->overflowed = 1;
        continue;
      }
      b->data = p;
      b->cap = cap;
    }
    memcpy(b->data + b->len, chunk, (size_t)n);
    b->len += (size_t)n;
  }
}

static void run_job(job_t *j) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
    j->spawn_errno = errno;
    goto close_all;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  /* Descriptors someone opened without O_CLOEXEC stay in the gateway. */
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all); /* Node ignores SIGPIPE; a command must not inherit that */
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int rc = posix_spawnp(&pid, j->argv[0], &fa, &attr, j->argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    j->spawn_errno = rc;
    goto close_all;
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  in[0] = out[1] = err[1] = -1;
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);

  size_t written = 0;
  if (j->input_len == 0) {
    close(in[1]);
    in[1] = -1;
  }
  int out_open = 1, err_open = 1, killed = 0;
  int64_t deadline = now_ms() + j->timeout_ms;
  while (out_open || err_open) {
    struct pollfd p[3];
    int n = 0, io = -1, oo = -1, eo = -1;
    if (in[1] >= 0) p[io = n++] = (struct pollfd){in[1], POLLOUT, 0};
    if (out_open) p[oo = n++] = (struct pollfd){out[0], POLLIN, 0};
    if (err_open) p[eo = n++] = (struct pollfd){err[0], POLLIN, 0};
    int64_t left = deadline - now_ms();
    if (left <= 0 || (j->overflowed && killed == 0)) {
      /* Out of time (or output): TERM, then KILL; after that, stop waiting for the pipes. */
      if (killed == 0) {
        if (!j->overflowed) j->timed_out = 1;
        kill(pid, SIGTERM);
      } else if (killed == 1) {
        kill(pid, SIGKILL);
      } else {
        break;
      }
      killed++;
      deadline = now_ms() + KILL_GRACE_MS;
      continue;
    }
    int r = poll(p, (nfds_t)n, (int)(left > 60000 ? 60000 : left));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    if (io >= 0 && p[io].revents) {
      ssize_t w = write(in[1], j->input + written, j->input_len - written);
      if (w > 0) written += (size_t)w;
      /* EPIPE: the command exited or closed stdin before reading it all; its status tells. */
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == j->input_len) {
        close(in[1]);
        in[1] = -1;
      }
    }
    if (oo >= 0 && p[oo].revents) out_open = drain(out[0], &j->out, j);
    if (eo >= 0 && p[eo].revents) err_open = drain(err[0], &j->err, j);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  j->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  j->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
close_all:
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0) close(in[i]);
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  run_job(data);
}

static void free_job(job_t *j) {
  if (j->argv)
    for (char **a = j->argv; *a; a++) free(*a);
  free(j->argv);
  free(j->input);
  free(j->out.data);
  free(j->err.data);
  free(j);
}

static napi_value buffer_of(napi_env env, const out_buf *b) {
  napi_value v;
  void *p;
  if (napi_create_buffer_copy(env, b->len, b->len ? (const void *)b->data : "", &p, &v) != napi_ok) return NULL;
  return v;
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_value result;
  if (status != napi_ok || j->spawn_errno) {
    napi_value code, msg, error;
    int e = status != napi_ok ? ECANCELED : j->spawn_errno;
    const char *name = strerrorname_np(e);
    napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(e), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &error);
    napi_reject_deferred(env, j->deferred, error);
  } else {
    napi_create_object(env, &result);
    napi_value v;
    if (j->signal) {
      napi_get_null(env, &v);
      napi_set_named_property(env, result, "status", v);
      napi_create_int32(env, j->signal, &v);
    } else {
      napi_create_int32(env, j->status, &v);
      napi_set_named_property(env, result, "status", v);
      napi_get_null(env, &v);
    }
    napi_set_named_property(env, result, "signal", v);
    napi_set_named_property(env, result, "stdout", buffer_of(env, &j->out));
    napi_set_named_property(env, result, "stderr", buffer_of(env, &j->err));
    napi_get_boolean(env, j->timed_out, &v);
    napi_set_named_property(env, result, "timedOut", v);
    napi_get_boolean(env, j->overflowed, &v);
    napi_set_named_property(env, result, "overflowed", v);
    napi_resolve_deferred(env, j->deferred, result);
  }
  napi_delete_async_work(env, j->work);
  free_job(j);
}

static char *string_arg(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) { /* an embedded NUL would cut the word short */
    free(s);
    return NULL;
  }
  return s;
}

static napi_value fail(napi_env env, job_t *j, const char *msg) {
  free_job(j);
  napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", msg);
  return NULL;
}

static napi_value SpawnRun(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value a[5];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(env, "VEIL_ERR_NATIVE_ARGS", "spawnRun(file, args, input, timeoutMs, maxOutput)");
    return NULL;
  }
  job_t *j = calloc(1, sizeof *j);
  if (!j) return fail(env, NULL, "out of memory");
  uint32_t nargs;
  bool is_array;
  if (napi_is_array(env, a[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, a[1], &nargs) != napi_ok ||
      nargs > 4096)
    return fail(env, j, "args: an array of at most 4096 strings");
  j->argv = calloc(nargs + 2, sizeof *j->argv);
  if (!j->argv || !(j->argv[0] = string_arg(env, a[0])) || !*j->argv[0]) return fail(env, j, "file: a string without NUL");
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value e;
    if (napi_get_element(env, a[1], i, &e) != napi_ok || !(j->argv[i + 1] = string_arg(env, e)))
      return fail(env, j, "args: strings without NUL");
  }
  bool is_ta;
  if (napi_is_typedarray(env, a[2], &is_ta) != napi_ok || !is_ta) return fail(env, j, "input: a Uint8Array");
  napi_typedarray_type type;
  void *p;
  napi_value ab;
  size_t off, len;
  if (napi_get_typedarray_info(env, a[2], &type, &len, &p, &ab, &off) != napi_ok || type != napi_uint8_array)
    return fail(env, j, "input: a Uint8Array");
  if (len) {
    if (!(j->input = malloc(len))) return fail(env, j, "out of memory");
    memcpy(j->input, p, len);
    j->input_len = len;
  }
  double timeout, max_output;
  if (napi_get_value_double(env, a[3], &timeout) != napi_ok || !(timeout >= 1 && timeout <= 3600000) ||
      napi_get_value_double(env, a[4], &max_output) != napi_ok || !(max_output >= 0 && max_output <= (1u << 30)))
    return fail(env, j, "timeoutMs 1..3600000, maxOutput 0..2^30");
  j->timeout_ms = (uint32_t)timeout;
  j->max_output = (size_t)max_output;
  napi_value promise, name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) return fail(env, j, "no promise");
  napi_create_string_utf8(env, "veil:spawn", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    napi_value err, code, msg;
    napi_create_string_utf8(env, "EAGAIN", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, "cannot queue the command", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
    free_job(j);
  }
  return promise;
}

napi_status spawn_define(napi_env env, napi_value exports) {
  napi_property_descriptor d = {"spawnRun", NULL, SpawnRun, NULL, NULL, NULL, napi_enumerable, NULL};
  return napi_define_properties(env, exports, 1, &d);
}
