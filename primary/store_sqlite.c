/* The embedded backend: one SQLite file in WAL mode with synchronous=FULL,
 * so a commit is on disk when store_commit returns and a second connection
 * can read the change log while the first one commits. */
#include <errno.h>
#include <unistd.h>
#include <sys/file.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "store_impl.h"

/* How long a statement waits for another connection's lock before it
 * fails with -EBUSY: checkpoints and the other writer are short. */
#define SQ_BUSY_TIMEOUT_MS 10000

enum sq_stmt {
	SQ_BEGIN,
	SQ_COMMIT,
	SQ_ROLLBACK,
	SQ_HAS_META,
	SQ_META_GET,
	SQ_META_SET,
	SQ_UPSERT,
	SQ_DELETE,
	SQ_LOG_INSERT,
	SQ_META_UPDATE,
	SQ_LOAD,
	SQ_READ,
	SQ_BOUNDS,
	SQ_BEFORE,
	SQ_TRIM,
	SQ_TRASH_PUT,
	SQ_TRASH_LIST,
	SQ_TRASH_REMOVE,
	SQ_TRASH_STATS,
	SQ_COUNT
};

static const char *const sq_sql[SQ_COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_HAS_META] = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
    [SQ_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [SQ_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [SQ_UPSERT] = "INSERT INTO nodes (ino, parent, name, type, mode, uid, gid, size, mtime,"
                  " ctime, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                  " ON CONFLICT (ino) DO UPDATE SET parent = excluded.parent,"
                  " name = excluded.name, type = excluded.type, mode = excluded.mode,"
                  " uid = excluded.uid, gid = excluded.gid, size = excluded.size,"
                  " mtime = excluded.mtime, ctime = excluded.ctime, extra = excluded.extra",
    [SQ_DELETE] = "DELETE FROM nodes WHERE ino = ?1",
    [SQ_LOG_INSERT] = "INSERT INTO changelog (version, time, digest, record)"
                      " VALUES (?1, ?2, ?3, ?4)",
    [SQ_META_UPDATE] = "UPDATE meta SET value = CASE key WHEN 'version' THEN ?1"
                       " WHEN 'next_ino' THEN ?2 ELSE ?3 END"
                       " WHERE key IN ('version', 'next_ino', 'digest')",
    [SQ_LOAD] = "SELECT ino, parent, name, type, mode, uid, gid, size, mtime, ctime, extra"
                " FROM nodes",
    [SQ_READ] = "SELECT version, time, digest, record FROM changelog WHERE version >= ?1"
                " ORDER BY version LIMIT ?2",
    /* Two sub-selects: SQLite answers min() and max() from the key only
     * when each stands alone. */
    [SQ_BOUNDS] = "SELECT (SELECT min(version) FROM changelog),"
                  " (SELECT max(version) FROM changelog)",
    /* Walks the key downwards and stops at the first match, which is
     * cheap for recent times and exact even if the clock stepped back. */
    [SQ_BEFORE] = "SELECT version FROM changelog WHERE time < ?1 ORDER BY version DESC LIMIT 1",
    [SQ_TRIM] = "DELETE FROM changelog WHERE version < ?1",
    [SQ_TRASH_PUT] = "INSERT INTO trash (bucket, key, etag, size, version, time)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (bucket, key) DO UPDATE"
                     " SET etag = excluded.etag, size = excluded.size,"
                     " version = excluded.version, time = excluded.time",
    [SQ_TRASH_LIST] = "SELECT bucket, key, etag, size, version, time FROM trash"
                      " WHERE time < ?1 ORDER BY time LIMIT ?2",
    [SQ_TRASH_REMOVE] = "DELETE FROM trash WHERE bucket = ?1 AND key = ?2 AND time = ?3",
    [SQ_TRASH_STATS] = "SELECT count(*), coalesce(sum(size), 0) FROM trash",
};

struct sq_store {
	struct store base;
	char *path;
	int lock_fd; /* flock held by the writer, -1 otherwise */
	sqlite3 *db;
	sqlite3_stmt *stmt[SQ_COUNT];
};

static struct sq_store *sq(struct store *st)
{
	return (struct sq_store *)st;
}

static int sq_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_TOOBIG:
		return -E2BIG;
	default:
		return -EIO;
	}
}

