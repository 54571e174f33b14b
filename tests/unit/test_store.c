/* The store against SQLite (a temporary directory) and, when MP_TEST_PG_URL
 * is set (tests/lib/pgserver.py run), against PostgreSQL: the same tests run
 * once per backend, each on a fresh store. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "mpconfig.h"
#include "store.h"

#if HAVE_POSTGRES
#include <libpq-fe.h>
#endif

enum backend { B_SQLITE, B_POSTGRES };

static enum backend g_backend;
static const char *g_pg_url;
static char g_app_name[32];

struct fixture {
	char dir[PATH_MAX - 64];
	char path[PATH_MAX];
	char url[PATH_MAX + 16];
};

/* ---- fixtures ---------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

#if HAVE_POSTGRES
static void ignore_notice(void *arg, const char *message)
{
}
#endif

/* Runs SQL on the store's database behind the store's back. */
static void raw_exec(const struct fixture *fx, const char *sql)
{
	if (g_backend == B_SQLITE) {
		sqlite3 *db;
		assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
		sqlite3_busy_timeout(db, 5000);
		char *msg = NULL;
		int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
		if (rc != SQLITE_OK)
			fail_msg("sqlite: %s: %s", sql, msg);
		sqlite3_close(db);
		return;
	}
#if HAVE_POSTGRES
	PGconn *c = PQconnectdb(fx->url);
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	PQsetNoticeProcessor(c, ignore_notice, NULL);
	PGresult *res = PQexec(c, sql);
	ExecStatusType s = PQresultStatus(res);
	if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
		fail_msg("postgres: %s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(c);
#endif
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	if (g_backend == B_SQLITE) {
		const char *tmp = getenv("TMPDIR");
		snprintf(fx->dir, sizeof(fx->dir), "%s/mp-store-XXXXXX", tmp ? tmp : "/tmp");
		assert_non_null(mkdtemp(fx->dir));
		/* Two missing levels: the store creates them. */
		snprintf(fx->path, sizeof(fx->path), "%s/sub/dir/store.db", fx->dir);
		snprintf(fx->url, sizeof(fx->url), "sqlite:%s", fx->path);
	} else {
		/* A schema of its own and a session name of its own, so that a
		 * server with other data on it is left alone. */
		snprintf(fx->url, sizeof(fx->url),
		         "%s%coptions=-csearch_path%%3Dmp_test_store&application_name=%s", g_pg_url,
		         strchr(g_pg_url, '?') ? '&' : '?', g_app_name);
		raw_exec(fx, "DROP SCHEMA IF EXISTS mp_test_store CASCADE;"
		             " CREATE SCHEMA mp_test_store");
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	if (g_backend == B_SQLITE)
		nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	else
		raw_exec(fx, "DROP SCHEMA IF EXISTS mp_test_store CASCADE");
	free(fx);
	return 0;
}

static struct store *open_store(const struct fixture *fx)
{
	struct store *st = NULL;
	char *err = NULL;
	int r = store_open(fx->url, &st, &err);
	if (r < 0)
		fail_msg("store_open(%s): %d %s", fx->url, r, err ? err : "(no message)");
	assert_null(err);
	assert_string_equal(store_kind(st), g_backend == B_SQLITE ? "sqlite" : "postgres");
	return st;
}

static struct store *open_init(const struct fixture *fx, const char *want, struct store_meta *meta)
{
	struct store *st = open_store(fx);
	struct store_meta m;
	int r = store_init(st, want, &m);
	if (r < 0)
		fail_msg("store_init: %d %s", r, store_error(st));
	if (meta != NULL)
		*meta = m;
	return st;
}

/* ---- nodes ------------------------------------------------------------- */

struct tnode {
	struct node_rec rec;
	char name[NODE_NAME_MAX + 1];
	uint8_t extra[1024];
};

static void mk_node(struct tnode *t, uint64_t ino, uint64_t parent, const char *name, uint8_t type,
                    size_t extra_len, uint8_t seed)
{
	memset(t, 0, sizeof(*t));
	size_t len = strlen(name);
	memcpy(t->name, name, len);
	for (size_t i = 0; i < extra_len; i++)
		t->extra[i] = (uint8_t)(seed + i * 31);
	t->rec = (struct node_rec){
	    .ino = ino,
	    .parent = parent,
	    .size = ino * 4096 + seed,
	    .mtime = 1700000000000000000LL + seed,
	    .ctime = 1700000000000000001LL + seed,
	    .mode = type == NODE_DIR ? 0755 : 0644,
	    .uid = 1000 + seed,
	    .gid = 100 + seed,
	    .type = type,
	    .name_len = (uint8_t)len,
	    .extra_len = (uint32_t)extra_len,
	    .name = t->name,
	    .extra = extra_len ? t->extra : NULL,
	};
}

struct coll {
	struct tnode *v;
	size_t n, cap;
	int stop_at; /* return -ECANCELED on this call (1-based), 0 never */
};

static int collect(void *arg, const struct node_rec *rec)
{
	struct coll *c = arg;
	if (c->stop_at != 0 && (int)c->n + 1 == c->stop_at)
		return -ECANCELED;
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		assert_non_null(c->v);
	}
	assert_true(rec->extra_len <= sizeof(c->v[0].extra));
	struct tnode *t = &c->v[c->n++];
	memset(t, 0, sizeof(*t));
	t->rec = *rec;
	memcpy(t->name, rec->name, rec->name_len);
	if (rec->extra_len)
		memcpy(t->extra, rec->extra, rec->extra_len);
	t->rec.name = t->name;
	t->rec.extra = rec->extra_len ? t->extra : NULL;
	return 0;
}

/* Points the record back into its own copy: realloc moved them. */
static const struct tnode *coll_find(struct coll *c, uint64_t ino)
{
	for (size_t i = 0; i < c->n; i++) {
		struct tnode *t = &c->v[i];
		if (t->rec.ino != ino)
			continue;
		t->rec.name = t->name;
		t->rec.extra = t->rec.extra_len ? t->extra : NULL;
		return t;
	}
	return NULL;
}

static void load_all(struct store *st, struct coll *c)
{
	memset(c, 0, sizeof(*c));
	int r = store_load_nodes(st, collect, c);
	if (r < 0)
		fail_msg("store_load_nodes: %d %s", r, store_error(st));
}

static void assert_node_equal(const struct node_rec *a, const struct node_rec *b)
{
	assert_int_equal(a->ino, b->ino);
	assert_int_equal(a->parent, b->parent);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->mtime, b->mtime);
	assert_int_equal(a->ctime, b->ctime);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->name_len, b->name_len);
	assert_memory_equal(a->name, b->name, a->name_len);
	assert_int_equal(a->extra_len, b->extra_len);
	if (a->extra_len)
		assert_memory_equal(a->extra, b->extra, a->extra_len);
}

