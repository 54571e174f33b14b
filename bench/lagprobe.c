/* lagprobe: replication visibility lag of mp-mirror.
 *
 * Writers connect to mp-primary and CREATE files (the loadgen workload: a
 * 100-byte layout per file); each writer has its own reader connection to
 * the mirror. As soon as a write's REPLY (carrying its version V) is read,
 * that writer's reader asks the mirror for the new file:
 *
 *   parked  RESOLVE {path, min_version: V, deadline_ms} — the mirror holds
 *           the read until it has applied V, then answers; reads are
 *           pipelined (a reader may have many in flight);
 *   poll    RESOLVE {path} again and again until it is found (one in flight
 *           per reader, the writes of a writer queued in order), the way a
 *           client without min_version would see the write.
 *
 * lag = the time the read's answer is read minus the time the write's reply
 * was read, both taken right after recv() returned, on CLOCK_MONOTONIC.
 *
 * Two phases: "steady" (one writer, one write in flight, sent at a steady
 * RATE on a timer: write k goes at start + k/RATE, or at once when the
 * reply of write k-1 came later than that), then "burst" (WRITERS writers,
 * one write in flight each, as fast as they go). A sample belongs to the
 * phase in which its write was sent. Prints one JSON object.
 *
 * Plain non-blocking sockets and ppoll(): one thread, no library between
 * the socket and the timestamps. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"
#include "msg.h"
#include "netaddr.h"
#include "proto.h"

#define MAX_WRITERS          256
#define MAX_ERROR_KINDS      8
#define LAYOUT_KEY_LEN       49 /* the encoded layout is 100 bytes, as in loadgen */
#define LAYOUT_ETAG_LEN      32
#define LAYOUT_EXTENT_LENGTH 4194304u
#define SETUP_TIMEOUT_MS     15000
#define RECV_CHUNK           (256u << 10)

enum mode { MODE_PARKED, MODE_POLL };
enum phase { PH_STEADY, PH_BURST, PH_DRAIN };

struct wire {
	int fd;
	char what[32];
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out;
	size_t out_off, out_len, out_cap;
	int64_t rx_ns; /* when the bytes being parsed were read */
	bool eof;
};

/* A write whose visibility at the mirror is being measured. */
struct probe {
	uint64_t read_id; /* parked: the RESOLVE's id; 0 once answered */
	uint64_t version;
	uint64_t ino;
	uint64_t file;
	int64_t reply_ns;
	enum phase phase;
};

struct reader {
	struct wire w;
	uint64_t next_id;
	struct probe *q; /* ring, in write order */
	size_t head, count, cap;
	uint64_t poll_id; /* poll: the RESOLVE in flight, 0 = none */
};

struct writer {
	struct wire w;
	unsigned index;
	uint64_t next_id;
	uint64_t next_file;
	uint64_t inflight_id; /* 0 = none */
	uint64_t inflight_file;
	int64_t sent_ns;
	enum phase sent_phase;
	struct reader *r;
};

struct phase_stats {
	const char *name;
	unsigned writers;
	int64_t start_ns, end_ns;
	uint64_t writes;
	uint64_t late; /* steady: writes sent more than one interval after their slot */
	uint64_t polls;
	struct samples write_lat, lag;
};

struct error_kind {
	char message[256];
	uint64_t count;
};

struct probe_run {
	const char *primary, *mirror, *run, *token;
	enum mode mode;
	double rate;
	double steady_s, burst_s;
	unsigned nwriters;
	uint64_t deadline_ms;

	struct writer *writers;
	struct reader *readers;
	struct phase_stats ph[2];
	uint64_t errors, other_errors;
	struct error_kind kinds[MAX_ERROR_KINDS];
	unsigned nkinds;
	uint8_t layout[128];
	size_t layout_len;
	msgpack_sbuffer sb;
};

static volatile sig_atomic_t interrupted;

static void note_error(struct probe_run *pr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_error(struct probe_run *pr, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pr->errors++;
	for (unsigned i = 0; i < pr->nkinds; i++) {
		if (strcmp(pr->kinds[i].message, msg) == 0) {
			pr->kinds[i].count++;
			return;
		}
	}
	if (pr->nkinds == MAX_ERROR_KINDS) {
		pr->other_errors++;
		return;
	}
	snprintf(pr->kinds[pr->nkinds].message, sizeof(pr->kinds[0].message), "%s", msg);
	pr->kinds[pr->nkinds++].count = 1;
}

/* ---- connections ---- */

static void wire_connect(struct wire *w, const char *addr, const char *what)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *err = NULL;
	snprintf(w->what, sizeof(w->what), "%s", what);
	if (netaddr_resolve(addr, &ss, &sslen, &err) < 0)
		bench_die("%s: '%s': %s", what, addr, err ? err : "invalid address");
	w->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (w->fd < 0 || connect(w->fd, (struct sockaddr *)&ss, sslen) < 0)
		bench_die("%s: cannot connect to %s: %s", what, addr, strerror(errno));
	int one = 1;
	setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
}

