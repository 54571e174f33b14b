/* cache_bench: block reads from a warm mp-cache beside nginx proxy_cache
 * and nginx static files over the same bytes, and misses of a cold mp-cache
 * beside plain ranged GETs of the origin's objects. bench/run-cache-bench
 * starts the servers and writes the manifest.
 *
 * Every side pays the same client costs: one blocking TCP connection per
 * thread, a 64 KiB read buffer, bodies received straight into a per-thread
 * scratch buffer (4 MiB pieces), and the same checks. mp-cache is spoken to
 * in its wire protocol (HELLO, then BLOCK_READ frames); nginx over HTTP/1.1
 * with keep-alive and a Range header. A range that spans two blocks is two
 * pipelined BLOCK_READs for the cache and one Range request for nginx; a
 * whole file is its blocks, WINDOW outstanding at a time, against one GET.
 *
 * Manifest (one item a line):
 *   file hit|miss NAME SIZE          a file, served by nginx at /NAME
 *   ext BUCKET KEY ETAG OFFSET LENGTH  its next extent (object bytes
 *                                    OFFSET..+LENGTH), the origin object
 *                                    at OBJECTS/KEY and at nginx /o/KEY
 * Bytes are checked against OBJECTS/KEY (mapped): all of them while warming
 * up, the first and last 32 of every piece while measuring. A wrong byte, a
 * short answer or an error ends the program: figures from a broken run are
 * worth nothing. Prints one table. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <msgpack.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "samples.h"

#define MAX_FILES   1024
#define MAX_EXTENTS 64
#define MAX_THREADS 64
#define IN_CAP      (64u << 10)
#define CHECK_BYTES 32
#define MAX_PIECES  1024
#define WIRE_HELLO  1
#define WIRE_ERROR  3
#define WIRE_REPLY  4
#define WIRE_READ   40
#define SMALL_READ  4096
#define GB          1e9

struct extent {
	char bucket[64], key[1100], etag[128];
	uint64_t obj_off, len, file_off;
	const uint8_t *map; /* OBJECTS/KEY, whole object */
	size_t map_len;
};

struct file {
	char name[256];
	bool miss;
	uint64_t size;
	struct extent ext[MAX_EXTENTS];
	int next;
};

enum side { SIDE_CACHE, SIDE_PROXY, SIDE_STATIC, SIDE_COLD, SIDE_PROXY_COLD, SIDE_ORIGIN, NSIDES };
static const char *const side_names[NSIDES] = {
    "mp-cache",      "nginx proxy_cache",      "nginx static",
    "mp-cache cold", "nginx proxy_cache cold", "origin GET"};

enum kase { CASE_ALIGNED, CASE_UNALIGNED, CASE_WHOLE, CASE_RAND4K, CASE_MISS };

struct opts {
	const char *manifest, *objects;
	const char *addr[NSIDES];
	double seconds;
	int threads[8], nthreads;
	int window;
	uint64_t block_size;
	const char *proxy_mode; /* how the proxy caches, for the table */
	unsigned cases;         /* 1 << enum kase */
	const char *perf_ctl;   /* perf record --control FIFOs, comma-separated */
};

static struct opts o = {.seconds = 3, .window = 4, .block_size = 4u << 20, .cases = 0x1f};
static const char *const case_keys[] = {"aligned", "unaligned", "whole", "rand4k", "miss"};
static struct file files[MAX_FILES];
static int nfiles;
static int hit_files[MAX_FILES], nhit;
/* The miss files' blocks, (file, block) in file order. */
static struct miss_block {
	int file;
	uint64_t off, len; /* within one block of one extent */
} * miss_blocks;
static size_t nmiss_blocks;

/* ---- manifest and expected bytes ---- */

static const uint8_t *map_object(const char *key, uint64_t need, size_t *ret_len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", o.objects, key);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		bench_die("%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < need)
		bench_die("%s: shorter than the layout says (%" PRIu64 " bytes wanted)", path,
		          need);
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		bench_die("mmap %s: %s", path, strerror(errno));
	close(fd);
	*ret_len = (size_t)st.st_size;
	return m;
}

