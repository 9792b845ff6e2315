// component: tcp-echo command
// A wasi:sockets command (examples/build-components.sh builds it), for the tests:
//   tcp_echo echo PORT             listens on 0.0.0.0:PORT and echoes every connection,
//                                  one at a time, forever (prints `listening on PORT`)
//   tcp_echo bind-other PORT       tries to bind PORT and prints `bind PORT: ERROR`
//                                  (exit 1) or `bound PORT` (exit 0)
//   tcp_echo connect A.B.C.D PORT TEXT
//                                  sends TEXT and a newline, prints `reply: LINE`
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp_echo.h"

typedef wasi_sockets_tcp_own_tcp_socket_t socket_t;
typedef wasi_sockets_network_error_code_t error_t;

static const char *error_name(error_t code) {
  static const char *names[] = {
      "unknown", "access-denied", "not-supported", "invalid-argument", "out-of-memory", "timeout",
      "concurrency-conflict", "not-in-progress", "would-block", "invalid-state", "new-socket-limit",
      "address-not-bindable", "address-in-use", "remote-unreachable", "connection-refused",
      "connection-reset", "connection-aborted", "datagram-too-large", "name-unresolvable",
      "temporary-resolver-failure", "permanent-resolver-failure"};
  return code < sizeof names / sizeof names[0] ? names[code] : "?";
}

static void fail(const char *step, error_t code) {
  printf("%s: %s\n", step, error_name(code));
  fflush(stdout);
  exit(1);
}

static wasi_sockets_network_own_network_t network(void) {
  static bool have = false;
  static wasi_sockets_network_own_network_t net;
  if (!have) {
    net = wasi_sockets_instance_network_instance_network();
    have = true;
  }
  return net;
}

static wasi_sockets_tcp_borrow_tcp_socket_t borrow(socket_t socket) {
  return wasi_sockets_tcp_borrow_tcp_socket(socket);
}

// Waits until the socket's pending operation may have progressed.
static void wait_for(socket_t socket) {
  wasi_io_poll_own_pollable_t ready = wasi_sockets_tcp_method_tcp_socket_subscribe(borrow(socket));
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
}

static socket_t new_socket(void) {
  socket_t socket;
  error_t err;
  if (!wasi_sockets_tcp_create_socket_create_tcp_socket(WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4, &socket, &err))
    fail("socket", err);
  return socket;
}

static wasi_sockets_network_ip_socket_address_t ipv4(const uint8_t ip[4], uint16_t port) {
  wasi_sockets_network_ip_socket_address_t address = {.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4};
  address.val.ipv4.port = port;
  address.val.ipv4.address = (wasi_sockets_network_ipv4_address_t){ip[0], ip[1], ip[2], ip[3]};
  return address;
}

// Binds to 0.0.0.0:port; returns false (with the error) when refused.
static bool bind_to(socket_t socket, uint16_t port, error_t *err) {
  static const uint8_t any[4] = {0, 0, 0, 0};
  wasi_sockets_network_ip_socket_address_t address = ipv4(any, port);
  if (!wasi_sockets_tcp_method_tcp_socket_start_bind(borrow(socket),
                                                      wasi_sockets_network_borrow_network(network()), &address, err))
    return false;
  while (!wasi_sockets_tcp_method_tcp_socket_finish_bind(borrow(socket), err)) {
    if (*err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) return false;
    wait_for(socket);
  }
  return true;
}

// Copies what the client sends back to it until it closes.
static void echo_connection(wasi_io_streams_own_input_stream_t in, wasi_io_streams_own_output_stream_t out) {
  for (;;) {
    tcp_echo_list_u8_t chunk;
    wasi_io_streams_stream_error_t err;
    if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(in), 4096, &chunk,
                                                           &err))
      break;
    bool written = wasi_io_streams_method_output_stream_blocking_write_and_flush(
        wasi_io_streams_borrow_output_stream(out), &chunk, &err);
    tcp_echo_list_u8_free(&chunk);
    if (!written) break;
  }
  wasi_io_streams_input_stream_drop_own(in);
  wasi_io_streams_output_stream_drop_own(out);
}

static int echo(uint16_t port) {
  socket_t socket = new_socket();
  error_t err;
  if (!bind_to(socket, port, &err)) fail("bind", err);
  if (!wasi_sockets_tcp_method_tcp_socket_start_listen(borrow(socket), &err)) fail("listen", err);
  while (!wasi_sockets_tcp_method_tcp_socket_finish_listen(borrow(socket), &err)) {
    if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("listen", err);
    wait_for(socket);
  }
  printf("listening on %u\n", port);
  fflush(stdout);
  for (;;) {
    wasi_sockets_tcp_tuple3_own_tcp_socket_own_input_stream_own_output_stream_t client;
    if (!wasi_sockets_tcp_method_tcp_socket_accept(borrow(socket), &client, &err)) {
      if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("accept", err);
      wait_for(socket);
      continue;
    }
    echo_connection(client.f1, client.f2);
    wasi_sockets_tcp_tcp_socket_drop_own(client.f0);
  }
}

static int bind_other(uint16_t port) {
  socket_t socket = new_socket();
  error_t err;
  if (!bind_to(socket, port, &err)) {
    printf("bind %u: %s\n", port, error_name(err));
    fflush(stdout);
    return 1;
  }
  printf("bound %u\n", port);
  return 0;
}

static int connect_to(const char *ip_text, uint16_t port, const char *text) {
  uint8_t ip[4];
  unsigned a, b, c, d;
  if (sscanf(ip_text, "%u.%u.%u.%u", &a, &b, &c, &d) != 4) {
    printf("not an IPv4 address: %s\n", ip_text);
    return 2;
  }
  ip[0] = a, ip[1] = b, ip[2] = c, ip[3] = d;
  socket_t socket = new_socket();
  wasi_sockets_network_ip_socket_address_t address = ipv4(ip, port);
  error_t err;
  if (!wasi_sockets_tcp_method_tcp_socket_start_connect(borrow(socket),
                                                         wasi_sockets_network_borrow_network(network()), &address, &err))
    fail("connect", err);
  wasi_sockets_tcp_tuple2_own_input_stream_own_output_stream_t streams;
  while (!wasi_sockets_tcp_method_tcp_socket_finish_connect(borrow(socket), &streams, &err)) {
    if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("connect", err);
    wait_for(socket);
  }
  char line[1024];
  int len = snprintf(line, sizeof line, "%s\n", text);
  tcp_echo_list_u8_t message = {(uint8_t *)line, (size_t)len};
  wasi_io_streams_stream_error_t stream_err;
  if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(streams.f1),
                                                                     &message, &stream_err))
    fail("write", 0);
  size_t got = 0;
  while (got < sizeof line - 1 && memchr(line, '\n', got) == NULL) {
    tcp_echo_list_u8_t chunk;
    if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(streams.f0),
                                                           sizeof line - 1 - got, &chunk, &stream_err))
      break;
    memcpy(line + got, chunk.ptr, chunk.len);
    got += chunk.len;
    tcp_echo_list_u8_free(&chunk);
  }
  line[got] = '\0';
  printf("reply: %s", line);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "echo") == 0) return echo((uint16_t)atoi(argv[2]));
  if (argc >= 3 && strcmp(argv[1], "bind-other") == 0) return bind_other((uint16_t)atoi(argv[2]));
  if (argc >= 5 && strcmp(argv[1], "connect") == 0) return connect_to(argv[2], (uint16_t)atoi(argv[3]), argv[4]);
  printf("usage: tcp_echo echo PORT | bind-other PORT | connect A.B.C.D PORT TEXT\n");
  return 2;
}