static void wire_flush(struct wire *w)
{
	while (w->out_len > w->out_off) {
		ssize_t n = send(w->fd, w->out + w->out_off, w->out_len - w->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			bench_die("%s: send: %s", w->what, strerror(errno));
		}
		w->out_off += (size_t)n;
	}
	w->out_off = w->out_len = 0;
}

static void wire_send(struct wire *w, const msgpack_sbuffer *sb)
{
	if (w->out_len + sb->size > w->out_cap) {
		w->out_cap = (w->out_len + sb->size) * 2;
		w->out = bench_xrealloc(w->out, w->out_cap);
	}
	memcpy(w->out + w->out_len, sb->data, sb->size);
	w->out_len += sb->size;
	wire_flush(w);
}

/* Reads what the socket holds. Returns bytes read, 0 when nothing was
 * there; sets eof when the peer closed. */
static size_t wire_recv(struct wire *w)
{
	size_t total = 0;
	for (;;) {
		if (w->in_cap - w->in_len < 65536) {
			w->in_cap = w->in_cap ? w->in_cap * 2 : RECV_CHUNK;
			w->in = bench_xrealloc(w->in, w->in_cap);
		}
		ssize_t n = recv(w->fd, w->in + w->in_len, w->in_cap - w->in_len, 0);
		if (n > 0) {
			w->rx_ns = bench_mono_ns();
			w->in_len += (size_t)n;
			total += (size_t)n;
			if (w->in_cap - w->in_len > 0)
				return total;
			continue;
		}
		if (n == 0) {
			w->eof = true;
			return total;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return total;
		bench_die("%s: recv: %s", w->what, strerror(errno));
	}
}

/* The next whole frame in the input, decoded; *consumed is its length.
 * Returns 1 with a frame, 0 when none is complete. */
static int wire_frame(struct wire *w, size_t off, struct frame *f, size_t *consumed)
{
	if (w->in_len - off < FRAME_HEADER_LEN)
		return 0;
	const uint8_t *h = w->in + off;
	uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (len > FRAME_DEFAULT_MAX)
		bench_die("%s: frame of %u bytes", w->what, len);
	if (w->in_len - off < FRAME_HEADER_LEN + (size_t)len)
		return 0;
	char err[256];
	if (frame_decode(h + FRAME_HEADER_LEN, len, f, NULL, err, sizeof(err)) < 0)
		bench_die("%s: malformed frame: %s", w->what, err);
	*consumed = FRAME_HEADER_LEN + (size_t)len;
	return 1;
}

static void wire_consume(struct wire *w, size_t n)
{
	memmove(w->in, w->in + n, w->in_len - n);
	w->in_len -= n;
}

/* Set-up only: waits for the next frame (the caller sent one request).
 * The frame points into w->in: release it with frame_done(w, f, used). */
static size_t wire_wait_frame(struct wire *w, struct frame *f)
{
	int64_t deadline = bench_mono_ns() + (int64_t)SETUP_TIMEOUT_MS * 1000000;
	size_t used;
	while (!wire_frame(w, 0, f, &used)) {
		if (w->eof)
			bench_die("%s: the server closed the connection", w->what);
		int left = (int)((deadline - bench_mono_ns()) / 1000000);
		if (left <= 0)
			bench_die("%s: no answer within %d ms", w->what, SETUP_TIMEOUT_MS);
		struct pollfd p = {w->fd, POLLIN | (w->out_len ? POLLOUT : 0), 0};
		if (poll(&p, 1, left) < 0 && errno != EINTR)
			bench_die("poll: %s", strerror(errno));
		if (interrupted)
			bench_die("interrupted during set-up");
		wire_flush(w);
		wire_recv(w);
	}
	return used;
}

static void frame_done(struct wire *w, struct frame *f, size_t used)
{
	frame_release(f);
	wire_consume(w, used);
}

static const char *error_text(const struct frame *f, char *buf, size_t len)
{
	const char *code = "?", *msg = "(no message)";
	size_t codelen = 1, msglen = strlen(msg);
	char err[64];
	if (msg_get_bytes(f->body, "code", false, 1, 64, &code, &codelen, err, sizeof(err)) != 0) {
		code = "?";
		codelen = 1;
	}
	if (msg_get_bytes(f->body, "message", false, 0, 4096, &msg, &msglen, err, sizeof(err)) !=
	    0) {
		msg = "(no message)";
		msglen = strlen(msg);
	}
	snprintf(buf, len, "%.*s: %.*s", (int)codelen, code, (int)msglen, msg);
	return buf;
}

static bool is_error(const struct frame *f, const char *code)
{
	const char *c;
	size_t n;
	char err[64];
	return f->type == MT_ERROR &&
	       msg_get_bytes(f->body, "code", false, 1, 64, &c, &n, err, sizeof(err)) == 0 &&
	       n == strlen(code) && memcmp(c, code, n) == 0;
}

/* A REPLY carrying a version and a node; returns 0 and their values. */
static int reply_node(const struct frame *f, uint64_t *ret_version, uint64_t *ret_ino, char *err,
                      size_t errlen)
{
	if (f->type != MT_REPLY) {
		if (f->type == MT_ERROR) {
			char buf[300];
			snprintf(err, errlen, "%s", error_text(f, buf, sizeof(buf)));
		} else {
			snprintf(err, errlen, "unexpected %s", proto_msg_name(f->type));
		}
		return -EINVAL;
	}
	if (msg_get_u64(f->body, "version", true, UINT64_MAX, ret_version, err, errlen) < 0)
		return -EINVAL;
	const msgpack_object *node = msg_field(f->body, "node");
	struct node_rec rec;
	if (node == NULL) {
		snprintf(err, errlen, "REPLY without 'node'");
		return -EINVAL;
	}
	if (msg_parse_node(node, &rec, err, errlen) < 0)
		return -EINVAL;
	*ret_ino = rec.ino;
	return 0;
}

/* ---- requests ---- */

/* [[bucket, key, etag, offset, length]] in 100 bytes, as loadgen sends. */
static void build_layout(struct probe_run *pr)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	char key[LAYOUT_KEY_LEN + 1], etag[LAYOUT_ETAG_LEN + 1];
	snprintf(key, sizeof(key), "objects/%016" PRIx64 "%016" PRIx64 "/%08x",
	         (uint64_t)0x0123456789abcdefULL, (uint64_t)getpid(), 42u);
	snprintf(etag, sizeof(etag), "%032x", 0x5eed);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_array(&pk, 5);
	msg_pack_cstr(&pk, "origin");
	msg_pack_strn(&pk, key, LAYOUT_KEY_LEN);
	msg_pack_strn(&pk, etag, LAYOUT_ETAG_LEN);
	msgpack_pack_uint64(&pk, 0);
	msgpack_pack_uint64(&pk, LAYOUT_EXTENT_LENGTH);
	if (sb.size > sizeof(pr->layout))
		bench_die("layout of %zu bytes", sb.size);
	memcpy(pr->layout, sb.data, sb.size);
	pr->layout_len = sb.size;
	msgpack_sbuffer_destroy(&sb);
}