/* Records what failed with SQLite's own words and returns the errno. */
static int sq_fail(struct sq_store *s, int rc, const char *what)
{
	store_seterr(&s->base, "%s failed: %s (%s)", what, sqlite3_errmsg(s->db),
	             sqlite3_errstr(rc));
	return sq_errno(rc);
}

/* Statements are prepared on first use and kept: the tables may not exist
 * until store_init, and SQLite re-prepares them itself if the schema
 * changes underneath. */
static int sq_stmt(struct sq_store *s, enum sq_stmt i, const char *what, sqlite3_stmt **ret)
{
	if (s->stmt[i] == NULL) {
		int rc = sqlite3_prepare_v3(s->db, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                            &s->stmt[i], NULL);
		if (rc != SQLITE_OK)
			return sq_fail(s, rc, what);
	}
	*ret = s->stmt[i];
	return 0;
}

/* sqlite3_bind_blob with a NULL pointer binds NULL, which the NOT NULL
 * columns refuse: an empty name or record is a zero-length blob. */
static int sq_bind_blob(sqlite3_stmt *stmt, int col, const void *p, size_t len)
{
	if (len > INT_MAX)
		return SQLITE_TOOBIG;
	if (len == 0)
		return sqlite3_bind_zeroblob(stmt, col, 0);
	return sqlite3_bind_blob(stmt, col, p, (int)len, SQLITE_STATIC);
}

/* Runs a statement that returns no rows. */
static int sq_run(struct sq_store *s, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return sq_fail(s, rc, what);
	return 0;
}

static int sq_simple(struct sq_store *s, enum sq_stmt i, const char *what)
{
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, i, what, &stmt);
	if (r < 0)
		return r;
	return sq_run(s, stmt, what);
}

static void sq_rollback(struct sq_store *s)
{
	if (sqlite3_get_autocommit(s->db))
		return;
	char saved[STORE_ERR_MAX];
	memcpy(saved, s->base.err, sizeof(saved));
	if (sq_simple(s, SQ_ROLLBACK, "rollback") < 0)
		/* Closing the connection is what rolls back now. */
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	memcpy(s->base.err, saved, sizeof(saved));
}

static void sq_close(struct store *st)
{
	struct sq_store *s = sq(st);
	for (size_t i = 0; i < SQ_COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s->path);
	free(s);
}

/* SQLite's own locks last one transaction; the writer's claim on the store
 * lasts the process, through a flock on a file beside the database. */
static int sq_lock(struct store *st)
{
	struct sq_store *s = sq(st);
	if (s->lock_fd >= 0)
		return 0;
	char *lp = NULL;
	if (asprintf(&lp, "%s-primary.lock", s->path) < 0)
		return -ENOMEM;
	int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		store_seterr(st, "cannot open lock file '%s': %s", lp, strerror(e));
		free(lp);
		return -e;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		if (e == EWOULDBLOCK) {
			store_seterr(st, "'%s' is in use by another mp-primary (lock file '%s')",
			             s->path, lp);
			free(lp);
			return -EBUSY;
		}
		store_seterr(st, "cannot lock '%s': %s", lp, strerror(e));
		free(lp);
		return -e;
	}
	free(lp);
	s->lock_fd = fd;
	return 0;
}

static int sq_init_begin(struct store *st)
{
	return sq_simple(sq(st), SQ_BEGIN, "begin of store_init");
}

static int sq_init_end(struct store *st, bool commit)
{
	struct sq_store *s = sq(st);
	if (!commit) {
		sq_rollback(s);
		return 0;
	}
	int r = sq_simple(s, SQ_COMMIT, "commit of store_init");
	if (r < 0)
		sq_rollback(s);
	return r;
}

static int sq_exec(struct store *st, const char *what, const char *sql)
{
	struct sq_store *s = sq(st);
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		store_seterr(st, "%s failed: %s", what, msg != NULL ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return sq_errno(rc);
	}
	return 0;
}

