/* loadgen: metadata write load against mp-primary, or read load against
 * mp-primary or mp-mirror (--read).
 *
 * N connections, each sends HELLO, makes its own directory
 * /bench-RUN/cN (MKDIR parents) and then keeps DEPTH CREATE requests in
 * flight, creating /bench-RUN/cN/fI with a one-extent layout whose msgpack
 * encoding is 100 bytes. With depth 1 a connection is one "concurrent
 * client": it waits for each reply before it sends the next create.
 *
 * Runs for a warm-up and then a measured duration (or until a count of
 * creates is done) and prints one JSON object: completed creates, seconds,
 * creates per second, latency percentiles (microseconds, from send to
 * reply), and errors with their messages. Every reply is checked: an ERROR
 * reply is an error, and anything that is not a well-formed REPLY for an
 * outstanding request ends that connection as a protocol error.
 *
 * With --read PATH, connection 0 first walks the tree under PATH with
 * READDIR (every page of every directory, up to --walk-dirs directories)
 * and keeps a uniform random sample (reservoir) of --samples entries; then
 * every connection keeps DEPTH reads in flight, cycling LOOKUP (parent,
 * name), GETATTR (ino) and RESOLVE (path) of random sampled entries, and
 * checks that each answer is the entry asked for. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"
#include "msg.h"
#include "netaddr.h"
#include "proto.h"

#define LAYOUT_KEY_LEN       49 /* makes the encoded layout exactly 100 bytes */
#define LAYOUT_ETAG_LEN      32
#define LAYOUT_EXTENT_LENGTH 4194304u
#define MAX_ERROR_KINDS      8
#define MAX_CONNECTIONS      10000
#define MAX_DEPTH            1024
#define WALK_PAGE            10000 /* READDIR limit while walking */

enum read_op { OP_LOOKUP, OP_GETATTR, OP_RESOLVE, NREAD_OPS };

/* An entry that reads ask for. */
struct sample {
	uint64_t parent, ino;
	char *name; /* NUL-terminated */
	char *path;
};

/* A directory still to be listed by the walk. */
struct walk_dir {
	uint64_t ino;
	char *path;
};

struct slot {
	uint64_t id; /* 0: free */
	int64_t sent_ns;
	uint64_t expect_ino; /* --read: the entry asked for */
};

enum conn_state { ST_CONNECTING, ST_HELLO, ST_MKDIR, ST_READY, ST_WALK, ST_RUNNING, ST_CLOSED };

struct lg_conn {
	struct loadgen *lg;
	unsigned index;
	struct bufferevent *bev;
	enum conn_state state;
	uint64_t next_id;
	uint64_t next_file;
	struct slot *slots;
	unsigned inflight;
	unsigned next_op;
	uint64_t rng;
	msgpack_sbuffer sb;
};

struct error_kind {
	char message[256];
	uint64_t count;
};

struct loadgen {
	struct event_base *base;
	/* options */
	const char *addr;
	const char *token;
	const char *run;
	unsigned nconns;
	unsigned depth;
	double warmup_s;
	double duration_s;
	uint64_t count; /* 0: run for duration_s */
	unsigned timeout_s;
	bool layout_as_array;
	const char *read_root; /* --read: reads of entries under this path */
	size_t max_samples;
	size_t max_walk_dirs;

	/* --read: the walk and its sample */
	struct sample *samples;
	size_t nsamples;
	uint64_t seen; /* entries the walk listed */
	struct walk_dir *dirs;
	size_t ndirs, dirs_head, dirs_cap;
	size_t dirs_listed;
	uint64_t walk_rng;
	char *walk_cursor; /* last name of the page being listed */
	int64_t walk_ns;

	struct lg_conn *conns;
	unsigned nready, nalive;
	bool measuring, stopping;
	int64_t t_measure, t_end;
	struct rusage ru_measure, ru_end;
	uint64_t issued;    /* count mode: creates sent */
	uint64_t completed; /* count mode: replies (any) */
	uint64_t ops;       /* successful creates in the measured window */
	uint64_t warmup_ops;
	uint64_t errors; /* ERROR replies and protocol errors, whole run */
	struct error_kind kinds[MAX_ERROR_KINDS];
	unsigned nkinds;
	uint64_t other_errors; /* messages beyond MAX_ERROR_KINDS kinds */
	uint32_t *lat_us;      /* latencies of the measured creates */
	size_t nlat, caplat;
	uint8_t layout[128];
	size_t layout_len;
	struct event *warm_ev, *end_ev, *sigint_ev, *sigterm_ev;
	int exit_code;
};

