// component: tcp-echo command
// A wasi:sockets command (examples/build-components.sh builds it), for the tests:
//   tcp_echo echo PORT             listens on 0.0.0.0:PORT and echoes every connection,
//                                  one at a time, forever (prints `listening on PORT`)
//   tcp_echo bind-other PORT       tries to bind PORT and prints `bind PORT: ERROR`
//                                  (exit 1) or `bound PORT` (exit 0)
//   tcp_echo connect A.B.C.D PORT TEXT
//                                  sends TEXT and a newline, prints `reply: LINE`
//   tcp_echo connect-ip ADDRESS PORT TEXT
//                                  the same to an IPv4 or IPv6 address (an IPv6 socket
//                                  for IPv6 ones); on failure prints `connect: ERROR`
//   tcp_echo connect-name NAME PORT TEXT
//                                  the same to the first address NAME resolves to
//                                  (`resolve: ERROR` when it resolves to none)
//   tcp_echo udp-send ADDRESS PORT TEXT
//                                  sends TEXT as one datagram from an ephemeral port,
//                                  prints `sent` (or `STEP: ERROR`, exit 1)
//   tcp_echo udp-ask ADDRESS PORT TEXT
//                                  the same, then waits for one datagram back and
//                                  prints `reply: TEXT`
//   tcp_echo resolve NAME          prints each address NAME resolves to, one a line, or
//                                  `resolve: ERROR` (exit 1)
#include <arpa/inet.h>
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

typedef wasi_sockets_network_ip_socket_address_t socket_address_t;
typedef wasi_sockets_network_ip_address_t ip_address_t;

// Parses an IPv4 or IPv6 address; false when it is neither.
static bool parse_ip(const char *text, ip_address_t *ip) {
  uint8_t bytes[16];
  if (inet_pton(AF_INET, text, bytes) == 1) {
    ip->tag = WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV4;
    ip->val.ipv4 = (wasi_sockets_network_ipv4_address_t){bytes[0], bytes[1], bytes[2], bytes[3]};
    return true;
  }
  if (inet_pton(AF_INET6, text, bytes) == 1) {
    uint16_t w[8];
    for (int i = 0; i < 8; i++) w[i] = (uint16_t)(bytes[2 * i] << 8 | bytes[2 * i + 1]);
    ip->tag = WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV6;
    ip->val.ipv6 = (wasi_sockets_network_ipv6_address_t){w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]};
    return true;
  }
  return false;
}

static void print_ip(const ip_address_t *ip) {
  char text[INET6_ADDRSTRLEN];
  uint8_t bytes[16];
  if (ip->tag == WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV4) {
    const wasi_sockets_network_ipv4_address_t *v4 = &ip->val.ipv4;
    uint8_t b4[4] = {v4->f0, v4->f1, v4->f2, v4->f3};
    inet_ntop(AF_INET, b4, text, sizeof text);
  } else {
    const wasi_sockets_network_ipv6_address_t *v6 = &ip->val.ipv6;
    uint16_t w[8] = {v6->f0, v6->f1, v6->f2, v6->f3, v6->f4, v6->f5, v6->f6, v6->f7};
    for (int i = 0; i < 8; i++) bytes[2 * i] = (uint8_t)(w[i] >> 8), bytes[2 * i + 1] = (uint8_t)w[i];
    inet_ntop(AF_INET6, bytes, text, sizeof text);
  }
  printf("%s\n", text);
}

static socket_address_t socket_address(const ip_address_t *ip, uint16_t port) {
  socket_address_t address;
  memset(&address, 0, sizeof address);
  if (ip->tag == WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV4) {
    address.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4;
    address.val.ipv4.port = port;
    address.val.ipv4.address = ip->val.ipv4;
  } else {
    address.tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV6;
    address.val.ipv6.port = port;
    address.val.ipv6.address = ip->val.ipv6;
  }
  return address;
}

static wasi_sockets_network_ip_address_family_t family_of(const ip_address_t *ip) {
  return ip->tag == WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV4 ? WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4
                                                         : WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV6;
}