static int sq_has_meta(struct store *st, bool *ret_has)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_HAS_META, "check for the meta table", &stmt);
	if (r < 0)
		return r;
	int rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_fail(s, rc, "check for the meta table");
	*ret_has = rc == SQLITE_ROW;
	return 0;
}

static int sq_meta_get(struct store *st, const char *key, char *buf, size_t buflen)
{
	struct sq_store *s = sq(st);
	char what[64];
	snprintf(what, sizeof(what), "read of meta '%s'", key);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_META_GET, what, &stmt);
	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		r = -ENOENT;
	} else if (rc != SQLITE_ROW) {
		r = sq_fail(s, rc, what);
	} else {
		const unsigned char *v = sqlite3_column_text(stmt, 0);
		int len = sqlite3_column_bytes(stmt, 0);
		if (v == NULL || (size_t)len >= buflen) {
			store_seterr(st, "meta '%s' is too long", key);
			r = -ENAMETOOLONG;
		} else {
			memcpy(buf, v, (size_t)len);
			buf[len] = '\0';
		}
	}
	sqlite3_reset(stmt);
	return r;
}

static int sq_meta_set(struct store *st, const char *key, const char *value)
{
	struct sq_store *s = sq(st);
	char what[64];
	snprintf(what, sizeof(what), "write of meta '%s'", key);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_META_SET, what, &stmt);
	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC);
	return sq_run(s, stmt, what);
}

/* Checks a loaded row against the record's field widths; the file could
 * have been edited by hand. */
static int sq_row_to_node(struct sq_store *s, sqlite3_stmt *stmt, struct node_rec *rec,
                          char name[NODE_NAME_MAX + 1])
{
	memset(rec, 0, sizeof(*rec));
	rec->ino = store_i64_to_u64(sqlite3_column_int64(stmt, 0));
	rec->parent = store_i64_to_u64(sqlite3_column_int64(stmt, 1));
	int name_len = sqlite3_column_bytes(stmt, 2);
	const void *name_p = sqlite3_column_blob(stmt, 2);
	sqlite3_int64 type = sqlite3_column_int64(stmt, 3);
	sqlite3_int64 mode = sqlite3_column_int64(stmt, 4);
	sqlite3_int64 uid = sqlite3_column_int64(stmt, 5);
	sqlite3_int64 gid = sqlite3_column_int64(stmt, 6);
	rec->size = store_i64_to_u64(sqlite3_column_int64(stmt, 7));
	rec->mtime = sqlite3_column_int64(stmt, 8);
	rec->ctime = sqlite3_column_int64(stmt, 9);
	const void *extra = sqlite3_column_blob(stmt, 10);
	int extra_len = sqlite3_column_bytes(stmt, 10);

	const char *bad = NULL;
	if (name_len > NODE_NAME_MAX)
		bad = "name longer than 255 bytes";
	else if (type < 0 || type > UINT8_MAX)
		bad = "type out of range";
	else if (mode < 0 || mode > UINT32_MAX)
		bad = "mode out of range";
	else if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
		bad = "uid or gid out of range";
	if (bad != NULL) {
		store_seterr(&s->base, "load of nodes failed: inode %llu has a %s",
		             (unsigned long long)rec->ino, bad);
		return -EBADMSG;
	}
	if (name_len > 0)
		memcpy(name, name_p, (size_t)name_len);
	name[name_len] = '\0';
	rec->name = name;
	rec->name_len = (uint8_t)name_len;
	rec->type = (uint8_t)type;
	rec->mode = (uint32_t)mode;
	rec->uid = (uint32_t)uid;
	rec->gid = (uint32_t)gid;
	rec->extra = extra_len > 0 ? extra : NULL;
	rec->extra_len = (uint32_t)extra_len;
	return 0;
}