static void load_manifest(void)
{
	FILE *in = fopen(o.manifest, "r");
	if (in == NULL)
		bench_die("%s: %s", o.manifest, strerror(errno));
	char line[4096];
	int lineno = 0;
	struct file *f = NULL;
	while (fgets(line, sizeof(line), in) != NULL) {
		lineno++;
		char kind[16], a[16], b[1100], c[128];
		uint64_t x, y;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%15s", kind) != 1)
			continue;
		if (strcmp(kind, "file") == 0) {
			if (nfiles == MAX_FILES)
				bench_die("%s: more than %d files", o.manifest, MAX_FILES);
			f = &files[nfiles++];
			if (sscanf(line, "file %15s %255s %" SCNu64, a, f->name, &f->size) != 3 ||
			    (strcmp(a, "hit") != 0 && strcmp(a, "miss") != 0) || f->size == 0)
				bench_die("%s:%d: want 'file hit|miss NAME SIZE'", o.manifest,
				          lineno);
			f->miss = strcmp(a, "miss") == 0;
		} else if (strcmp(kind, "ext") == 0) {
			char bucket[64];
			if (f == NULL || f->next == MAX_EXTENTS)
				bench_die("%s:%d: an extent outside a file, or too many",
				          o.manifest, lineno);
			if (sscanf(line, "ext %63s %1099s %127s %" SCNu64 " %" SCNu64, bucket, b, c,
			           &x, &y) != 5 ||
			    y == 0)
				bench_die("%s:%d: want 'ext BUCKET KEY ETAG OFFSET LENGTH'",
				          o.manifest, lineno);
			struct extent *e = &f->ext[f->next];
			snprintf(e->bucket, sizeof(e->bucket), "%s", bucket);
			snprintf(e->key, sizeof(e->key), "%s", b);
			snprintf(e->etag, sizeof(e->etag), "%s", c);
			e->obj_off = x;
			e->len = y;
			e->file_off =
			    f->next ? f->ext[f->next - 1].file_off + f->ext[f->next - 1].len : 0;
			f->next++;
		} else {
			bench_die("%s:%d: unknown line '%s'", o.manifest, lineno, kind);
		}
	}
	fclose(in);
	for (int i = 0; i < nfiles; i++) {
		f = &files[i];
		uint64_t sum = 0;
		for (int k = 0; k < f->next; k++) {
			struct extent *e = &f->ext[k];
			e->map = map_object(e->key, e->obj_off + e->len, &e->map_len);
			sum += e->len;
		}
		if (sum != f->size)
			bench_die("%s: extents hold %" PRIu64 " bytes, the file %" PRIu64, f->name,
			          sum, f->size);
		if (f->miss) {
			for (int k = 0; k < f->next; k++) {
				const struct extent *e = &f->ext[k];
				for (uint64_t at = 0; at < e->len;) {
					uint64_t obj = e->obj_off + at;
					uint64_t len =
					    (obj / o.block_size + 1) * o.block_size - obj;
					len = len < e->len - at ? len : e->len - at;
					miss_blocks = bench_xrealloc(
					    miss_blocks, (nmiss_blocks + 1) * sizeof(*miss_blocks));
					miss_blocks[nmiss_blocks++] =
					    (struct miss_block){i, e->file_off + at, len};
					at += len;
				}
			}
		} else {
			if (f->size < 2 * o.block_size)
				bench_die("%s: hit files must hold at least two blocks", f->name);
			hit_files[nhit++] = i;
		}
	}
	if (nhit == 0)
		bench_die("%s: no hit files", o.manifest);
}

static const struct extent *extent_at(const struct file *f, uint64_t off)
{
	for (int k = 0; k < f->next; k++)
		if (off >= f->ext[k].file_off && off < f->ext[k].file_off + f->ext[k].len)
			return &f->ext[k];
	bench_die("%s: offset %" PRIu64 " is past the file", f->name, off);
}

static void compare(const struct file *f, uint64_t off, const uint8_t *got, size_t n,
                    const char *who)
{
	while (n > 0) {
		const struct extent *e = extent_at(f, off);
		uint64_t within = off - e->file_off;
		size_t k = (size_t)(e->len - within < n ? e->len - within : n);
		if (memcmp(got, e->map + e->obj_off + within, k) != 0)
			bench_die("%s: wrong bytes in %s between %" PRIu64 " and %" PRIu64, who,
			          f->name, off, off + k);
		off += k;
		got += k;
		n -= k;
	}
}

/* All of [off, off+n) or its first and last CHECK_BYTES. */
static void check(const struct file *f, uint64_t off, const uint8_t *got, size_t n, bool full,
                  const char *who)
{
	if (full || n <= 2 * CHECK_BYTES) {
		compare(f, off, got, n, who);
		return;
	}
	compare(f, off, got, CHECK_BYTES, who);
	compare(f, off + n - CHECK_BYTES, got + n - CHECK_BYTES, CHECK_BYTES, who);
}

/* ---- connections ---- */

struct conn {
	int fd;
	enum side side;
	const char *addr;
	uint64_t next_id;
	uint8_t *in;
	size_t in_pos, in_len;
	uint8_t *scratch;
	size_t scratch_cap;
	msgpack_sbuffer sb;
	msgpack_unpacked up;
	uint64_t hits, other; /* cache answers by source */
	char other_source[16];
};

static bool side_is_wire(enum side s)
{
	return s == SIDE_CACHE || s == SIDE_COLD;
}

static int dial(const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
		bench_die("%s: want HOST:PORT", addr);
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
	int r = getaddrinfo(host, colon + 1, &hints, &res);
	if (r != 0)
		bench_die("%s: %s", addr, gai_strerror(r));
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0)
		bench_die("connect %s: %s", addr, strerror(errno));
	freeaddrinfo(res);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void send_all(struct conn *c, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			bench_die("send to %s (%s): %s", side_names[c->side], c->addr,
			          strerror(errno));
		p = (const uint8_t *)p + k;
		n -= (size_t)k;
	}
}

static size_t fill_in(struct conn *c)
{
	if (c->in_pos > 0 && c->in_pos == c->in_len)
		c->in_pos = c->in_len = 0;
	if (c->in_len == IN_CAP) {
		memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
		c->in_len -= c->in_pos;
		c->in_pos = 0;
	}
	for (;;) {
		ssize_t k = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0)
			bench_die("%s (%s) closed the connection", side_names[c->side], c->addr);
		if (k < 0)
			bench_die("recv from %s (%s): %s", side_names[c->side], c->addr,
			          strerror(errno));
		c->in_len += (size_t)k;
		return (size_t)k;
	}
}

/* Large reads go straight into dst; small ones through the buffer. */
static void read_exact(struct conn *c, uint8_t *dst, size_t n)
{
	while (n > 0) {
		if (c->in_pos < c->in_len) {
			size_t k = c->in_len - c->in_pos < n ? c->in_len - c->in_pos : n;
			memcpy(dst, c->in + c->in_pos, k);
			c->in_pos += k;
			dst += k;
			n -= k;
			continue;
		}
		if (n >= IN_CAP) {
			ssize_t k = recv(c->fd, dst, n, 0);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				bench_die("recv from %s (%s): %s", side_names[c->side], c->addr,
				          k == 0 ? "connection closed" : strerror(errno));
			dst += k;
			n -= (size_t)k;
			continue;
		}
		c->in_pos = c->in_len = 0;
		fill_in(c);
	}
}

