/* memory: resident memory per namespace entry.
 *
 * Namespace mode (the default) creates FILES files (1,000,000) in the
 * in-memory namespace through txn_create, the way mp-primary's write path
 * does, in directories of PER_DIR (1,000) entries, with names of 10..30
 * bytes (20 on average). Each variant runs in a fresh child process: one
 * without layouts (the entry itself) and one with a 100-byte layout per
 * file. It prints, per variant, the growth of VmRSS (after malloc_trim)
 * divided by the entries added, and the growth of namespace_memory() (the
 * bytes the namespace asked malloc for, without malloc's own overhead)
 * divided by the same count.
 *
 * Daemon mode (--daemon HOST:PORT --pid PID) makes the same tree through a
 * running mp-primary with BATCH requests of BATCH (1,000) CREATEs and
 * divides the growth of the daemon's VmRSS, from just after HELLO to just
 * after the last reply, by the entries added.
 *
 * Output: one JSON object per line per variant. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "msg.h"
#include "namespace.h"
#include "netaddr.h"
#include "proto.h"
#include "txn.h"

#define NAME_MIN_LEN         10
#define NAME_MAX_LEN         30 /* uniform in 10..30: 20 bytes on average */
#define DIR_NAME_LEN         20
#define LAYOUT_KEY_LEN       49 /* makes the encoded layout exactly 100 bytes */
#define LAYOUT_EXTENT_LENGTH 4194304u