/* ---- versions ---------------------------------------------------------- */

static void fill_record(uint8_t *buf, size_t len, uint64_t version)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(version * 7 + i);
}

static void fill_digest(uint8_t *d, uint64_t version)
{
	for (int i = 0; i < DIGEST_LEN; i++)
		d[i] = (uint8_t)(version >> (i % 8 * 8)) ^ (uint8_t)(0xa5 + i);
}

/* Commits versions first..last with records of rec_len bytes at time
 * version * 1000 and the given node changes, as one batch. */
static int commit_range(struct store *st, uint64_t first, uint64_t last, size_t rec_len,
                        const struct store_node_change *changes, size_t nchanges, uint64_t next_ino)
{
	size_t n = last - first + 1;
	struct store_version *v = calloc(n, sizeof(*v));
	uint8_t *recs = calloc(n, rec_len ? rec_len : 1);
	assert_non_null(v);
	assert_non_null(recs);
	for (size_t i = 0; i < n; i++) {
		v[i].version = first + i;
		v[i].time = (int64_t)(first + i) * 1000;
		fill_digest(v[i].digest, first + i);
		fill_record(recs + i * rec_len, rec_len, first + i);
		v[i].record = recs + i * rec_len;
		v[i].record_len = rec_len;
	}
	struct store_batch b = {
	    .versions = v,
	    .nversions = n,
	    .changes = changes,
	    .nchanges = nchanges,
	    .version = last,
	    .next_ino = next_ino,
	};
	fill_digest(b.digest, last ^ 0xffff);
	int r = store_commit(st, &b);
	free(v);
	free(recs);
	return r;
}

static void commit_ok(struct store *st, uint64_t first, uint64_t last, size_t rec_len,
                      const struct store_node_change *changes, size_t nchanges, uint64_t next_ino)
{
	int r = commit_range(st, first, last, rec_len, changes, nchanges, next_ino);
	if (r < 0)
		fail_msg("store_commit %llu..%llu: %d %s", (unsigned long long)first,
		         (unsigned long long)last, r, store_error(st));
}

struct vcoll {
	uint64_t versions[4096];
	size_t n;
	size_t rec_len;
	size_t bytes;
	int fail_at; /* return -EINTR on this call (1-based) */
};

static int collect_version(void *arg, const struct store_version *v)
{
	struct vcoll *c = arg;
	if (c->fail_at != 0 && (int)c->n + 1 == c->fail_at)
		return -EINTR;
	assert_true(c->n < sizeof(c->versions) / sizeof(c->versions[0]));
	assert_int_equal(v->time, (int64_t)v->version * 1000);
	uint8_t d[DIGEST_LEN];
	fill_digest(d, v->version);
	assert_memory_equal(v->digest, d, DIGEST_LEN);
	assert_int_equal(v->record_len, c->rec_len);
	uint8_t rec[1024];
	assert_true(v->record_len <= sizeof(rec));
	fill_record(rec, v->record_len, v->version);
	if (v->record_len)
		assert_memory_equal(v->record, rec, v->record_len);
	c->versions[c->n++] = v->version;
	c->bytes += v->record_len;
	return 0;
}

