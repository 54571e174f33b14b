#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "store_impl.h"

#define URL_HELP "expected sqlite:PATH or postgres://USER@HOST:PORT/DB"

/* The schema as a list of steps: an empty store is version 0 and walks the
 * whole list, an older one walks the rest, all inside store_init's single
 * transaction. Version 2 is one more entry here plus STORE_SCHEMA_VERSION
 * in store.h. SQLite keys are INTEGER PRIMARY KEY so that they are the rowid
 * (a 64-bit signed integer like BIGINT) instead of a second index. */
struct store_migration {
	int version; /* the schema version the step produces */
	const char *what;
	const char *sql[2]; /* by enum store_dialect */
};

static const struct store_migration store_migrations[] = {
    {
        1,
        "creation of schema version 1",
        {
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE nodes (ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL,"
            " name BLOB NOT NULL, type INTEGER NOT NULL, mode INTEGER NOT NULL,"
            " uid INTEGER NOT NULL, gid INTEGER NOT NULL, size INTEGER NOT NULL,"
            " mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, extra BLOB);"
            "CREATE TABLE changelog (version INTEGER PRIMARY KEY, time INTEGER NOT NULL,"
            " digest BLOB NOT NULL, record BLOB NOT NULL);",

            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE nodes (ino BIGINT PRIMARY KEY, parent BIGINT NOT NULL,"
            " name BYTEA NOT NULL, type SMALLINT NOT NULL, mode INTEGER NOT NULL,"
            " uid BIGINT NOT NULL, gid BIGINT NOT NULL, size BIGINT NOT NULL,"
            " mtime BIGINT NOT NULL, ctime BIGINT NOT NULL, extra BYTEA);"
            "CREATE TABLE changelog (version BIGINT PRIMARY KEY, time BIGINT NOT NULL,"
            " digest BYTEA NOT NULL, record BYTEA NOT NULL);",
        },
    },
    {
        2,
        "creation of the trash table (schema version 2)",
        {
            "CREATE TABLE trash (bucket TEXT NOT NULL, key TEXT NOT NULL,"
            " etag TEXT NOT NULL, size INTEGER NOT NULL, version INTEGER NOT NULL,"
            " time INTEGER NOT NULL, PRIMARY KEY (bucket, key));"
            "CREATE INDEX trash_time ON trash (time);",

            "CREATE TABLE trash (bucket TEXT NOT NULL, key TEXT NOT NULL,"
            " etag TEXT NOT NULL, size BIGINT NOT NULL, version BIGINT NOT NULL,"
            " time BIGINT NOT NULL, PRIMARY KEY (bucket, key));"
            "CREATE INDEX trash_time ON trash (time);",
        },
    },
};

_Static_assert(sizeof(store_migrations) / sizeof(store_migrations[0]) == STORE_SCHEMA_VERSION,
               "store_migrations needs exactly one entry per schema version");

static void set_ret_err(char **ret_err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_ret_err(char **ret_err, const char *fmt, ...)
{
	if (ret_err == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(ret_err, fmt, ap) < 0)
		*ret_err = NULL;
	va_end(ap);
}

void store_seterr(struct store *st, const char *fmt, ...)
{
	int n = snprintf(st->err, sizeof(st->err), "%s: ", st->ops->kind);
	if (n < 0 || (size_t)n >= sizeof(st->err))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(st->err + n, sizeof(st->err) - n, fmt, ap);
	va_end(ap);
}

int store_open(const char *url, struct store **ret, char **ret_err)
{
	if (ret_err != NULL)
		*ret_err = NULL;
	if (url == NULL || url[0] == '\0') {
		set_ret_err(ret_err, "store url is empty (" URL_HELP ")");
		return -EINVAL;
	}
	if (strncmp(url, "sqlite:", 7) == 0) {
		if (url[7] == '\0') {
			set_ret_err(ret_err, "store url 'sqlite:' has no path (" URL_HELP ")");
			return -EINVAL;
		}
		return store_sqlite_open(url + 7, ret, ret_err);
	}
	if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
		return store_postgres_open(url, ret, ret_err);

	/* Only the scheme is echoed: the rest of a URL may hold a password. */
	size_t scheme_len = strcspn(url, ":/");
	if (url[scheme_len] == ':' && scheme_len > 0) {
		set_ret_err(ret_err, "store url scheme '%.*s' is not supported (" URL_HELP ")",
		            (int)(scheme_len > 32 ? 32 : scheme_len), url);
		return -EPROTONOSUPPORT;
	}
	set_ret_err(ret_err, "store url '%.200s' has no scheme (" URL_HELP ")", url);
	return -EINVAL;
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	st->ops->close(st);
}

const char *store_error(const struct store *st)
{
	if (st == NULL)
		return "no store";
	return st->err;
}

int store_lock(struct store *st)
{
	return st->ops->lock(st);
}

const char *store_kind(const struct store *st)
{
	return st->ops->kind;
}

void store_digest_hex(const uint8_t digest[DIGEST_LEN], char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < DIGEST_LEN; i++) {
		out[2 * i] = hex[digest[i] >> 4];
		out[2 * i + 1] = hex[digest[i] & 15];
	}
	out[2 * DIGEST_LEN] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_digest(const char *s, uint8_t out[DIGEST_LEN])
{
	if (strlen(s) != 2 * DIGEST_LEN)
		return -EINVAL;
	for (size_t i = 0; i < DIGEST_LEN; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static int parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;
	if (*s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

static int check_cluster_id(const char *id)
{
	size_t len = strlen(id);
	if (len == 0 || len > STORE_CLUSTER_ID_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return -EINVAL;
	}
	return 0;
}

static int new_cluster_id(char out[2 * 16 + 1])
{
	uint8_t raw[16];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < sizeof(raw); i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * sizeof(raw)] = '\0';
	return 0;
}

int store_check_batch(struct store *st, const struct store_batch *batch)
{
	if (batch->nversions > 0 &&
	    batch->versions[batch->nversions - 1].version != batch->version) {
		store_seterr(st, "batch version %llu is not its last version %llu",
		             (unsigned long long)batch->version,
		             (unsigned long long)batch->versions[batch->nversions - 1].version);
		return -EINVAL;
	}
	for (size_t i = 0; i < batch->nversions; i++) {
		const struct store_version *v = &batch->versions[i];
		/* The change log is ordered by a signed BIGINT. */
		if (v->version == 0 || v->version > INT64_MAX) {
			store_seterr(st, "version %llu is out of range 1..%lld",
			             (unsigned long long)v->version, (long long)INT64_MAX);
			return -ERANGE;
		}
		if (i > 0 && v->version <= batch->versions[i - 1].version) {
			store_seterr(st, "batch versions are not ascending (%llu after %llu)",
			             (unsigned long long)v->version,
			             (unsigned long long)batch->versions[i - 1].version);
			return -EINVAL;
		}
		if (v->record_len > 0 && v->record == NULL) {
			store_seterr(st, "version %llu has a record length but no record",
			             (unsigned long long)v->version);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < batch->nchanges; i++) {
		const struct node_rec *rec = batch->changes[i].rec;
		if (rec == NULL)
			continue;
		if (rec->ino != batch->changes[i].ino) {
			store_seterr(st,
			             "change %zu is for inode %llu but its record is inode %llu", i,
			             (unsigned long long)batch->changes[i].ino,
			             (unsigned long long)rec->ino);
			return -EINVAL;
		}
		if ((rec->name_len > 0 && rec->name == NULL) ||
		    (rec->extra_len > 0 && rec->extra == NULL)) {
			store_seterr(st, "inode %llu has a length without its bytes",
			             (unsigned long long)rec->ino);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < batch->ntrash; i++) {
		const struct store_trash *t = &batch->trash[i];
		if (t->bucket == NULL || t->key == NULL || t->bucket[0] == '\0' ||
		    t->key[0] == '\0') {
			store_seterr(st, "trash row %zu has no bucket or key", i);
			return -EINVAL;
		}
	}
	return 0;
}

static int meta_get_u64(struct store *st, const char *key, uint64_t *ret)
{
	char buf[64];
	int r = st->ops->meta_get(st, key, buf, sizeof(buf));
	if (r == -ENOENT) {
		store_seterr(st, "meta has no '%s' row", key);
		return -EPROTO;
	}
	if (r < 0)
		return r;
	if (parse_u64(buf, ret) < 0) {
		store_seterr(st, "meta '%s' is not an unsigned number: '%s'", key, buf);
		return -EPROTO;
	}
	return 0;
}

/* Runs the migration steps the store lacks. *ret_created tells whether it
 * was empty (version 0) and so still needs its first meta rows. */
static int migrate(struct store *st, bool *ret_created)
{
	bool has_meta;
	int r = st->ops->has_meta(st, &has_meta);
	if (r < 0)
		return r;
	uint64_t version = 0;
	if (has_meta) {
		r = meta_get_u64(st, "schema_version", &version);
		if (r < 0)
			return r;
		if (version == 0) {
			store_seterr(st, "meta schema_version is 0");
			return -EPROTO;
		}
	}
	if (version > STORE_SCHEMA_VERSION) {
		store_seterr(st,
		             "store has schema version %llu but this build knows only up to %d: "
		             "it was written by a newer mirrorplane",
		             (unsigned long long)version, STORE_SCHEMA_VERSION);
		return -EPROTO;
	}
	for (size_t i = 0; i < sizeof(store_migrations) / sizeof(store_migrations[0]); i++) {
		const struct store_migration *m = &store_migrations[i];
		if ((uint64_t)m->version <= version)
			continue;
		r = st->ops->exec(st, m->what, m->sql[st->ops->dialect]);
		if (r < 0)
			return r;
		char v[16];
		snprintf(v, sizeof(v), "%d", m->version);
		r = st->ops->meta_set(st, "schema_version", v);
		if (r < 0)
			return r;
	}
	*ret_created = !has_meta;
	return 0;
}

static int init_cluster_id(struct store *st, bool created, const char *want, char *id)
{
	int r;
	if (created) {
		if (want != NULL && want[0] != '\0')
			snprintf(id, STORE_CLUSTER_ID_MAX + 1, "%s", want);
		else if (new_cluster_id(id) < 0) {
			store_seterr(st, "RAND_bytes failed to make a cluster id");
			return -EIO;
		}
		return st->ops->meta_set(st, "cluster_id", id);
	}
	r = st->ops->meta_get(st, "cluster_id", id, STORE_CLUSTER_ID_MAX + 1);
	if (r == -ENOENT) {
		store_seterr(st, "meta has no 'cluster_id' row");
		return -EPROTO;
	}
	if (r == -ENAMETOOLONG || (r == 0 && check_cluster_id(id) < 0)) {
		store_seterr(st, "meta cluster_id is not a valid cluster id");
		return -EPROTO;
	}
	if (r < 0)
		return r;
	if (want != NULL && want[0] != '\0' && strcmp(want, id) != 0) {
		store_seterr(st, "store belongs to cluster '%s', not to cluster '%s'", id, want);
		return -EEXIST;
	}
	return 0;
}

int store_init(struct store *st, const char *want_cluster_id, struct store_meta *ret_meta)
{
	struct store_meta meta = {0};
	if (want_cluster_id != NULL && want_cluster_id[0] != '\0' &&
	    check_cluster_id(want_cluster_id) < 0) {
		store_seterr(
		    st, "cluster id '%.80s' is invalid (1..%d characters of A-Z a-z 0-9 . _ -)",
		    want_cluster_id, STORE_CLUSTER_ID_MAX);
		return -EINVAL;
	}
	int r = st->ops->init_begin(st);
	if (r < 0)
		return r;
	bool created = false;
	r = migrate(st, &created);
	if (r < 0)
		goto fail;
	r = init_cluster_id(st, created, want_cluster_id, meta.cluster_id);
	if (r < 0)
		goto fail;
	if (created) {
		char zero[2 * DIGEST_LEN + 1];
		store_digest_hex(meta.digest, zero);
		if ((r = st->ops->meta_set(st, "version", "0")) < 0 ||
		    (r = st->ops->meta_set(st, "next_ino", "2")) < 0 ||
		    (r = st->ops->meta_set(st, "digest", zero)) < 0)
			goto fail;
	}
	if ((r = meta_get_u64(st, "version", &meta.version)) < 0 ||
	    (r = meta_get_u64(st, "next_ino", &meta.next_ino)) < 0)
		goto fail;
	char digest[2 * DIGEST_LEN + 2];
	r = st->ops->meta_get(st, "digest", digest, sizeof(digest));
	if (r == -ENOENT || r == -ENAMETOOLONG ||
	    (r == 0 && parse_digest(digest, meta.digest) < 0)) {
		store_seterr(st, "meta digest is missing or not %d hex characters", 2 * DIGEST_LEN);
		r = -EPROTO;
		goto fail;
	}
	if (r < 0)
		goto fail;
	r = st->ops->init_end(st, true);
	if (r < 0)
		return r;
	*ret_meta = meta;
	return 0;
fail:
	/* Keep the message of the step that failed, not the rollback's. */
	{
		char saved[STORE_ERR_MAX];
		memcpy(saved, st->err, sizeof(saved));
		st->ops->init_end(st, false);
		memcpy(st->err, saved, sizeof(saved));
	}
	return r;
}

int store_load_nodes(struct store *st, store_node_fn fn, void *arg)
{
	return st->ops->load_nodes(st, fn, arg);
}

int store_commit(struct store *st, const struct store_batch *batch)
{
	int r = store_check_batch(st, batch);
	if (r < 0)
		return r;
	return st->ops->commit(st, batch);
}

int store_log_bounds(struct store *st, uint64_t *ret_oldest, uint64_t *ret_newest)
{
	return st->ops->log_bounds(st, ret_oldest, ret_newest);
}

int store_read_changes(struct store *st, uint64_t from, size_t max_count, size_t max_bytes,
                       store_change_fn fn, void *arg)
{
	if (max_count == 0)
		return 0;
	/* No version above INT64_MAX is ever stored (store_check_batch). */
	if (from > INT64_MAX)
		return 0;
	if (from == 0)
		from = 1;
	return st->ops->read_changes(st, from, max_count, max_bytes, fn, arg);
}

int store_log_version_before(struct store *st, int64_t time, uint64_t *ret_version)
{
	return st->ops->log_version_before(st, time, ret_version);
}

int store_trim_log(struct store *st, uint64_t below)
{
	if (below > INT64_MAX)
		below = INT64_MAX;
	return st->ops->trim_log(st, below);
}

int store_trash_list(struct store *st, int64_t before, size_t max, store_trash_fn fn, void *arg)
{
	if (max == 0)
		return 0;
	return st->ops->trash_list(st, before, max, fn, arg);
}

int store_trash_remove(struct store *st, const struct store_trash *rows, size_t n)
{
	if (n == 0)
		return 0;
	return st->ops->trash_remove(st, rows, n);
}

int store_trash_stats(struct store *st, uint64_t *ret_count, uint64_t *ret_bytes)
{
	return st->ops->trash_stats(st, ret_count, ret_bytes);
}