static int sq_load_nodes(struct store *st, store_node_fn fn, void *arg)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_LOAD, "load of nodes", &stmt);
	if (r < 0)
		return r;
	char name[NODE_NAME_MAX + 1];
	for (;;) {
		int rc = sqlite3_step(stmt);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sq_fail(s, rc, "load of nodes");
			break;
		}
		struct node_rec rec;
		r = sq_row_to_node(s, stmt, &rec, name);
		if (r < 0)
			break;
		r = fn(arg, &rec);
		if (r < 0) {
			store_seterr(st, "load of nodes stopped by its callback (%s)",
			             strerror(-r));
			break;
		}
	}
	sqlite3_reset(stmt);
	return r < 0 ? r : 0;
}

static int sq_commit_rows(struct sq_store *s, const struct store_batch *batch)
{
	sqlite3_stmt *up = NULL, *del = NULL, *log = NULL, *meta = NULL, *trash = NULL;
	int r;
	if ((r = sq_stmt(s, SQ_UPSERT, "prepare of the node upsert", &up)) < 0 ||
	    (batch->ntrash > 0 &&
	     (r = sq_stmt(s, SQ_TRASH_PUT, "prepare of the trash insert", &trash)) < 0) ||
	    (r = sq_stmt(s, SQ_DELETE, "prepare of the node delete", &del)) < 0 ||
	    (r = sq_stmt(s, SQ_LOG_INSERT, "prepare of the changelog insert", &log)) < 0 ||
	    (r = sq_stmt(s, SQ_META_UPDATE, "prepare of the meta update", &meta)) < 0)
		return r;

	char what[96];
	for (size_t i = 0; i < batch->nchanges; i++) {
		const struct store_node_change *c = &batch->changes[i];
		const struct node_rec *n = c->rec;
		if (n == NULL) {
			sqlite3_bind_int64(del, 1, store_u64_to_i64(c->ino));
			snprintf(what, sizeof(what), "delete of inode %llu",
			         (unsigned long long)c->ino);
			if ((r = sq_run(s, del, what)) < 0)
				return r;
			continue;
		}
		sqlite3_bind_int64(up, 1, store_u64_to_i64(n->ino));
		sqlite3_bind_int64(up, 2, store_u64_to_i64(n->parent));
		sq_bind_blob(up, 3, n->name, n->name_len);
		sqlite3_bind_int(up, 4, n->type);
		sqlite3_bind_int64(up, 5, n->mode);
		sqlite3_bind_int64(up, 6, n->uid);
		sqlite3_bind_int64(up, 7, n->gid);
		sqlite3_bind_int64(up, 8, store_u64_to_i64(n->size));
		sqlite3_bind_int64(up, 9, n->mtime);
		sqlite3_bind_int64(up, 10, n->ctime);
		if (n->extra_len > 0)
			sq_bind_blob(up, 11, n->extra, n->extra_len);
		else
			sqlite3_bind_null(up, 11);
		snprintf(what, sizeof(what), "upsert of inode %llu", (unsigned long long)n->ino);
		if ((r = sq_run(s, up, what)) < 0)
			return r;
	}
	for (size_t i = 0; i < batch->nversions; i++) {
		const struct store_version *v = &batch->versions[i];
		sqlite3_bind_int64(log, 1, store_u64_to_i64(v->version));
		sqlite3_bind_int64(log, 2, v->time);
		sq_bind_blob(log, 3, v->digest, DIGEST_LEN);
		int rc = sq_bind_blob(log, 4, v->record, v->record_len);
		if (rc != SQLITE_OK)
			return sq_fail(s, rc, "bind of a changelog record");
		snprintf(what, sizeof(what), "changelog insert of version %llu",
		         (unsigned long long)v->version);
		if ((r = sq_run(s, log, what)) < 0)
			return r;
	}
	for (size_t i = 0; i < batch->ntrash; i++) {
		const struct store_trash *t = &batch->trash[i];
		sqlite3_bind_text(trash, 1, t->bucket, -1, SQLITE_STATIC);
		sqlite3_bind_text(trash, 2, t->key, -1, SQLITE_STATIC);
		sqlite3_bind_text(trash, 3, t->etag ? t->etag : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(trash, 4, store_u64_to_i64(t->size));
		sqlite3_bind_int64(trash, 5, store_u64_to_i64(t->version));
		sqlite3_bind_int64(trash, 6, t->time);
		if ((r = sq_run(s, trash, "trash insert")) < 0)
			return r;
	}
	char version[24], next_ino[24], digest[2 * DIGEST_LEN + 1];
	snprintf(version, sizeof(version), "%llu", (unsigned long long)batch->version);
	snprintf(next_ino, sizeof(next_ino), "%llu", (unsigned long long)batch->next_ino);
	store_digest_hex(batch->digest, digest);
	sqlite3_bind_text(meta, 1, version, -1, SQLITE_STATIC);
	sqlite3_bind_text(meta, 2, next_ino, -1, SQLITE_STATIC);
	sqlite3_bind_text(meta, 3, digest, -1, SQLITE_STATIC);
	if ((r = sq_run(s, meta, "meta update")) < 0)
		return r;
	if (sqlite3_changes(s->db) != 3) {
		store_seterr(&s->base, "meta update changed %d rows instead of 3: run store_init",
		             sqlite3_changes(s->db));
		return -EPROTO;
	}
	return 0;
}

static int sq_commit(struct store *st, const struct store_batch *batch)
{
	struct sq_store *s = sq(st);
	int r = sq_simple(s, SQ_BEGIN, "begin");
	if (r < 0)
		goto fail;
	r = sq_commit_rows(s, batch);
	if (r < 0)
		goto fail;
	r = sq_simple(s, SQ_COMMIT, "commit");
	if (r < 0)
		goto fail;
	return 0;
fail:
	sq_rollback(s);
	if (batch->nversions > 0) {
		/* Name the batch in front of the step that failed. */
		char step[STORE_ERR_MAX];
		size_t skip = strlen(st->ops->kind) + 2;
		snprintf(step, sizeof(step), "%s", st->err + skip);
		store_seterr(st, "commit of versions %llu..%llu failed: %s",
		             (unsigned long long)batch->versions[0].version,
		             (unsigned long long)batch->version, step);
	}
	return r;
}

static int sq_log_bounds(struct store *st, uint64_t *ret_oldest, uint64_t *ret_newest)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_BOUNDS, "read of the log bounds", &stmt);
	if (r < 0)
		return r;
	int rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW) {
		r = sq_fail(s, rc, "read of the log bounds");
		sqlite3_reset(stmt);
		return r;
	}
	/* NULL (an empty log) reads as 0. */
	uint64_t oldest = store_i64_to_u64(sqlite3_column_int64(stmt, 0));
	uint64_t newest = store_i64_to_u64(sqlite3_column_int64(stmt, 1));
	sqlite3_reset(stmt);
	*ret_oldest = oldest;
	*ret_newest = newest;
	return 0;
}