static void note_error(struct loadgen *lg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_error(struct loadgen *lg, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lg->errors++;
	for (unsigned i = 0; i < lg->nkinds; i++) {
		if (strcmp(lg->kinds[i].message, msg) == 0) {
			lg->kinds[i].count++;
			return;
		}
	}
	if (lg->nkinds == MAX_ERROR_KINDS) {
		lg->other_errors++;
		return;
	}
	snprintf(lg->kinds[lg->nkinds].message, sizeof(lg->kinds[0].message), "%s", msg);
	lg->kinds[lg->nkinds++].count = 1;
}

/* [[bucket, key, etag, offset, length]]: 1 + 1 + 7 + 51 + 34 + 1 + 5 bytes. */
static void build_layout(struct loadgen *lg)
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
	if (sb.size > sizeof(lg->layout)) {
		fprintf(stderr, "loadgen: layout of %zu bytes is too large\n", sb.size);
		exit(1);
	}
	memcpy(lg->layout, sb.data, sb.size);
	lg->layout_len = sb.size;
	msgpack_sbuffer_destroy(&sb);
}

static void finish(struct loadgen *lg);

static void lg_conn_close(struct lg_conn *c)
{
	if (c->state == ST_CLOSED)
		return;
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	c->bev = NULL;
	c->state = ST_CLOSED;
	/* Its requests in flight will never be answered: a count run must
	 * not wait for them. */
	c->lg->completed += c->inflight;
	c->inflight = 0;
	c->lg->nalive--;
	if (!c->lg->stopping &&
	    (c->lg->nalive == 0 || (c->lg->count > 0 && c->lg->completed >= c->lg->count)))
		finish(c->lg);
}

/* A failure before the load starts makes every figure meaningless. */
static void setup_failed(struct lg_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void setup_failed(struct lg_conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "loadgen: connection %u: ", c->index);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	c->lg->exit_code = 1;
	c->lg->stopping = true;
	event_base_loopbreak(c->lg->base);
}

/* Straight to the socket when nothing is queued, as a lean client would:
 * bufferevent_write would arm the write event and disarm it after the
 * write (two epoll_ctl calls per request), which made loadgen, not the
 * server, the limit of read runs on two cores. */
static void send_frame(struct lg_conn *c)
{
	msg_end(&c->sb);
	size_t off = 0;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		ssize_t n = send(bufferevent_getfd(c->bev), c->sb.data, c->sb.size, MSG_NOSIGNAL);
		if (n > 0)
			off = (size_t)n;
	}
	/* The rest (or all of it after EAGAIN or an error, which the
	 * bufferevent then reports) goes through the bufferevent. */
	if (off < c->sb.size)
		bufferevent_write(c->bev, c->sb.data + off, c->sb.size - off);
}

static void send_hello(struct lg_conn *c)
{
	msgpack_packer pk;
	msg_begin(&c->sb, &pk, MT_HELLO, ++c->next_id, c->lg->token ? 2 : 1);
	msg_pack_key(&pk, "proto");
	msgpack_pack_uint32(&pk, PROTO_VERSION);
	if (c->lg->token) {
		msg_pack_key(&pk, "token");
		msg_pack_cstr(&pk, c->lg->token);
	}
	send_frame(c);
	c->state = ST_HELLO;
}

static void send_mkdir(struct lg_conn *c)
{
	char path[NODE_PATH_MAX];
	snprintf(path, sizeof(path), "/bench-%s/c%u", c->lg->run, c->index);
	msgpack_packer pk;
	msg_begin(&c->sb, &pk, MT_MKDIR, ++c->next_id, 2);
	msg_pack_key(&pk, "path");
	msg_pack_cstr(&pk, path);
	msg_pack_key(&pk, "parents");
	msgpack_pack_true(&pk);
	send_frame(c);
	c->state = ST_MKDIR;
}

static void send_create(struct lg_conn *c)
{
	struct loadgen *lg = c->lg;
	struct slot *s = NULL;
	for (unsigned i = 0; i < lg->depth; i++) {
		if (c->slots[i].id == 0) {
			s = &c->slots[i];
			break;
		}
	}
	if (s == NULL)
		return;
	char path[NODE_PATH_MAX];
	snprintf(path, sizeof(path), "/bench-%s/c%u/f%" PRIu64, lg->run, c->index, c->next_file++);
	msgpack_packer pk;
	s->id = ++c->next_id;
	msg_begin(&c->sb, &pk, MT_CREATE, s->id, 3);
	msg_pack_key(&pk, "path");
	msg_pack_cstr(&pk, path);
	msg_pack_key(&pk, "size");
	msgpack_pack_uint64(&pk, LAYOUT_EXTENT_LENGTH);
	msg_pack_key(&pk, "layout");
	if (lg->layout_as_array)
		msg_pack_raw(&pk, lg->layout, lg->layout_len);
	else
		msg_pack_binn(&pk, lg->layout, lg->layout_len);
	s->sent_ns = bench_mono_ns(); /* send_frame may write to the socket at once */
	send_frame(c);
	c->inflight++;
	lg->issued++;
}

static uint64_t xorshift64(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *state = x;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (p == NULL) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	return p;
}

static char *join_path(const char *dir, const char *name, size_t name_len)
{
	size_t dlen = strcmp(dir, "/") == 0 ? 0 : strlen(dir);
	char *p = xmalloc(dlen + 1 + name_len + 1);
	memcpy(p, dir, dlen);
	p[dlen] = '/';
	memcpy(p + dlen + 1, name, name_len);
	p[dlen + 1 + name_len] = '\0';
	return p;
}