/* Receives n body bytes of f at off into the scratch buffer, piece by
 * piece, checking each. */
static void read_body(struct conn *c, const struct file *f, uint64_t off, uint64_t n, bool full)
{
	while (n > 0) {
		size_t k = (size_t)(n < c->scratch_cap ? n : c->scratch_cap);
		read_exact(c, c->scratch, k);
		check(f, off, c->scratch, k, full, side_names[c->side]);
		off += k;
		n -= k;
	}
}

static void wire_begin(struct conn *c, msgpack_packer *pk, int type, uint64_t id, int fields)
{
	static const char zero[4];
	msgpack_sbuffer_write(&c->sb, zero, 4);
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint32(pk, (uint32_t)type);
	msgpack_pack_uint64(pk, id);
	msgpack_pack_map(pk, (size_t)fields);
}

static void wire_end(msgpack_sbuffer *sb, size_t start)
{
	uint32_t n = (uint32_t)(sb->size - start - 4);
	uint8_t *h = (uint8_t *)sb->data + start;
	h[0] = (uint8_t)(n >> 24);
	h[1] = (uint8_t)(n >> 16);
	h[2] = (uint8_t)(n >> 8);
	h[3] = (uint8_t)n;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	if (m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t kl = strlen(key);
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object_kv *kv = &m->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
		    memcmp(kv->key.via.str.ptr, key, kl) == 0)
			return &kv->val;
	}
	return NULL;
}