static int sq_read_changes(struct store *st, uint64_t from, size_t max_count, size_t max_bytes,
                           store_change_fn fn, void *arg)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_READ, "read of the changelog", &stmt);
	if (r < 0)
		return r;
	sqlite3_bind_int64(stmt, 1, store_u64_to_i64(from));
	sqlite3_bind_int64(stmt, 2, max_count > INT64_MAX ? INT64_MAX : (sqlite3_int64)max_count);
	size_t bytes = 0;
	for (;;) {
		int rc = sqlite3_step(stmt);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sq_fail(s, rc, "read of the changelog");
			break;
		}
		struct store_version v = {
		    .version = store_i64_to_u64(sqlite3_column_int64(stmt, 0)),
		    .time = sqlite3_column_int64(stmt, 1),
		};
		const void *digest = sqlite3_column_blob(stmt, 2);
		if (sqlite3_column_bytes(stmt, 2) != DIGEST_LEN || digest == NULL) {
			store_seterr(st,
			             "read of the changelog failed: version %llu has a digest "
			             "of %d bytes",
			             (unsigned long long)v.version, sqlite3_column_bytes(stmt, 2));
			r = -EBADMSG;
			break;
		}
		memcpy(v.digest, digest, DIGEST_LEN);
		v.record = sqlite3_column_blob(stmt, 3);
		v.record_len = (size_t)sqlite3_column_bytes(stmt, 3);
		r = fn(arg, &v);
		if (r < 0) {
			store_seterr(st, "read of the changelog stopped by its callback (%s)",
			             strerror(-r));
			break;
		}
		bytes += v.record_len;
		if (bytes >= max_bytes)
			break;
	}
	sqlite3_reset(stmt);
	return r < 0 ? r : 0;
}