static void send_read(struct lg_conn *c)
{
	struct loadgen *lg = c->lg;
	struct slot *s = NULL;
	for (unsigned i = 0; i < lg->depth; i++) {
		if (c->slots[i].id == 0) {
			s = &c->slots[i];
			break;
		}
	}
	if (s == NULL)
		return;
	const struct sample *e = &lg->samples[xorshift64(&c->rng) % lg->nsamples];
	enum read_op op = (enum read_op)(c->next_op++ % NREAD_OPS);
	msgpack_packer pk;
	s->id = ++c->next_id;
	s->expect_ino = e->ino;
	switch (op) {
	case OP_LOOKUP:
		msg_begin(&c->sb, &pk, MT_LOOKUP, s->id, 2);
		msg_pack_key(&pk, "parent");
		msgpack_pack_uint64(&pk, e->parent);
		msg_pack_key(&pk, "name");
		msg_pack_cstr(&pk, e->name);
		break;
	case OP_GETATTR:
		msg_begin(&c->sb, &pk, MT_GETATTR, s->id, 1);
		msg_pack_key(&pk, "ino");
		msgpack_pack_uint64(&pk, e->ino);
		break;
	default:
		msg_begin(&c->sb, &pk, MT_RESOLVE, s->id, 1);
		msg_pack_key(&pk, "path");
		msg_pack_cstr(&pk, e->path);
		break;
	}
	s->sent_ns = bench_mono_ns(); /* send_frame may write to the socket at once */
	send_frame(c);
	c->inflight++;
	lg->issued++;
}

static void fill_pipeline(struct lg_conn *c)
{
	struct loadgen *lg = c->lg;
	while (!lg->stopping && c->inflight < lg->depth &&
	       (lg->count == 0 || lg->issued < lg->count)) {
		if (lg->read_root != NULL)
			send_read(c);
		else
			send_create(c);
	}
}

static void start_load(struct loadgen *lg);