/* A whole small frame (an error, or HELLO's answer): dies on an error. */
static const msgpack_object *wire_small(struct conn *c, const uint8_t *frame, size_t len,
                                        uint64_t id, const char *what)
{
	size_t off = 0;
	if (msgpack_unpack_next(&c->up, (const char *)frame, len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    c->up.data.type != MSGPACK_OBJECT_ARRAY || c->up.data.via.array.size != 3)
		bench_die("%s (%s): a malformed answer to %s", side_names[c->side], c->addr, what);
	const msgpack_object *a = c->up.data.via.array.ptr;
	if (a[0].via.u64 == WIRE_ERROR) {
		const msgpack_object *m = map_get(&a[2], "message");
		bench_die("%s (%s): %s: error: %.*s", side_names[c->side], c->addr, what,
		          m && m->type == MSGPACK_OBJECT_STR ? (int)m->via.str.size : 1,
		          m && m->type == MSGPACK_OBJECT_STR ? m->via.str.ptr : "?");
	}
	if (a[1].via.u64 != id)
		bench_die("%s (%s): answer %" PRIu64 " to request %" PRIu64 " (%s)",
		          side_names[c->side], c->addr, a[1].via.u64, id, what);
	return &a[2];
}

static uint32_t read_frame_len(struct conn *c)
{
	uint8_t h[4];
	read_exact(c, h, 4);
	return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

static void wire_hello(struct conn *c)
{
	msgpack_packer pk;
	msgpack_sbuffer_clear(&c->sb);
	msgpack_packer_init(&pk, &c->sb, msgpack_sbuffer_write);
	uint64_t id = c->next_id++;
	wire_begin(c, &pk, WIRE_HELLO, id, 1);
	pack_str(&pk, "proto");
	msgpack_pack_uint32(&pk, 1);
	wire_end(&c->sb, 0);
	send_all(c, c->sb.data, c->sb.size);
	uint32_t n = read_frame_len(c);
	if (n > c->scratch_cap)
		bench_die("%s (%s): a %u-byte answer to HELLO", side_names[c->side], c->addr, n);
	read_exact(c, c->scratch, n);
	wire_small(c, c->scratch, n, id, "HELLO");
}

/* A piece: bytes [off, off+len) of f within one block of one extent. */
struct piece {
	uint64_t off, len;
	const struct extent *e;
};

static size_t split(const struct file *f, uint64_t off, uint64_t len, struct piece *p)
{
	size_t n = 0;
	while (len > 0) {
		if (n == MAX_PIECES)
			bench_die("a range of more than %d blocks", MAX_PIECES);
		const struct extent *e = extent_at(f, off);
		uint64_t obj = e->obj_off + off - e->file_off;
		uint64_t room = (obj / o.block_size + 1) * o.block_size - obj;
		uint64_t left = e->file_off + e->len - off;
		uint64_t k = len < room ? len : room;
		k = k < left ? k : left;
		p[n++] = (struct piece){off, k, e};
		off += k;
		len -= k;
	}
	return n;
}

static void wire_send_read(struct conn *c, const struct piece *p, uint64_t id)
{
	msgpack_packer pk;
	size_t start = c->sb.size;
	msgpack_packer_init(&pk, &c->sb, msgpack_sbuffer_write);
	wire_begin(c, &pk, WIRE_READ, id, 6);
	pack_str(&pk, "bucket");
	pack_str(&pk, p->e->bucket);
	pack_str(&pk, "key");
	pack_str(&pk, p->e->key);
	pack_str(&pk, "etag");
	pack_str(&pk, p->e->etag);
	pack_str(&pk, "size");
	msgpack_pack_uint64(&pk, p->e->obj_off + p->e->len);
	pack_str(&pk, "offset");
	msgpack_pack_uint64(&pk, p->e->obj_off + p->off - p->e->file_off);
	pack_str(&pk, "length");
	msgpack_pack_uint64(&pk, p->len);
	wire_end(&c->sb, start);
}

/* The answer to a read of p: [4, id, {..., data: bin32}] with the data
 * last. Its head is what precedes the data; with the bin32 header turned
 * into nil it unpacks alone, so the data is received without a copy. */
static void wire_recv_read(struct conn *c, const struct file *f, const struct piece *p, uint64_t id,
                           bool full)
{
	uint32_t n = read_frame_len(c);
	uint8_t head[512];
	if (n > p->len && n - p->len <= sizeof(head)) {
		size_t hl = n - (size_t)p->len;
		read_exact(c, head, hl);
		uint32_t want = (uint32_t)p->len;
		const uint8_t bin[5] = {0xc6, (uint8_t)(want >> 24), (uint8_t)(want >> 16),
		                        (uint8_t)(want >> 8), (uint8_t)want};
		if (hl > 5 && memcmp(head + hl - 5, bin, 5) == 0) {
			head[hl - 5] = 0xc0;
			const msgpack_object *body = wire_small(c, head, hl - 4, id, "BLOCK_READ");
			const msgpack_object *src = map_get(body, "source");
			if (src && src->type == MSGPACK_OBJECT_STR && src->via.str.size == 3 &&
			    memcmp(src->via.str.ptr, "hit", 3) == 0) {
				c->hits++;
			} else {
				c->other++;
				if (src && src->type == MSGPACK_OBJECT_STR)
					snprintf(c->other_source, sizeof(c->other_source), "%.*s",
					         (int)src->via.str.size, src->via.str.ptr);
			}
			read_body(c, f, p->off, p->len, full);
			return;
		}
		/* Not a data answer after all: read the rest, report it. */
		if (n > c->scratch_cap)
			bench_die("%s (%s): a malformed %u-byte answer", side_names[c->side],
			          c->addr, n);
		memcpy(c->scratch, head, hl);
		read_exact(c, c->scratch + hl, n - hl);
	} else {
		if (n > c->scratch_cap)
			bench_die("%s (%s): a %u-byte answer to a %" PRIu64 "-byte read",
			          side_names[c->side], c->addr, n, p->len);
		read_exact(c, c->scratch, n);
	}
	wire_small(c, c->scratch, n, id, "BLOCK_READ");
	bench_die("%s (%s): an answer to BLOCK_READ %s/%s at %" PRIu64 " without its data",
	          side_names[c->side], c->addr, p->e->bucket, p->e->key, p->off);
}

/* Reads [off, off+len) of f as pieces, keeping `window` of them in flight
 * (answers come back in request order for hits). */
static void wire_range(struct conn *c, const struct file *f, uint64_t off, uint64_t len, int window,
                       bool full)
{
	static _Thread_local struct piece p[MAX_PIECES];
	size_t n = split(f, off, len, p), sent = 0, got = 0;
	uint64_t first = c->next_id;
	c->next_id += n;
	while (got < n) {
		msgpack_sbuffer_clear(&c->sb);
		while (sent < n && sent - got < (size_t)window) {
			wire_send_read(c, &p[sent], first + sent);
			sent++;
		}
		if (c->sb.size > 0)
			send_all(c, c->sb.data, c->sb.size);
		wire_recv_read(c, f, &p[got], first + got, full);
		got++;
	}
}

/* ---- HTTP ---- */

static const char *find_crlf2(const uint8_t *p, size_t n)
{
	for (size_t i = 3; i < n; i++)
		if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')
			return (const char *)p + i + 1;
	return NULL;
}

static void http_range(struct conn *c, const struct file *f, uint64_t off, uint64_t len, bool full)
{
	char req[1600];
	int rn;
	bool ranged = !(off == 0 && len == f->size);
	if (c->side == SIDE_ORIGIN || c->side == SIDE_PROXY_COLD) {
		/* The object itself; the range lies within one extent. */
		const struct extent *e = extent_at(f, off);
		uint64_t obj = e->obj_off + off - e->file_off;
		rn = snprintf(req, sizeof(req),
		              "GET /o/%s HTTP/1.1\r\nHost: bench\r\nRange: bytes=%" PRIu64
		              "-%" PRIu64 "\r\n\r\n",
		              e->key, obj, obj + len - 1);
	} else if (ranged) {
		rn = snprintf(req, sizeof(req),
		              "GET /%s HTTP/1.1\r\nHost: bench\r\nRange: bytes=%" PRIu64 "-%" PRIu64
		              "\r\n\r\n",
		              f->name, off, off + len - 1);
	} else {
		rn = snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: bench\r\n\r\n", f->name);
	}
	send_all(c, req, (size_t)rn);
	const char *end;
	while ((end = find_crlf2(c->in + c->in_pos, c->in_len - c->in_pos)) == NULL) {
		if (c->in_len - c->in_pos >= IN_CAP / 2)
			bench_die("%s (%s): response headers past %u bytes", side_names[c->side],
			          c->addr, IN_CAP / 2);
		fill_in(c);
	}
	/* A NUL-terminated copy, for the string functions. */
	char h[IN_CAP / 2 + 8];
	size_t hl = (size_t)(end - ((const char *)c->in + c->in_pos));
	if (hl > IN_CAP / 2)
		bench_die("%s (%s): response headers past %u bytes", side_names[c->side], c->addr,
		          IN_CAP / 2);
	memcpy(h, c->in + c->in_pos, hl);
	h[hl] = '\0';
	end = h + hl;
	int status = 0;
	if (sscanf(h, "HTTP/1.%*d %d", &status) != 1)
		bench_die("%s (%s): not an HTTP response", side_names[c->side], c->addr);
	int64_t clen = -1;
	bool chunked = false, closing = false;
	for (const char *l = strstr(h, "\r\n"); l && l + 2 < end; l = strstr(l + 2, "\r\n")) {
		const char *v = l + 2;
		if (strncasecmp(v, "content-length:", 15) == 0)
			clen = strtoll(v + 15, NULL, 10);
		else if (strncasecmp(v, "transfer-encoding:", 18) == 0)
			chunked = true;
		else if (strncasecmp(v, "connection: close", 17) == 0)
			closing = true;
	}
	bool object = c->side == SIDE_ORIGIN || c->side == SIDE_PROXY_COLD;
	if (status != (ranged || object ? 206 : 200) || clen != (int64_t)len || chunked || closing)
		bench_die("%s (%s): GET %s bytes %" PRIu64 "+%" PRIu64
		          ": status %d, length %" PRId64 "%s%s:\n%.*s",
		          side_names[c->side], c->addr, f->name, off, len, status, clen,
		          chunked ? ", chunked" : "", closing ? ", closing" : "", (int)hl, h);
	c->in_pos += hl;
	read_body(c, f, off, len, full);
}

static struct conn *conn_open(enum side side)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		bench_die("out of memory");
	c->side = side;
	c->addr = o.addr[side];
	if (c->addr == NULL)
		bench_die("no address for %s", side_names[side]);
	c->fd = dial(c->addr);
	c->in = bench_xrealloc(NULL, IN_CAP);
	c->scratch_cap = o.block_size;
	c->scratch = bench_xrealloc(NULL, c->scratch_cap);
	c->next_id = 1;
	msgpack_sbuffer_init(&c->sb);
	msgpack_unpacked_init(&c->up);
	if (side_is_wire(side))
		wire_hello(c);
	return c;
}

static void conn_close(struct conn *c)
{
	if (c == NULL)
		return;
	close(c->fd);
	free(c->in);
	free(c->scratch);
	msgpack_sbuffer_destroy(&c->sb);
	msgpack_unpacked_destroy(&c->up);
	free(c);
}

static void read_range(struct conn *c, const struct file *f, uint64_t off, uint64_t len, bool full)
{
	if (side_is_wire(c->side))
		wire_range(c, f, off, len, o.window, full);
	else
		http_range(c, f, off, len, full);
}

/* ---- runs ---- */

struct run {
	enum kase k;
	enum side side;
	int threads;
	/* miss runs: blocks [miss_from, miss_to) */
	size_t miss_from, miss_to;
	atomic_size_t miss_next;
	pthread_barrier_t go;
	int64_t start_ns, deadline_ns;
	pthread_mutex_t lock;
	struct samples lat;
	uint64_t bytes, ops, hits, other;
	int64_t end_ns;
	char other_source[16];
	atomic_uint seed;
};

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* One operation of the run's case: false when a miss run has no block left. */
static bool one_op(struct run *r, struct conn *c, uint64_t *seed, uint64_t *ret_bytes)
{
	uint64_t bs = o.block_size;
	const struct file *f;
	uint64_t off, len;
	switch (r->k) {
	case CASE_MISS: {
		size_t i = atomic_fetch_add(&r->miss_next, 1);
		if (r->miss_from + i >= r->miss_to)
			return false;
		const struct miss_block *b = &miss_blocks[r->miss_from + i];
		f = &files[b->file];
		off = b->off;
		len = b->len;
		break;
	}
	case CASE_ALIGNED:
		f = &files[hit_files[xorshift(seed) % (uint64_t)nhit]];
		off = xorshift(seed) % (f->size / bs) * bs;
		len = bs;
		break;
	case CASE_UNALIGNED:
		f = &files[hit_files[xorshift(seed) % (uint64_t)nhit]];
		off = xorshift(seed) % (f->size - bs);
		if (off % bs == 0)
			off++;
		len = bs;
		break;
	case CASE_WHOLE:
		f = &files[hit_files[xorshift(seed) % (uint64_t)nhit]];
		off = 0;
		len = f->size;
		break;
	case CASE_RAND4K:
	default:
		f = &files[hit_files[xorshift(seed) % (uint64_t)nhit]];
		off = xorshift(seed) % (f->size / SMALL_READ) * SMALL_READ;
		len = SMALL_READ;
		break;
	}
	read_range(c, f, off, len, false);
	*ret_bytes = len;
	return true;
}

static void *run_thread(void *arg)
{
	struct run *r = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (atomic_fetch_add(&r->seed, 1) + 1) ^ 0x5bd1e995;
	struct conn *c = conn_open(r->side);
	struct samples lat = {0};
	uint64_t bytes = 0, ops = 0;
	pthread_barrier_wait(&r->go);
	pthread_barrier_wait(&r->go); /* the main thread has set the deadline */
	for (;;) {
		int64_t t0 = bench_mono_ns();
		if (t0 >= r->deadline_ns)
			break;
		uint64_t n;
		if (!one_op(r, c, &seed, &n))
			break;
		samples_add(&lat, bench_mono_ns() - t0);
		bytes += n;
		ops++;
	}
	int64_t end = bench_mono_ns();
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < lat.n; i++)
		samples_add(&r->lat, lat.v[i]);
	r->bytes += bytes;
	r->ops += ops;
	r->hits += c->hits;
	r->other += c->other;
	if (c->other)
		snprintf(r->other_source, sizeof(r->other_source), "%s", c->other_source);
	if (end > r->end_ns)
		r->end_ns = end;
	pthread_mutex_unlock(&r->lock);
	free(lat.v);
	conn_close(c);
	return NULL;
}