static void read_ok(struct store *st, struct vcoll *c, uint64_t from, size_t max_count,
                    size_t max_bytes)
{
	size_t rec_len = c->rec_len;
	memset(c, 0, sizeof(*c));
	c->rec_len = rec_len;
	int r = store_read_changes(st, from, max_count, max_bytes, collect_version, c);
	if (r < 0)
		fail_msg("store_read_changes: %d %s", r, store_error(st));
}

static void assert_versions(const struct vcoll *c, uint64_t first, size_t n)
{
	assert_int_equal(c->n, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(c->versions[i], first + i);
}

/* ---- tests ------------------------------------------------------------- */

static void test_new_store(void **state)
{
	struct fixture *fx = *state;
	struct store_meta m;
	memset(&m, 0x55, sizeof(m));
	struct store *st = open_init(fx, NULL, &m);
	assert_int_equal(strlen(m.cluster_id), 32);
	for (size_t i = 0; i < 32; i++)
		assert_non_null(strchr("0123456789abcdef", m.cluster_id[i]));
	assert_int_equal(m.version, 0);
	assert_int_equal(m.next_ino, 2);
	uint8_t zero[DIGEST_LEN] = {0};
	assert_memory_equal(m.digest, zero, DIGEST_LEN);

	uint64_t oldest = 99, newest = 99;
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 0);
	assert_int_equal(newest, 0);
	struct coll c;
	load_all(st, &c);
	assert_int_equal(c.n, 0);
	free(c.v);
	struct vcoll vc = {0};
	read_ok(st, &vc, 1, 100, SIZE_MAX);
	assert_int_equal(vc.n, 0);
	uint64_t before = 99;
	assert_int_equal(store_log_version_before(st, INT64_MAX, &before), 0);
	assert_int_equal(before, 0);
	store_close(st);

	if (g_backend == B_SQLITE) {
		struct stat sb;
		assert_int_equal(stat(fx->path, &sb), 0);
		assert_true(S_ISREG(sb.st_mode));
	}

	/* A second store gets another id. */
	if (g_backend == B_SQLITE) {
		struct fixture other = *fx;
		snprintf(other.path, sizeof(other.path), "%s/other.db", fx->dir);
		snprintf(other.url, sizeof(other.url), "sqlite:%s", other.path);
		struct store_meta m2;
		st = open_init(&other, "", &m2);
		assert_string_not_equal(m.cluster_id, m2.cluster_id);
		store_close(st);
	}
}

static void test_reopen_keeps_cluster_id(void **state)
{
	struct fixture *fx = *state;
	struct store_meta m1, m2, m3;
	struct store *st = open_init(fx, NULL, &m1);
	store_close(st);
	st = open_init(fx, NULL, &m2);
	assert_string_equal(m1.cluster_id, m2.cluster_id);
	/* init again on the same connection, now naming the id. */
	assert_int_equal(store_init(st, m1.cluster_id, &m3), 0);
	assert_string_equal(m1.cluster_id, m3.cluster_id);
	store_close(st);
}

