// component: http-hello reactor
// A wasi:http/proxy server (examples/build-components.sh builds it): answers
// `Hello, World!` on any path and writes `METHOD PATH` to stdout per request. A few
// paths exist for the tests and the examples:
//   /slow?ms=N         sleeps N ms, then answers `slept N ms`
//   /spin              loops forever (the request timeout ends it)
//   /trap              traps (`unreachable`)
//   /grow?mb=N         allocates and touches N MiB, then answers `grew N MiB`
//   /count             adds one to a counter that starts at 41 (in the memory image's data)
//                      and answers it, then ` dirty` if 64 KiB of zero-initialised memory
//                      was not all zeros, and fills it: `42` from every fresh instance
//   /env/NAME          the environment variable NAME (404 if unset)
//   /file/PATH         the file /PATH, e.g. from a preopened volume (404 if unreadable)
//   /fetch/HOST:PORT/P an outgoing GET http://HOST:PORT/P: `STATUS BODY`, or 502 and why
//   /fetchs/HOST:PORT/P the same over HTTPS
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_hello.h"

typedef wasi_http_types_own_response_outparam_t outparam_t;

// Writes all of `body` to an outgoing body's stream, 4096 bytes at a time (the most a
// blocking write may take).
static void write_all(wasi_http_types_borrow_outgoing_body_t body, const char *data, size_t len) {
  wasi_http_types_own_output_stream_t stream;
  if (!wasi_http_types_method_outgoing_body_write(body, &stream)) return;
  wasi_io_streams_borrow_output_stream_t out = wasi_io_streams_borrow_output_stream(stream);
  while (len > 0) {
    size_t n = len < 4096 ? len : 4096;
    http_hello_list_u8_t chunk = {(uint8_t *)data, n};
    wasi_io_streams_stream_error_t err;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(out, &chunk, &err)) break;
    data += n;
    len -= n;
  }
  wasi_io_streams_output_stream_drop_own(stream);
}

// Sends a text/plain response with `body`.
static void respond(outparam_t out, uint16_t status, const char *body, size_t len) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  wasi_http_types_field_name_t name;
  http_hello_string_set(&name, "content-type");
  wasi_http_types_field_value_t value = {(uint8_t *)"text/plain", 10};
  wasi_http_types_header_error_t header_err;
  wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name, &value, &header_err);
  wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t borrowed = wasi_http_types_borrow_outgoing_response(response);
  wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
  wasi_http_types_own_outgoing_body_t body_handle;
  if (!wasi_http_types_method_outgoing_response_body(borrowed, &body_handle)) abort();
  wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
  result.val.ok = response;
  wasi_http_types_static_response_outparam_set(out, &result);
  write_all(wasi_http_types_borrow_outgoing_body(body_handle), body, len);
  wasi_http_types_error_code_t finish_err;
  wasi_http_types_static_outgoing_body_finish(body_handle, NULL, &finish_err);
}

static void respond_text(outparam_t out, uint16_t status, const char *text) {
  respond(out, status, text, strlen(text));
}

// The value of `name=` in a query string, as a number (0 when absent).
static unsigned long query_number(const char *path, const char *name) {
  const char *query = strchr(path, '?');
  size_t len = strlen(name);
  while (query != NULL) {
    query++;
    if (strncmp(query, name, len) == 0 && query[len] == '=') return strtoul(query + len + 1, NULL, 10);
    query = strchr(query, '&');
  }
  return 0;
}

static void slow(outparam_t out, const char *path) {
  unsigned long ms = query_number(path, "ms");
  wasi_io_poll_own_pollable_t timer = wasi_clocks_monotonic_clock_subscribe_duration((uint64_t)ms * 1000000);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(timer));
  wasi_io_poll_pollable_drop_own(timer);
  char text[64];
  snprintf(text, sizeof text, "slept %lu ms\n", ms);
  respond_text(out, 200, text);
}

static void grow(outparam_t out, const char *path) {
  unsigned long mb = query_number(path, "mb");
  char *block = malloc(mb << 20);
  if (block == NULL) {
    respond_text(out, 507, "could not allocate\n");
    return;
  }
  memset(block, 1, mb << 20);
  char text[64];
  snprintf(text, sizeof text, "grew %lu MiB\n", mb);
  respond_text(out, block[(mb << 20) - 1] == 1 ? 200 : 500, text);
  free(block);
}

static void env(outparam_t out, const char *name) {
  const char *value = getenv(name);
  if (value == NULL) {
    respond_text(out, 404, "not set\n");
    return;
  }
  size_t len = strlen(value);
  char *text = malloc(len + 2);
  if (text == NULL) abort();
  memcpy(text, value, len);
  memcpy(text + len, "\n", 2);
  respond(out, 200, text, len + 1);
  free(text);
}

static void file(outparam_t out, const char *path) {
  static char contents[65536];
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    respond_text(out, 404, "cannot open\n");
    return;
  }
  size_t len = fread(contents, 1, sizeof contents, f);
  fclose(f);
  respond(out, 200, contents, len);
}