static int dir_path(const struct probe_run *pr, unsigned writer, char *buf, size_t len)
{
	return snprintf(buf, len, "/lag-%s/w%u", pr->run, writer);
}

static int file_path(const struct probe_run *pr, unsigned writer, uint64_t file, char *buf,
                     size_t len)
{
	return snprintf(buf, len, "/lag-%s/w%u/f%" PRIu64, pr->run, writer, file);
}

static void send_hello(struct probe_run *pr, struct wire *w, uint64_t id)
{
	msgpack_packer pk;
	msg_begin(&pr->sb, &pk, MT_HELLO, id, pr->token ? 2 : 1);
	msg_pack_key(&pk, "proto");
	msgpack_pack_uint32(&pk, PROTO_VERSION);
	if (pr->token) {
		msg_pack_key(&pk, "token");
		msg_pack_cstr(&pk, pr->token);
	}
	msg_end(&pr->sb);
	wire_send(w, &pr->sb);
}

static void send_resolve(struct probe_run *pr, struct wire *w, uint64_t id, const char *path,
                         uint64_t min_version, uint64_t deadline_ms)
{
	msgpack_packer pk;
	msg_begin(&pr->sb, &pk, MT_RESOLVE, id, min_version ? 3 : 1);
	msg_pack_key(&pk, "path");
	msg_pack_cstr(&pk, path);
	if (min_version) {
		msg_pack_key(&pk, "min_version");
		msgpack_pack_uint64(&pk, min_version);
		msg_pack_key(&pk, "deadline_ms");
		msgpack_pack_uint64(&pk, deadline_ms);
	}
	msg_end(&pr->sb);
	wire_send(w, &pr->sb);
}

