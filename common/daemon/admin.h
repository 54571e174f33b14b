/* The admin HTTP listener every daemon serves on its admin address:
 * /healthz, /status (JSON) and /metrics (Prometheus text), each a route to a
 * handler of the daemon's.
 *
 * Only GET and HEAD are served (405 with Allow otherwise); unknown paths get
 * 404; the query string is ignored for routing. Idle connections are closed
 * after ADMIN_TIMEOUT_SEC, and request headers and bodies are capped. */
#ifndef MP_ADMIN_H
#define MP_ADMIN_H

#include <stdint.h>

struct admin;
struct evbuffer;
struct event_base;

#define ADMIN_TIMEOUT_SEC       10
#define ADMIN_MAX_HEADERS_SIZE  8192
#define ADMIN_MAX_BODY_SIZE     4096
#define ADMIN_TEXT_CONTENT_TYPE "text/plain; charset=utf-8"

/* Appends the response body to body and returns the HTTP status code (200,
 * 503 for an unhealthy /healthz, ...). *ret_content_type may be set to a
 * string that outlives the call; it defaults to ADMIN_TEXT_CONTENT_TYPE. A
 * code outside 200..599 is answered as 500. Called on the admin's event loop
 * for GET and HEAD alike (the body of a HEAD is counted, then dropped), so
 * it must not block. */
typedef int (*admin_handler_fn)(void *arg, struct evbuffer *body, const char **ret_content_type);

/* Listens on host:port (port 0 picks a free one, see admin_port; a NULL host
 * means every address). On failure returns NULL and sets *ret_err, when
 * ret_err is not NULL, to a message naming the address, e.g.
 * "admin 127.0.0.1:7180: Address already in use", which the caller frees. */
struct admin *admin_new(struct event_base *base, const char *host, uint16_t port, char **ret_err);

/* Routes GET/HEAD of path (exact match, starting with '/') to fn(arg, ...).
 * Returns 0, -EINVAL, -EEXIST when path is already routed, or -ENOMEM. */
int admin_route(struct admin *a, const char *path, admin_handler_fn fn, void *arg);

/* The port actually bound. */
uint16_t admin_port(const struct admin *a);

/* Stops listening, closes open connections and frees everything. NULL-safe.
 * Not from inside a handler. */
void admin_free(struct admin *a);

#endif
