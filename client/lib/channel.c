/* One blocking connection to one server: connect with a timeout, HELLO, and
 * request/answer round trips under a deadline (poll, not alarms, so that
 * any number of threads can each wait on their own channel). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bigbuf.h"
#include "internal.h"
#include "netaddr.h"
#include "proto.h"
#include "tls.h"

int64_t client_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int remaining_ms(int64_t deadline_ns)
{
	int64_t left = deadline_ns - client_now_ns();
	if (left <= 0)
		return 0;
	return (int)((left + 999999) / 1000000);
}

void request_init(struct request_body *b, uint32_t type)
{
	msgpack_sbuffer_init(&b->sb);
	msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
	b->type = type;
	b->nfields = 0;
}

void request_destroy(struct request_body *b)
{
	msgpack_sbuffer_destroy(&b->sb);
}

void request_key(struct request_body *b, const char *key)
{
	msg_pack_key(&b->pk, key);
	b->nfields++;
}

void request_str(struct request_body *b, const char *key, const char *value)
{
	request_key(b, key);
	msg_pack_cstr(&b->pk, value);
}

void request_u64(struct request_body *b, const char *key, uint64_t value)
{
	request_key(b, key);
	msgpack_pack_uint64(&b->pk, value);
}

/* Large answers (blocks, file data) reuse buffers whose pages are in. */
static uint8_t *payload_alloc(size_t len)
{
	return len >= BIGBUF_MIN ? bigbuf_get(len) : malloc(len);
}

static void payload_free(uint8_t *p, size_t len)
{
	if (len >= BIGBUF_MIN)
		bigbuf_put(p);
	else
		free(p);
}

void reply_release(struct reply *r)
{
	if (r->decoded)
		frame_release(&r->frame);
	payload_free(r->payload, r->payload_len);
	memset(r, 0, sizeof(*r));
}