struct result {
	bool done;
	double gbps, ops_per_s, p50_us, p99_us;
	uint64_t ops, hits, other;
	char other_source[16];
};

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct_us(const struct samples *s, double q)
{
	if (s->n == 0)
		return 0;
	size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
	return (double)s->v[i < s->n ? i : s->n - 1] / 1000.0;
}

static const char *case_name(enum kase k)
{
	static const char *const names[] = {"4MiB aligned", "4MiB unaligned", "whole file",
	                                    "4KiB random", "4MiB miss"};
	return names[k];
}

static struct result run(enum kase k, enum side side, int threads, size_t miss_from, size_t miss_to)
{
	struct run r = {
	    .k = k, .side = side, .threads = threads, .miss_from = miss_from, .miss_to = miss_to};
	pthread_t th[MAX_THREADS];
	pthread_barrier_init(&r.go, NULL, (unsigned)threads + 1);
	pthread_mutex_init(&r.lock, NULL);
	for (int i = 0; i < threads; i++)
		if (pthread_create(&th[i], NULL, run_thread, &r) != 0)
			bench_die("pthread_create failed");
	pthread_barrier_wait(&r.go); /* all connected */
	r.start_ns = bench_mono_ns();
	r.deadline_ns = r.start_ns + (int64_t)(o.seconds * 1e9);
	pthread_barrier_wait(&r.go);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	double secs = (double)(r.end_ns - r.start_ns) / 1e9;
	qsort(r.lat.v, r.lat.n, sizeof(*r.lat.v), cmp_i64);
	struct result res = {.done = true,
	                     .gbps = (double)r.bytes / secs / GB,
	                     .ops_per_s = (double)r.ops / secs,
	                     .p50_us = pct_us(&r.lat, 0.50),
	                     .p99_us = pct_us(&r.lat, 0.99),
	                     .ops = r.ops,
	                     .hits = r.hits,
	                     .other = r.other};
	snprintf(res.other_source, sizeof(res.other_source), "%s", r.other_source);
	fprintf(stderr,
	        "cache_bench: %-14s %2d thr %-17s %7.3f GB/s %9.0f ops/s p50 %8.1f us p99 %8.1f "
	        "us (%.2f s)",
	        case_name(k), threads, side_names[side], res.gbps, res.ops_per_s, res.p50_us,
	        res.p99_us, secs);
	if (side_is_wire(side))
		fprintf(stderr, " hits %" PRIu64 " other %" PRIu64 "%s%s", r.hits, r.other,
		        r.other ? " e.g. " : "", r.other_source);
	fprintf(stderr, "\n");
	free(r.lat.v);
	pthread_mutex_destroy(&r.lock);
	pthread_barrier_destroy(&r.go);
	return res;
}

