/* mp-session-check: checks libmirrorplane's consistency levels against a
 * live primary and mirror, through the public API only.
 *
 *   mp-session-check --primary H:P --mirror H:P [--threads 8] [--ops N]
 *                    [--seed S] [--dir /sc] [--read-deadline-ms R]
 *                    [--probe-ms P]
 *
 * (N ops per thread; R and P set the handles' read_deadline and
 * probe_interval: a read_deadline of 0 sends every read the mirror has not
 * caught up with to the primary at once, and the mirror is marked down
 * until the prober finds it caught up.)
 *
 * Each thread owns an mp_client (its own session) and a directory DIR/tNN,
 * and runs N random writes there: put (a new file or a replacement, with a
 * payload no other write uses), rename (to a new name) and remove. After
 * every write it reads back with session consistency, usually at the
 * mirror: what the write made must be visible (stat, content, and every few
 * ops the whole listing against the thread's model), every read's version
 * must be at least the write's, and a thread's read versions must never go
 * down (read-your-writes and monotonic reads).
 *
 * Strong reads: thread 0 also puts DIR/strong/mK now and then and publishes
 * K once the put returned; the other threads read the latest published K
 * through a second handle opened with consistency strong (and now and then
 * through their session handle with MP_STRONG on the call), and require
 * mK to exist at a version at least the marker's.
 *
 * Every violation and every unexpected error prints one line on stderr. The
 * last line on stdout is a JSON summary:
 *   {"ops":..,"reads":..,"mirror_reads":..,"primary_reads":..,
 *    "violations":..,"errors":..,...}
 * Exit 0 when there were neither, 1 otherwise, 2 for bad arguments. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirrorplane/mirrorplane.h"

#define THREADS_MAX   64
#define FILES_MAX     48  /* per thread; beyond it a thread prefers removing */
#define PAYLOAD_MAX   512 /* bytes */
#define CONTENT_MAX   (1u << 20)
#define MARKER_EVERY  2 /* thread 0 puts a marker every this many ops */
#define STRONG_EVERY  1 /* the others read the latest marker every this many ops */
#define LIST_EVERY    3 /* listing checked every this many ops */
#define NAME_MAX_LEN  32
#define PATH_LEN      256
#define MESSAGE_LIMIT 900

struct options {
	const char *primary;
	const char *mirror;
	const char *dir;
	int threads;
	long ops;
	uint64_t seed;
	long read_deadline_ms; /* -1: the library's default */
	long probe_ms;         /* -1: the library's default */
};

struct totals {
	_Atomic uint64_t ops, writes, markers;
	_Atomic uint64_t reads, mirror_reads, primary_reads, other_reads, absent_reads;
	_Atomic uint64_t strong_reads, lists, fallbacks;
	_Atomic uint64_t violations, errors;
};

static struct options opt = {
    .dir = "/sc", .threads = 8, .ops = 200, .seed = 1, .read_deadline_ms = -1, .probe_ms = -1};
static struct totals tot;

/* Markers: marker_version[K] is written before K is published (release),
 * and read after the published K is loaded (acquire). */
static uint64_t *marker_version;
static long markers_max;
static _Atomic long marker_published;

static pthread_barrier_t start_barrier;

struct file {
	char name[NAME_MAX_LEN];
	char *payload;
	size_t len;
};

struct worker {
	int id;
	pthread_t thread;
	mp_client *c;      /* session consistency: this thread's session */
	mp_client *strong; /* opened with consistency strong (threads other than 0) */
	uint64_t rng;
	char dir[PATH_LEN];
	struct file files[FILES_MAX];
	size_t nfiles;
	unsigned next_name;
	long op;
	const char *op_what;          /* the current op, for messages */
	uint64_t write_version;       /* the last write's */
	uint64_t read_version;        /* the highest a session read returned */
	uint64_t strong_read_version; /* the same, on the strong handle */
	bool stopped;                 /* a write failed: the model is unknown */
};

/* ---- output ---- */

