#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#include "log.h"
#include "netaddr.h"
#include "proto.h"
#include "tls.h"
#include "token.h"

/* Output above this stops reading from a client until it drains: a client
 * that never reads its replies cannot make the server buffer without end. */
#define CONN_OUTPUT_HIGH         (8u << 20)
#define CONN_FRAMES_PER_CALLBACK 256

struct server {
	struct event_base *base;
	struct server_config cfg;
	const struct server_ops *ops;
	void *owner;
	struct netaddr_listener *listener;
	struct conn_list conns;
	size_t nconns;
};

static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);

static void conn_accept(struct server *srv, evutil_socket_t fd)
{
	if (srv->nconns >= srv->cfg.max_connections) {
		char peer[64];
		netaddr_peer_name(fd, peer, sizeof(peer));
		log_warn("refusing connection from %s: connection limit reached (%llu)", peer,
		         (unsigned long long)srv->cfg.max_connections);
		evutil_closesocket(fd);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->srv = srv;
	c->refs = 1;
	netaddr_peer_name(fd, c->peer, sizeof(c->peer));
	evutil_make_socket_nonblocking(fd);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (srv->cfg.tls != NULL)
		c->bev = tls_accept(srv->base, fd, srv->cfg.tls);
	else
		c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	struct timeval idle = {(time_t)(srv->cfg.idle_timeout_ms / 1000),
	                       (suseconds_t)(srv->cfg.idle_timeout_ms % 1000) * 1000};
	bufferevent_set_timeouts(c->bev, &idle, NULL);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&srv->conns, c, entry);
	srv->nconns++;
	metric_set(srv->cfg.m_connections, (double)srv->nconns);
	log_debug("connection from %s", c->peer);
}

void conn_ref(struct conn *c)
{
	c->refs++;
}

void conn_unref(struct conn *c)
{
	if (--c->refs == 0)
		free(c);
}

bool conn_alive(const struct conn *c)
{
	return c->bev != NULL;
}

void conn_close(struct conn *c, const char *reason)
{
	if (c->bev == NULL)
		return;
	struct server *srv = c->srv;
	if (reason != NULL)
		log_info("closing connection from %s: %s", c->peer, reason);
	if (srv->ops->closed != NULL)
		srv->ops->closed(srv->owner, c);
	bufferevent_free(c->bev);
	c->bev = NULL;
	TAILQ_REMOVE(&srv->conns, c, entry);
	srv->nconns--;
	metric_set(srv->cfg.m_connections, (double)srv->nconns);
	conn_unref(c);
}

#define CONN_LINGER_S 5

/* Output is out: say we are done writing and wait for the peer to close,
 * so that input still unread (the rest of an oversized frame) does not make
 * the kernel reset the connection and drop what we sent. */
static void linger_step(struct conn *c)
{
	if (c->bev == NULL || !c->closing || c->shut_wr || conn_output_len(c) > 0)
		return;
	c->shut_wr = true;
	if (c->srv->cfg.tls != NULL) {
		conn_close(c, NULL);
		return;
	}
	shutdown(bufferevent_getfd(c->bev), SHUT_WR);
}

void conn_close_after_flush(struct conn *c, const char *reason)
{
	if (c->bev == NULL || c->closing)
		return;
	if (reason != NULL)
		log_info("closing connection from %s: %s", c->peer, reason);
	c->closing = true;
	c->reading_paused = false;
	struct timeval linger = {CONN_LINGER_S, 0};
	bufferevent_set_timeouts(c->bev, &linger, &linger);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	linger_step(c);
}