static void send_create(struct probe_run *pr, struct writer *wr, enum phase ph)
{
	char path[NODE_PATH_MAX];
	file_path(pr, wr->index, wr->next_file, path, sizeof(path));
	msgpack_packer pk;
	wr->inflight_id = ++wr->next_id;
	wr->inflight_file = wr->next_file++;
	wr->sent_phase = ph;
	msg_begin(&pr->sb, &pk, MT_CREATE, wr->inflight_id, 3);
	msg_pack_key(&pk, "path");
	msg_pack_cstr(&pk, path);
	msg_pack_key(&pk, "size");
	msgpack_pack_uint64(&pk, LAYOUT_EXTENT_LENGTH);
	msg_pack_key(&pk, "layout");
	msg_pack_binn(&pk, pr->layout, pr->layout_len);
	msg_end(&pr->sb);
	wr->sent_ns = bench_mono_ns();
	wire_send(&wr->w, &pr->sb);
}

/* ---- the probes of a reader ---- */

static struct probe *queue_push(struct reader *r)
{
	if (r->count == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct probe *q = bench_xrealloc(NULL, cap * sizeof(*q));
		for (size_t i = 0; i < r->count; i++)
			q[i] = r->q[(r->head + i) % r->cap];
		free(r->q);
		r->q = q;
		r->head = 0;
		r->cap = cap;
	}
	struct probe *p = &r->q[(r->head + r->count) % r->cap];
	r->count++;
	memset(p, 0, sizeof(*p));
	return p;
}

static struct probe *queue_at(struct reader *r, size_t i)
{
	return &r->q[(r->head + i) % r->cap];
}

static void queue_pop(struct reader *r)
{
	r->head = (r->head + 1) % r->cap;
	r->count--;
}

static void send_poll(struct probe_run *pr, struct reader *r, unsigned writer)
{
	if (r->poll_id != 0 || r->count == 0)
		return;
	struct probe *p = queue_at(r, 0);
	char path[NODE_PATH_MAX];
	file_path(pr, writer, p->file, path, sizeof(path));
	r->poll_id = ++r->next_id;
	pr->ph[p->phase].polls++;
	send_resolve(pr, &r->w, r->poll_id, path, 0, 0);
}

static void record_lag(struct probe_run *pr, struct reader *r, struct probe *p, uint64_t ino)
{
	if (ino != p->ino) {
		note_error(pr,
		           "mirror: the file of version %" PRIu64 " resolves to inode %" PRIu64
		           ", the primary made %" PRIu64,
		           p->version, ino, p->ino);
		return;
	}
	samples_add(&pr->ph[p->phase].lag, r->w.rx_ns - p->reply_ns);
}

static void reader_frame(struct probe_run *pr, struct reader *r, unsigned writer,
                         const struct frame *f)
{
	char err[300];
	uint64_t version, ino;
	if (pr->mode == MODE_POLL) {
		if (f->id != r->poll_id || r->count == 0)
			bench_die("reader %u: %s with id %" PRIu64 " matches no request", writer,
			          proto_msg_name(f->type), f->id);
		r->poll_id = 0;
		struct probe *p = queue_at(r, 0);
		if (is_error(f, "ENOENT")) {
			send_poll(pr, r, writer); /* not there yet: ask again */
			return;
		}
		if (reply_node(f, &version, &ino, err, sizeof(err)) < 0)
			note_error(pr, "mirror RESOLVE: %s", err);
		else
			record_lag(pr, r, p, ino);
		queue_pop(r);
		send_poll(pr, r, writer);
		return;
	}
	struct probe *p = NULL;
	for (size_t i = 0; i < r->count; i++) {
		struct probe *q = queue_at(r, i);
		if (q->read_id == f->id && f->id != 0) {
			p = q;
			break;
		}
	}
	if (p == NULL)
		bench_die("reader %u: %s with id %" PRIu64 " matches no request", writer,
		          proto_msg_name(f->type), f->id);
	p->read_id = 0;
	if (reply_node(f, &version, &ino, err, sizeof(err)) < 0)
		note_error(pr, "mirror RESOLVE with min_version: %s", err);
	else if (version < p->version)
		note_error(pr, "mirror answered at version %" PRIu64 ", below min_version %" PRIu64,
		           version, p->version);
	else
		record_lag(pr, r, p, ino);
	while (r->count > 0 && queue_at(r, 0)->read_id == 0)
		queue_pop(r);
}