static void line(const char *kind, struct worker *w, const char *fmt, va_list ap)
{
	char msg[MESSAGE_LIMIT];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (w != NULL)
		fprintf(stderr, "%s: t%02d op %ld (%s): %s\n", kind, w->id, w->op,
		        w->op_what ? w->op_what : "setup", msg);
	else
		fprintf(stderr, "%s: %s\n", kind, msg);
}

static void __attribute__((format(printf, 2, 3))) violation(struct worker *w, const char *fmt, ...)
{
	atomic_fetch_add(&tot.violations, 1);
	va_list ap;
	va_start(ap, fmt);
	line("violation", w, fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 2, 3)))
report_error(struct worker *w, const char *fmt, ...)
{
	atomic_fetch_add(&tot.errors, 1);
	va_list ap;
	va_start(ap, fmt);
	line("error", w, fmt, ap);
	va_end(ap);
}

/* ---- randomness (splitmix64: reproducible per seed and thread) ---- */

static uint64_t rnd(struct worker *w)
{
	uint64_t z = (w->rng += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static unsigned rnd_below(struct worker *w, unsigned n)
{
	return (unsigned)(rnd(w) % n);
}

/* ---- reads and what every read must satisfy ---- */

/* Accounts for a successful read and checks its version: at least the
 * thread's last write, and never below an earlier read of the same handle. */
static void note_read(struct worker *w, const mp_call *call, bool strong_handle, const char *what)
{
	atomic_fetch_add(&tot.reads, 1);
	atomic_fetch_add(&tot.fallbacks, call->fallbacks);
	if (strncmp(call->served_by, "mirror", 6) == 0)
		atomic_fetch_add(&tot.mirror_reads, 1);
	else if (strncmp(call->served_by, "primary", 7) == 0)
		atomic_fetch_add(&tot.primary_reads, 1);
	else {
		atomic_fetch_add(&tot.other_reads, 1);
		violation(w, "%s: served_by is '%s', neither a mirror nor a primary", what,
		          call->served_by);
	}
	uint64_t *last = strong_handle ? &w->strong_read_version : &w->read_version;
	if (!strong_handle && call->version < w->write_version)
		violation(w,
		          "%s: read at version %" PRIu64 " (%s), below the thread's own write at "
		          "version %" PRIu64 " (read-your-writes)",
		          what, call->version, call->served_by, w->write_version);
	if (call->version < *last)
		violation(w,
		          "%s: read at version %" PRIu64 " (%s) after an earlier read at version "
		          "%" PRIu64 " (monotonic reads)",
		          what, call->version, call->served_by, *last);
	else
		*last = call->version;
}

static void note_write(struct worker *w, const mp_call *call, const char *what)
{
	atomic_fetch_add(&tot.writes, 1);
	if (call->version <= w->write_version)
		violation(w,
		          "%s: the write's version %" PRIu64 " is not above the thread's previous "
		          "write at %" PRIu64,
		          what, call->version, w->write_version);
	if (strncmp(call->served_by, "primary", 7) != 0)
		violation(w, "%s: a write served by '%s', not a primary", what, call->served_by);
	w->write_version = call->version;
	uint64_t s = mp_client_session_version(w->c);
	if (s < call->version)
		violation(w,
		          "%s: the handle's session version %" PRIu64 " is below its own write at "
		          "%" PRIu64,
		          what, s, call->version);
}

struct content {
	char *data;
	size_t len, cap;
	bool too_long;
};

static int content_sink(void *arg, const void *data, size_t len)
{
	struct content *ct = arg;
	if (ct->len + len > CONTENT_MAX) {
		ct->too_long = true;
		return -EFBIG;
	}
	if (ct->len + len > ct->cap) {
		size_t cap = ct->cap ? ct->cap : 256;
		while (cap < ct->len + len)
			cap *= 2;
		char *p = realloc(ct->data, cap);
		if (p == NULL)
			return -ENOMEM;
		ct->data = p;
		ct->cap = cap;
	}
	memcpy(ct->data + ct->len, data, len);
	ct->len += len;
	return 0;
}

/* path must be a file of exactly f's payload: stat, then the bytes. */
static void expect_file(struct worker *w, const char *path, const struct file *f)
{
	mp_call call = {0};
	mp_node n = {0};
	mp_error err = {0};
	int r = mp_stat(w->c, path, &call, &n, &err);
	if (r == -ENOENT) {
		violation(w, "stat %s: %s (the file should exist)", path, err.message);
		return;
	}
	if (r < 0) {
		report_error(w, "stat %s: %s", path, err.message);
		return;
	}
	char what[PATH_LEN + 16];
	snprintf(what, sizeof(what), "stat %s", path);
	note_read(w, &call, false, what);
	if (n.type != MP_TYPE_FILE)
		violation(w, "stat %s at version %" PRIu64 " (%s): a %s, not a file", path,
		          call.version, call.served_by, mp_type_name(n.type));
	else if (n.size != f->len)
		violation(w,
		          "stat %s at version %" PRIu64 " (%s): size %" PRIu64
		          ", the last write made it %zu",
		          path, call.version, call.served_by, n.size, f->len);
	mp_node_clear(&n);

	struct content ct = {0};
	memset(&call, 0, sizeof(call));
	r = mp_read(w->c, path, 0, 0, content_sink, &ct, NULL, &call, &err);
	snprintf(what, sizeof(what), "read %s", path);
	if (r == -ENOENT) {
		violation(w, "read %s: %s (the file should exist)", path, err.message);
	} else if (r < 0) {
		report_error(w, "read %s: %s", path, err.message);
	} else {
		note_read(w, &call, false, what);
		if (ct.len != f->len || (f->len > 0 && memcmp(ct.data, f->payload, f->len) != 0))
			violation(w,
			          "read %s at version %" PRIu64 " (%s): %zu bytes '%.60s' differ "
			          "from the last write's %zu bytes '%.60s'",
			          path, call.version, call.served_by, ct.len,
			          ct.data ? ct.data : "", f->len, f->payload);
	}
	free(ct.data);
}

/* path must not exist. */
static void expect_absent(struct worker *w, const char *path)
{
	mp_call call = {0};
	mp_node n = {0};
	mp_error err = {0};
	int r = mp_stat(w->c, path, &call, &n, &err);
	if (r == 0) {
		char what[PATH_LEN + 16];
		snprintf(what, sizeof(what), "stat %s", path);
		note_read(w, &call, false, what);
		violation(w,
		          "stat %s at version %" PRIu64 " (%s): a %s of %" PRIu64
		          " bytes, which the thread removed or renamed",
		          path, call.version, call.served_by, mp_type_name(n.type), n.size);
		mp_node_clear(&n);
		return;
	}
	if (r != -ENOENT) {
		report_error(w, "stat %s: %s", path, err.message);
		return;
	}
	atomic_fetch_add(&tot.absent_reads, 1);
	/* The out-fields are promised on success only; when the library fills
	 * them for an ENOENT answer too, that read's version is checked like
	 * any other. */
	if (call.served_by[0] != '\0') {
		char what[PATH_LEN + 32];
		snprintf(what, sizeof(what), "stat %s (ENOENT)", path);
		note_read(w, &call, false, what);
	} else {
		atomic_fetch_add(&tot.reads, 1);
	}
}

struct listing {
	char (*names)[NAME_MAX_LEN];
	uint64_t *sizes;
	enum mp_type *types;
	size_t n, cap;
	bool odd_name;
};

static int listing_add(void *arg, const mp_node *e)
{
	struct listing *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		void *a = realloc(l->names, cap * sizeof(*l->names));
		if (a == NULL)
			return -ENOMEM;
		l->names = a;
		void *b = realloc(l->sizes, cap * sizeof(*l->sizes));
		if (b == NULL)
			return -ENOMEM;
		l->sizes = b;
		void *t = realloc(l->types, cap * sizeof(*l->types));
		if (t == NULL)
			return -ENOMEM;
		l->types = t;
		l->cap = cap;
	}
	if (strlen(e->name) >= NAME_MAX_LEN)
		l->odd_name = true;
	snprintf(l->names[l->n], NAME_MAX_LEN, "%s", e->name);
	l->sizes[l->n] = e->size;
	l->types[l->n] = e->type;
	l->n++;
	return 0;
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct file *)a)->name, ((const struct file *)b)->name);
}