size_t conn_output_len(const struct conn *c)
{
	if (c->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void pause_if_full(struct conn *c, struct evbuffer *out)
{
	if (!c->reading_paused && c->role != CONN_SUBSCRIBER &&
	    evbuffer_get_length(out) > CONN_OUTPUT_HIGH) {
		c->reading_paused = true;
		bufferevent_disable(c->bev, EV_READ);
		bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUTPUT_HIGH / 4, 0);
	}
}

void conn_send(struct conn *c, const void *data, size_t len)
{
	if (c->bev == NULL)
		return;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (c->srv->cfg.tls == NULL && c->role != CONN_SUBSCRIBER &&
	    evbuffer_get_length(out) == 0) {
		/* Nothing queued: write straight to the socket. Going through
		 * the bufferevent would cost two epoll_ctl calls per reply
		 * (write interest on, then off) and a loop turn. */
		ssize_t n = send(bufferevent_getfd(c->bev), data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == (ssize_t)len)
			return;
		if (n > 0) {
			data = (const uint8_t *)data + n;
			len -= (size_t)n;
		}
		/* EAGAIN or an error: the bufferevent takes the rest and
		 * reports any error through the event callback. */
	}
	bufferevent_write(c->bev, data, len);
	pause_if_full(c, out);
}

struct ref_release {
	void (*fn)(void *arg);
	void *arg;
};

static void ref_cleanup(const void *data, size_t len, void *arg)
{
	struct ref_release *r = arg;
	r->fn(r->arg);
	free(r);
}

void conn_send_reference(struct conn *c, const void *head, size_t head_len, const void *data,
                         size_t len, void (*release)(void *arg), void *arg)
{
	struct ref_release *r = c->bev ? malloc(sizeof(*r)) : NULL;
	if (r == NULL) {
		release(arg);
		return;
	}
	r->fn = release;
	r->arg = arg;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	bufferevent_write(c->bev, head, head_len);
	if (evbuffer_add_reference(out, data, len, ref_cleanup, r) < 0) {
		release(arg);
		free(r);
		conn_close(c, "cannot queue a block");
		return;
	}
	pause_if_full(c, out);
}

int conn_send_file(struct conn *c, const void *head, size_t head_len, int fd, uint64_t offset,
                   uint64_t len)
{
	if (c->bev == NULL)
		return 0;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int sock = bufferevent_getfd(c->bev);
	if (c->srv->cfg.tls == NULL && evbuffer_get_length(out) == 0) {
		/* The fast path: header, then the file straight from the page
		 * cache; what the socket does not take now is queued. */
		ssize_t n = send(sock, head, head_len, MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE);
		if (n > 0) {
			head = (const uint8_t *)head + n;
			head_len -= (size_t)n;
		}
		if (head_len == 0) {
			off_t off = (off_t)offset;
			while (len > 0) {
				ssize_t k = sendfile(sock, fd, &off, len);
				if (k <= 0)
					break;
				len -= (uint64_t)k;
			}
			offset = (uint64_t)off;
		}
	}
	if (head_len > 0)
		bufferevent_write(c->bev, head, head_len);
	if (len > 0) {
		int dupfd = dup(fd);
		struct evbuffer_file_segment *seg =
		    dupfd < 0 ? NULL
		              : evbuffer_file_segment_new(dupfd, (ev_off_t)offset, (ev_off_t)len,
		                                          EVBUF_FS_CLOSE_ON_FREE);
		if (seg == NULL) {
			if (dupfd >= 0)
				close(dupfd);
			return -ENOMEM;
		}
		int r = evbuffer_add_file_segment(out, seg, 0, (ev_off_t)len);
		evbuffer_file_segment_free(seg); /* the buffer holds its own reference */
		if (r < 0)
			return -EIO;
	}
	pause_if_full(c, out);
	return 0;
}

void conn_send_error(struct conn *c, uint64_t id, int err, const char *fmt, ...)
{
	if (c->bev == NULL)
		return;
	char msg[4096]; /* room for a policy's list of FILE:LINE:COL errors */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msg_build_error(&sb, id, err, c->srv->ops->version(c->srv->owner), msg);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static bool path_within(const char *subtree, const char *path, size_t len)
{
	struct token_claims tmp;
	memset(&tmp, 0, sizeof(tmp));
	snprintf(tmp.subtree, sizeof(tmp.subtree), "%s", subtree);
	return token_allows_path(&tmp, path, len);
}

bool conn_may_write_path(const struct conn *c, const char *path, size_t len)
{
	if (c->open_access)
		return true;
	if (c->claims.kind != TOKEN_CLIENT || !c->claims.read_write)
		return false;
	/* Paths may repeat slashes and end in one; the token compares
	 * normalised paths. A "." or ".." component is refused outright. */
	char norm[NODE_PATH_MAX + 1];
	size_t n = 0;
	bool dots = false;
	for (size_t i = 0; i < len && n < NODE_PATH_MAX; i++) {
		if (path[i] == '/' && n > 0 && norm[n - 1] == '/')
			continue;
		norm[n++] = path[i];
	}
	if (n > 1 && norm[n - 1] == '/')
		n--;
	for (size_t i = 0; i < n; i++)
		if (norm[i] == '.' && (i == 0 || norm[i - 1] == '/') &&
		    (i + 1 == n || norm[i + 1] == '/' ||
		     (norm[i + 1] == '.' && (i + 2 == n || norm[i + 2] == '/'))))
			dots = true;
	if (dots)
		return false;
	return path_within(c->claims.subtree, norm, n);
}

bool conn_restricted(const struct conn *c)
{
	return !c->open_access && c->claims.kind == TOKEN_CLIENT &&
	       strcmp(c->claims.subtree, "/") != 0;
}

bool conn_may_read_ino(const struct conn *c, const struct namespace *ns, uint64_t ino)
{
	if (c->open_access || c->claims.kind == TOKEN_SITE)
		return true;
	if (strcmp(c->claims.subtree, "/") == 0)
		return true;
	char path[NODE_PATH_MAX + 1];
	int n = namespace_path(ns, ino, path, sizeof(path));
	if (n < 0)
		return false;
	/* Ancestors of the subtree are visible so a client can walk to it. */
	size_t slen = strlen(c->claims.subtree);
	if ((size_t)n < slen && strncmp(c->claims.subtree, path, (size_t)n) == 0 &&
	    (n == 1 || c->claims.subtree[n] == '/'))
		return true;
	return path_within(c->claims.subtree, path, (size_t)n);
}

static int request_decode(struct conn *c, uint8_t *payload, size_t len, struct request **ret,
                          uint64_t *ret_id, char *err, size_t errlen)
{
	struct request *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		free(payload);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = frame_decode(payload, len, &r->frame, ret_id, err, errlen);
	if (rc < 0) {
		free(payload);
		free(r);
		return rc;
	}
	r->payload = payload;
	r->c = c;
	conn_ref(c);
	r->type = r->frame.type;
	r->id = r->frame.id;
	*ret = r;
	return 0;
}

void request_free(struct request *r)
{
	if (r == NULL)
		return;
	frame_release(&r->frame);
	free(r->payload);
	free(r->reply);
	conn_unref(r->c);
	free(r);
}

static void handle_hello(struct conn *c, const struct frame *f)
{
	struct server *srv = c->srv;
	const char *cluster = srv->cfg.cluster_id ? srv->cfg.cluster_id : "";
	char err[256];
	uint64_t proto = 0;
	if (msg_get_u64(f->body, "proto", true, UINT32_MAX, &proto, err, sizeof(err)) < 0) {
		conn_send_error(c, f->id, -EPROTO, "HELLO: %s", err);
		return;
	}
	if (proto != PROTO_VERSION) {
		conn_send_error(c, f->id, -EPROTO,
		                "protocol version %llu is not supported; this %s speaks %d",
		                (unsigned long long)proto, srv->cfg.role, PROTO_VERSION);
		return;
	}
	const char *cid;
	size_t cidlen;
	int r = msg_get_bytes(f->body, "cluster_id", false, 0, CLUSTER_ID_MAX, &cid, &cidlen, err,
	                      sizeof(err));
	if (r < 0) {
		conn_send_error(c, f->id, -EINVAL, "HELLO: %s", err);
		return;
	}
	/* A cache node that has not yet heard its cluster's id from a mirror
	 * has none to compare. */
	if (r == 0 && cidlen > 0 && cluster[0] != '\0' &&
	    (cidlen != strlen(cluster) || memcmp(cid, cluster, cidlen) != 0)) {
		conn_send_error(c, f->id, -EPERM, "cluster id '%.*s' does not match this %s's '%s'",
		                (int)cidlen, cid, srv->cfg.role, cluster);
		return;
	}
	const char *tok = NULL;
	size_t toklen = 0;
	r = msg_get_bytes(f->body, "token", false, 1, 8192, &tok, &toklen, err, sizeof(err));
	if (r < 0) {
		conn_send_error(c, f->id, -EINVAL, "HELLO: %s", err);
		return;
	}
	if (srv->cfg.secret == NULL) {
		c->open_access = true;
	} else {
		if (tok == NULL) {
			conn_send_error(c, f->id, -EACCES,
			                "a token is required (HELLO without token)");
			return;
		}
		struct token_claims claims;
		if (token_verify(srv->cfg.secret, srv->cfg.secret_len, tok, toklen,
		                 (int64_t)time(NULL), &claims, err, sizeof(err)) < 0) {
			log_info("%s: token refused: %s", c->peer, err);
			conn_send_error(c, f->id, -EACCES, "token refused: %s", err);
			return;
		}
		c->claims = claims;
	}
	c->authed = true;
	c->role = CONN_CLIENT;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	/* A client token's uploads go under a key prefix of its own: the
	 * primary accepts layouts through it only there. */
	bool upload_prefix = !c->open_access && c->claims.kind == TOKEN_CLIENT;
	msg_begin(&sb, &pk, MT_HELLO_OK, f->id, (srv->cfg.site != NULL ? 6 : 5) + upload_prefix);
	msg_pack_key(&pk, "cluster_id");
	msg_pack_cstr(&pk, cluster);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, srv->ops->version(srv->owner));
	msg_pack_key(&pk, "proto");
	msgpack_pack_uint32(&pk, PROTO_VERSION);
	msg_pack_key(&pk, "role");
	msg_pack_cstr(&pk, srv->cfg.role);
	msg_pack_key(&pk, "origin");
	msg_pack_cstr(&pk, srv->cfg.origin != NULL ? srv->cfg.origin : "");
	if (srv->cfg.site != NULL) {
		msg_pack_key(&pk, "site");
		msg_pack_cstr(&pk, srv->cfg.site);
	}
	if (upload_prefix) {
		char prefix[TOKEN_NAME_MAX + 4];
		snprintf(prefix, sizeof(prefix), "u/%s/", c->claims.name);
		msg_pack_key(&pk, "upload_prefix");
		msg_pack_cstr(&pk, prefix);
	}
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* Handles one decoded frame; takes r. */
static void dispatch(struct conn *c, struct request *r)
{
	const struct frame *f = &r->frame;
	if (f->type == MT_HELLO) {
		if (c->authed)
			conn_send_error(c, f->id, -EPROTO, "HELLO was already sent");
		else
			handle_hello(c, f);
		request_free(r);
		return;
	}
	if (!c->authed) {
		conn_send_error(c, f->id, -EPROTO, "%s before HELLO: send HELLO first",
		                proto_msg_name(f->type));
		request_free(r);
		return;
	}
	c->srv->ops->dispatch(c->srv->owner, c, r);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct server *srv = c->srv;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->closing) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	conn_ref(c); /* dispatch may close c */
	for (int n = 0; n < CONN_FRAMES_PER_CALLBACK && c->bev != NULL; n++) {
		uint8_t hdr[FRAME_HEADER_LEN];
		if (evbuffer_copyout(in, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr))
			break;
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		               (uint32_t)hdr[2] << 8 | hdr[3];
		if (len > srv->cfg.max_frame_bytes) {
			char why[128];
			snprintf(why, sizeof(why), "frame of %u bytes exceeds the limit of %llu",
			         len, (unsigned long long)srv->cfg.max_frame_bytes);
			metric_add(srv->cfg.m_frames_rejected, 1);
			conn_send_error(c, 0, -E2BIG, "%s", why);
			conn_close_after_flush(c, why);
			break;
		}
		if (evbuffer_get_length(in) < FRAME_HEADER_LEN + (size_t)len)
			break;
		/* The payload leaves the input buffer into memory of its
		 * own, so a request can be queued without copying again. */
		uint8_t *payload = malloc(len ? len : 1);
		if (payload == NULL) {
			conn_close(c, "out of memory");
			break;
		}
		evbuffer_drain(in, FRAME_HEADER_LEN);
		evbuffer_remove(in, payload, len);
		struct request *r;
		uint64_t id = 0;
		char err[256];
		if (request_decode(c, payload, len, &r, &id, err, sizeof(err)) < 0) {
			metric_add(srv->cfg.m_frames_rejected, 1);
			/* Framing is intact, so the connection can go on. */
			conn_send_error(c, id, -EPROTO, "malformed frame: %s", err);
			continue;
		}
		dispatch(c, r);
	}
	/* More complete frames may be waiting: come back on the next loop
	 * turn rather than starve other connections. */
	if (c->bev != NULL && evbuffer_get_length(in) >= FRAME_HEADER_LEN && !c->reading_paused) {
		uint8_t hdr[FRAME_HEADER_LEN];
		evbuffer_copyout(in, hdr, sizeof(hdr));
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		               (uint32_t)hdr[2] << 8 | hdr[3];
		if (evbuffer_get_length(in) >= FRAME_HEADER_LEN + (size_t)len)
			bufferevent_trigger(bev, EV_READ,
			                    BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
	}
	conn_unref(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->closing) {
		linger_step(c);
		return;
	}
	if (c->reading_paused && conn_output_len(c) <= CONN_OUTPUT_HIGH / 4) {
		c->reading_paused = false;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		bufferevent_enable(bev, EV_READ);
		bufferevent_trigger(bev, EV_READ,
		                    BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
	}
	if (c->role == CONN_SUBSCRIBER && c->srv->ops->writable != NULL)
		c->srv->ops->writable(c->srv->owner, c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if (c->closing) {
		conn_close(c, NULL);
		return;
	}
	char why[256];
	if (what & BEV_EVENT_EOF) {
		snprintf(why, sizeof(why), "peer closed");
		conn_close(c, c->role == CONN_SUBSCRIBER ? why : NULL);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		snprintf(why, sizeof(why), "idle for %llu ms",
		         (unsigned long long)c->srv->cfg.idle_timeout_ms);
		conn_close(c, why);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		int err = EVUTIL_SOCKET_ERROR();
		char tlsbuf[160];
		if (c->srv->cfg.tls != NULL && tls_error(bev, tlsbuf, sizeof(tlsbuf)) != NULL &&
		    tlsbuf[0] != '\0')
			snprintf(why, sizeof(why), "tls: %s", tlsbuf);
		else
			snprintf(why, sizeof(why), "%s", err ? strerror(err) : "connection error");
		conn_close(c, why);
	}
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
	conn_accept(arg, fd);
}

struct server *server_new(struct event_base *base, const struct server_config *cfg,
                          const struct server_ops *ops, void *owner, char **ret_err)
{
	struct server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return NULL;
	srv->base = base;
	srv->cfg = *cfg;
	srv->ops = ops;
	srv->owner = owner;
	TAILQ_INIT(&srv->conns);
	srv->listener =
	    netaddr_listen_shared(base, cfg->listen, cfg->reuse_port, accept_cb, srv, ret_err);
	if (srv->listener == NULL) {
		free(srv);
		return NULL;
	}
	return srv;
}

void server_close_all(struct server *s)
{
	struct conn *c;
	while ((c = TAILQ_FIRST(&s->conns)) != NULL)
		conn_close(c, NULL);
}

void server_free(struct server *s)
{
	if (s == NULL)
		return;
	server_close_all(s);
	netaddr_listener_free(s->listener);
	free(s);
}

void server_stop_listening(struct server *s)
{
	netaddr_listener_free(s->listener);
	s->listener = NULL;
}

uint16_t server_port(const struct server *s)
{
	return s->listener ? netaddr_listener_port(s->listener) : 0;
}

size_t server_connections(const struct server *s)
{
	return s->nconns;
}

bool server_outputs_flushed(const struct server *s)
{
	struct conn *c;
	TAILQ_FOREACH(c, &s->conns, entry)
	if (conn_output_len(c) > 0)
		return false;
	return true;
}

void server_set_limits(struct server *s, uint64_t max_frame_bytes, uint64_t idle_timeout_ms,
                       uint64_t max_connections)
{
	s->cfg.max_frame_bytes = max_frame_bytes;
	s->cfg.idle_timeout_ms = idle_timeout_ms;
	s->cfg.max_connections = max_connections;
}

void conn_set_stream_mode(struct conn *c, size_t low)
{
	c->role = CONN_SUBSCRIBER;
	if (c->bev == NULL)
		return;
	/* Mirrors may stay quiet for long stretches: no idle timeout. */
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	bufferevent_setwatermark(c->bev, EV_WRITE, low, 0);
}