/* Every block of every hit file, twice through each warm side: the first
 * pass fills caches, the second must be all hits; every byte checked. */
static void warm_up(enum side side)
{
	struct conn *c = conn_open(side);
	int64_t t0 = bench_mono_ns();
	for (int pass = 0; pass < 2; pass++) {
		c->hits = c->other = 0;
		for (int i = 0; i < nhit; i++) {
			const struct file *f = &files[hit_files[i]];
			for (uint64_t off = 0; off < f->size; off += o.block_size) {
				uint64_t len =
				    f->size - off < o.block_size ? f->size - off : o.block_size;
				if (side_is_wire(side))
					wire_range(c, f, off, len, 1, true);
				else
					http_range(c, f, off, len, true);
			}
		}
	}
	if (side_is_wire(side) && c->other > 0)
		bench_die("%s: %" PRIu64 " of the second warm-up pass's reads were not hits (%s)",
		          side_names[side], c->other, c->other_source);
	fprintf(stderr, "cache_bench: warmed up %s in %.2f s, every byte checked\n",
	        side_names[side], (double)(bench_mono_ns() - t0) / 1e9);
	conn_close(c);
}

/* Tells each `perf record -D -1 --control fifo:FIFO` to start: the
 * profiles then hold the measured runs only, not the warm-up's fills. */