static void test_want_cluster_id(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_store(fx);
	struct store_meta m;
	char long_id[STORE_CLUSTER_ID_MAX + 2];
	memset(long_id, 'x', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	assert_int_equal(store_init(st, long_id, &m), -EINVAL);
	assert_non_null(strstr(store_error(st), "invalid"));
	assert_int_equal(store_init(st, "has space", &m), -EINVAL);
	assert_int_equal(store_init(st, "slash/no", &m), -EINVAL);

	/* 64 characters, every allowed class. */
	const char *id = "Site-A.prod_1-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";
	assert_int_equal(strlen(id), STORE_CLUSTER_ID_MAX);
	assert_int_equal(store_init(st, id, &m), 0);
	assert_string_equal(m.cluster_id, id);
	store_close(st);
	st = open_init(fx, NULL, &m);
	assert_string_equal(m.cluster_id, id);
	store_close(st);
}

static void test_wrong_cluster_id(void **state)
{
	struct fixture *fx = *state;
	struct store_meta m;
	struct store *st = open_init(fx, "alpha", &m);
	assert_string_equal(m.cluster_id, "alpha");
	store_close(st);

	st = open_store(fx);
	assert_int_equal(store_init(st, "beta", &m), -EEXIST);
	assert_non_null(strstr(store_error(st), "'alpha'"));
	assert_non_null(strstr(store_error(st), "'beta'"));
	/* The refused init left nothing half done. */
	assert_int_equal(store_init(st, "alpha", &m), 0);
	assert_string_equal(m.cluster_id, "alpha");
	store_close(st);
}

static void test_commit_and_load(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	struct tnode root, a, b, c, d, e;
	mk_node(&root, 1, 0, "", NODE_DIR, 0, 0);
	mk_node(&a, 2, 1, "a", NODE_DIR, 0, 1);
	mk_node(&b, 3, 2, "b.txt", NODE_FILE, 100, 2);
	mk_node(&c, 4, 2, "c", NODE_SYMLINK, 12, 3);
	mk_node(&d, 5, 1, "d", NODE_FILE, 0, 4);
	struct store_node_change ch1[] = {
	    {1, &root.rec}, {2, &a.rec}, {3, &b.rec}, {4, &c.rec}, {5, &d.rec},
	};
	commit_ok(st, 1, 5, 50, ch1, 5, 6);

	/* Batch 2: update 3 (rename, new layout), drop 4, create 6. */
	struct tnode b2;
	mk_node(&b2, 3, 1, "b-renamed", NODE_FILE, 300, 9);
	mk_node(&e, 6, 2, "e", NODE_DIR, 0, 5);
	struct store_node_change ch2[] = {{3, &b2.rec}, {4, NULL}, {6, &e.rec}};
	commit_ok(st, 6, 8, 50, ch2, 3, 7);

	/* Batch 3: drop 6 again, update 2, drop an inode never stored. */
	struct tnode a2;
	mk_node(&a2, 2, 1, "a2", NODE_DIR, 0, 6);
	struct store_node_change ch3[] = {{6, NULL}, {2, &a2.rec}, {77, NULL}};
	commit_ok(st, 9, 9, 50, ch3, 3, 8);

	struct coll got;
	load_all(st, &got);
	assert_int_equal(got.n, 4);
	assert_node_equal(&coll_find(&got, 1)->rec, &root.rec);
	assert_node_equal(&coll_find(&got, 2)->rec, &a2.rec);
	assert_node_equal(&coll_find(&got, 3)->rec, &b2.rec);
	assert_node_equal(&coll_find(&got, 5)->rec, &d.rec);
	assert_null(coll_find(&got, 4));
	assert_null(coll_find(&got, 6));
	free(got.v);
	store_close(st);

	/* The meta row survives a reopen. */
	struct store_meta m;
	st = open_init(fx, NULL, &m);
	assert_int_equal(m.version, 9);
	assert_int_equal(m.next_ino, 8);
	uint8_t d9[DIGEST_LEN];
	fill_digest(d9, 9 ^ 0xffff);
	assert_memory_equal(m.digest, d9, DIGEST_LEN);
	uint64_t oldest, newest;
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 1);
	assert_int_equal(newest, 9);
	store_close(st);
}

static void test_binary_and_u64(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	struct tnode big, longname, empty;
	mk_node(&big, UINT64_MAX - 5, (1ULL << 63) + 7, "x", NODE_SYMLINK, 0, 0);
	/* Every byte value a name may hold, 0x80..0xff among them. */
	uint8_t n = 0;
	for (int i = 0; i < 254; i++) {
		uint8_t byte = (uint8_t)(0x80 + i);
		if (byte == 0 || byte == '/')
			byte = 0xfe;
		big.name[i] = (char)byte;
		n++;
	}
	big.rec.name_len = n;
	big.rec.size = UINT64_MAX;
	big.rec.uid = UINT32_MAX;
	big.rec.gid = 0x80000000u;
	big.rec.mtime = INT64_MIN;
	big.rec.ctime = INT64_MAX;
	big.rec.mode = 07777;
	big.rec.extra_len = 256;
	for (int i = 0; i < 256; i++)
		big.extra[i] = (uint8_t)(255 - i); /* 0x00 and 0xff included */
	big.rec.extra = big.extra;

	char name255[NODE_NAME_MAX + 1];
	memset(name255, 0xc3, NODE_NAME_MAX);
	name255[NODE_NAME_MAX] = '\0';
	mk_node(&longname, (1ULL << 63), 1, name255, NODE_FILE, 1, 7);
	mk_node(&empty, 1, 0, "", NODE_DIR, 0, 0);
	empty.rec.mtime = -1;

	struct store_node_change ch[] = {
	    {big.rec.ino, &big.rec}, {longname.rec.ino, &longname.rec}, {1, &empty.rec}};
	/* An empty change record is stored as an empty blob, not NULL. */
	commit_ok(st, 1, 1, 0, ch, 3, UINT64_MAX);

	struct coll got;
	load_all(st, &got);
	assert_int_equal(got.n, 3);
	assert_non_null(coll_find(&got, big.rec.ino));
	assert_node_equal(&coll_find(&got, big.rec.ino)->rec, &big.rec);
	assert_node_equal(&coll_find(&got, longname.rec.ino)->rec, &longname.rec);
	assert_node_equal(&coll_find(&got, 1)->rec, &empty.rec);
	assert_int_equal(coll_find(&got, 1)->rec.extra_len, 0);
	free(got.v);

	struct vcoll vc = {.rec_len = 0};
	read_ok(st, &vc, 1, 10, SIZE_MAX);
	assert_versions(&vc, 1, 1);
	store_close(st);

	struct store_meta m;
	st = open_init(fx, NULL, &m);
	assert_int_equal(m.next_ino, UINT64_MAX);
	store_close(st);
}