// Resolves NAME: each address in `out` (up to `max`), their number returned; exits with
// `resolve: ERROR` on failure.
static size_t resolve_all(const char *name, ip_address_t *out, size_t max) {
  tcp_echo_string_t text;
  tcp_echo_string_set(&text, name);
  wasi_sockets_ip_name_lookup_own_resolve_address_stream_t stream;
  error_t err;
  if (!wasi_sockets_ip_name_lookup_resolve_addresses(wasi_sockets_network_borrow_network(network()), &text,
                                                     &stream, &err))
    fail("resolve", err);
  wasi_sockets_ip_name_lookup_borrow_resolve_address_stream_t borrowed =
      wasi_sockets_ip_name_lookup_borrow_resolve_address_stream(stream);
  size_t n = 0;
  for (;;) {
    wasi_sockets_ip_name_lookup_option_ip_address_t next;
    if (!wasi_sockets_ip_name_lookup_method_resolve_address_stream_resolve_next_address(borrowed, &next, &err)) {
      if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("resolve", err);
      wasi_io_poll_own_pollable_t ready = wasi_sockets_ip_name_lookup_method_resolve_address_stream_subscribe(borrowed);
      wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
      wasi_io_poll_pollable_drop_own(ready);
      continue;
    }
    if (!next.is_some) break;
    if (n < max) out[n++] = next.val;
  }
  wasi_sockets_ip_name_lookup_resolve_address_stream_drop_own(stream);
  return n;
}

static int resolve(const char *name) {
  ip_address_t addrs[32];
  size_t n = resolve_all(name, addrs, 32);
  for (size_t i = 0; i < n; i++) print_ip(&addrs[i]);
  return 0;
}