static void perf_enable(void)
{
	if (o.perf_ctl == NULL)
		return;
	char *copy = strdup(o.perf_ctl), *save = NULL;
	for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		int fd = open(p, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0 || write(fd, "enable\n", 7) != 7)
			fprintf(stderr, "cache_bench: %s: cannot start perf: %s\n", p,
			        strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	free(copy);
}

/* ---- the table ---- */

#define NROWS 32
struct row {
	char label[64];
	bool latency; /* lower is better */
	bool miss;
	double v[3]; /* mp-cache, proxy_cache, static; < 0: not measured */
	char note[256];
};
static struct row rows[NROWS];
static int nrows;

static void fmt_val(char *out, size_t cap, double v, bool latency)
{
	if (v < 0)
		snprintf(out, cap, "-");
	else if (latency)
		snprintf(out, cap, "%.0f us", v);
	else
		snprintf(out, cap, "%.2f GB/s", v);
}

/* mp-cache's speed against another's: throughput ratio, or the other's
 * latency over mp-cache's. */
static double speed_ratio(const struct row *r, int other)
{
	if (r->v[0] <= 0 || r->v[other] <= 0)
		return -1;
	return r->latency ? r->v[other] / r->v[0] : r->v[0] / r->v[other];
}

static void loadavg(char *out, size_t cap)
{
	FILE *f = fopen("/proc/loadavg", "r");
	out[0] = '\0';
	if (f != NULL) {
		if (fgets(out, (int)cap, f) != NULL)
			out[strcspn(out, " ")] = '\0'; /* the 1-minute figure */
		fclose(f);
	}
}

static char load_start[64];

static void print_table(void)
{
	char load_end[64];
	loadavg(load_end, sizeof(load_end));
	printf("\nmp-cache block reads beside nginx 1.22 (Debian), 2 cores, data in the page "
	       "cache; %d hit files, block %" PRIu64 " MiB, %.1f s per figure\n",
	       nhit, o.block_size >> 20, o.seconds);
	printf("nginx proxy_cache: %s\n", o.proxy_mode);
	printf("load average (1 min) %s at the start, %s at the end: anything else running "
	       "shares the 2 cores\n",
	       load_start, load_end);
	printf("ratios are mp-cache's speed over the other's (latency rows: the other's "
	       "latency / mp-cache's)\n\n");
	printf("%-28s %12s %18s %14s %10s %10s  %s\n", "case", "mp-cache", "nginx proxy_cache",
	       "nginx static", "mp/proxy", "mp/static", "target");
	for (int i = 0; i < nrows; i++) {
		const struct row *r = &rows[i];
		char a[32], b[32], c[32], rp[32] = "-", rs[32] = "-", target[160];
		fmt_val(a, sizeof(a), r->v[0], r->latency);
		fmt_val(b, sizeof(b), r->v[1], r->latency);
		fmt_val(c, sizeof(c), r->v[2], r->latency);
		double p = speed_ratio(r, 1), s = speed_ratio(r, 2);
		if (p >= 0)
			snprintf(rp, sizeof(rp), "%.2fx", p);
		if (s >= 0)
			snprintf(rs, sizeof(rs), "%.2fx", s);
		if (r->miss)
			snprintf(target, sizeof(target), ">= 0.9x plain GET: %s",
			         s >= 0.9 ? "met" : "MISSED");
		else
			snprintf(target, sizeof(target),
			         ">= 1.0x proxy (aim 1.1x), >= 0.9x static: %s%s",
			         p >= 1.1 && s >= 0.9   ? "met, aim too"
			         : p >= 1.0 && s >= 0.9 ? "met"
			                                : "MISSED",
			         p >= 0 && p < 1.0   ? " (proxy)"
			         : s >= 0 && s < 0.9 ? " (static)"
			                             : "");
		printf("%-28s %12s %18s %14s %10s %10s  %s\n", r->label, a, b, c, rp, rs, target);
		if (r->note[0])
			printf("%-28s %s\n", "", r->note);
	}
	fflush(stdout);
}

static struct row *add_row(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct row *add_row(const char *fmt, ...)
{
	if (nrows == NROWS)
		bench_die("too many rows");
	struct row *r = &rows[nrows++];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->label, sizeof(r->label), fmt, ap);
	va_end(ap);
	r->v[0] = r->v[1] = r->v[2] = -1;
	return r;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: cache_bench --manifest FILE --objects DIR --cache HOST:PORT\n"
	        "                   --proxy HOST:PORT --static HOST:PORT [--cold HOST:PORT]\n"
	        "                   [--proxy-mode TEXT] [--seconds 3] [--threads 1,8]\n"
	        "                   [--window 4] [--block-size-mib 4]\n"
	        "                   [--cases aligned,unaligned,whole,rand4k,miss]\n"
	        "                   [--perf-ctl FIFO,...]\n"
	        "  --cache   a warm mp-cache (filled here during the warm-up)\n"
	        "  --cold    an mp-cache with an empty cache dir, for the miss figures\n"
	        "  --static  nginx serving the hit files at /NAME and OBJECTS at /o/KEY\n"
	        "  --proxy   nginx proxy_cache in front of --static\n");
	exit(2);
}

static void parse_cases(const char *s)
{
	o.cases = 0;
	char *copy = strdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t k;
		for (k = 0; k < sizeof(case_keys) / sizeof(case_keys[0]); k++)
			if (strcmp(t, case_keys[k]) == 0)
				break;
		if (k == sizeof(case_keys) / sizeof(case_keys[0]))
			bench_die("--cases: '%s' is not aligned, unaligned, whole, rand4k or miss",
			          t);
		o.cases |= 1u << k;
	}
	free(copy);
	if (o.cases == 0)
		usage();
}

static void parse_threads(const char *s)
{
	o.nthreads = 0;
	char *copy = strdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int n = atoi(t);
		if (n < 1 || n > MAX_THREADS || o.nthreads == 8)
			bench_die("--threads: 1..%d, at most 8 counts", MAX_THREADS);
		o.threads[o.nthreads++] = n;
	}
	free(copy);
	if (o.nthreads == 0)
		usage();
}