static void test_read_changes(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	commit_ok(st, 1, 4, 100, NULL, 0, 2);
	commit_ok(st, 5, 10, 100, NULL, 0, 2);
	struct vcoll vc = {.rec_len = 100};

	read_ok(st, &vc, 1, 100, SIZE_MAX);
	assert_versions(&vc, 1, 10);
	read_ok(st, &vc, 0, 100, SIZE_MAX);
	assert_versions(&vc, 1, 10);
	read_ok(st, &vc, 3, 4, SIZE_MAX);
	assert_versions(&vc, 3, 4);
	/* Stops once the records reach max_bytes: 100, 200, 300 >= 250. */
	read_ok(st, &vc, 3, 100, 250);
	assert_versions(&vc, 3, 3);
	read_ok(st, &vc, 3, 100, 300);
	assert_versions(&vc, 3, 3);
	read_ok(st, &vc, 3, 100, 301);
	assert_versions(&vc, 3, 4);
	/* At least one, whatever it weighs. */
	read_ok(st, &vc, 3, 100, 1);
	assert_versions(&vc, 3, 1);
	read_ok(st, &vc, 3, 100, 0);
	assert_versions(&vc, 3, 1);
	read_ok(st, &vc, 10, 100, SIZE_MAX);
	assert_versions(&vc, 10, 1);
	read_ok(st, &vc, 11, 100, SIZE_MAX);
	assert_int_equal(vc.n, 0);
	read_ok(st, &vc, UINT64_MAX, 100, SIZE_MAX);
	assert_int_equal(vc.n, 0);
	read_ok(st, &vc, 1, 0, SIZE_MAX);
	assert_int_equal(vc.n, 0);

	/* The callback's error stops the read and comes back. */
	memset(&vc, 0, sizeof(vc));
	vc.rec_len = 100;
	vc.fail_at = 3;
	assert_int_equal(store_read_changes(st, 1, 100, SIZE_MAX, collect_version, &vc), -EINTR);
	assert_int_equal(vc.n, 2);
	read_ok(st, &vc, 1, 100, SIZE_MAX);
	assert_versions(&vc, 1, 10);

	/* Empty records weigh nothing: max_bytes 1 is never reached. */
	commit_ok(st, 11, 13, 0, NULL, 0, 2);
	vc.rec_len = 0;
	read_ok(st, &vc, 11, 100, 0);
	assert_versions(&vc, 11, 1);
	vc.rec_len = 0;
	read_ok(st, &vc, 11, 100, 1);
	assert_versions(&vc, 11, 3);
	store_close(st);
}

static void test_large_batch(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	enum { NNODES = 2000, NVERS = 3000 };
	struct tnode *nodes = calloc(NNODES, sizeof(*nodes));
	struct store_node_change *ch = calloc(NNODES, sizeof(*ch));
	assert_non_null(nodes);
	assert_non_null(ch);
	for (int i = 0; i < NNODES; i++) {
		char name[32];
		snprintf(name, sizeof(name), "file-%d", i);
		mk_node(&nodes[i], 100 + i, 1, name, NODE_FILE, 100, (uint8_t)i);
		ch[i] = (struct store_node_change){100 + i, &nodes[i].rec};
	}
	commit_ok(st, 1, NVERS, 200, ch, NNODES, 100 + NNODES);
	/* Half of them again, updated, and the other half dropped. */
	for (int i = 0; i < NNODES; i++) {
		if (i % 2) {
			ch[i].rec = NULL;
		} else {
			nodes[i].rec.size += 1;
			nodes[i].rec.extra_len = 50;
		}
	}
	commit_ok(st, NVERS + 1, NVERS + 1, 200, ch, NNODES, 100 + NNODES);

	struct coll got;
	load_all(st, &got);
	assert_int_equal(got.n, NNODES / 2);
	for (int i = 0; i < NNODES; i += 2)
		assert_node_equal(&coll_find(&got, 100 + i)->rec, &nodes[i].rec);
	free(got.v);

	/* Reads spanning several of the backend's internal chunks. */
	struct vcoll *vc = calloc(1, sizeof(*vc));
	vc->rec_len = 200;
	read_ok(st, vc, 1, NVERS, SIZE_MAX);
	assert_versions(vc, 1, NVERS);
	read_ok(st, vc, 2, 2500, SIZE_MAX);
	assert_versions(vc, 2, 2500);
	read_ok(st, vc, 1, NVERS, 2500 * 200 + 1);
	assert_versions(vc, 1, 2501);
	free(vc);
	free(nodes);
	free(ch);
	store_close(st);
}

static void test_log_bounds_and_trim(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	uint64_t oldest, newest;
	commit_ok(st, 1, 10, 10, NULL, 0, 2);
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 1);
	assert_int_equal(newest, 10);

	assert_int_equal(store_trim_log(st, 0), 0);
	assert_int_equal(store_trim_log(st, 5), 0);
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 5);
	assert_int_equal(newest, 10);
	struct vcoll vc = {.rec_len = 10};
	read_ok(st, &vc, 1, 100, SIZE_MAX);
	assert_versions(&vc, 5, 6);
	assert_int_equal(store_trim_log(st, 5), 0);
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 5);

	assert_int_equal(store_trim_log(st, 11), 0);
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 0);
	assert_int_equal(newest, 0);
	/* Trimming the log leaves meta alone: the next version follows. */
	commit_ok(st, 11, 11, 10, NULL, 0, 2);
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(oldest, 11);
	assert_int_equal(newest, 11);
	store_close(st);
}