static int connect_with_timeout(const char *address, uint64_t timeout_ms, int *ret_fd,
                                mp_error *err)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *why = NULL;
	int r = netaddr_resolve(address, &ss, &sslen, &why);
	if (r < 0) {
		mperr(err, -EINVAL, "%s: %s", address, why ? why : "cannot resolve");
		free(why);
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return mperr(err, -errno, "%s: socket: %s", address, strerror(errno));
	if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS) {
		r = -errno;
		close(fd);
		return mperr(err, r, "%s: connect: %s", address, strerror(-r));
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int64_t deadline = client_now_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		int n = poll(&p, 1, remaining_ms(deadline));
		if (n > 0)
			break;
		if (n == 0) {
			close(fd);
			return mperr(err, -ETIMEDOUT, "%s: no connection within %llu ms", address,
			             (unsigned long long)timeout_ms);
		}
		if (errno != EINTR) {
			r = -errno;
			close(fd);
			return mperr(err, r, "%s: poll: %s", address, strerror(-r));
		}
	}
	int soerr = 0;
	socklen_t len = sizeof(soerr);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
	if (soerr != 0) {
		close(fd);
		return mperr(err, -soerr, "%s: connect: %s", address, strerror(soerr));
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*ret_fd = fd;
	return 0;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pf = {.fd = fd, .events = events};
	for (;;) {
		int n = poll(&pf, 1, remaining_ms(deadline));
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* OpenSSL writes with write(2), which raises SIGPIPE on a closed socket; a
 * library must not change the process's signal handling, so SIGPIPE is
 * blocked on this thread around the write and a pending one consumed. */
struct sigpipe_guard {
	sigset_t old;
	bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t set, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	sigset_t set, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigpending(&pending);
	if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		sigtimedwait(&set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* OpenSSL's reason for a failed TLS call, with the certificate check's. */
static const char *tls_reason(struct channel *ch, char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	long v = ch->ssl ? SSL_get_verify_result(ch->ssl) : X509_V_OK;
	if (v != X509_V_OK)
		snprintf(buf, len, "certificate verify failed (%s)",
		         X509_verify_cert_error_string(v));
	else if (e != 0)
		snprintf(buf, len, "%s",
		         ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "TLS error");
	else
		snprintf(buf, len, "the connection was closed");
	ERR_clear_error();
	return buf;
}

/* One TLS read or write step: >0 bytes, or 0 after waiting for the socket,
 * or a negative errno. */
static int tls_step(struct channel *ch, int n, int64_t deadline, const char *what, mp_error *err)
{
	if (n > 0)
		return n;
	int e = SSL_get_error(ch->ssl, n);
	int r;
	char why[200];
	switch (e) {
	case SSL_ERROR_WANT_READ:
		r = wait_fd(ch->fd, POLLIN, deadline);
		break;
	case SSL_ERROR_WANT_WRITE:
		r = wait_fd(ch->fd, POLLOUT, deadline);
		break;
	case SSL_ERROR_ZERO_RETURN:
		return mperr(err, -ECONNRESET, "%s: the server closed the connection", ch->address);
	case SSL_ERROR_SYSCALL:
		if (errno != 0 && errno != EINTR) {
			int se = errno;
			ERR_clear_error();
			return mperr(err, -se, "%s: %s: %s", ch->address, what, strerror(se));
		}
		if (errno == EINTR)
			return 0;
		return mperr(err, -ECONNRESET, "%s: the server closed the connection", ch->address);
	default:
		return mperr(err, -EPROTO, "%s: TLS %s: %s", ch->address, what,
		             tls_reason(ch, why, sizeof(why)));
	}
	if (r == -ETIMEDOUT)
		return mperr(err, r, "%s: no answer in time", ch->address);
	if (r < 0)
		return mperr(err, r, "%s: poll: %s", ch->address, strerror(-r));
	return 0;
}

static int send_all(struct channel *ch, const void *data, size_t len, int64_t deadline,
                    mp_error *err)
{
	const uint8_t *p = data;
	while (len > 0) {
		if (ch->ssl != NULL) {
			struct sigpipe_guard g;
			sigpipe_block(&g);
			errno = 0;
			int n = SSL_write(ch->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
			sigpipe_restore(&g);
			int r = tls_step(ch, n, deadline, "send", err);
			if (r < 0)
				return r;
			p += r;
			len -= (size_t)r;
			continue;
		}
		ssize_t n = send(ch->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(ch->fd, POLLOUT, deadline) == -ETIMEDOUT)
				return mperr(err, -ETIMEDOUT, "%s: send timed out", ch->address);
			continue;
		}
		int e = n < 0 ? errno : EPIPE;
		return mperr(err, -e, "%s: send: %s", ch->address, strerror(e));
	}
	return 0;
}

static int recv_all(struct channel *ch, void *data, size_t len, int64_t deadline, mp_error *err)
{
	uint8_t *p = data;
	while (len > 0) {
		if (ch->ssl != NULL) {
			errno = 0;
			int n = SSL_read(ch->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
			int r = tls_step(ch, n, deadline, "recv", err);
			if (r < 0)
				return r;
			p += r;
			len -= (size_t)r;
			continue;
		}
		ssize_t n = recv(ch->fd, p, len, 0);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0)
			return mperr(err, -ECONNRESET, "%s: the server closed the connection",
			             ch->address);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			int e = errno;
			return mperr(err, -e, "%s: recv: %s", ch->address, strerror(e));
		}
		int w = wait_fd(ch->fd, POLLIN, deadline);
		if (w == -ETIMEDOUT)
			return mperr(err, -ETIMEDOUT, "%s: no answer in time", ch->address);
		if (w < 0)
			return mperr(err, w, "%s: poll: %s", ch->address, strerror(-w));
	}
	return 0;
}

/* The TLS handshake on a connected socket, under the deadline. */
static int tls_handshake(struct channel *ch, const struct channel_tls *tls, int64_t deadline,
                         mp_error *err)
{
	char host[NETADDR_HOST_MAX];
	uint16_t port;
	const char *name = tls->server_name;
	if (name == NULL) {
		if (netaddr_split(ch->address, host, sizeof(host), &port) < 0)
			return mperr(err, -EINVAL, "%s: want HOST:PORT", ch->address);
		name = host;
	}
	ch->ssl = tls_client_ssl(tls->ctx, name);
	if (ch->ssl == NULL || SSL_set_fd(ch->ssl, ch->fd) != 1)
		return mperr(err, -ENOMEM, "%s: TLS: cannot set up a connection", ch->address);
	for (;;) {
		struct sigpipe_guard g;
		sigpipe_block(&g);
		errno = 0;
		int n = SSL_connect(ch->ssl);
		sigpipe_restore(&g);
		if (n == 1)
			return 0;
		int r = tls_step(ch, n, deadline, "handshake", err);
		if (r < 0) {
			if (r == -ECONNRESET)
				mperr(err, r,
				      "%s: TLS handshake: the server closed the connection (does "
				      "it speak TLS?)",
				      ch->address);
			return r;
		}
	}
}

/* Reads frames until the one answering id. */
static int read_answer(struct channel *ch, uint64_t id, int64_t deadline, struct reply *ret,
                       mp_error *err)
{
	for (;;) {
		uint8_t hdr[4];
		int r = recv_all(ch, hdr, 4, deadline, err);
		if (r < 0)
			return r;
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		               (uint32_t)hdr[2] << 8 | hdr[3];
		if (len == 0 || len > CLIENT_FRAME_MAX)
			return mperr(err, -EPROTO, "%s: a frame of %u bytes", ch->address, len);
		struct reply rep = {0};
		rep.payload = payload_alloc(len);
		rep.payload_len = len;
		if (rep.payload == NULL)
			return mperr(err, -ENOMEM, "out of memory");
		r = recv_all(ch, rep.payload, len, deadline, err);
		if (r < 0) {
			payload_free(rep.payload, len);
			return r;
		}
		char why[200];
		uint64_t got_id = 0;
		if (frame_decode(rep.payload, len, &rep.frame, &got_id, why, sizeof(why)) < 0) {
			payload_free(rep.payload, len);
			return mperr(err, -EPROTO, "%s: a malformed answer: %s", ch->address, why);
		}
		rep.decoded = true;
		if (rep.frame.id != id) {
			reply_release(&rep); /* an answer to something we gave up on */
			continue;
		}
		msg_get_u64(rep.frame.body, "version", false, UINT64_MAX, &rep.version, why,
		            sizeof(why));
		if (rep.frame.type == MT_ERROR) {
			int64_t e = EIO;
			const char *m = "";
			size_t mlen = 0;
			msg_get_i64(rep.frame.body, "errno", false, &e, why, sizeof(why));
			msg_get_bytes(rep.frame.body, "message", false, 0, 4096, &m, &mlen, why,
			              sizeof(why));
			if (e <= 0 || e > 4095)
				e = EIO;
			rep.is_error = true;
			rep.error_code = -(int)e;
			rep.error_msg = m;
			rep.error_msg_len = mlen;
		} else if (rep.frame.type != MT_REPLY && rep.frame.type != MT_HELLO_OK) {
			uint32_t t = rep.frame.type;
			reply_release(&rep);
			return mperr(err, -EPROTO, "%s: an answer of unexpected type %u",
			             ch->address, t);
		}
		*ret = rep;
		return 0;
	}
}

static int send_frame(struct channel *ch, const struct request_body *b,
                      const struct read_fields *rf, uint64_t id, int64_t deadline, mp_error *err)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	uint32_t extra = 0;
	if (rf != NULL) {
		extra += rf->min_version != 0;
		extra += rf->send_deadline;
		extra += rf->max_staleness_ms != 0;
	}
	msg_begin(&sb, &pk, b->type, id, b->nfields + extra);
	msg_pack_raw(&pk, b->sb.data, b->sb.size);
	if (rf != NULL && rf->min_version != 0) {
		msg_pack_key(&pk, "min_version");
		msgpack_pack_uint64(&pk, rf->min_version);
	}
	if (rf != NULL && rf->send_deadline) {
		msg_pack_key(&pk, "deadline_ms");
		msgpack_pack_uint64(&pk, rf->deadline_ms);
	}
	if (rf != NULL && rf->max_staleness_ms != 0) {
		msg_pack_key(&pk, "max_staleness_ms");
		msgpack_pack_uint64(&pk, rf->max_staleness_ms);
	}
	msg_end(&sb);
	int r = send_all(ch, sb.data, sb.size, deadline, err);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

int channel_call(struct channel *ch, const struct request_body *b, const struct read_fields *rf,
                 uint64_t timeout_ms, struct reply *ret, bool *ret_sent, mp_error *err)
{
	int64_t deadline = client_now_ns() + (int64_t)timeout_ms * 1000000;
	uint64_t id = ch->next_id++;
	*ret_sent = false;
	int r = send_frame(ch, b, rf, id, deadline, err);
	if (r < 0) {
		/* A partial send may still have reached the server. */
		*ret_sent = r == -ETIMEDOUT;
		return r;
	}
	*ret_sent = true;
	r = read_answer(ch, id, deadline, ret, err);
	ch->last_used_ns = client_now_ns();
	return r;
}

int channel_send(struct channel *ch, const struct request_body *b, const struct read_fields *rf,
                 uint64_t timeout_ms, uint64_t *ret_id, mp_error *err)
{
	uint64_t id = ch->next_id++;
	int r = send_frame(ch, b, rf, id, client_now_ns() + (int64_t)timeout_ms * 1000000, err);
	if (r == 0)
		*ret_id = id;
	return r;
}

int channel_receive(struct channel *ch, uint64_t id, int64_t deadline_ns, struct reply *ret,
                    mp_error *err)
{
	int r = read_answer(ch, id, deadline_ns, ret, err);
	ch->last_used_ns = client_now_ns();
	return r;
}

bool channel_readable(struct channel *ch, int timeout_ms)
{
	if (ch->ssl != NULL && SSL_pending(ch->ssl) > 0)
		return true;
	struct pollfd p = {.fd = ch->fd, .events = POLLIN};
	int n = poll(&p, 1, timeout_ms);
	return n > 0;
}

static void copy_field(const msgpack_object *body, const char *key, char *out, size_t outlen)
{
	const char *p;
	size_t len;
	char why[100];
	out[0] = '\0';
	if (msg_get_bytes(body, key, false, 0, outlen - 1, &p, &len, why, sizeof(why)) == 0) {
		memcpy(out, p, len);
		out[len] = '\0';
	}
}

int channel_open(const char *address, const struct channel_tls *tls, const char *token,
                 const char *cluster_id, uint64_t connect_timeout_ms, uint64_t timeout_ms,
                 struct channel **ret, mp_error *err)
{
	int fd = -1;
	int r = connect_with_timeout(address, connect_timeout_ms, &fd, err);
	if (r < 0)
		return r;
	struct channel *ch = calloc(1, sizeof(*ch));
	if (ch == NULL) {
		close(fd);
		return mperr(err, -ENOMEM, "out of memory");
	}
	ch->fd = fd;
	ch->next_id = 1;
	snprintf(ch->address, sizeof(ch->address), "%s", address);
	if (tls != NULL && tls->ctx != NULL) {
		r = tls_handshake(ch, tls,
		                  client_now_ns() + (int64_t)connect_timeout_ms * 1000000 +
		                      (int64_t)timeout_ms * 1000000,
		                  err);
		if (r < 0) {
			channel_close(ch);
			return r;
		}
	}

	struct request_body b;
	request_init(&b, MT_HELLO);
	request_u64(&b, "proto", PROTO_VERSION);
	if (token != NULL && token[0] != '\0')
		request_str(&b, "token", token);
	if (cluster_id != NULL && cluster_id[0] != '\0')
		request_str(&b, "cluster_id", cluster_id);
	struct reply rep;
	bool sent;
	r = channel_call(ch, &b, NULL, timeout_ms, &rep, &sent, err);
	request_destroy(&b);
	if (r < 0) {
		channel_close(ch);
		return r;
	}
	if (rep.is_error) {
		r = mperr(err, rep.error_code, "%s refused the connection: %.*s", address,
		          (int)rep.error_msg_len, rep.error_msg);
		reply_release(&rep);
		channel_close(ch);
		return r;
	}
	char role[16];
	copy_field(rep.frame.body, "role", role, sizeof(role));
	copy_field(rep.frame.body, "cluster_id", ch->cluster_id, sizeof(ch->cluster_id));
	copy_field(rep.frame.body, "origin", ch->origin, sizeof(ch->origin));
	copy_field(rep.frame.body, "site", ch->site, sizeof(ch->site));
	copy_field(rep.frame.body, "upload_prefix", ch->upload_prefix, sizeof(ch->upload_prefix));
	ch->hello_version = rep.version;
	ch->is_mirror = strcmp(role, "mirror") == 0;
	reply_release(&rep);
	*ret = ch;
	return 0;
}

void channel_close(struct channel *ch)
{
	if (ch == NULL)
		return;
	SSL_free(ch->ssl); /* no close_notify: it could block on a dead peer */
	close(ch->fd);
	free(ch);
}

bool channel_alive(struct channel *ch)
{
	if (ch->ssl != NULL && SSL_pending(ch->ssl) > 0)
		return false;
	struct pollfd p = {.fd = ch->fd, .events = POLLIN | POLLRDHUP};
	int n = poll(&p, 1, 0);
	/* Nothing is ever due on an idle channel: anything readable is EOF,
	 * an error, or a goodbye. */
	return n == 0;
}

int channel_fd(const struct channel *ch)
{
	return ch->fd;
}