static void writer_frame(struct probe_run *pr, struct writer *wr, const struct frame *f)
{
	char err[300];
	uint64_t version, ino;
	if (f->id != wr->inflight_id || f->id == 0)
		bench_die("writer %u: %s with id %" PRIu64 " matches no request", wr->index,
		          proto_msg_name(f->type), f->id);
	wr->inflight_id = 0;
	struct phase_stats *ps = &pr->ph[wr->sent_phase];
	if (reply_node(f, &version, &ino, err, sizeof(err)) < 0) {
		note_error(pr, "primary CREATE: %s", err);
		return;
	}
	ps->writes++;
	samples_add(&ps->write_lat, wr->w.rx_ns - wr->sent_ns);
	struct reader *r = wr->r;
	struct probe *p = queue_push(r);
	p->version = version;
	p->ino = ino;
	p->file = wr->inflight_file;
	p->reply_ns = wr->w.rx_ns;
	p->phase = wr->sent_phase;
	if (pr->mode == MODE_PARKED) {
		char path[NODE_PATH_MAX];
		file_path(pr, wr->index, p->file, path, sizeof(path));
		p->read_id = ++r->next_id;
		send_resolve(pr, &r->w, p->read_id, path, version, pr->deadline_ms);
	} else {
		send_poll(pr, r, wr->index);
	}
}

/* ---- set-up ---- */

static void setup(struct probe_run *pr)
{
	struct frame f;
	char err[300], what[32];
	uint64_t version, ino;
	size_t used;
	for (unsigned i = 0; i < pr->nwriters; i++) {
		struct writer *wr = &pr->writers[i];
		struct reader *r = &pr->readers[i];
		wr->index = i;
		wr->r = r;
		snprintf(what, sizeof(what), "writer %u", i);
		wire_connect(&wr->w, pr->primary, what);
		snprintf(what, sizeof(what), "reader %u", i);
		wire_connect(&r->w, pr->mirror, what);
		send_hello(pr, &wr->w, ++wr->next_id);
		send_hello(pr, &r->w, ++r->next_id);
	}
	for (unsigned i = 0; i < pr->nwriters; i++) {
		struct writer *wr = &pr->writers[i];
		struct reader *r = &pr->readers[i];
		used = wire_wait_frame(&wr->w, &f);
		if (f.type != MT_HELLO_OK)
			bench_die("primary: HELLO answered with %s %s", proto_msg_name(f.type),
			          f.type == MT_ERROR ? error_text(&f, err, sizeof(err)) : "");
		frame_done(&wr->w, &f, used);
		used = wire_wait_frame(&r->w, &f);
		if (f.type != MT_HELLO_OK)
			bench_die("mirror: HELLO answered with %s %s", proto_msg_name(f.type),
			          f.type == MT_ERROR ? error_text(&f, err, sizeof(err)) : "");
		frame_done(&r->w, &f, used);

		char path[NODE_PATH_MAX];
		dir_path(pr, i, path, sizeof(path));
		msgpack_packer pk;
		msg_begin(&pr->sb, &pk, MT_MKDIR, ++wr->next_id, 2);
		msg_pack_key(&pk, "path");
		msg_pack_cstr(&pk, path);
		msg_pack_key(&pk, "parents");
		msgpack_pack_true(&pk);
		msg_end(&pr->sb);
		wire_send(&wr->w, &pr->sb);
		used = wire_wait_frame(&wr->w, &f);
		if (reply_node(&f, &version, &ino, err, sizeof(err)) < 0)
			bench_die("primary: MKDIR %s: %s", path, err);
		frame_done(&wr->w, &f, used);
		/* The mirror follows the primary before anything is measured. */
		send_resolve(pr, &r->w, ++r->next_id, path, version, SETUP_TIMEOUT_MS - 1000);
		used = wire_wait_frame(&r->w, &f);
		if (reply_node(&f, &version, &ino, err, sizeof(err)) < 0)
			bench_die("mirror: RESOLVE %s at the MKDIR's version: %s", path, err);
		frame_done(&r->w, &f, used);
	}
}