struct options {
	uint64_t files;
	uint64_t per_dir;
	const char *daemon;
	long pid;
	bool daemon_layout;
	unsigned batch;
	unsigned depth;
	const char *run;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* VmRSS of /proc/PID/status in bytes (pid 0: this process); -1 on error. */
static long long read_rss(long pid)
{
	char path[64];
	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/status");
	else
		snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	char line[256];
	long long kb = -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

/* A name of 10..30 bytes, unique by its "fNNNNNNN" prefix, the rest
 * letters chosen by a hash of i. Returns its length. */
static size_t file_name(uint64_t i, char *buf)
{
	uint64_t h = hash_mix64(i + 0x9e3779b97f4a7c15ULL);
	size_t len = NAME_MIN_LEN + (size_t)(h % (NAME_MAX_LEN - NAME_MIN_LEN + 1));
	int n = snprintf(buf, NAME_MAX_LEN + 1, "f%07" PRIu64, i);
	for (size_t k = (size_t)n; k < len; k++) {
		h = hash_mix64(h);
		buf[k] = (char)('a' + h % 26);
	}
	if ((size_t)n > len) /* i beyond 7 digits: keep it unique, a bit longer */
		len = (size_t)n;
	buf[len] = '\0';
	return len;
}

static void dir_name(uint64_t d, char *buf)
{
	int n = snprintf(buf, DIR_NAME_LEN + 8, "dir-%06" PRIu64 "-", d);
	for (int k = n; k < DIR_NAME_LEN; k++)
		buf[k] = 'x';
	buf[n > DIR_NAME_LEN ? n : DIR_NAME_LEN] = '\0';
}

/* [[bucket, key, etag, offset, length]] in 100 bytes, unique per file. */
static void pack_layout(msgpack_packer *pk, uint64_t i)
{
	char key[LAYOUT_KEY_LEN + 1], etag[33];
	snprintf(key, sizeof(key), "objects/%016" PRIx64 "%016" PRIx64 "/%08" PRIx64, hash_mix64(i),
	         hash_mix64(~i), i & 0xffffffffu);
	snprintf(etag, sizeof(etag), "%016" PRIx64 "%016" PRIx64, hash_mix64(i ^ 1),
	         hash_mix64(i ^ 2));
	msgpack_pack_array(pk, 1);
	msgpack_pack_array(pk, 5);
	msg_pack_cstr(pk, "origin");
	msg_pack_strn(pk, key, LAYOUT_KEY_LEN);
	msg_pack_strn(pk, etag, 32);
	msgpack_pack_uint64(pk, 0);
	msgpack_pack_uint64(pk, LAYOUT_EXTENT_LENGTH);
}

static uint64_t ndirs(const struct options *o)
{
	return (o->files + o->per_dir - 1) / o->per_dir;
}

/* ---- namespace mode ---- */

static int namespace_variant(const struct options *o, bool with_layout)
{
	struct namespace *ns = namespace_new();
	if (ns == NULL) {
		fprintf(stderr, "memory: out of memory\n");
		return 1;
	}
	uint64_t next_ino = NODE_ROOT_INO + 1;
	msgpack_sbuffer lsb;
	msgpack_sbuffer_init(&lsb);
	char path[NODE_PATH_MAX], dname[DIR_NAME_LEN + 8], fname[NAME_MAX_LEN + 8];
	struct txn *t = txn_new(ns, &next_ino, 1);
	if (t == NULL || txn_mkdir(t, "/mem", 4, NULL, false, NULL) < 0) {
		fprintf(stderr, "memory: mkdir /mem: %s\n", t ? txn_error(t) : "out of memory");
		return 1;
	}
	txn_free(t);

	malloc_trim(0);
	long long rss0 = read_rss(0);
	size_t mem0 = namespace_memory(ns);
	uint64_t count0 = namespace_count(ns);
	uint64_t name_bytes = 0, layout_bytes = 0;
	int64_t t0 = mono_ns();
	uint64_t i = 0;
	for (uint64_t d = 0; d < ndirs(o); d++) {
		/* One transaction per directory, like a BATCH of its files. */
		t = txn_new(ns, &next_ino, 1000000000LL * (int64_t)d);
		if (t == NULL) {
			fprintf(stderr, "memory: out of memory\n");
			return 1;
		}
		dir_name(d, dname);
		name_bytes += strlen(dname);
		int n = snprintf(path, sizeof(path), "/mem/%s", dname);
		if (txn_mkdir(t, path, (size_t)n, NULL, false, NULL) < 0) {
			fprintf(stderr, "memory: mkdir %s: %s\n", path, txn_error(t));
			return 1;
		}
		for (uint64_t k = 0; k < o->per_dir && i < o->files; k++, i++) {
			size_t flen = file_name(i, fname);
			name_bytes += flen;
			n = snprintf(path, sizeof(path), "/mem/%s/%s", dname, fname);
			const uint8_t *layout = NULL;
			size_t llen = 0;
			if (with_layout) {
				msgpack_packer pk;
				msgpack_sbuffer_clear(&lsb);
				msgpack_packer_init(&pk, &lsb, msgpack_sbuffer_write);
				pack_layout(&pk, i);
				layout = (const uint8_t *)lsb.data;
				llen = lsb.size;
				layout_bytes += llen;
			}
			struct txn_attr a = {.mask = ATTR_SIZE, .size = LAYOUT_EXTENT_LENGTH};
			if (txn_create(t, path, (size_t)n, &a, layout, llen, NULL) < 0) {
				fprintf(stderr, "memory: create %s: %s\n", path, txn_error(t));
				return 1;
			}
		}
		txn_free(t);
	}
	double seconds = (double)(mono_ns() - t0) / 1e9;
	msgpack_sbuffer_destroy(&lsb);
	malloc_trim(0);
	long long rss1 = read_rss(0);
	size_t mem1 = namespace_memory(ns);
	uint64_t entries = namespace_count(ns) - count0;
	if (rss0 < 0 || rss1 < 0) {
		fprintf(stderr, "memory: cannot read VmRSS from /proc/self/status\n");
		return 1;
	}
	printf("{\"mode\": \"namespace\", \"layout_bytes\": %.1f, \"files\": %" PRIu64
	       ", \"dirs\": %" PRIu64 ", \"entries\": %" PRIu64 ", \"avg_name_bytes\": %.2f, "
	       "\"rss_delta_bytes\": %lld, \"rss_bytes_per_entry\": %.1f, "
	       "\"namespace_memory_bytes_per_entry\": %.1f, \"seconds\": %.2f, "
	       "\"creates_per_sec\": %.0f}\n",
	       i ? (double)layout_bytes / (double)i : 0.0, i, ndirs(o), entries,
	       entries ? (double)name_bytes / (double)entries : 0.0, rss1 - rss0,
	       entries ? (double)(rss1 - rss0) / (double)entries : 0.0,
	       entries ? (double)(mem1 - mem0) / (double)entries : 0.0, seconds,
	       seconds > 0 ? (double)i / seconds : 0.0);
	fflush(stdout);
	namespace_free(ns);
	return 0;
}

/* A fresh process per variant, so that neither inherits the other's heap. */
static int run_in_child(const struct options *o, bool with_layout)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		perror("memory: fork");
		return 1;
	}
	if (pid == 0)
		_exit(namespace_variant(o, with_layout));
	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("memory: waitpid");
			return 1;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "memory: the %s variant failed\n",
		        with_layout ? "with-layout" : "no-layout");
		return 1;
	}
	return 0;
}