/* The directory's listing must be the model: same names in name order, all
 * files, of the model's sizes. */
static void expect_listing(struct worker *w)
{
	struct listing l = {0};
	mp_call call = {0};
	mp_error err = {0};
	int r = mp_list(w->c, w->dir, &call, listing_add, &l, &err);
	atomic_fetch_add(&tot.lists, 1);
	if (r < 0) {
		report_error(w, "list %s: %s", w->dir, err.message);
		goto out;
	}
	char what[PATH_LEN + 16];
	snprintf(what, sizeof(what), "list %s", w->dir);
	note_read(w, &call, false, what);
	struct file sorted[FILES_MAX];
	memcpy(sorted, w->files, w->nfiles * sizeof(sorted[0]));
	qsort(sorted, w->nfiles, sizeof(sorted[0]), cmp_file);
	char diff[MESSAGE_LIMIT / 2] = "";
	size_t dl = 0, i = 0, k = 0;
	int ndiff = 0;
#define DIFF(...)                                                                                  \
	do {                                                                                       \
		if (dl < sizeof(diff))                                                             \
			dl += (size_t)snprintf(diff + dl, sizeof(diff) - dl, __VA_ARGS__);         \
		ndiff++;                                                                           \
	} while (0)
	if (l.odd_name)
		DIFF(" an entry with an overlong name;");
	for (size_t j = 1; j < l.n; j++)
		if (strcmp(l.names[j - 1], l.names[j]) >= 0)
			DIFF(" %s listed before %s (not in name order);", l.names[j - 1],
			     l.names[j]);
	while (i < w->nfiles || k < l.n) {
		int c = i == w->nfiles ? 1 : k == l.n ? -1 : strcmp(sorted[i].name, l.names[k]);
		if (c < 0) {
			DIFF(" missing %s;", sorted[i].name);
			i++;
		} else if (c > 0) {
			DIFF(" extra %s;", l.names[k]);
			k++;
		} else {
			if (l.types[k] != MP_TYPE_FILE)
				DIFF(" %s is a %s;", l.names[k], mp_type_name(l.types[k]));
			else if (l.sizes[k] != sorted[i].len)
				DIFF(" %s has %" PRIu64 " bytes, not %zu;", l.names[k], l.sizes[k],
				     sorted[i].len);
			i++;
			k++;
		}
	}
#undef DIFF
	if (ndiff > 0)
		violation(w,
		          "list %s at version %" PRIu64 " (%s): %zu entries, the model has %zu:%s",
		          w->dir, call.version, call.served_by, l.n, w->nfiles, diff);
out:
	free(l.names);
	free(l.sizes);
	free(l.types);
}