/* ---- the run ---- */

static void on_readable(struct probe_run *pr, struct wire *w, struct writer *wr, struct reader *r,
                        unsigned index)
{
	wire_recv(w);
	size_t off = 0, used;
	struct frame f;
	while (wire_frame(w, off, &f, &used)) {
		if (wr != NULL)
			writer_frame(pr, wr, &f);
		else
			reader_frame(pr, r, index, &f);
		frame_release(&f);
		off += used;
	}
	wire_consume(w, off);
	if (w->eof)
		bench_die("%s: the server closed the connection", w->what);
}

static bool all_answered(const struct probe_run *pr)
{
	for (unsigned i = 0; i < pr->nwriters; i++)
		if (pr->writers[i].inflight_id != 0 || pr->readers[i].count != 0)
			return false;
	return true;
}

static void run(struct probe_run *pr)
{
	unsigned n = pr->nwriters;
	struct pollfd *fds = bench_xrealloc(NULL, 2 * n * sizeof(*fds));
	int64_t interval = (int64_t)(1e9 / pr->rate);
	int64_t t0 = bench_mono_ns();
	int64_t steady_end = t0 + (int64_t)(pr->steady_s * 1e9);
	int64_t burst_end = steady_end + (int64_t)(pr->burst_s * 1e9);
	int64_t drain_end = 0;
	int64_t next_slot = t0;
	enum phase ph = pr->steady_s > 0 ? PH_STEADY : PH_BURST;
	pr->ph[PH_STEADY].start_ns = t0;
	pr->ph[PH_BURST].start_ns = steady_end;
	for (;;) {
		int64_t now = bench_mono_ns();
		if (interrupted && ph != PH_DRAIN) {
			fprintf(stderr, "lagprobe: interrupted; waiting for the reads in flight\n");
			burst_end = now;
			if (ph == PH_STEADY)
				steady_end = now;
		}
		if (ph == PH_STEADY && now >= steady_end) {
			ph = PH_BURST;
			pr->ph[PH_STEADY].end_ns = steady_end;
			pr->ph[PH_BURST].start_ns = steady_end;
		}
		if (ph == PH_BURST && now >= burst_end) {
			ph = PH_DRAIN;
			pr->ph[PH_BURST].end_ns = burst_end;
			drain_end = now + (int64_t)(pr->deadline_ms + 5000) * 1000000;
		}
		if (ph == PH_DRAIN && all_answered(pr))
			break;
		if (ph == PH_DRAIN && now > drain_end) {
			note_error(pr, "reads still unanswered %" PRIu64 " ms after the last write",
			           pr->deadline_ms + 5000);
			break;
		}
		int64_t wake = ph == PH_STEADY  ? steady_end
		               : ph == PH_BURST ? burst_end
		                                : drain_end;
		if (ph == PH_STEADY) {
			struct writer *wr = &pr->writers[0];
			if (wr->inflight_id == 0 && now >= next_slot) {
				if (now - next_slot > interval)
					pr->ph[PH_STEADY].late++;
				send_create(pr, wr, PH_STEADY);
				next_slot += interval;
			}
			if (wr->inflight_id == 0 && next_slot < wake)
				wake = next_slot;
		} else if (ph == PH_BURST) {
			for (unsigned i = 0; i < n; i++)
				if (pr->writers[i].inflight_id == 0)
					send_create(pr, &pr->writers[i], PH_BURST);
		}
		for (unsigned i = 0; i < n; i++) {
			struct wire *ws[2] = {&pr->writers[i].w, &pr->readers[i].w};
			for (int k = 0; k < 2; k++) {
				fds[2 * i + k].fd = ws[k]->fd;
				fds[2 * i + k].events = POLLIN | (ws[k]->out_len ? POLLOUT : 0);
				fds[2 * i + k].revents = 0;
			}
		}
		now = bench_mono_ns();
		int64_t wait = wake > now ? wake - now : 0;
		struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
		int r = ppoll(fds, 2 * n, &ts, NULL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			bench_die("ppoll: %s", strerror(errno));
		}
		/* Readers first: an answer read before a write reply that came
		 * in the same wake-up is not delayed by the work of the
		 * reply. */
		for (unsigned i = 0; i < n; i++) {
			if (fds[2 * i + 1].revents & POLLOUT)
				wire_flush(&pr->readers[i].w);
			if (fds[2 * i + 1].revents & (POLLIN | POLLHUP | POLLERR))
				on_readable(pr, &pr->readers[i].w, NULL, &pr->readers[i], i);
		}
		for (unsigned i = 0; i < n; i++) {
			struct writer *wr = &pr->writers[i];
			if (fds[2 * i].revents & POLLOUT)
				wire_flush(&wr->w);
			if (fds[2 * i].revents & (POLLIN | POLLHUP | POLLERR)) {
				on_readable(pr, &wr->w, wr, NULL, i);
				/* Burst writers go again at once. */
				if (ph == PH_BURST && wr->inflight_id == 0 &&
				    bench_mono_ns() < burst_end)
					send_create(pr, wr, PH_BURST);
			}
		}
	}
	if (pr->ph[PH_STEADY].end_ns == 0)
		pr->ph[PH_STEADY].end_ns = steady_end;
	free(fds);
}