/* ---- daemon mode: a small blocking client ---- */

static int write_all(int fd, const void *p, size_t len)
{
	const char *b = p;
	while (len > 0) {
		ssize_t n = write(fd, b, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t len)
{
	char *b = p;
	while (len > 0) {
		ssize_t n = read(fd, b, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads one frame into *buf (grown as needed) and decodes it into f. */
static int read_frame(int fd, uint8_t **buf, size_t *cap, struct frame *f)
{
	uint8_t hdr[FRAME_HEADER_LEN];
	int r = read_all(fd, hdr, sizeof(hdr));
	if (r < 0) {
		fprintf(stderr, "memory: reading a reply: %s\n", strerror(-r));
		return r;
	}
	uint32_t len =
	    (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (len > FRAME_DEFAULT_MAX) {
		fprintf(stderr, "memory: reply frame of %u bytes\n", len);
		return -EPROTO;
	}
	if (len > *cap) {
		uint8_t *n = realloc(*buf, len);
		if (n == NULL)
			return -ENOMEM;
		*buf = n;
		*cap = len;
	}
	if ((r = read_all(fd, *buf, len)) < 0) {
		fprintf(stderr, "memory: reading a reply: %s\n", strerror(-r));
		return r;
	}
	char err[256];
	if (frame_decode(*buf, len, f, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "memory: malformed reply: %s\n", err);
		return -EPROTO;
	}
	return 0;
}

/* Waits for the reply to id; an ERROR or anything else unexpected is
 * printed and fails. want_inos > 0 checks a BATCH reply's inos. */
static int expect_reply(int fd, uint8_t **buf, size_t *cap, uint64_t id, uint32_t want_type,
                        uint32_t want_inos, const char *what)
{
	struct frame f;
	int r = read_frame(fd, buf, cap, &f);
	if (r < 0)
		return r;
	r = 0;
	char err[256];
	if (f.type == MT_ERROR) {
		const char *msg = "";
		size_t mlen = 0;
		msg_get_bytes(f.body, "message", false, 0, 4096, &msg, &mlen, err, sizeof(err));
		fprintf(stderr, "memory: %s: ERROR %.*s\n", what, (int)mlen, msg);
		r = -EIO;
	} else if (f.type != want_type || f.id != id) {
		fprintf(stderr, "memory: %s: expected %s id %" PRIu64 ", got %s id %" PRIu64 "\n",
		        what, proto_msg_name(want_type), id, proto_msg_name(f.type), f.id);
		r = -EPROTO;
	} else if (want_inos > 0) {
		const msgpack_object_array *inos;
		if (msg_get_array(f.body, "inos", true, BATCH_MAX_OPS, &inos, err, sizeof(err)) <
		        0 ||
		    inos->size != want_inos) {
			fprintf(stderr, "memory: %s: REPLY without %u inos\n", what, want_inos);
			r = -EPROTO;
		}
	}
	frame_release(&f);
	return r;
}

static int connect_to(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *err = NULL;
	if (netaddr_resolve(addr, &ss, &sslen, &err) < 0) {
		fprintf(stderr, "memory: --daemon '%s': %s\n", addr, err ? err : "invalid");
		free(err);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sslen) < 0) {
		fprintf(stderr, "memory: cannot connect to %s: %s\n", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void pack_op_path(msgpack_packer *pk, uint32_t type, const char *path, int nfields)
{
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, type);
	msgpack_pack_map(pk, (uint32_t)nfields);
	msg_pack_key(pk, "path");
	msg_pack_cstr(pk, path);
}

/* One BATCH of the files [first, first + n) in their directories. */
static void pack_files_batch(const struct options *o, msgpack_sbuffer *sb, uint64_t id,
                             uint64_t first, uint32_t n)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, MT_BATCH, id, 1);
	msg_pack_key(&pk, "ops");
	msgpack_pack_array(&pk, n);
	char path[NODE_PATH_MAX], dname[DIR_NAME_LEN + 8], fname[NAME_MAX_LEN + 8];
	for (uint64_t i = first; i < first + n; i++) {
		dir_name(i / o->per_dir, dname);
		file_name(i, fname);
		snprintf(path, sizeof(path), "/mem-%s/%s/%s", o->run, dname, fname);
		pack_op_path(&pk, MT_CREATE, path, o->daemon_layout ? 3 : 2);
		msg_pack_key(&pk, "size");
		msgpack_pack_uint64(&pk, LAYOUT_EXTENT_LENGTH);
		if (o->daemon_layout) {
			msgpack_sbuffer lsb;
			msgpack_packer lpk;
			msgpack_sbuffer_init(&lsb);
			msgpack_packer_init(&lpk, &lsb, msgpack_sbuffer_write);
			pack_layout(&lpk, i);
			msg_pack_key(&pk, "layout");
			msg_pack_binn(&pk, lsb.data, lsb.size);
			msgpack_sbuffer_destroy(&lsb);
		}
	}
	msg_end(sb);
}

static int daemon_mode(const struct options *o)
{
	int fd = connect_to(o->daemon);
	if (fd < 0)
		return 1;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	uint8_t *buf = NULL;
	size_t cap = 0;
	uint64_t id = 0;
	int rc = 1;
	char path[NODE_PATH_MAX], dname[DIR_NAME_LEN + 8];

	msg_begin(&sb, &pk, MT_HELLO, ++id, 1);
	msg_pack_key(&pk, "proto");
	msgpack_pack_uint32(&pk, PROTO_VERSION);
	msg_end(&sb);
	if (write_all(fd, sb.data, sb.size) < 0 ||
	    expect_reply(fd, &buf, &cap, id, MT_HELLO_OK, 0, "HELLO") < 0)
		goto out;
	long long rss0 = read_rss(o->pid);
	if (rss0 < 0) {
		fprintf(stderr, "memory: cannot read VmRSS of pid %ld\n", o->pid);
		goto out;
	}

	/* The directories first (BATCHes of MKDIR), then the files. */
	snprintf(path, sizeof(path), "/mem-%s", o->run);
	msg_begin(&sb, &pk, MT_MKDIR, ++id, 1);
	msg_pack_key(&pk, "path");
	msg_pack_cstr(&pk, path);
	msg_end(&sb);
	if (write_all(fd, sb.data, sb.size) < 0 ||
	    expect_reply(fd, &buf, &cap, id, MT_REPLY, 0, "MKDIR") < 0)
		goto out;
	uint64_t dirs = ndirs(o);
	for (uint64_t d = 0; d < dirs;) {
		uint32_t n = dirs - d > o->batch ? o->batch : (uint32_t)(dirs - d);
		msg_begin(&sb, &pk, MT_BATCH, ++id, 1);
		msg_pack_key(&pk, "ops");
		msgpack_pack_array(&pk, n);
		for (uint32_t k = 0; k < n; k++, d++) {
			dir_name(d, dname);
			snprintf(path, sizeof(path), "/mem-%s/%s", o->run, dname);
			pack_op_path(&pk, MT_MKDIR, path, 1);
		}
		msg_end(&sb);
		if (write_all(fd, sb.data, sb.size) < 0 ||
		    expect_reply(fd, &buf, &cap, id, MT_REPLY, n, "BATCH of MKDIR") < 0)
			goto out;
	}

	/* Keep up to depth BATCHes in flight; replies come in order. */
	int64_t t0 = mono_ns();
	uint64_t sent = 0, done = 0, first_id = id + 1;
	uint32_t *sizes = calloc(o->files / o->batch + 2, sizeof(*sizes));
	if (sizes == NULL)
		goto out;
	while (done < o->files) {
		while (sent < o->files && (sent - done) < (uint64_t)o->batch * o->depth) {
			uint32_t n =
			    o->files - sent > o->batch ? o->batch : (uint32_t)(o->files - sent);
			sizes[id + 1 - first_id] = n;
			pack_files_batch(o, &sb, ++id, sent, n);
			int r = write_all(fd, sb.data, sb.size);
			if (r < 0) {
				fprintf(stderr, "memory: sending a BATCH: %s\n", strerror(-r));
				free(sizes);
				goto out;
			}
			sent += n;
		}
		uint64_t want = first_id + done / o->batch;
		uint32_t n = sizes[want - first_id];
		if (expect_reply(fd, &buf, &cap, want, MT_REPLY, n, "BATCH of CREATE") < 0) {
			free(sizes);
			goto out;
		}
		done += n;
	}
	free(sizes);
	double seconds = (double)(mono_ns() - t0) / 1e9;
	long long rss1 = read_rss(o->pid);
	if (rss1 < 0) {
		fprintf(stderr, "memory: cannot read VmRSS of pid %ld\n", o->pid);
		goto out;
	}
	uint64_t entries = o->files + dirs + 1;
	printf("{\"mode\": \"daemon\", \"layout\": %s, \"files\": %" PRIu64 ", \"dirs\": %" PRIu64
	       ", \"entries\": %" PRIu64 ", \"batch\": %u, \"rss_before_bytes\": %lld, "
	       "\"rss_after_bytes\": %lld, \"rss_bytes_per_entry\": %.1f, \"seconds\": %.2f, "
	       "\"creates_per_sec\": %.0f}\n",
	       o->daemon_layout ? "true" : "false", o->files, dirs, entries, o->batch, rss0, rss1,
	       (double)(rss1 - rss0) / (double)entries, seconds,
	       seconds > 0 ? (double)o->files / seconds : 0.0);
	rc = 0;
out:
	close(fd);
	free(buf);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: memory [--files N] [--per-dir N]\n"
	        "       memory --daemon HOST:PORT --pid PID [--layout] [--files N] [--per-dir N]\n"
	        "              [--batch N] [--depth N] [--run NAME]\n"
	        "\n"
	        "  --files N      files to create (default 1000000)\n"
	        "  --per-dir N    files per directory (default 1000)\n"
	        "  --daemon H:P   create them through this mp-primary instead\n"
	        "  --pid PID      its process id, for /proc/PID/status\n"
	        "  --layout       daemon mode: give each file a 100-byte layout\n"
	        "  --batch N      CREATEs per BATCH request (default 1000)\n"
	        "  --depth N      BATCH requests in flight (default 2)\n"
	        "  --run NAME     the tree is /mem-NAME (default: time-pid)\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "memory: %s '%s': expected %" PRIu64 "..%" PRIu64 "\n", opt, s, min,
		        max);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"files", required_argument, NULL, 'f'},  {"per-dir", required_argument, NULL, 'p'},
	    {"daemon", required_argument, NULL, 'D'}, {"pid", required_argument, NULL, 'P'},
	    {"layout", no_argument, NULL, 'L'},       {"batch", required_argument, NULL, 'b'},
	    {"depth", required_argument, NULL, 'd'},  {"run", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	struct options o = {.files = 1000000, .per_dir = 1000, .batch = 1000, .depth = 2};
	int opt;
	uint64_t v;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			if (parse_u64("--files", optarg, 1, 100000000, &o.files) < 0)
				return 2;
			break;
		case 'p':
			if (parse_u64("--per-dir", optarg, 1, 10000000, &o.per_dir) < 0)
				return 2;
			break;
		case 'D':
			o.daemon = optarg;
			break;
		case 'P':
			if (parse_u64("--pid", optarg, 1, 1u << 30, &v) < 0)
				return 2;
			o.pid = (long)v;
			break;
		case 'L':
			o.daemon_layout = true;
			break;
		case 'b':
			if (parse_u64("--batch", optarg, 1, BATCH_MAX_OPS, &v) < 0)
				return 2;
			o.batch = (unsigned)v;
			break;
		case 'd':
			if (parse_u64("--depth", optarg, 1, 64, &v) < 0)
				return 2;
			o.depth = (unsigned)v;
			break;
		case 'r':
			if (strlen(optarg) == 0 || strlen(optarg) > 64 ||
			    strchr(optarg, '/') != NULL) {
				fprintf(stderr,
				        "memory: --run '%s': expected 1..64 characters "
				        "without '/'\n",
				        optarg);
				return 2;
			}
			o.run = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "memory: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (o.daemon != NULL) {
		if (o.pid == 0) {
			fprintf(stderr, "memory: --daemon needs --pid\n");
			return 2;
		}
		char runbuf[64];
		if (o.run == NULL) {
			snprintf(runbuf, sizeof(runbuf), "%lld-%d", (long long)time(NULL),
			         (int)getpid());
			o.run = runbuf;
		}
		signal(SIGPIPE, SIG_IGN);
		return daemon_mode(&o);
	}
	if (o.daemon_layout) {
		fprintf(stderr, "memory: --layout is for --daemon (namespace mode runs both)\n");
		return 2;
	}
	if (run_in_child(&o, false) != 0 || run_in_child(&o, true) != 0)
		return 1;
	return 0;
}