/* ---- trash --------------------------------------------------------------- */

struct tcoll {
	char keys[8][64];
	int64_t times[8];
	uint64_t sizes[8];
	size_t n;
};

static int collect_trash(void *arg, const struct store_trash *t)
{
	struct tcoll *c = arg;
	assert_true(c->n < 8);
	assert_string_equal(t->bucket, "origin");
	snprintf(c->keys[c->n], sizeof(c->keys[c->n]), "%s", t->key);
	c->times[c->n] = t->time;
	c->sizes[c->n] = t->size;
	c->n++;
	return 0;
}

static int trash_commit(struct store *st, uint64_t version, const struct store_trash *t, size_t n)
{
	struct store_version v = {.version = version, .time = (int64_t)version * 1000};
	fill_digest(v.digest, version);
	struct store_batch b = {.versions = &v,
	                        .nversions = 1,
	                        .version = version,
	                        .trash = t,
	                        .ntrash = n,
	                        .next_ino = 2};
	fill_digest(b.digest, version);
	return store_commit(st, &b);
}

/* Trash rows land with their commit, one row per (bucket, key) taking the
 * newest time, listed oldest first below a time, and leave only when their
 * time still matches; a failed commit leaves none. */
static void test_trash(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	struct store_trash t1[] = {
	    {"origin", "mp/a", "e1", 100, 1, 1000},
	    {"origin", "mp/b", "", 20, 1, 1000},
	};
	assert_int_equal(trash_commit(st, 1, t1, 2), 0);
	struct store_trash t2[] = {{"origin", "mp/a", "e1", 150, 2, 2000},
	                           {"origin", "u/x/c", "e3", 7, 2, 2000}};
	assert_int_equal(trash_commit(st, 2, t2, 2), 0);
	uint64_t count, bytes;
	assert_int_equal(store_trash_stats(st, &count, &bytes), 0);
	assert_int_equal(count, 3);
	assert_int_equal(bytes, 150 + 20 + 7);

	struct tcoll c = {0};
	assert_int_equal(store_trash_list(st, 1500, 10, collect_trash, &c), 0);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.keys[0], "mp/b");
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_trash_list(st, INT64_MAX, 10, collect_trash, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.times[1], 2000);

	/* A stale time (the row was trashed again) removes nothing. */
	struct store_trash rm[] = {{"origin", "mp/a", NULL, 0, 0, 1000},
	                           {"origin", "mp/b", NULL, 0, 0, 1000}};
	assert_int_equal(store_trash_remove(st, rm, 2), 0);
	assert_int_equal(store_trash_stats(st, &count, &bytes), 0);
	assert_int_equal(count, 2);
	rm[0].time = 2000;
	assert_int_equal(store_trash_remove(st, rm, 1), 0);
	assert_int_equal(store_trash_stats(st, &count, &bytes), 0);
	assert_int_equal(count, 1);

	/* Version 2 again collides: its trash row must not land either. */
	struct store_trash t3[] = {{"origin", "mp/d", "", 1, 2, 3000}};
	assert_int_not_equal(trash_commit(st, 2, t3, 1), 0);
	store_close(st);
	st = open_init(fx, NULL, NULL);
	assert_int_equal(store_trash_stats(st, &count, &bytes), 0);
	assert_int_equal(count, 1);
	struct store_trash bad[] = {{"origin", "", "", 1, 3, 3000}};
	assert_int_equal(trash_commit(st, 3, bad, 1), -EINVAL);
	store_close(st);
}