int main(int argc, char **argv)
{
	o.threads[0] = 1;
	o.threads[1] = 8;
	o.nthreads = 2;
	o.proxy_mode = "(not described)";
	static const struct option lopts[] = {
	    {"manifest", required_argument, NULL, 'M'},
	    {"objects", required_argument, NULL, 'O'},
	    {"cache", required_argument, NULL, 'c'},
	    {"cold", required_argument, NULL, 'C'},
	    {"proxy", required_argument, NULL, 'p'},
	    {"static", required_argument, NULL, 's'},
	    {"proxy-mode", required_argument, NULL, 'm'},
	    {"seconds", required_argument, NULL, 'S'},
	    {"threads", required_argument, NULL, 't'},
	    {"window", required_argument, NULL, 'w'},
	    {"block-size-mib", required_argument, NULL, 'b'},
	    {"cases", required_argument, NULL, 'K'},
	    {"perf-ctl", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (ch) {
		case 'M':
			o.manifest = optarg;
			break;
		case 'O':
			o.objects = optarg;
			break;
		case 'c':
			o.addr[SIDE_CACHE] = optarg;
			break;
		case 'C':
			o.addr[SIDE_COLD] = optarg;
			break;
		case 'p':
			o.addr[SIDE_PROXY] = o.addr[SIDE_PROXY_COLD] = optarg;
			break;
		case 's':
			o.addr[SIDE_STATIC] = o.addr[SIDE_ORIGIN] = optarg;
			break;
		case 'm':
			o.proxy_mode = optarg;
			break;
		case 'S':
			o.seconds = atof(optarg);
			break;
		case 't':
			parse_threads(optarg);
			break;
		case 'w':
			o.window = atoi(optarg);
			break;
		case 'b':
			o.block_size = (uint64_t)atoi(optarg) << 20;
			break;
		case 'K':
			parse_cases(optarg);
			break;
		case 'P':
			o.perf_ctl = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || o.manifest == NULL || o.objects == NULL ||
	    o.addr[SIDE_CACHE] == NULL || o.addr[SIDE_PROXY] == NULL || o.addr[SIDE_STATIC] == NULL)
		usage();
	if (o.seconds <= 0 || o.seconds > 600 || o.window < 1 || o.window > MAX_PIECES ||
	    o.block_size < (1u << 20) || o.block_size > (64u << 20))
		bench_die("--seconds 0..600, --window 1..%d, --block-size-mib 1..64", MAX_PIECES);
	load_manifest();
	loadavg(load_start, sizeof(load_start));

	if (o.cases & ~(1u << CASE_MISS)) {
		warm_up(SIDE_CACHE);
		warm_up(SIDE_PROXY);
		warm_up(SIDE_STATIC);
	}
	perf_enable();

	static const enum kase tput[] = {CASE_ALIGNED, CASE_UNALIGNED, CASE_WHOLE};
	static const enum side warm[] = {SIDE_CACHE, SIDE_PROXY, SIDE_STATIC};
	for (size_t k = 0; k < sizeof(tput) / sizeof(tput[0]); k++)
		for (int t = 0; t < o.nthreads && (o.cases & 1u << tput[k]); t++) {
			struct row *r =
			    add_row("%s%s, %d thr", case_name(tput[k]),
			            tput[k] == CASE_WHOLE ? "" : " range", o.threads[t]);
			if (tput[k] == CASE_WHOLE)
				snprintf(r->label, sizeof(r->label),
				         "whole %" PRIu64 " MiB file, %d thr",
				         files[hit_files[0]].size >> 20, o.threads[t]);
			for (int s = 0; s < 3; s++)
				r->v[s] = run(tput[k], warm[s], o.threads[t], 0, 0).gbps;
		}
	if (o.cases & 1u << CASE_RAND4K) {
		struct result small[3];
		for (int s = 0; s < 3; s++)
			small[s] = run(CASE_RAND4K, warm[s], 1, 0, 0);
		struct row *p50 = add_row("4KiB random p50, 1 thr");
		struct row *p99 = add_row("4KiB random p99, 1 thr");
		p50->latency = p99->latency = true;
		for (int s = 0; s < 3; s++) {
			p50->v[s] = small[s].p50_us;
			p99->v[s] = small[s].p99_us;
		}
		snprintf(p99->note, sizeof(p99->note),
		         "(4KiB reads/s: mp-cache %.0f, proxy %.0f, static %.0f)",
		         small[0].ops_per_s, small[1].ops_per_s, small[2].ops_per_s);
	}

	if ((o.cases & 1u << CASE_MISS) && o.addr[SIDE_COLD] != NULL && nmiss_blocks > 0) {
		/* Disjoint blocks, an equal share for each thread count: every
		 * read of the cold node is its first of that block. The origin
		 * GETs read the same blocks first (both from the page cache). */
		size_t from = 0, share = nmiss_blocks / (size_t)o.nthreads;
		for (int t = 0; t < o.nthreads; t++) {
			size_t to = t == o.nthreads - 1 ? nmiss_blocks : from + share;
			/* Both caches write every block they fetch: which goes
			 * first alternates, as new page-cache pages can cost more
			 * than reused ones (in a VM, much more). */
			struct result og = run(CASE_MISS, SIDE_ORIGIN, o.threads[t], from, to);
			struct result cold, pcold;
			if (t % 2 == 0) {
				cold = run(CASE_MISS, SIDE_COLD, o.threads[t], from, to);
				pcold = run(CASE_MISS, SIDE_PROXY_COLD, o.threads[t], from, to);
			} else {
				pcold = run(CASE_MISS, SIDE_PROXY_COLD, o.threads[t], from, to);
				cold = run(CASE_MISS, SIDE_COLD, o.threads[t], from, to);
			}
			struct row *r = add_row("4MiB miss (cold), %d thr", o.threads[t]);
			r->miss = true;
			r->v[0] = cold.gbps;
			r->v[1] = pcold.gbps;
			r->v[2] = og.gbps;
			snprintf(
			    r->note, sizeof(r->note),
			    "(proxy column: proxy_cache misses of the same blocks; static column: "
			    "ranged GETs of the origin's objects; mp-cache: %" PRIu64
			    " blocks, %" PRIu64 " hits)",
			    cold.ops, cold.hits);
			from = to;
		}
	}
	print_table();
	return 0;
}