// Connects to `ip`:`port`, sends TEXT and a newline, prints the line that comes back.
static int talk(const ip_address_t *ip, uint16_t port, const char *text) {
  socket_t socket;
  error_t err;
  if (!wasi_sockets_tcp_create_socket_create_tcp_socket(family_of(ip), &socket, &err)) fail("socket", err);
  socket_address_t address = socket_address(ip, port);
  if (!wasi_sockets_tcp_method_tcp_socket_start_connect(borrow(socket), wasi_sockets_network_borrow_network(network()),
                                                         &address, &err))
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

static int connect_ip(const char *ip_text, uint16_t port, const char *text) {
  ip_address_t ip;
  if (!parse_ip(ip_text, &ip)) {
    printf("not an IP address: %s\n", ip_text);
    return 2;
  }
  return talk(&ip, port, text);
}

static int connect_name(const char *name, uint16_t port, const char *text) {
  ip_address_t addrs[1];
  if (resolve_all(name, addrs, 1) == 0) {
    printf("resolve: no address\n");
    return 1;
  }
  return talk(&addrs[0], port, text);
}

typedef wasi_sockets_udp_own_udp_socket_t udp_t;

// Waits until a UDP pollable is ready, then drops it.
static void block_on(wasi_io_poll_own_pollable_t ready) {
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
}

// Sends TEXT as one datagram to `ip_text`:`port` from an ephemeral port; with `ask`, waits
// for one datagram back and prints it.
static int udp_send(const char *ip_text, uint16_t port, const char *text, bool ask) {
  ip_address_t ip;
  if (!parse_ip(ip_text, &ip)) {
    printf("not an IP address: %s\n", ip_text);
    return 2;
  }
  udp_t socket;
  error_t err;
  if (!wasi_sockets_udp_create_socket_create_udp_socket(family_of(&ip), &socket, &err)) fail("socket", err);
  wasi_sockets_udp_borrow_udp_socket_t borrowed = wasi_sockets_udp_borrow_udp_socket(socket);
  ip_address_t any;
  memset(&any, 0, sizeof any);
  any.tag = ip.tag;
  socket_address_t local = socket_address(&any, 0);
  if (!wasi_sockets_udp_method_udp_socket_start_bind(borrowed, wasi_sockets_network_borrow_network(network()), &local,
                                                     &err))
    fail("bind", err);
  while (!wasi_sockets_udp_method_udp_socket_finish_bind(borrowed, &err)) {
    if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("bind", err);
    block_on(wasi_sockets_udp_method_udp_socket_subscribe(borrowed));
  }
  wasi_sockets_udp_tuple2_own_incoming_datagram_stream_own_outgoing_datagram_stream_t streams;
  if (!wasi_sockets_udp_method_udp_socket_stream(borrowed, NULL, &streams, &err)) fail("stream", err);
  wasi_sockets_udp_borrow_outgoing_datagram_stream_t out = wasi_sockets_udp_borrow_outgoing_datagram_stream(streams.f1);
  uint64_t permits = 0;
  while (permits == 0) {
    if (!wasi_sockets_udp_method_outgoing_datagram_stream_check_send(out, &permits, &err)) fail("send", err);
    if (permits == 0) block_on(wasi_sockets_udp_method_outgoing_datagram_stream_subscribe(out));
  }
  wasi_sockets_udp_outgoing_datagram_t datagram;
  datagram.data = (tcp_echo_list_u8_t){(uint8_t *)text, strlen(text)};
  datagram.remote_address.is_some = true;
  datagram.remote_address.val = socket_address(&ip, port);
  wasi_sockets_udp_list_outgoing_datagram_t list = {&datagram, 1};
  uint64_t sent = 0;
  if (!wasi_sockets_udp_method_outgoing_datagram_stream_send(out, &list, &sent, &err)) fail("send", err);
  if (sent != 1) {
    printf("send: not sent\n");
    return 1;
  }
  if (!ask) {
    printf("sent\n");
    return 0;
  }
  wasi_sockets_udp_borrow_incoming_datagram_stream_t in = wasi_sockets_udp_borrow_incoming_datagram_stream(streams.f0);
  for (;;) {
    wasi_sockets_udp_list_incoming_datagram_t got;
    if (!wasi_sockets_udp_method_incoming_datagram_stream_receive(in, 1, &got, &err)) fail("receive", err);
    if (got.len == 0) {
      block_on(wasi_sockets_udp_method_incoming_datagram_stream_subscribe(in));
      continue;
    }
    printf("reply: %.*s\n", (int)got.ptr[0].data.len, (const char *)got.ptr[0].data.ptr);
    return 0;
  }
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "echo") == 0) return echo((uint16_t)atoi(argv[2]));
  if (argc >= 3 && strcmp(argv[1], "bind-other") == 0) return bind_other((uint16_t)atoi(argv[2]));
  if (argc >= 5 && strcmp(argv[1], "connect") == 0) return connect_to(argv[2], (uint16_t)atoi(argv[3]), argv[4]);
  if (argc >= 5 && strcmp(argv[1], "connect-ip") == 0) return connect_ip(argv[2], (uint16_t)atoi(argv[3]), argv[4]);
  if (argc >= 5 && strcmp(argv[1], "connect-name") == 0)
    return connect_name(argv[2], (uint16_t)atoi(argv[3]), argv[4]);
  if (argc >= 5 && strcmp(argv[1], "udp-send") == 0) return udp_send(argv[2], (uint16_t)atoi(argv[3]), argv[4], false);
  if (argc >= 5 && strcmp(argv[1], "udp-ask") == 0) return udp_send(argv[2], (uint16_t)atoi(argv[3]), argv[4], true);
  if (argc >= 3 && strcmp(argv[1], "resolve") == 0) return resolve(argv[2]);
  printf("usage: tcp_echo echo PORT | bind-other PORT | connect A.B.C.D PORT TEXT | connect-ip ADDRESS PORT TEXT\n"
         "       | connect-name NAME PORT TEXT | udp-send ADDRESS PORT TEXT | udp-ask ADDRESS PORT TEXT | resolve NAME\n");
  return 2;
}