static int sq_log_version_before(struct store *st, int64_t time, uint64_t *ret_version)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_BEFORE, "search of the changelog by time", &stmt);
	if (r < 0)
		return r;
	sqlite3_bind_int64(stmt, 1, time);
	int rc = sqlite3_step(stmt);
	uint64_t version = 0;
	if (rc == SQLITE_ROW)
		version = store_i64_to_u64(sqlite3_column_int64(stmt, 0));
	else if (rc != SQLITE_DONE)
		r = sq_fail(s, rc, "search of the changelog by time");
	sqlite3_reset(stmt);
	if (r < 0)
		return r;
	*ret_version = version;
	return 0;
}

static int sq_trim_log(struct store *st, uint64_t below)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	char what[64];
	snprintf(what, sizeof(what), "trim of the changelog below %llu", (unsigned long long)below);
	int r = sq_stmt(s, SQ_TRIM, what, &stmt);
	if (r < 0)
		return r;
	sqlite3_bind_int64(stmt, 1, store_u64_to_i64(below));
	return sq_run(s, stmt, what);
}

static int sq_trash_list(struct store *st, int64_t before, size_t max, store_trash_fn fn, void *arg)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_TRASH_LIST, "read of the trash list", &stmt);
	if (r < 0)
		return r;
	sqlite3_bind_int64(stmt, 1, before);
	sqlite3_bind_int64(stmt, 2, max > INT64_MAX ? INT64_MAX : (sqlite3_int64)max);
	for (;;) {
		int rc = sqlite3_step(stmt);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW) {
			r = sq_fail(s, rc, "read of the trash list");
			break;
		}
		struct store_trash t = {
		    .bucket = (const char *)sqlite3_column_text(stmt, 0),
		    .key = (const char *)sqlite3_column_text(stmt, 1),
		    .etag = (const char *)sqlite3_column_text(stmt, 2),
		    .size = store_i64_to_u64(sqlite3_column_int64(stmt, 3)),
		    .version = store_i64_to_u64(sqlite3_column_int64(stmt, 4)),
		    .time = sqlite3_column_int64(stmt, 5),
		};
		if (t.bucket == NULL || t.key == NULL) {
			store_seterr(st,
			             "read of the trash list failed: a row has no bucket or key");
			r = -EBADMSG;
			break;
		}
		if (t.etag == NULL)
			t.etag = "";
		r = fn(arg, &t);
		if (r < 0) {
			store_seterr(st, "read of the trash list stopped by its callback (%s)",
			             strerror(-r));
			break;
		}
	}
	sqlite3_reset(stmt);
	return r < 0 ? r : 0;
}

static int sq_trash_remove(struct store *st, const struct store_trash *rows, size_t n)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_TRASH_REMOVE, "removal from the trash list", &stmt);
	if (r < 0 || (r = sq_simple(s, SQ_BEGIN, "begin of a trash removal")) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		sqlite3_bind_text(stmt, 1, rows[i].bucket, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, rows[i].key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(stmt, 3, rows[i].time);
		r = sq_run(s, stmt, "removal from the trash list");
	}
	if (r == 0)
		r = sq_simple(s, SQ_COMMIT, "commit of a trash removal");
	if (r < 0)
		sq_rollback(s);
	return r;
}

static int sq_trash_stats(struct store *st, uint64_t *ret_count, uint64_t *ret_bytes)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *stmt = NULL;
	int r = sq_stmt(s, SQ_TRASH_STATS, "count of the trash list", &stmt);
	if (r < 0)
		return r;
	int rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW) {
		r = sq_fail(s, rc, "count of the trash list");
		sqlite3_reset(stmt);
		return r;
	}
	uint64_t count = store_i64_to_u64(sqlite3_column_int64(stmt, 0));
	uint64_t bytes = store_i64_to_u64(sqlite3_column_int64(stmt, 1));
	sqlite3_reset(stmt);
	*ret_count = count;
	*ret_bytes = bytes;
	return 0;
}