/* ---- strong reads of the markers ---- */

static void marker_path(long k, char *out, size_t len)
{
	snprintf(out, len, "%s/strong/m%ld", opt.dir, k);
}

/* Thread 0: a marker is acknowledged, then published. */
static void put_marker(struct worker *w)
{
	long k = atomic_load(&marker_published) + 1;
	if (k >= markers_max)
		return;
	char path[PATH_LEN], data[64];
	marker_path(k, path, sizeof(path));
	int len = snprintf(data, sizeof(data), "marker %ld\n", k);
	mp_call call = {0};
	mp_error err = {0};
	if (mp_put_buffer(w->c, data, (size_t)len, path, NULL, &call, &err) < 0) {
		report_error(w, "put marker %s: %s", path, err.message);
		return;
	}
	note_write(w, &call, path);
	atomic_fetch_add(&tot.markers, 1);
	marker_version[k] = call.version;
	atomic_store_explicit(&marker_published, k, memory_order_release);
}

/* The latest marker acknowledged before this read started must be seen. */
static void check_marker(struct worker *w, mp_client *c, bool strong_handle)
{
	long k = atomic_load_explicit(&marker_published, memory_order_acquire);
	if (k == 0)
		return;
	uint64_t want = marker_version[k];
	char path[PATH_LEN];
	marker_path(k, path, sizeof(path));
	mp_call call = {0};
	/* On the strong handle its own level; on the session handle, per call. */
	if (!strong_handle)
		call.consistency = MP_STRONG;
	mp_node n = {0};
	mp_error err = {0};
	int r = mp_stat(c, path, &call, &n, &err);
	atomic_fetch_add(&tot.strong_reads, 1);
	const char *how = strong_handle ? "strong handle" : "session handle, MP_STRONG call";
	if (r == -ENOENT) {
		atomic_fetch_add(&tot.reads, 1);
		atomic_fetch_add(&tot.absent_reads, 1);
		violation(w,
		          "strong read (%s) of %s, acknowledged at version %" PRIu64
		          " before the read began: %s",
		          how, path, want, err.message);
		return;
	}
	if (r < 0) {
		report_error(w, "strong read (%s) of %s: %s", how, path, err.message);
		return;
	}
	char what[PATH_LEN + 48];
	snprintf(what, sizeof(what), "strong read (%s) of %s", how, path);
	note_read(w, &call, strong_handle, what);
	if (call.version < want)
		violation(w, "%s at version %" PRIu64 " (%s), below the marker's version %" PRIu64,
		          what, call.version, call.served_by, want);
	mp_node_clear(&n);
}