/* ---- output ---- */

static void print_result(struct probe_run *pr, double cpu_s, double wall_s)
{
	FILE *out = stdout;
	fprintf(out, "{\"run\": ");
	bench_json_str(out, pr->run);
	fprintf(out,
	        ", \"system\": \"mp-mirror\", \"mode\": \"%s\", \"rate\": %.0f, "
	        "\"deadline_ms\": %" PRIu64 ", \"phases\": [",
	        pr->mode == MODE_PARKED ? "parked" : "poll", pr->rate, pr->deadline_ms);
	for (int i = 0; i < 2; i++) {
		struct phase_stats *ps = &pr->ph[i];
		double secs = (double)(ps->end_ns - ps->start_ns) / 1e9;
		if (i == PH_STEADY && pr->steady_s <= 0)
			continue;
		if (i == PH_BURST && pr->burst_s <= 0)
			continue;
		if (i == PH_BURST && pr->steady_s > 0)
			fprintf(out, ", ");
		fprintf(
		    out,
		    "{\"phase\": \"%s\", \"writers\": %u, \"seconds\": %.3f, \"writes\": %" PRIu64
		    ", \"writes_per_sec\": %.1f, \"late_writes\": %" PRIu64
		    ", \"polls_per_write\": %.2f, ",
		    ps->name, ps->writers, secs, ps->writes,
		    secs > 0 ? (double)ps->writes / secs : 0.0, ps->late,
		    ps->lag.n ? (double)ps->polls / (double)ps->lag.n : 0.0);
		samples_print_json(out, "write_latency_us", &ps->write_lat);
		fprintf(out, ", ");
		samples_print_json(out, "lag_us", &ps->lag);
		fprintf(out, "}");
	}
	fprintf(out,
	        "], \"lagprobe_cpu_percent\": %.1f, \"errors\": %" PRIu64 ", \"error_messages\": [",
	        wall_s > 0 ? 100.0 * cpu_s / wall_s : 0.0, pr->errors);
	for (unsigned i = 0; i < pr->nkinds; i++) {
		fprintf(out, "%s{\"count\": %" PRIu64 ", \"message\": ", i ? ", " : "",
		        pr->kinds[i].count);
		bench_json_str(out, pr->kinds[i].message);
		fputc('}', out);
	}
	if (pr->other_errors > 0)
		fprintf(out, "%s{\"count\": %" PRIu64 ", \"message\": \"(other messages)\"}",
		        pr->nkinds ? ", " : "", pr->other_errors);
	fprintf(out, "]}\n");
	fflush(out);
}

/* ---- command line ---- */

static void usage(FILE *out)
{
	fprintf(out, "usage: lagprobe --primary HOST:PORT --mirror HOST:PORT [--mode parked|poll]\n"
	             "                [--rate N] [--steady S] [--burst S] [--writers N]\n"
	             "                [--deadline-ms MS] [--run NAME] [--token TOKEN]\n"
	             "\n"
	             "  --primary H:P     mp-primary's client address (the writes)\n"
	             "  --mirror H:P      mp-mirror's client address (the reads)\n"
	             "  --mode M          parked: RESOLVE with min_version (default);\n"
	             "                    poll: RESOLVE without it until the file is there\n"
	             "  --rate N          writes/s of the steady phase (default 1000)\n"
	             "  --steady S        seconds of the steady phase, one writer (default 10)\n"
	             "  --burst S         seconds of the burst phase (default 10)\n"
	             "  --writers N       writers (and readers) of the burst phase (default 16)\n"
	             "  --deadline-ms MS  deadline_ms of parked reads (default 60000)\n"
	             "  --run NAME        files go to /lag-NAME/wI/fK (default: time-pid)\n"
	             "  --token TOKEN     HELLO token for both servers\n");
}