static void test_version_before(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	commit_ok(st, 1, 10, 10, NULL, 0, 2); /* version v at time v * 1000 */
	uint64_t v = 99;
	assert_int_equal(store_log_version_before(st, 1500, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(store_log_version_before(st, 1000, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(store_log_version_before(st, 1001, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(store_log_version_before(st, 10000, &v), 0);
	assert_int_equal(v, 9);
	assert_int_equal(store_log_version_before(st, INT64_MAX, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(store_log_version_before(st, INT64_MIN, &v), 0);
	assert_int_equal(v, 0);

	/* A clock that stepped back: version 11 committed at time 500 is the
	 * newest version before 600. */
	struct store_version v11 = {
	    .version = 11, .time = 500, .record = (const uint8_t *)"r", .record_len = 1};
	struct store_batch b = {.versions = &v11, .nversions = 1, .version = 11, .next_ino = 2};
	assert_int_equal(store_commit(st, &b), 0);
	assert_int_equal(store_log_version_before(st, 600, &v), 0);
	assert_int_equal(v, 11);
	assert_int_equal(store_log_version_before(st, 500, &v), 0);
	assert_int_equal(v, 0);
	store_close(st);
}

static void test_newer_schema_refused(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	store_close(st);
	raw_exec(fx, "UPDATE meta SET value = '99' WHERE key = 'schema_version'");
	st = open_store(fx);
	struct store_meta m;
	assert_int_equal(store_init(st, NULL, &m), -EPROTO);
	assert_non_null(strstr(store_error(st), "schema version 99"));
	store_close(st);

	raw_exec(fx, "DELETE FROM meta WHERE key = 'schema_version'");
	st = open_store(fx);
	assert_int_equal(store_init(st, NULL, &m), -EPROTO);
	assert_non_null(strstr(store_error(st), "schema_version"));
	store_close(st);
}

static void test_commit_error(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	commit_ok(st, 1, 3, 10, NULL, 0, 2);

	/* Versions 3..4 collide with 3: nothing of the batch may land. */
	struct tnode x;
	mk_node(&x, 99, 1, "x", NODE_FILE, 10, 1);
	struct store_node_change ch[] = {{99, &x.rec}};
	int r = commit_range(st, 3, 4, 10, ch, 1, 100);
	assert_int_equal(r, -EEXIST);
	assert_non_null(strstr(store_error(st), "commit of versions 3..4 failed"));
	struct coll got;
	load_all(st, &got);
	assert_int_equal(got.n, 0);
	free(got.v);

	/* Bad batches are refused before touching the store. */
	struct store_version bad[2] = {{.version = 5}, {.version = 5}};
	struct store_batch b = {.versions = bad, .nversions = 2, .version = 5, .next_ino = 2};
	assert_int_equal(store_commit(st, &b), -EINVAL);
	assert_non_null(strstr(store_error(st), "ascending"));
	b.nversions = 1;
	b.version = 6;
	assert_int_equal(store_commit(st, &b), -EINVAL);
	bad[0].version = (uint64_t)INT64_MAX + 1;
	b.version = bad[0].version;
	assert_int_equal(store_commit(st, &b), -ERANGE);

	/* The connection still works after the failures. */
	commit_ok(st, 4, 4, 10, ch, 1, 100);
	store_close(st);
	struct store_meta m;
	st = open_init(fx, NULL, &m);
	assert_int_equal(m.version, 4);
	assert_int_equal(m.next_ino, 100);
	load_all(st, &got);
	assert_int_equal(got.n, 1);
	free(got.v);
	store_close(st);
}

static void test_load_callback_stops(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	struct tnode n[5];
	struct store_node_change ch[5];
	for (int i = 0; i < 5; i++) {
		char name[8];
		snprintf(name, sizeof(name), "n%d", i);
		mk_node(&n[i], 2 + i, 1, name, NODE_FILE, 10, (uint8_t)i);
		ch[i] = (struct store_node_change){2 + i, &n[i].rec};
	}
	commit_ok(st, 1, 1, 10, ch, 5, 7);
	struct coll got = {.stop_at = 2};
	assert_int_equal(store_load_nodes(st, collect, &got), -ECANCELED);
	assert_int_equal(got.n, 1);
	assert_non_null(strstr(store_error(st), "callback"));
	free(got.v);
	load_all(st, &got);
	assert_int_equal(got.n, 5);
	free(got.v);
	commit_ok(st, 2, 2, 10, NULL, 0, 7);
	store_close(st);
}

static void test_bad_urls(void **state)
{
	struct store *st = (struct store *)0x1;
	char *err = NULL;
	assert_int_equal(store_open("foo", &st, &err), -EINVAL);
	assert_ptr_equal(st, (struct store *)0x1);
	assert_non_null(err);
	assert_non_null(strstr(err, "'foo'"));
	assert_non_null(strstr(err, "no scheme"));
	free(err);

	assert_int_equal(store_open("sqlite:", &st, &err), -EINVAL);
	assert_non_null(strstr(err, "no path"));
	free(err);

	assert_int_equal(store_open("mysql://x", &st, &err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "'mysql'"));
	free(err);

	assert_int_equal(store_open("", &st, &err), -EINVAL);
	free(err);
	assert_int_equal(store_open("foo", &st, NULL), -EINVAL);

	/* A parent that cannot be made is named. */
	assert_true(store_open("sqlite:/proc/self/nope/store.db", &st, &err) < 0);
	assert_non_null(err);
	assert_non_null(strstr(err, "/proc/self/nope"));
	free(err);

	int r = store_open("postgres://postgres@127.0.0.1:1/none?connect_timeout=2", &st, &err);
	assert_true(r < 0);
	assert_non_null(err);
	assert_true(strncmp(err, "postgres: ", 10) == 0);
	free(err);
	assert_ptr_equal(st, (struct store *)0x1);
}

struct writer {
	struct store *st;
	int batches, per_batch;
	int r;
	char err[1024];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct tnode n;
	for (int i = 0; i < w->batches; i++) {
		uint64_t first = (uint64_t)i * w->per_batch + 1;
		mk_node(&n, 2 + (uint64_t)(i % 7), 1, "f", NODE_FILE, 20, (uint8_t)i);
		struct store_node_change ch = {n.rec.ino, &n.rec};
		w->r = commit_range(w->st, first, first + w->per_batch - 1, 64, &ch, 1, 9);
		if (w->r < 0) {
			snprintf(w->err, sizeof(w->err), "%s", store_error(w->st));
			break;
		}
	}
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_two_connections(void **state)
{
	struct fixture *fx = *state;
	struct store_meta m;
	struct writer w = {.batches = 100, .per_batch = 3};
	w.st = open_init(fx, NULL, &m);
	struct store *reader = open_store(fx);

	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	uint64_t want = (uint64_t)w.batches * w.per_batch, next = 1;
	struct vcoll *vc = calloc(1, sizeof(*vc));
	double deadline = now_s() + 30;
	int reads = 0;
	while (next <= want && now_s() < deadline) {
		vc->rec_len = 64;
		read_ok(reader, vc, next, 50, SIZE_MAX);
		assert_versions(vc, next, vc->n);
		next += vc->n;
		reads++;
		if (vc->n == 0)
			usleep(1000);
	}
	pthread_join(t, NULL);
	if (w.r < 0)
		fail_msg("writer: %d %s", w.r, w.err);
	assert_int_equal(next, want + 1);
	assert_true(reads > 1);
	uint64_t oldest, newest;
	assert_int_equal(store_log_bounds(reader, &oldest, &newest), 0);
	assert_int_equal(newest, want);
	free(vc);
	store_close(reader);
	store_close(w.st);
}

#if HAVE_POSTGRES
/* Kills the store's server session from another connection. */
static void kill_store_sessions(const struct fixture *fx)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
	         " WHERE application_name = '%s' AND pid <> pg_backend_pid()",
	         g_app_name);
	raw_exec(fx, sql);
	usleep(100 * 1000);
}

static void test_pg_reconnect(void **state)
{
	struct fixture *fx = *state;
	struct store *st = open_init(fx, NULL, NULL);
	commit_ok(st, 1, 2, 10, NULL, 0, 2);

	uint64_t oldest, newest;
	kill_store_sessions(fx);
	int r = store_log_bounds(st, &oldest, &newest);
	assert_true(r == -ECONNRESET || r == -EIO);
	assert_true(strlen(store_error(st)) > 0);
	assert_int_equal(store_log_bounds(st, &oldest, &newest), 0);
	assert_int_equal(newest, 2);

	/* A commit that meets a dead session fails; the retry lands once. */
	kill_store_sessions(fx);
	r = commit_range(st, 3, 4, 10, NULL, 0, 2);
	assert_true(r == -ECONNRESET || r == -EIO);
	assert_non_null(strstr(store_error(st), "postgres: "));
	commit_ok(st, 3, 4, 10, NULL, 0, 2);
	struct vcoll vc = {.rec_len = 10};
	read_ok(st, &vc, 1, 100, SIZE_MAX);
	assert_versions(&vc, 1, 4);

	kill_store_sessions(fx);
	struct coll got;
	assert_true(store_load_nodes(st, collect, &got) < 0);
	load_all(st, &got);
	free(got.v);
	store_close(st);
}
#endif

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_new_store),           T(test_reopen_keeps_cluster_id),
	    T(test_want_cluster_id),     T(test_wrong_cluster_id),
	    T(test_commit_and_load),     T(test_binary_and_u64),
	    T(test_read_changes),        T(test_large_batch),
	    T(test_log_bounds_and_trim), T(test_trash),
	    T(test_version_before),      T(test_newer_schema_refused),
	    T(test_commit_error),        T(test_load_callback_stops),
	    T(test_two_connections),     cmocka_unit_test(test_bad_urls),
	};
	int failed = 0;
	g_backend = B_SQLITE;
	failed += cmocka_run_group_tests_name("store/sqlite", tests, NULL, NULL);

	g_pg_url = getenv("MP_TEST_PG_URL");
	snprintf(g_app_name, sizeof(g_app_name), "mp-test-store-%d", (int)getpid());
	if (g_pg_url == NULL || g_pg_url[0] == '\0') {
		printf("# store/postgres skipped: MP_TEST_PG_URL is not set\n");
		return failed;
	}
#if HAVE_POSTGRES
	const struct CMUnitTest pg_tests[] = {
	    T(test_new_store),           T(test_reopen_keeps_cluster_id),
	    T(test_want_cluster_id),     T(test_wrong_cluster_id),
	    T(test_commit_and_load),     T(test_binary_and_u64),
	    T(test_read_changes),        T(test_large_batch),
	    T(test_log_bounds_and_trim), T(test_trash),
	    T(test_version_before),      T(test_newer_schema_refused),
	    T(test_commit_error),        T(test_load_callback_stops),
	    T(test_two_connections),     T(test_pg_reconnect),
	};
	g_backend = B_POSTGRES;
	failed += cmocka_run_group_tests_name("store/postgres", pg_tests, NULL, NULL);
#else
	printf("# store/postgres skipped: built without libpq\n");
#endif
	return failed;
}