/* ---- the random writes ---- */

static size_t make_payload(struct worker *w, char *buf)
{
	/* Now and then an empty file (no layout at all). */
	if (rnd_below(w, 25) == 0)
		return 0;
	int n = snprintf(buf, PAYLOAD_MAX, "t%02d op%ld seed%" PRIu64 " %016" PRIx64 " ", w->id,
	                 w->op, opt.seed, rnd(w));
	size_t len = (size_t)n, pad = rnd_below(w, 200);
	for (size_t i = 0; i < pad && len < PAYLOAD_MAX - 1; i++)
		buf[len++] = (char)('a' + rnd_below(w, 26));
	buf[len++] = '\n';
	return len;
}

static void file_path(const struct worker *w, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%.200s/%.31s", w->dir, name);
}

static void op_put(struct worker *w)
{
	bool replace = w->nfiles > 0 && (w->nfiles == FILES_MAX || rnd_below(w, 10) < 3);
	struct file nf = {0};
	size_t idx = replace ? rnd_below(w, (unsigned)w->nfiles) : w->nfiles;
	if (replace)
		snprintf(nf.name, sizeof(nf.name), "%s", w->files[idx].name);
	else
		snprintf(nf.name, sizeof(nf.name), "f%05u", w->next_name++);
	char buf[PAYLOAD_MAX];
	nf.len = make_payload(w, buf);
	nf.payload = malloc(nf.len + 1);
	if (nf.payload == NULL) {
		report_error(w, "out of memory");
		w->stopped = true;
		return;
	}
	memcpy(nf.payload, buf, nf.len);
	nf.payload[nf.len] = '\0';
	char path[PATH_LEN];
	file_path(w, nf.name, path, sizeof(path));
	w->op_what = replace ? "put (replace)" : "put";
	mp_call call = {0};
	mp_error err = {0};
	if (mp_put_buffer(w->c, nf.payload, nf.len, path, NULL, &call, &err) < 0) {
		report_error(w, "put %s: %s", path, err.message);
		free(nf.payload);
		w->stopped = true;
		return;
	}
	note_write(w, &call, path);
	if (replace) {
		free(w->files[idx].payload);
		w->files[idx] = nf;
	} else {
		w->files[w->nfiles++] = nf;
	}
	expect_file(w, path, &w->files[idx]);
}

static void op_rename(struct worker *w)
{
	size_t idx = rnd_below(w, (unsigned)w->nfiles);
	struct file *f = &w->files[idx];
	char from[PATH_LEN], to[PATH_LEN], name[NAME_MAX_LEN];
	snprintf(name, sizeof(name), "f%05u", w->next_name++);
	file_path(w, f->name, from, sizeof(from));
	file_path(w, name, to, sizeof(to));
	w->op_what = "rename";
	mp_call call = {0};
	mp_error err = {0};
	if (mp_rename(w->c, from, to, &call, &err) < 0) {
		report_error(w, "rename %s to %s: %s", from, to, err.message);
		w->stopped = true;
		return;
	}
	note_write(w, &call, "rename");
	snprintf(f->name, sizeof(f->name), "%s", name);
	expect_absent(w, from);
	expect_file(w, to, f);
}