// GET scheme://AUTHORITY/PATH, where `target` is `AUTHORITY/PATH`.
static void fetch(outparam_t out, const char *target, uint8_t scheme_tag) {
  static char text[65536];
  const char *slash = strchr(target, '/');
  size_t authority_len = slash ? (size_t)(slash - target) : strlen(target);
  http_hello_string_t authority = {(uint8_t *)target, authority_len};
  http_hello_string_t path_query;
  http_hello_string_set(&path_query, slash ? slash : "/");
  wasi_http_types_own_outgoing_request_t request =
      wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
  wasi_http_types_borrow_outgoing_request_t borrowed = wasi_http_types_borrow_outgoing_request(request);
  wasi_http_types_scheme_t scheme = {.tag = scheme_tag};
  wasi_http_types_method_outgoing_request_set_scheme(borrowed, &scheme);
  wasi_http_types_method_outgoing_request_set_authority(borrowed, &authority);
  wasi_http_types_method_outgoing_request_set_path_with_query(borrowed, &path_query);

  wasi_http_outgoing_handler_own_future_incoming_response_t future;
  wasi_http_outgoing_handler_error_code_t err;
  if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &err)) {
    snprintf(text, sizeof text, "error: request refused, code %u\n", err.tag);
    respond_text(out, 502, text);
    return;
  }
  wasi_http_types_borrow_future_incoming_response_t waiting = wasi_http_types_borrow_future_incoming_response(future);
  wasi_io_poll_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(waiting);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  bool ready_now = wasi_http_types_method_future_incoming_response_get(waiting, &got);
  if (!ready_now || got.is_err || got.val.ok.is_err) {
    unsigned code = (ready_now && !got.is_err) ? got.val.ok.val.err.tag : 255;
    snprintf(text, sizeof text, "error: no response, code %u\n", code);
    wasi_http_types_future_incoming_response_drop_own(future);
    respond_text(out, 502, text);
    return;
  }
  wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
  wasi_http_types_borrow_incoming_response_t reading = wasi_http_types_borrow_incoming_response(response);
  size_t len = (size_t)snprintf(text, sizeof text, "%u ", wasi_http_types_method_incoming_response_status(reading));
  wasi_http_types_own_incoming_body_t body;
  if (wasi_http_types_method_incoming_response_consume(reading, &body)) {
    wasi_http_types_own_input_stream_t stream;
    if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &stream)) {
      for (;;) {
        http_hello_list_u8_t chunk;
        wasi_io_streams_stream_error_t read_err;
        if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(stream), 4096,
                                                               &chunk, &read_err))
          break;
        size_t n = chunk.len < sizeof text - len ? chunk.len : sizeof text - len;
        memcpy(text + len, chunk.ptr, n);
        len += n;
        http_hello_list_u8_free(&chunk);
      }
      wasi_io_streams_input_stream_drop_own(stream);
    }
    wasi_http_types_incoming_body_drop_own(body);
  }
  wasi_http_types_incoming_response_drop_own(response);
  wasi_http_types_future_incoming_response_drop_own(future);
  respond(out, 200, text, len);
}

static const char *method_name(const wasi_http_types_method_t *method) {
  static const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  return method->tag < sizeof names / sizeof names[0] ? names[method->tag] : "OTHER";
}

void exports_wasi_http_incoming_handler_handle(exports_wasi_http_incoming_handler_own_incoming_request_t request,
                                               exports_wasi_http_incoming_handler_own_response_outparam_t out) {
  static char path[8192];
  wasi_http_types_borrow_incoming_request_t borrowed = wasi_http_types_borrow_incoming_request(request);
  wasi_http_types_method_t method;
  wasi_http_types_method_incoming_request_method(borrowed, &method);
  http_hello_string_t raw;
  size_t len = 0;
  if (wasi_http_types_method_incoming_request_path_with_query(borrowed, &raw)) {
    len = raw.len < sizeof path - 1 ? raw.len : sizeof path - 1;
    memcpy(path, raw.ptr, len);
    http_hello_string_free(&raw);
  }
  path[len] = '\0';
  printf("%s %s\n", method_name(&method), path);
  fflush(stdout);
  wasi_http_types_method_free(&method);
  wasi_http_types_incoming_request_drop_own(request);

  if (strncmp(path, "/slow", 5) == 0) {
    slow(out, path);
  } else if (strcmp(path, "/spin") == 0) {
    for (volatile unsigned long i = 0;; i++) {
    }
  } else if (strcmp(path, "/trap") == 0) {
    __builtin_trap();
  } else if (strncmp(path, "/grow", 5) == 0) {
    grow(out, path);
  } else if (strcmp(path, "/count") == 0) {
    static unsigned long count = 41;
    static char zeroed[65536];
    int dirty = 0;
    for (size_t i = 0; i < sizeof zeroed; i++) dirty |= zeroed[i];
    memset(zeroed, 1, sizeof zeroed);
    char text[32];
    snprintf(text, sizeof text, dirty ? "%lu dirty\n" : "%lu\n", ++count);
    respond_text(out, 200, text);
  } else if (strncmp(path, "/env/", 5) == 0) {
    env(out, path + 5);
  } else if (strncmp(path, "/file/", 6) == 0) {
    file(out, path + 5);
  } else if (strncmp(path, "/fetch/", 7) == 0) {
    fetch(out, path + 7, WASI_HTTP_TYPES_SCHEME_HTTP);
  } else if (strncmp(path, "/fetchs/", 8) == 0) {
    fetch(out, path + 8, WASI_HTTP_TYPES_SCHEME_HTTPS);
  } else {
    respond_text(out, 200, "Hello, World!\n");
  }
}