static double parse_num(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min) || v > max)
		bench_die("%s '%s': expected a number in %g..%g", opt, s, min, max);
	return v;
}

static void on_signal(int sig)
{
	interrupted = 1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"primary", required_argument, NULL, 'p'},
	    {"mirror", required_argument, NULL, 'm'},
	    {"mode", required_argument, NULL, 'M'},
	    {"rate", required_argument, NULL, 'r'},
	    {"steady", required_argument, NULL, 's'},
	    {"burst", required_argument, NULL, 'b'},
	    {"writers", required_argument, NULL, 'w'},
	    {"deadline-ms", required_argument, NULL, 'D'},
	    {"run", required_argument, NULL, 'R'},
	    {"token", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static struct probe_run prs;
	struct probe_run *pr = &prs;
	pr->mode = MODE_PARKED;
	pr->rate = 1000;
	pr->steady_s = 10;
	pr->burst_s = 10;
	pr->nwriters = 16;
	pr->deadline_ms = 60000;
	int opt;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			pr->primary = optarg;
			break;
		case 'm':
			pr->mirror = optarg;
			break;
		case 'M':
			if (strcmp(optarg, "parked") == 0)
				pr->mode = MODE_PARKED;
			else if (strcmp(optarg, "poll") == 0)
				pr->mode = MODE_POLL;
			else
				bench_die("--mode '%s': expected parked or poll", optarg);
			break;
		case 'r':
			pr->rate = parse_num("--rate", optarg, 1, 1e6);
			break;
		case 's':
			pr->steady_s = parse_num("--steady", optarg, 0, 3600);
			break;
		case 'b':
			pr->burst_s = parse_num("--burst", optarg, 0, 3600);
			break;
		case 'w':
			pr->nwriters = (unsigned)parse_num("--writers", optarg, 1, MAX_WRITERS);
			break;
		case 'D':
			pr->deadline_ms = (uint64_t)parse_num("--deadline-ms", optarg, 1, 60000);
			break;
		case 'R':
			if (strlen(optarg) == 0 || strlen(optarg) > 64 || strchr(optarg, '/'))
				bench_die("--run '%s': expected 1..64 characters without '/'",
				          optarg);
			pr->run = optarg;
			break;
		case 'T':
			pr->token = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || pr->primary == NULL || pr->mirror == NULL) {
		usage(stderr);
		return 2;
	}
	if (pr->steady_s <= 0 && pr->burst_s <= 0)
		bench_die("--steady and --burst are both 0: nothing to measure");
	char runbuf[64];
	if (pr->run == NULL) {
		snprintf(runbuf, sizeof(runbuf), "%lld-%d", (long long)time(NULL), (int)getpid());
		pr->run = runbuf;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/* Wake-ups on the steady schedule to the microsecond, not to the
	 * default 50 us slack. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	msgpack_sbuffer_init(&pr->sb);
	build_layout(pr);
	pr->writers = calloc(pr->nwriters, sizeof(*pr->writers));
	pr->readers = calloc(pr->nwriters, sizeof(*pr->readers));
	if (pr->writers == NULL || pr->readers == NULL)
		bench_die("out of memory");
	pr->ph[PH_STEADY].name = "steady";
	pr->ph[PH_STEADY].writers = 1;
	pr->ph[PH_BURST].name = "burst";
	pr->ph[PH_BURST].writers = pr->nwriters;
	setup(pr);

	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	int64_t w0 = bench_mono_ns();
	run(pr);
	int64_t w1 = bench_mono_ns();
	getrusage(RUSAGE_SELF, &ru1);
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
	             (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
	             (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	             (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	print_result(pr, cpu, (double)(w1 - w0) / 1e9);

	for (unsigned i = 0; i < pr->nwriters; i++) {
		close(pr->writers[i].w.fd);
		close(pr->readers[i].w.fd);
		free(pr->writers[i].w.in);
		free(pr->writers[i].w.out);
		free(pr->readers[i].w.in);
		free(pr->readers[i].w.out);
		free(pr->readers[i].q);
	}
	for (int i = 0; i < 2; i++) {
		free(pr->ph[i].write_lat.v);
		free(pr->ph[i].lag.v);
	}
	free(pr->writers);
	free(pr->readers);
	msgpack_sbuffer_destroy(&pr->sb);
	if (interrupted)
		return 130;
	return pr->errors > 0 ? 3 : 0;
}