static void op_remove(struct worker *w)
{
	size_t idx = rnd_below(w, (unsigned)w->nfiles);
	char path[PATH_LEN];
	file_path(w, w->files[idx].name, path, sizeof(path));
	w->op_what = "remove";
	mp_call call = {0};
	mp_error err = {0};
	if (mp_remove(w->c, path, false, &call, &err) < 0) {
		report_error(w, "remove %s: %s", path, err.message);
		w->stopped = true;
		return;
	}
	note_write(w, &call, path);
	free(w->files[idx].payload);
	w->files[idx] = w->files[--w->nfiles];
	expect_absent(w, path);
}

static void run_op(struct worker *w)
{
	unsigned dice = rnd_below(w, 100);
	if (w->nfiles == 0 || (w->nfiles < FILES_MAX * 3 / 4 && dice < 50))
		op_put(w);
	else if (dice < 75)
		op_rename(w);
	else
		op_remove(w);
}

/* ---- threads ---- */

static int open_handle(const char *consistency, mp_client **ret, mp_error *err)
{
	mp_config *cfg = NULL;
	int r = mp_config_new(&cfg, err);
	if (r == 0)
		r = mp_config_add(cfg, "primary", opt.primary, err);
	if (r == 0)
		r = mp_config_add(cfg, "mirror", opt.mirror, err);
	if (r == 0)
		r = mp_config_set(cfg, "timeout", "5s", err);
	if (r == 0)
		r = mp_config_set(cfg, "consistency", consistency, err);
	char v[32];
	if (r == 0 && opt.read_deadline_ms >= 0) {
		snprintf(v, sizeof(v), "%ldms", opt.read_deadline_ms);
		r = mp_config_set(cfg, "read_deadline", v, err);
	}
	if (r == 0 && opt.probe_ms >= 0) {
		snprintf(v, sizeof(v), "%ldms", opt.probe_ms);
		r = mp_config_set(cfg, "probe_interval", v, err);
	}
	if (r == 0)
		r = mp_client_open(cfg, ret, err);
	mp_config_free(cfg);
	return r;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	mp_error err = {0};
	mp_call call = {0};
	if (mp_mkdir(w->c, w->dir, 0755, false, &call, &err) < 0) {
		report_error(w, "mkdir %s: %s (use a --dir that does not exist yet)", w->dir,
		             err.message);
		w->stopped = true;
	} else {
		note_write(w, &call, w->dir);
	}
	pthread_barrier_wait(&start_barrier);
	for (w->op = 1; w->op <= opt.ops && !w->stopped; w->op++) {
		run_op(w);
		atomic_fetch_add(&tot.ops, 1);
		if (w->stopped)
			break;
		w->op_what = "list";
		if (w->op % LIST_EVERY == 0)
			expect_listing(w);
		if (w->id == 0 && w->op % MARKER_EVERY == 0) {
			w->op_what = "marker";
			put_marker(w);
		}
		if (w->id != 0 && w->op % STRONG_EVERY == 0) {
			w->op_what = "strong";
			check_marker(w, w->strong, true);
			if (w->op % (4 * STRONG_EVERY) == 0)
				check_marker(w, w->c, false);
		}
	}
	if (!w->stopped) {
		w->op_what = "final list";
		expect_listing(w);
	}
	return NULL;
}

/* ---- arguments ---- */

static void usage(void)
{
	fprintf(stderr, "usage: mp-session-check --primary HOST:PORT --mirror HOST:PORT "
	                "[--threads N] [--ops N] [--seed S] [--dir /PATH] [--read-deadline-ms R] "
	                "[--probe-ms P]\n");
	exit(2);
}

