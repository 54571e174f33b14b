/* Addresses in "HOST:PORT" / "[V6]:PORT" form, and listening sockets for
 * them with accept paused (not spinning) when the process runs out of file
 * descriptors. */
#ifndef MP_NETADDR_H
#define MP_NETADDR_H

#include <stdbool.h>
#include <event2/listener.h>
#include <stdint.h>
#include <sys/socket.h>

#define NETADDR_HOST_MAX 256

/* Splits "HOST:PORT" or "[V6]:PORT"; port 0 is allowed (ephemeral). */
int netaddr_split(const char *hostport, char *host, size_t hostlen, uint16_t *ret_port);
/* Resolves to the first address getaddrinfo gives. */
int netaddr_resolve(const char *hostport, struct sockaddr_storage *ret, socklen_t *ret_len,
                    char **ret_err);

struct netaddr_listener;
/* Listens on hostport; cb gets each accepted socket. ret_err is malloc'd. */
struct netaddr_listener *netaddr_listen(struct event_base *base, const char *hostport,
                                        evconnlistener_cb cb, void *arg, char **ret_err);
/* The same with SO_REUSEPORT when reuse_port: several event loops may then
 * listen at one address and the kernel spreads connections over them. */
struct netaddr_listener *netaddr_listen_shared(struct event_base *base, const char *hostport,
                                               bool reuse_port, evconnlistener_cb cb, void *arg,
                                               char **ret_err);
void netaddr_listener_free(struct netaddr_listener *l);
uint16_t netaddr_listener_port(const struct netaddr_listener *l);
void netaddr_listener_pause(struct netaddr_listener *l);

/* "1.2.3.4:567" of a connected socket's peer. */
void netaddr_peer_name(evutil_socket_t fd, char *buf, size_t len);

#endif