static void record_latency(struct loadgen *lg, int64_t ns)
{
	if (lg->nlat == lg->caplat) {
		size_t cap = lg->caplat ? lg->caplat * 2 : 1 << 16;
		uint32_t *n = realloc(lg->lat_us, cap * sizeof(*n));
		if (n == NULL) {
			fprintf(stderr, "loadgen: out of memory recording latencies\n");
			exit(1);
		}
		lg->lat_us = n;
		lg->caplat = cap;
	}
	int64_t us = ns / 1000;
	lg->lat_us[lg->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static const char *error_message(const struct frame *f, char *buf, size_t len)
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

/* ---- --read: the walk that picks the entries to read ---- */

static void walk_push(struct loadgen *lg, uint64_t ino, char *path)
{
	if (lg->ndirs == lg->dirs_cap) {
		size_t cap = lg->dirs_cap ? lg->dirs_cap * 2 : 1024;
		struct walk_dir *d = realloc(lg->dirs, cap * sizeof(*d));
		if (d == NULL) {
			fprintf(stderr, "loadgen: out of memory\n");
			exit(1);
		}
		lg->dirs = d;
		lg->dirs_cap = cap;
	}
	lg->dirs[lg->ndirs].ino = ino;
	lg->dirs[lg->ndirs].path = path;
	lg->ndirs++;
}

/* Reservoir sampling: every entry listed has the same chance to be kept. */
static void walk_take(struct loadgen *lg, const struct node_rec *rec, const char *dir_path)
{
	lg->seen++;
	size_t slot = lg->nsamples;
	if (lg->nsamples == lg->max_samples) {
		uint64_t j = xorshift64(&lg->walk_rng) % lg->seen;
		if (j >= lg->max_samples)
			goto dirs;
		slot = (size_t)j;
		free(lg->samples[slot].name);
		free(lg->samples[slot].path);
	} else {
		lg->nsamples++;
	}
	struct sample *e = &lg->samples[slot];
	e->parent = rec->parent;
	e->ino = rec->ino;
	e->name = xmalloc((size_t)rec->name_len + 1);
	memcpy(e->name, rec->name, rec->name_len);
	e->name[rec->name_len] = '\0';
	e->path = join_path(dir_path, rec->name, rec->name_len);
dirs:
	if (rec->type == NODE_DIR && lg->ndirs < lg->max_walk_dirs)
		walk_push(lg, rec->ino, join_path(dir_path, rec->name, rec->name_len));
}

static void walk_send(struct lg_conn *c)
{
	struct loadgen *lg = c->lg;
	msgpack_packer pk;
	c->slots[0].id = ++c->next_id;
	if (lg->ndirs == 0) { /* the root of the walk first */
		msg_begin(&c->sb, &pk, MT_RESOLVE, c->slots[0].id, 1);
		msg_pack_key(&pk, "path");
		msg_pack_cstr(&pk, lg->read_root);
	} else {
		msg_begin(&c->sb, &pk, MT_READDIR, c->slots[0].id, lg->walk_cursor ? 3 : 2);
		msg_pack_key(&pk, "ino");
		msgpack_pack_uint64(&pk, lg->dirs[lg->dirs_head].ino);
		msg_pack_key(&pk, "limit");
		msgpack_pack_uint32(&pk, WALK_PAGE);
		if (lg->walk_cursor) {
			msg_pack_key(&pk, "cursor");
			msg_pack_cstr(&pk, lg->walk_cursor);
		}
	}
	send_frame(c);
}

static void start_walk(struct lg_conn *c)
{
	c->state = ST_WALK;
	c->lg->walk_ns = bench_mono_ns();
	walk_send(c);
}

static void walk_frame(struct lg_conn *c, const struct frame *f)
{
	struct loadgen *lg = c->lg;
	char err[256], buf[300];
	if (f->id != c->slots[0].id) {
		setup_failed(c, "walk: %s with id %" PRIu64 " matches no request",
		             proto_msg_name(f->type), f->id);
		return;
	}
	c->slots[0].id = 0;
	if (f->type != MT_REPLY) {
		setup_failed(c, "walk under %s: %s %s", lg->read_root, proto_msg_name(f->type),
		             f->type == MT_ERROR ? error_message(f, buf, sizeof(buf)) : "");
		return;
	}
	if (lg->ndirs == 0) {
		struct node_rec root;
		const msgpack_object *node = msg_field(f->body, "node");
		if (node == NULL || msg_parse_node(node, &root, err, sizeof(err)) < 0 ||
		    root.type != NODE_DIR) {
			setup_failed(c, "--read %s: not a directory", lg->read_root);
			return;
		}
		char *path = xmalloc(strlen(lg->read_root) + 1);
		strcpy(path, lg->read_root);
		walk_push(lg, root.ino, path);
		walk_send(c);
		return;
	}
	const msgpack_object_array *entries;
	if (msg_get_array(f->body, "entries", true, WALK_PAGE, &entries, err, sizeof(err)) < 0) {
		setup_failed(c, "walk: READDIR: %s", err);
		return;
	}
	struct walk_dir *d = &lg->dirs[lg->dirs_head];
	char *dir_path = d->path; /* walk_take may move lg->dirs */
	for (uint32_t i = 0; i < entries->size; i++) {
		struct node_rec rec;
		if (msg_parse_node(&entries->ptr[i], &rec, err, sizeof(err)) < 0) {
			setup_failed(c, "walk: READDIR entry: %s", err);
			return;
		}
		walk_take(lg, &rec, dir_path);
	}
	free(lg->walk_cursor);
	lg->walk_cursor = NULL;
	const msgpack_object *next = msg_field(f->body, "next");
	if (next != NULL &&
	    (next->type == MSGPACK_OBJECT_STR || next->type == MSGPACK_OBJECT_BIN) &&
	    next->via.str.size > 0) {
		lg->walk_cursor = xmalloc(next->via.str.size + 1);
		memcpy(lg->walk_cursor, next->via.str.ptr, next->via.str.size);
		lg->walk_cursor[next->via.str.size] = '\0';
	} else {
		free(dir_path);
		lg->dirs[lg->dirs_head].path = NULL;
		lg->dirs_head++;
		lg->dirs_listed++;
	}
	if (lg->dirs_head < lg->ndirs) {
		walk_send(c);
		return;
	}
	lg->walk_ns = bench_mono_ns() - lg->walk_ns;
	if (lg->nsamples == 0) {
		setup_failed(c, "--read %s: no entries under it to read", lg->read_root);
		return;
	}
	c->state = ST_READY;
	start_load(lg);
}

/* A REPLY to a read must carry a version and the entry asked for. */
static int check_read_reply(const struct frame *f, uint64_t expect_ino, char *err, size_t errlen)
{
	uint64_t version;
	int r = msg_get_u64(f->body, "version", true, UINT64_MAX, &version, err, errlen);
	if (r < 0)
		return r;
	const msgpack_object *node = msg_field(f->body, "node");
	struct node_rec rec;
	if (node == NULL) {
		snprintf(err, errlen, "REPLY to a read without 'node'");
		return -EINVAL;
	}
	if (msg_parse_node(node, &rec, err, errlen) < 0)
		return -EINVAL;
	if (rec.ino != expect_ino) {
		snprintf(err, errlen, "read of inode %" PRIu64 " answered with inode %" PRIu64,
		         expect_ino, rec.ino);
		return -EINVAL;
	}
	return 0;
}

/* A REPLY to CREATE must carry a version and a file node. */
static int check_create_reply(const struct frame *f, char *err, size_t errlen)
{
	uint64_t version;
	int r = msg_get_u64(f->body, "version", true, UINT64_MAX, &version, err, errlen);
	if (r < 0)
		return r;
	const msgpack_object *node = msg_field(f->body, "node");
	if (node == NULL) {
		snprintf(err, errlen, "REPLY to CREATE without 'node'");
		return -EINVAL;
	}
	struct node_rec rec;
	if (msg_parse_node(node, &rec, err, errlen) < 0)
		return -EINVAL;
	if (rec.type != NODE_FILE || rec.extra_len == 0) {
		snprintf(err, errlen,
		         "REPLY to CREATE: node %" PRIu64 " is not a file with a layout", rec.ino);
		return -EINVAL;
	}
	return 0;
}

static void handle_frame(struct lg_conn *c, const struct frame *f)
{
	struct loadgen *lg = c->lg;
	char buf[300], err[256];
	switch (c->state) {
	case ST_HELLO:
		if (f->type != MT_HELLO_OK) {
			setup_failed(c, "HELLO answered with %s %s", proto_msg_name(f->type),
			             f->type == MT_ERROR ? error_message(f, buf, sizeof(buf)) : "");
			return;
		}
		if (lg->read_root == NULL) {
			send_mkdir(c);
			return;
		}
		/* Reads need no directory of their own; connection 0 walks the
		 * tree once every connection is up. */
		c->state = ST_READY;
		if (++lg->nready == lg->nconns)
			start_walk(&lg->conns[0]);
		return;
	case ST_WALK:
		walk_frame(c, f);
		return;
	case ST_MKDIR:
		if (f->type != MT_REPLY) {
			setup_failed(c, "MKDIR answered with %s %s", proto_msg_name(f->type),
			             f->type == MT_ERROR ? error_message(f, buf, sizeof(buf)) : "");
			return;
		}
		c->state = ST_READY;
		if (++lg->nready == lg->nconns)
			start_load(lg);
		return;
	case ST_RUNNING:
		break;
	default:
		note_error(lg, "unexpected %s in state %d", proto_msg_name(f->type), c->state);
		lg_conn_close(c);
		return;
	}
	struct slot *s = NULL;
	for (unsigned i = 0; i < lg->depth; i++) {
		if (c->slots[i].id == f->id && f->id != 0) {
			s = &c->slots[i];
			break;
		}
	}
	if (s == NULL) {
		note_error(lg, "protocol: %s with id %" PRIu64 " matches no request",
		           proto_msg_name(f->type), f->id);
		lg_conn_close(c);
		return;
	}
	int64_t now = bench_mono_ns();
	int64_t sent = s->sent_ns;
	uint64_t expect_ino = s->expect_ino;
	s->id = 0;
	c->inflight--;
	lg->completed++;
	if (f->type == MT_ERROR) {
		note_error(lg, "%s", error_message(f, buf, sizeof(buf)));
	} else if (f->type != MT_REPLY) {
		note_error(lg, "protocol: %s answered with %s", lg->read_root ? "a read" : "CREATE",
		           proto_msg_name(f->type));
		lg_conn_close(c);
		return;
	} else if ((lg->read_root ? check_read_reply(f, expect_ino, err, sizeof(err))
	                          : check_create_reply(f, err, sizeof(err))) < 0) {
		note_error(lg, "protocol: %s", err);
		lg_conn_close(c);
		return;
	} else if (lg->measuring && (lg->count > 0 || now <= lg->t_end)) {
		lg->ops++;
		record_latency(lg, now - sent);
	} else if (!lg->measuring) {
		lg->warmup_ops++;
	}
	if (lg->count > 0 && lg->completed >= lg->count) {
		finish(lg);
		return;
	}
	fill_pipeline(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct lg_conn *c = arg;
	struct loadgen *lg = c->lg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (c->state != ST_CLOSED && !lg->stopping) {
		uint8_t hdr[FRAME_HEADER_LEN];
		if (evbuffer_copyout(in, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr))
			return;
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		               (uint32_t)hdr[2] << 8 | hdr[3];
		if (len > FRAME_DEFAULT_MAX) {
			note_error(lg, "protocol: reply frame of %u bytes", len);
			lg_conn_close(c);
			return;
		}
		if (evbuffer_get_length(in) < FRAME_HEADER_LEN + (size_t)len)
			return;
		const uint8_t *buf = evbuffer_pullup(in, FRAME_HEADER_LEN + (ev_ssize_t)len);
		struct frame f;
		char err[256];
		if (frame_decode(buf + FRAME_HEADER_LEN, len, &f, NULL, err, sizeof(err)) < 0) {
			note_error(lg, "protocol: malformed reply: %s", err);
			lg_conn_close(c);
			return;
		}
		handle_frame(c, &f);
		frame_release(&f);
		if (c->state != ST_CLOSED)
			evbuffer_drain(in, FRAME_HEADER_LEN + (size_t)len);
	}
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct lg_conn *c = arg;
	struct loadgen *lg = c->lg;
	if (what & BEV_EVENT_CONNECTED) {
		evutil_socket_t fd = bufferevent_getfd(bev);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		send_hello(c);
		return;
	}
	const char *why = (what & BEV_EVENT_EOF)       ? "the server closed the connection"
	                  : (what & BEV_EVENT_TIMEOUT) ? "no reply within the timeout"
	                                               : strerror(EVUTIL_SOCKET_ERROR());
	if (c->state < ST_READY) {
		setup_failed(c, "%s", why);
		return;
	}
	if (lg->stopping)
		return;
	note_error(lg, "connection: %s", why);
	lg_conn_close(c);
}

static void start_load(struct loadgen *lg)
{
	int64_t now = bench_mono_ns();
	if (lg->count > 0 || lg->warmup_s <= 0) {
		lg->measuring = true;
		lg->t_measure = now;
		getrusage(RUSAGE_SELF, &lg->ru_measure);
	} else {
		struct timeval tv = {
		    (time_t)lg->warmup_s,
		    (suseconds_t)((lg->warmup_s - (double)(time_t)lg->warmup_s) * 1e6)};
		evtimer_add(lg->warm_ev, &tv);
	}
	if (lg->count == 0) {
		double total = lg->duration_s + (lg->measuring ? 0 : lg->warmup_s);
		lg->t_end = now + (int64_t)(total * 1e9);
		struct timeval tv = {(time_t)total,
		                     (suseconds_t)((total - (double)(time_t)total) * 1e6)};
		evtimer_add(lg->end_ev, &tv);
	}
	for (unsigned i = 0; i < lg->nconns; i++) {
		struct lg_conn *c = &lg->conns[i];
		if (c->state != ST_READY)
			continue;
		c->state = ST_RUNNING;
		fill_pipeline(c);
	}
}

static void warm_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loadgen *lg = arg;
	lg->measuring = true;
	lg->t_measure = bench_mono_ns();
	getrusage(RUSAGE_SELF, &lg->ru_measure);
}

static void finish(struct loadgen *lg)
{
	if (lg->stopping)
		return;
	lg->stopping = true;
	int64_t now = bench_mono_ns();
	if (lg->count == 0 && now > lg->t_end)
		now = lg->t_end; /* the timer fired a little late */
	lg->t_end = now;
	getrusage(RUSAGE_SELF, &lg->ru_end);
	event_base_loopbreak(lg->base);
}

static void end_cb(evutil_socket_t fd, short what, void *arg)
{
	finish(arg);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct loadgen *lg = arg;
	fprintf(stderr, "loadgen: interrupted; printing the figures so far\n");
	lg->exit_code = 130;
	if (!lg->measuring) {
		lg->measuring = true;
		lg->t_measure = bench_mono_ns();
		getrusage(RUSAGE_SELF, &lg->ru_measure);
	}
	finish(lg);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static uint32_t percentile(const uint32_t *v, size_t n, double q)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static double tv_s(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void print_result(struct loadgen *lg)
{
	double seconds = lg->measuring ? (double)(lg->t_end - lg->t_measure) / 1e9 : 0;
	qsort(lg->lat_us, lg->nlat, sizeof(*lg->lat_us), cmp_u32);
	double cpu = 0;
	if (lg->measuring)
		cpu = tv_s(&lg->ru_end.ru_utime) + tv_s(&lg->ru_end.ru_stime) -
		      tv_s(&lg->ru_measure.ru_utime) - tv_s(&lg->ru_measure.ru_stime);
	FILE *out = stdout;
	fprintf(out, "{\"run\": ");
	bench_json_str(out, lg->run);
	if (lg->read_root != NULL) {
		fprintf(out, ", \"mode\": \"read\", \"read_root\": ");
		bench_json_str(out, lg->read_root);
		fprintf(out,
		        ", \"entries_walked\": %" PRIu64 ", \"directories_walked\": %zu, "
		        "\"samples\": %zu, \"walk_seconds\": %.3f",
		        lg->seen, lg->dirs_listed, lg->nsamples, (double)lg->walk_ns / 1e9);
	} else {
		fprintf(out, ", \"mode\": \"create\"");
	}
	fprintf(out,
	        ", \"connections\": %u, \"depth\": %u, \"layout_bytes\": %zu, "
	        "\"warmup_ops\": %" PRIu64 ", \"ops\": %" PRIu64 ", \"seconds\": %.3f, "
	        "\"ops_per_sec\": %.1f, \"latency_us\": {\"p50\": %u, \"p90\": %u, \"p99\": %u, "
	        "\"max\": %u}, \"loadgen_cpu_percent\": %.1f, \"errors\": %" PRIu64
	        ", \"error_messages\": [",
	        lg->nconns, lg->depth, lg->layout_len, lg->warmup_ops, lg->ops, seconds,
	        seconds > 0 ? (double)lg->ops / seconds : 0.0,
	        percentile(lg->lat_us, lg->nlat, 0.50), percentile(lg->lat_us, lg->nlat, 0.90),
	        percentile(lg->lat_us, lg->nlat, 0.99), lg->nlat ? lg->lat_us[lg->nlat - 1] : 0,
	        seconds > 0 ? 100.0 * cpu / seconds : 0.0, lg->errors);
	for (unsigned i = 0; i < lg->nkinds; i++) {
		fprintf(out, "%s{\"count\": %" PRIu64 ", \"message\": ", i ? ", " : "",
		        lg->kinds[i].count);
		bench_json_str(out, lg->kinds[i].message);
		fputc('}', out);
	}
	if (lg->other_errors > 0)
		fprintf(out, "%s{\"count\": %" PRIu64 ", \"message\": \"(other messages)\"}",
		        lg->nkinds ? ", " : "", lg->other_errors);
	fprintf(out, "]}\n");
	fflush(out);
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: loadgen --connect HOST:PORT [-c CONNS] [-d DEPTH] [-t SECONDS]\n"
	        "               [-w SECONDS] [-n COUNT] [--run NAME] [--token TOKEN]\n"
	        "               [--layout-array] [--timeout SECONDS]\n"
	        "       loadgen --connect HOST:PORT --read PATH [--samples N] [--walk-dirs N]\n"
	        "               [-c CONNS] [-d DEPTH] [-t SECONDS] [-w SECONDS] [-n COUNT]\n"
	        "\n"
	        "  --connect H:P        mp-primary's client address\n"
	        "  -c, --connections N  connections, each one client (default 1)\n"
	        "  -d, --depth N        CREATEs in flight per connection (default 1)\n"
	        "  -t, --duration S     measured seconds (default 10)\n"
	        "  -w, --warmup S       unmeasured seconds first (default 1; 0 with -n)\n"
	        "  -n, --count N        stop after N creates instead of after a duration\n"
	        "  --run NAME           files go to /bench-NAME/cCONN/fI (default: time-pid)\n"
	        "  --token TOKEN        HELLO token (when the primary has a secret)\n"
	        "  --layout-array       send the layout as an array (default: encoded bin)\n"
	        "  --timeout S          give up on a silent connection after S seconds (60)\n"
	        "  --read PATH          reads instead of creates: LOOKUP, GETATTR and RESOLVE in\n"
	        "                       turn, of entries sampled from the tree under PATH\n"
	        "  --samples N          entries kept from the walk (default 100000)\n"
	        "  --walk-dirs N        directories listed at most (default 100000)\n");
}

static int parse_uint(const char *s, unsigned long long min, unsigned long long max,
                      unsigned long long *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max || s[0] == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_seconds(const char *s, double *ret)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > 86400)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_args(struct loadgen *lg, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"connect", required_argument, NULL, 'C'},
	    {"connections", required_argument, NULL, 'c'},
	    {"depth", required_argument, NULL, 'd'},
	    {"duration", required_argument, NULL, 't'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"count", required_argument, NULL, 'n'},
	    {"run", required_argument, NULL, 'r'},
	    {"token", required_argument, NULL, 'T'},
	    {"layout-array", no_argument, NULL, 'A'},
	    {"timeout", required_argument, NULL, 'o'},
	    {"read", required_argument, NULL, 'R'},
	    {"samples", required_argument, NULL, 'S'},
	    {"walk-dirs", required_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool warmup_given = false;
	int opt;
	unsigned long long v;
	while ((opt = getopt_long(argc, argv, "c:d:t:w:n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'C':
			lg->addr = optarg;
			break;
		case 'c':
			if (parse_uint(optarg, 1, MAX_CONNECTIONS, &v) < 0) {
				fprintf(stderr, "loadgen: --connections '%s': expected 1..%d\n",
				        optarg, MAX_CONNECTIONS);
				return -EINVAL;
			}
			lg->nconns = (unsigned)v;
			break;
		case 'd':
			if (parse_uint(optarg, 1, MAX_DEPTH, &v) < 0) {
				fprintf(stderr, "loadgen: --depth '%s': expected 1..%d\n", optarg,
				        MAX_DEPTH);
				return -EINVAL;
			}
			lg->depth = (unsigned)v;
			break;
		case 't':
			if (parse_seconds(optarg, &lg->duration_s) < 0 || lg->duration_s <= 0) {
				fprintf(stderr, "loadgen: --duration '%s': expected seconds > 0\n",
				        optarg);
				return -EINVAL;
			}
			break;
		case 'w':
			if (parse_seconds(optarg, &lg->warmup_s) < 0) {
				fprintf(stderr, "loadgen: --warmup '%s': expected seconds >= 0\n",
				        optarg);
				return -EINVAL;
			}
			warmup_given = true;
			break;
		case 'n':
			if (parse_uint(optarg, 1, 1000000000000ULL, &v) < 0) {
				fprintf(stderr,
				        "loadgen: --count '%s': expected a positive number\n",
				        optarg);
				return -EINVAL;
			}
			lg->count = v;
			break;
		case 'r':
			if (strlen(optarg) == 0 || strlen(optarg) > 64 ||
			    strchr(optarg, '/') != NULL) {
				fprintf(stderr,
				        "loadgen: --run '%s': expected 1..64 characters "
				        "without '/'\n",
				        optarg);
				return -EINVAL;
			}
			lg->run = optarg;
			break;
		case 'T':
			lg->token = optarg;
			break;
		case 'A':
			lg->layout_as_array = true;
			break;
		case 'o':
			if (parse_uint(optarg, 1, 86400, &v) < 0) {
				fprintf(stderr, "loadgen: --timeout '%s': expected 1..86400\n",
				        optarg);
				return -EINVAL;
			}
			lg->timeout_s = (unsigned)v;
			break;
		case 'R':
			if (optarg[0] != '/' || strlen(optarg) >= NODE_PATH_MAX) {
				fprintf(stderr, "loadgen: --read '%s': expected an absolute path\n",
				        optarg);
				return -EINVAL;
			}
			lg->read_root = optarg;
			break;
		case 'S':
			if (parse_uint(optarg, 1, 100000000, &v) < 0) {
				fprintf(stderr, "loadgen: --samples '%s': expected 1..100000000\n",
				        optarg);
				return -EINVAL;
			}
			lg->max_samples = (size_t)v;
			break;
		case 'D':
			if (parse_uint(optarg, 1, 100000000, &v) < 0) {
				fprintf(stderr,
				        "loadgen: --walk-dirs '%s': expected 1..100000000\n",
				        optarg);
				return -EINVAL;
			}
			lg->max_walk_dirs = (size_t)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (lg->addr == NULL) {
		fprintf(stderr, "loadgen: --connect HOST:PORT is required\n");
		usage(stderr);
		return -EINVAL;
	}
	if (lg->count > 0 && !warmup_given)
		lg->warmup_s = 0;
	if (lg->count > 0 && lg->warmup_s > 0) {
		fprintf(stderr, "loadgen: --warmup goes with a duration, not with --count\n");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct loadgen lgs;
	struct loadgen *lg = &lgs;
	lg->nconns = 1;
	lg->depth = 1;
	lg->warmup_s = 1;
	lg->duration_s = 10;
	lg->timeout_s = 60;
	lg->max_samples = 100000;
	lg->max_walk_dirs = 100000;
	if (parse_args(lg, argc, argv) < 0)
		return 2;
	if (lg->read_root != NULL) {
		lg->samples = calloc(lg->max_samples, sizeof(*lg->samples));
		if (lg->samples == NULL) {
			fprintf(stderr, "loadgen: out of memory\n");
			return 1;
		}
		lg->walk_rng = 0x9e3779b97f4a7c15ULL;
	}
	char runbuf[64];
	if (lg->run == NULL) {
		snprintf(runbuf, sizeof(runbuf), "%lld-%d", (long long)time(NULL), (int)getpid());
		lg->run = runbuf;
	}
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *err = NULL;
	if (netaddr_resolve(lg->addr, &ss, &sslen, &err) < 0) {
		fprintf(stderr, "loadgen: --connect '%s': %s\n", lg->addr, err ? err : "invalid");
		free(err);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (lg->read_root == NULL)
		build_layout(lg);
	lg->base = event_base_new();
	lg->conns = calloc(lg->nconns, sizeof(*lg->conns));
	if (lg->base == NULL || lg->conns == NULL) {
		fprintf(stderr, "loadgen: out of memory\n");
		return 1;
	}
	lg->warm_ev = evtimer_new(lg->base, warm_cb, lg);
	lg->end_ev = evtimer_new(lg->base, end_cb, lg);
	lg->sigint_ev = evsignal_new(lg->base, SIGINT, signal_cb, lg);
	lg->sigterm_ev = evsignal_new(lg->base, SIGTERM, signal_cb, lg);
	evsignal_add(lg->sigint_ev, NULL);
	evsignal_add(lg->sigterm_ev, NULL);
	struct timeval timeout = {(time_t)lg->timeout_s, 0};
	for (unsigned i = 0; i < lg->nconns; i++) {
		struct lg_conn *c = &lg->conns[i];
		c->lg = lg;
		c->index = i;
		c->rng = (0x2545f4914f6cdd1dULL * (i + 1) ^ (uint64_t)getpid()) | 1;
		msgpack_sbuffer_init(&c->sb);
		c->slots = calloc(lg->depth, sizeof(*c->slots));
		c->bev = bufferevent_socket_new(lg->base, -1, BEV_OPT_CLOSE_ON_FREE);
		if (c->slots == NULL || c->bev == NULL) {
			fprintf(stderr, "loadgen: out of memory\n");
			return 1;
		}
		lg->nalive++;
		bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
		bufferevent_set_timeouts(c->bev, &timeout, NULL);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
			fprintf(stderr, "loadgen: cannot connect to %s: %s\n", lg->addr,
			        strerror(EVUTIL_SOCKET_ERROR()));
			return 1;
		}
	}
	event_base_dispatch(lg->base);
	if (!lg->stopping) /* every connection ended on its own */
		finish(lg);
	if (lg->exit_code != 1)
		print_result(lg);
	for (unsigned i = 0; i < lg->nconns; i++) {
		if (lg->conns[i].bev != NULL)
			bufferevent_free(lg->conns[i].bev);
		msgpack_sbuffer_destroy(&lg->conns[i].sb);
		free(lg->conns[i].slots);
	}
	free(lg->conns);
	free(lg->lat_us);
	for (size_t i = 0; i < lg->nsamples; i++) {
		free(lg->samples[i].name);
		free(lg->samples[i].path);
	}
	free(lg->samples);
	for (size_t i = lg->dirs_head; i < lg->ndirs; i++)
		free(lg->dirs[i].path);
	free(lg->dirs);
	free(lg->walk_cursor);
	event_free(lg->warm_ev);
	event_free(lg->end_ev);
	event_free(lg->sigint_ev);
	event_free(lg->sigterm_ev);
	event_base_free(lg->base);
	if (lg->exit_code != 0)
		return lg->exit_code;
	return lg->errors > 0 ? 3 : 0;
}