static long number(const char *flag, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "mp-session-check: %s '%s': want a number in %ld..%ld\n", flag, s,
		        lo, hi);
		exit(2);
	}
	return v;
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (strcmp(a, "--primary") == 0)
			opt.primary = v;
		else if (strcmp(a, "--mirror") == 0)
			opt.mirror = v;
		else if (strcmp(a, "--dir") == 0)
			opt.dir = v;
		else if (strcmp(a, "--threads") == 0)
			opt.threads = (int)number(a, v, 1, THREADS_MAX);
		else if (strcmp(a, "--ops") == 0)
			opt.ops = number(a, v, 1, 1000000);
		else if (strcmp(a, "--seed") == 0)
			opt.seed = (uint64_t)number(a, v, 0, INT64_MAX);
		else if (strcmp(a, "--read-deadline-ms") == 0)
			opt.read_deadline_ms = number(a, v, 0, 60000);
		else if (strcmp(a, "--probe-ms") == 0)
			opt.probe_ms = number(a, v, 10, 600000);
		else
			usage();
	}
	if (opt.primary == NULL || opt.mirror == NULL)
		usage();
	size_t dl = strlen(opt.dir);
	if (opt.dir[0] != '/' || dl < 2 || dl > 100 || opt.dir[dl - 1] == '/') {
		fprintf(stderr, "mp-session-check: --dir '%s': want an absolute path (not /)\n",
		        opt.dir);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	markers_max = opt.ops / MARKER_EVERY + 2;
	marker_version = calloc((size_t)markers_max, sizeof(*marker_version));
	struct worker *ws = calloc((size_t)opt.threads, sizeof(*ws));
	if (marker_version == NULL || ws == NULL) {
		fprintf(stderr, "mp-session-check: out of memory\n");
		return 1;
	}
	mp_error err = {0};
	int started = 0;
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &ws[i];
		w->id = i;
		w->rng = opt.seed * 1000003u + (uint64_t)i;
		snprintf(w->dir, sizeof(w->dir), "%s/t%02d", opt.dir, i);
		if (open_handle("session", &w->c, &err) < 0 ||
		    (i != 0 && open_handle("strong", &w->strong, &err) < 0)) {
			report_error(NULL, "opening a handle: %s", err.message);
			goto out;
		}
	}
	/* The shared directories, before any thread starts. */
	char strong_dir[PATH_LEN];
	snprintf(strong_dir, sizeof(strong_dir), "%s/strong", opt.dir);
	if (mp_mkdir(ws[0].c, opt.dir, 0755, true, NULL, &err) < 0 ||
	    mp_mkdir(ws[0].c, strong_dir, 0755, true, NULL, &err) < 0) {
		report_error(NULL, "mkdir %s: %s", strong_dir, err.message);
		goto out;
	}
	pthread_barrier_init(&start_barrier, NULL, (unsigned)opt.threads);
	for (; started < opt.threads; started++)
		if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0) {
			report_error(NULL, "pthread_create failed");
			break;
		}
	if (started < opt.threads) {
		/* The barrier would never open: nothing sensible left to do. */
		fprintf(stderr, "mp-session-check: could not start the threads\n");
		return 1;
	}
	for (int i = 0; i < started; i++)
		pthread_join(ws[i].thread, NULL);
	pthread_barrier_destroy(&start_barrier);
out:
	for (int i = 0; i < opt.threads; i++) {
		for (size_t k = 0; k < ws[i].nfiles; k++)
			free(ws[i].files[k].payload);
		mp_client_close(ws[i].c);
		mp_client_close(ws[i].strong);
	}
	free(ws);
	free(marker_version);
	printf("{\"ops\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"markers\":%" PRIu64
	       ",\"reads\":%" PRIu64 ",\"mirror_reads\":%" PRIu64 ",\"primary_reads\":%" PRIu64
	       ",\"absent_reads\":%" PRIu64 ",\"strong_reads\":%" PRIu64 ",\"lists\":%" PRIu64
	       ",\"fallbacks\":%" PRIu64 ",\"violations\":%" PRIu64 ",\"errors\":%" PRIu64 "}\n",
	       tot.ops, tot.writes, tot.markers, tot.reads, tot.mirror_reads, tot.primary_reads,
	       tot.absent_reads, tot.strong_reads, tot.lists, tot.fallbacks, tot.violations,
	       tot.errors);
	return tot.violations > 0 || tot.errors > 0 ? 1 : 0;
}