static const struct store_ops sq_ops = {
    .kind = "sqlite",
    .dialect = STORE_DIALECT_SQLITE,
    .close = sq_close,
    .init_begin = sq_init_begin,
    .init_end = sq_init_end,
    .exec = sq_exec,
    .has_meta = sq_has_meta,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .load_nodes = sq_load_nodes,
    .commit = sq_commit,
    .log_bounds = sq_log_bounds,
    .read_changes = sq_read_changes,
    .log_version_before = sq_log_version_before,
    .trim_log = sq_trim_log,
    .trash_list = sq_trash_list,
    .trash_remove = sq_trash_remove,
    .trash_stats = sq_trash_stats,
    .lock = sq_lock,
};

/* mkdir -p of the directory holding path. */
static int make_parent_dirs(const char *path, char **ret_err)
{
	char *dir = strdup(path);
	if (dir == NULL)
		return -ENOMEM;
	int r = 0;
	char *slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		goto out;
	*slash = '\0';
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			r = -errno;
			goto fail;
		}
		*p = '/';
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		goto fail;
	}
	struct stat sb;
	if (stat(dir, &sb) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISDIR(sb.st_mode)) {
		r = -ENOTDIR;
		goto fail;
	}
out:
	free(dir);
	return 0;
fail:
	if (ret_err != NULL &&
	    asprintf(ret_err, "sqlite: cannot create directory '%s': %s", dir, strerror(-r)) < 0)
		*ret_err = NULL;
	free(dir);
	return r;
}

static int sq_pragma(struct sq_store *s, const char *sql, char **ret_err)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
	if (rc == SQLITE_OK)
		return 0;
	if (ret_err != NULL && asprintf(ret_err, "sqlite: %s failed: %s", sql,
	                                msg != NULL ? msg : sqlite3_errstr(rc)) < 0)
		*ret_err = NULL;
	sqlite3_free(msg);
	return sq_errno(rc);
}

static int wal_cb(void *arg, int argc, char **argv, char **cols)
{
	*(int *)arg = argc == 1 && argv[0] != NULL && strcmp(argv[0], "wal") == 0;
	return 0;
}

int store_sqlite_open(const char *path, struct store **ret, char **ret_err)
{
	if (strlen(path) >= PATH_MAX) {
		if (ret_err != NULL &&
		    asprintf(ret_err, "sqlite: path is longer than %d bytes", PATH_MAX - 1) < 0)
			*ret_err = NULL;
		return -ENAMETOOLONG;
	}
	int r = make_parent_dirs(path, ret_err);
	if (r < 0)
		return r;
	struct sq_store *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->base.ops = &sq_ops;
	s->lock_fd = -1;
	s->path = strdup(path);
	if (s->path == NULL) {
		free(s);
		return -ENOMEM;
	}
	/* NOMUTEX: a connection is used by one thread at a time (store.h). */
	int rc = sqlite3_open_v2(
	    path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		if (ret_err != NULL &&
		    asprintf(ret_err, "sqlite: cannot open '%s': %s", path,
		             s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc)) < 0)
			*ret_err = NULL;
		r = sq_errno(rc);
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, SQ_BUSY_TIMEOUT_MS);
	int wal = 0;
	char *msg = NULL;
	rc = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", wal_cb, &wal, &msg);
	if (rc != SQLITE_OK || !wal) {
		if (ret_err != NULL &&
		    asprintf(ret_err, "sqlite: cannot put '%s' in WAL mode: %s", path,
		             rc != SQLITE_OK ? (msg != NULL ? msg : sqlite3_errstr(rc))
		                             : "the file system or file refused it") < 0)
			*ret_err = NULL;
		sqlite3_free(msg);
		r = rc != SQLITE_OK ? sq_errno(rc) : -EIO;
		goto fail;
	}
	if ((r = sq_pragma(s, "PRAGMA synchronous = FULL", ret_err)) < 0)
		goto fail;
	*ret = &s->base;
	return 0;
fail:
	sqlite3_close(s->db);
	free(s->path);
	free(s);
	return r;
}
