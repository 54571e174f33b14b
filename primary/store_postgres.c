/* The PostgreSQL backend (libpq). A group commit is one pipeline of BEGIN,
 * the node upsert, the node delete, the changelog insert, the meta update
 * and COMMIT, each a single statement over binary arrays, so a batch of any
 * size costs one round trip plus the server's WAL flush. Start-up loads the
 * nodes with a binary COPY, one row in memory at a time. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpconfig.h"
#include "store_impl.h"

#if HAVE_POSTGRES

#include <libpq-fe.h>

#ifndef LIBPQ_HAS_PIPELINING
#error                                                                                             \
    "the PostgreSQL store needs libpq 14 or later (pipeline mode); build with -Dpostgres=disabled"
#endif

/* Type OIDs from pg_type.h, which is a server header. */
#define OID_BYTEA 17
#define OID_INT8  20
#define OID_INT2  21
#define OID_INT4  23
#define OID_TEXT  25

/* Rows per round trip of store_read_changes: bounds what the server scans
 * for one query when the byte budget, not the count, is what stops. */
#define PG_READ_CHUNK 2048

/* Serialises store_init of concurrent processes on an empty database (the
 * bytes of "mirrorpl"). */
#define PG_INIT_LOCK_KEY "7883954418117701740"

enum pg_stmt {
	PG_UPSERT,
	PG_DELETE,
	PG_LOG_INSERT,
	PG_META_UPDATE,
	PG_READ,
	PG_BOUNDS,
	PG_BEFORE,
	PG_TRIM,
	PG_META_VERSION,
	PG_TRASH_PUT,
	PG_COUNT
};

static const char *const pg_names[PG_COUNT] = {
    [PG_UPSERT] = "mp_upsert",       [PG_DELETE] = "mp_delete", [PG_LOG_INSERT] = "mp_log",
    [PG_META_UPDATE] = "mp_meta",    [PG_READ] = "mp_read",     [PG_BOUNDS] = "mp_bounds",
    [PG_BEFORE] = "mp_before",       [PG_TRIM] = "mp_trim",     [PG_META_VERSION] = "mp_version",
    [PG_TRASH_PUT] = "mp_trash_put",
};

/* unnest() of one array per column turns a batch into one statement with
 * a fixed text, prepared once; multi-row VALUES would need one statement
 * per row count. */
static const char *const pg_sql[PG_COUNT] = {
    [PG_UPSERT] = "INSERT INTO nodes (ino, parent, name, type, mode, uid, gid, size, mtime,"
                  " ctime, extra) SELECT * FROM unnest($1::bigint[], $2::bigint[],"
                  " $3::bytea[], $4::smallint[], $5::integer[], $6::bigint[], $7::bigint[],"
                  " $8::bigint[], $9::bigint[], $10::bigint[], $11::bytea[])"
                  " ON CONFLICT (ino) DO UPDATE SET parent = EXCLUDED.parent,"
                  " name = EXCLUDED.name, type = EXCLUDED.type, mode = EXCLUDED.mode,"
                  " uid = EXCLUDED.uid, gid = EXCLUDED.gid, size = EXCLUDED.size,"
                  " mtime = EXCLUDED.mtime, ctime = EXCLUDED.ctime, extra = EXCLUDED.extra",
    [PG_DELETE] = "DELETE FROM nodes WHERE ino = ANY($1::bigint[])",
    [PG_LOG_INSERT] = "INSERT INTO changelog (version, time, digest, record)"
                      " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[],"
                      " $4::bytea[])",
    [PG_META_UPDATE] = "UPDATE meta SET value = CASE key WHEN 'version' THEN $1::text"
                       " WHEN 'next_ino' THEN $2::text ELSE $3::text END"
                       " WHERE key IN ('version', 'next_ino', 'digest')",
    /* The running sum lets the server drop the rows past the byte
     * budget instead of sending them: "before" is what the rows ahead
     * of this one in the chunk weigh. */
    [PG_READ] = "SELECT version, time, digest, record FROM (SELECT version, time, digest,"
                " record, sum(octet_length(record)) OVER (ORDER BY version ROWS UNBOUNDED"
                " PRECEDING) - octet_length(record) AS before FROM changelog"
                " WHERE version >= $1::bigint ORDER BY version LIMIT $2::bigint) s"
                " WHERE before < $3::bigint ORDER BY version",
    [PG_BOUNDS] = "SELECT (SELECT min(version) FROM changelog),"
                  " (SELECT max(version) FROM changelog)",
    /* Walks the primary key downwards and stops at the first match:
     * cheap for recent times and exact even if the clock stepped back. */
    [PG_BEFORE] = "SELECT version FROM changelog WHERE time < $1::bigint"
                  " ORDER BY version DESC LIMIT 1",
    [PG_TRIM] = "DELETE FROM changelog WHERE version < $1::bigint",
    [PG_META_VERSION] = "SELECT value FROM meta WHERE key = 'version'",
    [PG_TRASH_PUT] = "INSERT INTO trash (bucket, key, etag, size, version, time)"
                     " SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
                     " $4::bigint[], $5::bigint[], $6::bigint[])"
                     " ON CONFLICT (bucket, key) DO UPDATE SET etag = EXCLUDED.etag,"
                     " size = EXCLUDED.size, version = EXCLUDED.version,"
                     " time = EXCLUDED.time",
};

/* A binary array parameter (array_recv's format): ndim, has-nulls flag,
 * element type, one dimension (size, lower bound), then length-prefixed
 * elements, all big-endian. */
struct pg_arr {
	uint8_t *buf;
	size_t len, cap;
	uint32_t n;
	bool oom;
};

enum pg_col {
	COL_INO,
	COL_PARENT,
	COL_NAME,
	COL_TYPE,
	COL_MODE,
	COL_UID,
	COL_GID,
	COL_SIZE,
	COL_MTIME,
	COL_CTIME,
	COL_EXTRA,
	COL_DEL,
	COL_VERSION,
	COL_TIME,
	COL_DIGEST,
	COL_RECORD,
	COL_T_BUCKET,
	COL_T_KEY,
	COL_T_ETAG,
	COL_T_SIZE,
	COL_T_VERSION,
	COL_T_TIME,
	COL_COUNT
};

struct pg_store {
	struct store base;
	PGconn *conn;
	/* Set when the connection failed: the next call resets it. */
	bool broken;
	bool want_lock;    /* the writer: hold the advisory lock */
	bool lost_lock;    /* another session holds it: every call fails */
	unsigned prepared; /* bit per enum pg_stmt */
	/* A commit whose COMMIT went out but whose answer was lost: the
	 * next commit of the same batch checks whether it landed. */
	uint64_t doubt_version;
	struct pg_arr arr[COL_COUNT];
};

static struct pg_store *pg(struct store *st)
{
	return (struct pg_store *)st;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static uint8_t *arr_grow(struct pg_arr *a, size_t more)
{
	if (a->oom)
		return NULL;
	if (a->len + more > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;
		while (cap < a->len + more)
			cap *= 2;
		uint8_t *buf = realloc(a->buf, cap);
		if (buf == NULL) {
			a->oom = true;
			return NULL;
		}
		a->buf = buf;
		a->cap = cap;
	}
	uint8_t *p = a->buf + a->len;
	a->len += more;
	return p;
}

static void arr_begin(struct pg_arr *a, uint32_t elem_oid)
{
	a->len = 0;
	a->n = 0;
	a->oom = false;
	uint8_t *p = arr_grow(a, 20);
	if (p == NULL)
		return;
	put32(p, 1);
	put32(p + 4, 0);
	put32(p + 8, elem_oid);
	put32(p + 12, 0); /* patched by arr_end */
	put32(p + 16, 1);
}

static void arr_i64(struct pg_arr *a, uint64_t v)
{
	uint8_t *p = arr_grow(a, 12);
	if (p == NULL)
		return;
	put32(p, 8);
	put64(p + 4, v);
	a->n++;
}

static void arr_i32(struct pg_arr *a, uint32_t v)
{
	uint8_t *p = arr_grow(a, 8);
	if (p == NULL)
		return;
	put32(p, 4);
	put32(p + 4, v);
	a->n++;
}

static void arr_i16(struct pg_arr *a, uint16_t v)
{
	uint8_t *p = arr_grow(a, 6);
	if (p == NULL)
		return;
	put32(p, 2);
	put16(p + 4, v);
	a->n++;
}

static void arr_bytes(struct pg_arr *a, const void *data, size_t len)
{
	uint8_t *p = arr_grow(a, 4 + len);
	if (p == NULL)
		return;
	put32(p, (uint32_t)len);
	if (len > 0)
		memcpy(p + 4, data, len);
	a->n++;
}

static void arr_null(struct pg_arr *a)
{
	uint8_t *p = arr_grow(a, 4);
	if (p == NULL)
		return;
	put32(p, UINT32_MAX);
	put32(a->buf + 4, 1);
	a->n++;
}

static void arr_end(struct pg_arr *a)
{
	if (!a->oom)
		put32(a->buf + 12, a->n);
}

/* libpq's messages span lines ("ERROR:  ...\nDETAIL:  ..."); the store's
 * message is one line. */
static void pg_flatten(const char *msg, char *out, size_t outlen)
{
	size_t o = 0;
	for (const char *s = msg; *s != '\0' && o + 3 < outlen; s++) {
		if (*s == '\n') {
			if (s[1] != '\0') {
				out[o++] = ';';
				out[o++] = ' ';
			}
		} else if ((*s == ' ' || *s == '\t') && o > 0 && out[o - 1] == ' ') {
			continue;
		} else if (*s == '\t') {
			out[o++] = ' ';
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
}

static int pg_sqlstate_errno(const char *state)
{
	if (state == NULL)
		return -EIO;
	if (strcmp(state, "23505") == 0)
		return -EEXIST;
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strcmp(state, "55P03") == 0)
		return -EAGAIN;
	if (strcmp(state, "53100") == 0)
		return -ENOSPC;
	if (strcmp(state, "53200") == 0)
		return -ENOMEM;
	if (strncmp(state, "42", 2) == 0)
		return -EPROTO; /* the schema is not what this build expects */
	if (strncmp(state, "57P", 3) == 0 || strncmp(state, "08", 2) == 0)
		return -ECONNRESET;
	return -EIO;
}

/* Records what failed with the server's or libpq's words. A lost
 * connection is -ECONNRESET and is reset by the next call. */
static int pg_fail_step(struct pg_store *p, const PGresult *res, const char *what, const char *step)
{
	const char *msg = res != NULL ? PQresultErrorMessage(res) : "";
	if (msg[0] == '\0')
		msg = PQerrorMessage(p->conn);
	if (msg[0] == '\0')
		msg = "unknown error";
	char flat[STORE_ERR_MAX];
	pg_flatten(msg, flat, sizeof(flat));
	store_seterr(&p->base, "%s failed: %s%s%s", what, step ? step : "", step ? ": " : "", flat);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		p->broken = true;
		return -ECONNRESET;
	}
	int r = pg_sqlstate_errno(res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL);
	if (r == -ECONNRESET)
		p->broken = true;
	return r;
}

static int pg_fail(struct pg_store *p, const PGresult *res, const char *what)
{
	return pg_fail_step(p, res, what, NULL);
}

/* Consumes res; returns 0 if its status is want. */
static int pg_check(struct pg_store *p, PGresult *res, ExecStatusType want, const char *what)
{
	int r = 0;
	if (res == NULL || PQresultStatus(res) != want)
		r = pg_fail(p, res, what);
	PQclear(res);
	return r;
}

static void pg_ignore_notice(void *arg, const char *message)
{
}

/* What every new session needs. Durability is the store's contract, so a
 * server or role default of synchronous_commit=off is overridden; "local"
 * and the remote levels are left alone. */
static int pg_session_setup(struct pg_store *p)
{
	p->prepared = 0;
	return pg_check(p,
	                PQexec(p->conn, "SELECT set_config('synchronous_commit', 'on', false)"
	                                " WHERE current_setting('synchronous_commit') = 'off'"),
	                PGRES_TUPLES_OK, "session setup");
}

/* A session-level advisory lock marks the one writer of a database; it goes
 * away with the session, so a dead primary's claim ends when its backend
 * does (after any COMMIT it had sent has landed). */
#define PG_PRIMARY_LOCK_KEY "7020826370290430322" /* "mp-prim" */

static int pg_take_lock(struct pg_store *p)
{
	PGresult *res = PQexec(p->conn, "SELECT pg_try_advisory_lock(" PG_PRIMARY_LOCK_KEY ")");
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		int r = pg_fail(p, res, "lock");
		PQclear(res);
		return r;
	}
	bool got = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!got) {
		store_seterr(&p->base, "the database is in use by another mp-primary (advisory "
		                       "lock " PG_PRIMARY_LOCK_KEY " is held)");
		return -EBUSY;
	}
	return 0;
}

static int pg_lock(struct store *st)
{
	struct pg_store *p = pg(st);
	int r = pg_take_lock(p);
	if (r == 0)
		p->want_lock = true;
	return r;
}

/* Every call starts here: a connection that failed in the previous call
 * is reset now, so the caller can simply retry. */
static int pg_ready(struct pg_store *p)
{
	if (p->lost_lock) {
		store_seterr(&p->base, "lost the store to another mp-primary after a reconnect");
		return -EBUSY;
	}
	if (!p->broken && PQstatus(p->conn) == CONNECTION_OK)
		return 0;
	PQreset(p->conn);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		char flat[STORE_ERR_MAX];
		pg_flatten(PQerrorMessage(p->conn), flat, sizeof(flat));
		store_seterr(&p->base, "reconnect failed: %s", flat);
		p->broken = true;
		return -ECONNRESET;
	}
	p->broken = false;
	int r = pg_session_setup(p);
	if (r == 0 && p->want_lock) {
		r = pg_take_lock(p);
		if (r == -EBUSY)
			p->lost_lock = true;
	}
	return r;
}

static int pg_prepare(struct pg_store *p, enum pg_stmt i)
{
	if (p->prepared & (1u << i))
		return 0;
	char what[64];
	snprintf(what, sizeof(what), "prepare of %s", pg_names[i]);
	int r = pg_check(p, PQprepare(p->conn, pg_names[i], pg_sql[i], 0, NULL), PGRES_COMMAND_OK,
	                 what);
	if (r < 0)
		return r;
	p->prepared |= 1u << i;
	return 0;
}

/* Runs a prepared statement with binary int8 parameters and binary
 * results. Returns the result (the caller clears it) or NULL with the
 * message set and *ret_r the errno. */
static PGresult *pg_run(struct pg_store *p, enum pg_stmt i, const uint64_t *args, int nargs,
                        ExecStatusType want, const char *what, int *ret_r)
{
	int r = pg_prepare(p, i);
	if (r < 0) {
		*ret_r = r;
		return NULL;
	}
	uint8_t buf[4][8];
	const char *values[4];
	int lengths[4], formats[4];
	for (int k = 0; k < nargs; k++) {
		put64(buf[k], args[k]);
		values[k] = (const char *)buf[k];
		lengths[k] = 8;
		formats[k] = 1;
	}
	PGresult *res = PQexecPrepared(p->conn, pg_names[i], nargs, values, lengths, formats, 1);
	if (res == NULL || PQresultStatus(res) != want) {
		*ret_r = pg_fail(p, res, what);
		PQclear(res);
		return NULL;
	}
	return res;
}

static void pg_rollback(struct pg_store *p)
{
	if (p->broken || PQtransactionStatus(p->conn) == PQTRANS_IDLE)
		return;
	PGresult *res = PQexec(p->conn, "ROLLBACK");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		p->broken = true;
	PQclear(res);
}

static void pg_close(struct store *st)
{
	struct pg_store *p = pg(st);
	PQfinish(p->conn);
	for (size_t i = 0; i < COL_COUNT; i++)
		free(p->arr[i].buf);
	free(p);
}

static int pg_init_begin(struct store *st)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	r = pg_check(p, PQexec(p->conn, "BEGIN"), PGRES_COMMAND_OK, "begin of store_init");
	if (r < 0)
		return r;
	r = pg_check(p, PQexec(p->conn, "SELECT pg_advisory_xact_lock(" PG_INIT_LOCK_KEY ")"),
	             PGRES_TUPLES_OK, "lock of store_init");
	if (r < 0)
		pg_rollback(p);
	return r;
}

static int pg_init_end(struct store *st, bool commit)
{
	struct pg_store *p = pg(st);
	if (!commit) {
		pg_rollback(p);
		return 0;
	}
	PGresult *res = PQexec(p->conn, "COMMIT");
	/* COMMIT of a failed transaction answers "ROLLBACK". */
	if (PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") != 0) {
		store_seterr(st, "commit of store_init failed: the transaction was rolled back");
		PQclear(res);
		return -EIO;
	}
	int r = pg_check(p, res, PGRES_COMMAND_OK, "commit of store_init");
	if (r < 0)
		pg_rollback(p);
	return r;
}

static int pg_exec(struct store *st, const char *what, const char *sql)
{
	return pg_check(pg(st), PQexec(pg(st)->conn, sql), PGRES_COMMAND_OK, what);
}

static int pg_has_meta(struct store *st, bool *ret_has)
{
	struct pg_store *p = pg(st);
	PGresult *res = PQexec(p->conn, "SELECT to_regclass('meta') IS NOT NULL");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		int r = pg_fail(p, res, "check for the meta table");
		PQclear(res);
		return r;
	}
	*ret_has = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return 0;
}

static int pg_meta_get(struct store *st, const char *key, char *buf, size_t buflen)
{
	struct pg_store *p = pg(st);
	char what[64];
	snprintf(what, sizeof(what), "read of meta '%s'", key);
	PGresult *res = PQexecParams(p->conn, "SELECT value FROM meta WHERE key = $1", 1, NULL,
	                             &key, NULL, NULL, 0);
	int r = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pg_fail(p, res, what);
	} else if (PQntuples(res) == 0) {
		r = -ENOENT;
	} else if ((size_t)PQgetlength(res, 0, 0) >= buflen) {
		store_seterr(st, "meta '%s' is too long", key);
		r = -ENAMETOOLONG;
	} else {
		memcpy(buf, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0) + 1);
	}
	PQclear(res);
	return r;
}

static int pg_meta_set(struct store *st, const char *key, const char *value)
{
	struct pg_store *p = pg(st);
	char what[64];
	snprintf(what, sizeof(what), "write of meta '%s'", key);
	const char *values[2] = {key, value};
	return pg_check(p,
	                PQexecParams(p->conn,
	                             "INSERT INTO meta (key, value) VALUES ($1, $2)"
	                             " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
	                             2, NULL, values, NULL, NULL, 0),
	                PGRES_COMMAND_OK, what);
}

/* One row of COPY nodes TO STDOUT (FORMAT binary). The first message also
 * carries the file header and the last one is the trailer alone. */
struct copy_state {
	bool header;
	bool trailer;
	char name[NODE_NAME_MAX + 1];
};

static int copy_row(struct pg_store *p, struct copy_state *cs, const uint8_t *b, size_t n,
                    store_node_fn fn, void *arg)
{
	static const uint8_t sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};
	const char *bad = NULL;
	if (!cs->header) {
		if (n < 19 || memcmp(b, sig, sizeof(sig)) != 0) {
			bad = "the binary COPY header is missing";
			goto bad;
		}
		uint32_t ext = get32(b + 15);
		if (ext > n - 19) {
			bad = "the binary COPY header is truncated";
			goto bad;
		}
		b += 19 + ext;
		n -= 19 + ext;
		cs->header = true;
		if (n == 0)
			return 0;
	}
	if (cs->trailer || n < 2) {
		bad = "a row is truncated or follows the trailer";
		goto bad;
	}
	int16_t nfields = (int16_t)get16(b);
	if (nfields == -1) {
		cs->trailer = true;
		if (n == 2)
			return 0;
		bad = "the trailer has trailing bytes";
		goto bad;
	}
	if (nfields != 11) {
		bad = "a row does not have 11 fields";
		goto bad;
	}
	static const int32_t widths[11] = {8, 8, -1, 2, 4, 8, 8, 8, 8, 8, -1};
	const uint8_t *f[11];
	int32_t len[11];
	size_t off = 2;
	for (int i = 0; i < 11; i++) {
		if (n - off < 4) {
			bad = "a row is truncated";
			goto bad;
		}
		len[i] = (int32_t)get32(b + off);
		off += 4;
		if (len[i] == -1 && i == 10) {
			f[i] = NULL;
			continue;
		}
		if (len[i] < 0 || (size_t)len[i] > n - off ||
		    (widths[i] >= 0 && len[i] != widths[i])) {
			bad = "a field has a bad length";
			goto bad;
		}
		f[i] = b + off;
		off += (size_t)len[i];
	}
	if (off != n) {
		bad = "a row has trailing bytes";
		goto bad;
	}
	struct node_rec rec = {
	    .ino = get64(f[0]),
	    .parent = get64(f[1]),
	    .size = get64(f[7]),
	    .mtime = store_u64_to_i64(get64(f[8])),
	    .ctime = store_u64_to_i64(get64(f[9])),
	    .mode = get32(f[4]),
	};
	int16_t type = (int16_t)get16(f[3]);
	int64_t uid = store_u64_to_i64(get64(f[5])), gid = store_u64_to_i64(get64(f[6]));
	if (len[2] > NODE_NAME_MAX || type < 0 || type > UINT8_MAX || uid < 0 || uid > UINT32_MAX ||
	    gid < 0 || gid > UINT32_MAX) {
		store_seterr(&p->base,
		             "load of nodes failed: inode %llu has a name, type, uid or gid out of "
		             "range",
		             (unsigned long long)rec.ino);
		return -EBADMSG;
	}
	memcpy(cs->name, f[2], (size_t)len[2]);
	cs->name[len[2]] = '\0';
	rec.name = cs->name;
	rec.name_len = (uint8_t)len[2];
	rec.type = (uint8_t)type;
	rec.uid = (uint32_t)uid;
	rec.gid = (uint32_t)gid;
	if (f[10] != NULL && len[10] > 0) {
		rec.extra = f[10];
		rec.extra_len = (uint32_t)len[10];
	}
	int r = fn(arg, &rec);
	if (r < 0)
		store_seterr(&p->base, "load of nodes stopped by its callback (%s)", strerror(-r));
	return r;
bad:
	store_seterr(&p->base, "load of nodes failed: %s", bad);
	return -EBADMSG;
}

static int pg_load_nodes(struct store *st, store_node_fn fn, void *arg)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	r = pg_check(p,
	             PQexec(p->conn, "COPY nodes (ino, parent, name, type, mode, uid, gid, size,"
	                             " mtime, ctime, extra) TO STDOUT (FORMAT binary)"),
	             PGRES_COPY_OUT, "load of nodes");
	if (r < 0)
		return r;
	struct copy_state cs = {0};
	for (;;) {
		char *buf;
		int n = PQgetCopyData(p->conn, &buf, 0);
		if (n == -1)
			break;
		if (n < 0) {
			if (r == 0)
				r = pg_fail(p, NULL, "load of nodes");
			break;
		}
		/* After an error the rest is drained: a cancel could land on
		 * the next statement instead. */
		if (r == 0)
			r = copy_row(p, &cs, (const uint8_t *)buf, (size_t)n, fn, arg);
		PQfreemem(buf);
	}
	PGresult *res;
	while ((res = PQgetResult(p->conn)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK && r == 0)
			r = pg_fail(p, res, "load of nodes");
		PQclear(res);
	}
	if (r == 0 && !cs.trailer) {
		store_seterr(st, "load of nodes failed: the COPY ended without its trailer");
		r = -EBADMSG;
	}
	if (PQstatus(p->conn) != CONNECTION_OK)
		p->broken = true;
	return r;
}

static int pg_build_arrays(struct pg_store *p, const struct store_batch *batch, size_t *ret_nup,
                           size_t *ret_ndel)
{
	static const uint32_t oids[COL_COUNT] = {
	    [COL_INO] = OID_INT8,     [COL_PARENT] = OID_INT8,   [COL_NAME] = OID_BYTEA,
	    [COL_TYPE] = OID_INT2,    [COL_MODE] = OID_INT4,     [COL_UID] = OID_INT8,
	    [COL_GID] = OID_INT8,     [COL_SIZE] = OID_INT8,     [COL_MTIME] = OID_INT8,
	    [COL_CTIME] = OID_INT8,   [COL_EXTRA] = OID_BYTEA,   [COL_DEL] = OID_INT8,
	    [COL_VERSION] = OID_INT8, [COL_TIME] = OID_INT8,     [COL_DIGEST] = OID_BYTEA,
	    [COL_RECORD] = OID_BYTEA, [COL_T_BUCKET] = OID_TEXT, [COL_T_KEY] = OID_TEXT,
	    [COL_T_ETAG] = OID_TEXT,  [COL_T_SIZE] = OID_INT8,   [COL_T_VERSION] = OID_INT8,
	    [COL_T_TIME] = OID_INT8,
	};
	struct pg_arr *a = p->arr;
	for (size_t i = 0; i < COL_COUNT; i++)
		arr_begin(&a[i], oids[i]);
	size_t nup = 0, ndel = 0;
	for (size_t i = 0; i < batch->nchanges; i++) {
		const struct node_rec *n = batch->changes[i].rec;
		if (n == NULL) {
			arr_i64(&a[COL_DEL], batch->changes[i].ino);
			ndel++;
			continue;
		}
		arr_i64(&a[COL_INO], n->ino);
		arr_i64(&a[COL_PARENT], n->parent);
		arr_bytes(&a[COL_NAME], n->name, n->name_len);
		arr_i16(&a[COL_TYPE], n->type);
		arr_i32(&a[COL_MODE], n->mode);
		arr_i64(&a[COL_UID], n->uid);
		arr_i64(&a[COL_GID], n->gid);
		arr_i64(&a[COL_SIZE], n->size);
		arr_i64(&a[COL_MTIME], store_i64_to_u64(n->mtime));
		arr_i64(&a[COL_CTIME], store_i64_to_u64(n->ctime));
		if (n->extra_len > 0)
			arr_bytes(&a[COL_EXTRA], n->extra, n->extra_len);
		else
			arr_null(&a[COL_EXTRA]);
		nup++;
	}
	for (size_t i = 0; i < batch->nversions; i++) {
		const struct store_version *v = &batch->versions[i];
		arr_i64(&a[COL_VERSION], v->version);
		arr_i64(&a[COL_TIME], store_i64_to_u64(v->time));
		arr_bytes(&a[COL_DIGEST], v->digest, DIGEST_LEN);
		arr_bytes(&a[COL_RECORD], v->record, v->record_len);
	}
	for (size_t i = 0; i < batch->ntrash; i++) {
		const struct store_trash *t = &batch->trash[i];
		const char *etag = t->etag ? t->etag : "";
		arr_bytes(&a[COL_T_BUCKET], t->bucket, strlen(t->bucket));
		arr_bytes(&a[COL_T_KEY], t->key, strlen(t->key));
		arr_bytes(&a[COL_T_ETAG], etag, strlen(etag));
		arr_i64(&a[COL_T_SIZE], t->size);
		arr_i64(&a[COL_T_VERSION], t->version);
		arr_i64(&a[COL_T_TIME], store_i64_to_u64(t->time));
	}
	for (size_t i = 0; i < COL_COUNT; i++) {
		arr_end(&a[i]);
		if (a[i].oom || a[i].len > INT32_MAX) {
			store_seterr(&p->base, "batch of %zu changes and %zu versions is too large",
			             batch->nchanges, batch->nversions);
			return a[i].oom ? -ENOMEM : -E2BIG;
		}
	}
	*ret_nup = nup;
	*ret_ndel = ndel;
	return 0;
}

static bool pg_send(struct pg_store *p, enum pg_stmt i, enum pg_col first, int ncols)
{
	const char *values[11];
	int lengths[11], formats[11];
	for (int k = 0; k < ncols; k++) {
		values[k] = (const char *)p->arr[first + k].buf;
		lengths[k] = (int)p->arr[first + k].len;
		formats[k] = 1;
	}
	return PQsendQueryPrepared(p->conn, pg_names[i], ncols, values, lengths, formats, 0) == 1;
}

/* After a lost COMMIT answer: did that batch land? Returns 1 if it did
 * (the retry is then a success), 0 to commit normally, or an error. */
static int pg_resolve_doubt(struct pg_store *p, const struct store_batch *batch)
{
	int r = 0;
	PGresult *res = pg_run(p, PG_META_VERSION, NULL, 0, PGRES_TUPLES_OK,
	                       "check of a commit whose answer was lost", &r);
	if (res == NULL)
		return r;
	uint64_t doubt = p->doubt_version;
	p->doubt_version = 0;
	int landed = PQntuples(res) == 1 && doubt == batch->version &&
	             strtoull(PQgetvalue(res, 0, 0), NULL, 10) == batch->version;
	PQclear(res);
	return landed;
}

static int pg_commit_pipeline(struct pg_store *p, const struct store_batch *batch, const char *what)
{
	size_t nup, ndel;
	int r = pg_build_arrays(p, batch, &nup, &ndel);
	if (r < 0)
		return r;
	if ((r = pg_prepare(p, PG_UPSERT)) < 0 || (r = pg_prepare(p, PG_DELETE)) < 0 ||
	    (r = pg_prepare(p, PG_LOG_INSERT)) < 0 || (r = pg_prepare(p, PG_META_UPDATE)) < 0 ||
	    (batch->ntrash > 0 && (r = pg_prepare(p, PG_TRASH_PUT)) < 0))
		return r;

	char version[24], next_ino[24], digest[2 * DIGEST_LEN + 1];
	snprintf(version, sizeof(version), "%llu", (unsigned long long)batch->version);
	snprintf(next_ino, sizeof(next_ino), "%llu", (unsigned long long)batch->next_ino);
	store_digest_hex(batch->digest, digest);
	const char *meta[3] = {version, next_ino, digest};

	/* Result counts are tiny, so a blocking send of the whole pipeline
	 * cannot deadlock against the server's output. */
	enum { Q_BEGIN, Q_UPSERT, Q_DELETE, Q_LOG, Q_TRASH, Q_META, Q_COMMIT, Q_COUNT };
	bool sent[Q_COUNT] = {false};
	if (PQenterPipelineMode(p->conn) != 1)
		return pg_fail(p, NULL, what);
	bool ok = PQsendQueryParams(p->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) == 1;
	sent[Q_BEGIN] = ok;
	if (ok && nup > 0)
		ok = sent[Q_UPSERT] = pg_send(p, PG_UPSERT, COL_INO, 11);
	if (ok && ndel > 0)
		ok = sent[Q_DELETE] = pg_send(p, PG_DELETE, COL_DEL, 1);
	if (ok && batch->nversions > 0)
		ok = sent[Q_LOG] = pg_send(p, PG_LOG_INSERT, COL_VERSION, 4);
	if (ok && batch->ntrash > 0)
		ok = sent[Q_TRASH] = pg_send(p, PG_TRASH_PUT, COL_T_BUCKET, 6);
	if (ok)
		ok = sent[Q_META] = PQsendQueryPrepared(p->conn, pg_names[PG_META_UPDATE], 3, meta,
		                                        NULL, NULL, 0) == 1;
	if (ok)
		ok = sent[Q_COMMIT] =
		    PQsendQueryParams(p->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1;
	if (ok)
		ok = PQpipelineSync(p->conn) == 1;
	if (!ok) {
		/* A half-sent pipeline cannot be unwound: start afresh. */
		r = pg_fail(p, NULL, what);
		p->broken = true;
		return r < 0 ? r : -EIO;
	}

	static const char *const step[Q_COUNT] = {
	    [Q_BEGIN] = "BEGIN",          [Q_UPSERT] = "node upsert", [Q_DELETE] = "node delete",
	    [Q_LOG] = "changelog insert", [Q_TRASH] = "trash insert", [Q_META] = "meta update",
	    [Q_COMMIT] = "COMMIT",
	};
	bool sql_error = false, commit_answered = false;
	for (int q = 0; q < Q_COUNT; q++) {
		if (!sent[q])
			continue;
		PGresult *res;
		while ((res = PQgetResult(p->conn)) != NULL) {
			ExecStatusType s = PQresultStatus(res);
			if (s == PGRES_COMMAND_OK) {
				if (q == Q_COMMIT)
					commit_answered = true;
				if (q == Q_META && strcmp(PQcmdTuples(res), "3") != 0 && r == 0) {
					store_seterr(&p->base,
					             "%s failed: meta update changed %s rows"
					             " instead of 3",
					             what, PQcmdTuples(res));
					r = -EPROTO;
				}
			} else if (s != PGRES_PIPELINE_ABORTED && r == 0) {
				sql_error = PQstatus(p->conn) == CONNECTION_OK;
				r = pg_fail_step(p, res, what, step[q]);
			}
			PQclear(res);
		}
	}
	PGresult *res = PQgetResult(p->conn);
	bool synced = res != NULL && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
	PQclear(res);
	if (!synced || PQexitPipelineMode(p->conn) != 1) {
		if (r == 0)
			r = pg_fail(p, NULL, what);
		p->broken = true;
	}
	if (r == 0 && !commit_answered) {
		store_seterr(&p->base, "%s failed: no answer to COMMIT", what);
		r = -EIO;
	}
	if (r < 0 && p->broken && !sql_error && !commit_answered && batch->nversions > 0)
		p->doubt_version = batch->version;
	if (r < 0)
		pg_rollback(p);
	return r;
}

static int pg_commit(struct store *st, const struct store_batch *batch)
{
	struct pg_store *p = pg(st);
	char what[96];
	if (batch->nversions > 0)
		snprintf(what, sizeof(what), "commit of versions %llu..%llu",
		         (unsigned long long)batch->versions[0].version,
		         (unsigned long long)batch->version);
	else
		snprintf(what, sizeof(what), "commit of meta at version %llu",
		         (unsigned long long)batch->version);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	if (p->doubt_version != 0 && batch->nversions > 0) {
		r = pg_resolve_doubt(p, batch);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	return pg_commit_pipeline(p, batch, what);
}

static int pg_log_bounds(struct store *st, uint64_t *ret_oldest, uint64_t *ret_newest)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	PGresult *res =
	    pg_run(p, PG_BOUNDS, NULL, 0, PGRES_TUPLES_OK, "read of the log bounds", &r);
	if (res == NULL)
		return r;
	uint64_t v[2] = {0, 0};
	for (int k = 0; k < 2; k++)
		if (!PQgetisnull(res, 0, k) && PQgetlength(res, 0, k) == 8)
			v[k] = get64((const uint8_t *)PQgetvalue(res, 0, k));
	PQclear(res);
	*ret_oldest = v[0];
	*ret_newest = v[1];
	return 0;
}

static int pg_deliver(struct pg_store *p, PGresult *res, int row, store_change_fn fn, void *arg,
                      struct store_version *v)
{
	if (PQgetlength(res, row, 0) != 8 || PQgetlength(res, row, 1) != 8 ||
	    PQgetlength(res, row, 2) != DIGEST_LEN) {
		store_seterr(&p->base, "read of the changelog failed: a row has a bad field size");
		return -EBADMSG;
	}
	v->version = get64((const uint8_t *)PQgetvalue(res, row, 0));
	v->time = store_u64_to_i64(get64((const uint8_t *)PQgetvalue(res, row, 1)));
	memcpy(v->digest, PQgetvalue(res, row, 2), DIGEST_LEN);
	v->record = (const uint8_t *)PQgetvalue(res, row, 3);
	v->record_len = (size_t)PQgetlength(res, row, 3);
	int r = fn(arg, v);
	if (r < 0)
		store_seterr(&p->base, "read of the changelog stopped by its callback (%s)",
		             strerror(-r));
	return r;
}

static int pg_read_changes(struct store *st, uint64_t from, size_t max_count, size_t max_bytes,
                           store_change_fn fn, void *arg)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	uint64_t budget_max = max_bytes > INT64_MAX ? INT64_MAX : max_bytes;
	uint64_t bytes = 0;
	size_t left = max_count;
	for (;;) {
		size_t want = left < PG_READ_CHUNK ? left : PG_READ_CHUNK;
		/* The first row always goes out, whatever it weighs. */
		uint64_t budget =
		    bytes == 0 ? (budget_max > 0 ? budget_max : 1) : budget_max - bytes;
		uint64_t args[3] = {from, want, budget};
		PGresult *res =
		    pg_run(p, PG_READ, args, 3, PGRES_TUPLES_OK, "read of the changelog", &r);
		if (res == NULL)
			return r;
		int n = PQntuples(res);
		struct store_version v = {0};
		bool done = false;
		for (int i = 0; i < n; i++) {
			r = pg_deliver(p, res, i, fn, arg, &v);
			if (r < 0)
				break;
			/* The server's filter saves the transfer; this is the
			 * rule (and covers empty records). */
			bytes += v.record_len;
			if (bytes >= budget_max) {
				done = true;
				break;
			}
		}
		PQclear(res);
		if (r < 0)
			return r;
		if (done || (size_t)n < want)
			break;
		left -= (size_t)n;
		from = v.version + 1;
		if (left == 0)
			break;
	}
	return 0;
}

static int pg_log_version_before(struct store *st, int64_t time, uint64_t *ret_version)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	uint64_t arg = store_i64_to_u64(time);
	PGresult *res =
	    pg_run(p, PG_BEFORE, &arg, 1, PGRES_TUPLES_OK, "search of the changelog by time", &r);
	if (res == NULL)
		return r;
	uint64_t version = 0;
	if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 8)
		version = get64((const uint8_t *)PQgetvalue(res, 0, 0));
	PQclear(res);
	*ret_version = version;
	return 0;
}

static int pg_trim_log(struct store *st, uint64_t below)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	char what[64];
	snprintf(what, sizeof(what), "trim of the changelog below %llu", (unsigned long long)below);
	PGresult *res = pg_run(p, PG_TRIM, &below, 1, PGRES_COMMAND_OK, what, &r);
	if (res == NULL)
		return r;
	PQclear(res);
	return 0;
}

/* The trash calls are rare (a GC pass), so they take text parameters
 * instead of prepared binary ones. */
static int pg_trash_list(struct store *st, int64_t before, size_t max, store_trash_fn fn, void *arg)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	char b[24], m[24];
	snprintf(b, sizeof(b), "%lld", (long long)before);
	snprintf(m, sizeof(m), "%llu", (unsigned long long)(max > INT64_MAX ? INT64_MAX : max));
	const char *values[2] = {b, m};
	PGresult *res = PQexecParams(p->conn,
	                             "SELECT bucket, key, etag, size, version, time FROM trash"
	                             " WHERE time < $1::bigint ORDER BY time LIMIT $2::bigint",
	                             2, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pg_fail(p, res, "read of the trash list");
		PQclear(res);
		return r;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		struct store_trash t = {
		    .bucket = PQgetvalue(res, i, 0),
		    .key = PQgetvalue(res, i, 1),
		    .etag = PQgetvalue(res, i, 2),
		    .size = strtoull(PQgetvalue(res, i, 3), NULL, 10),
		    .version = strtoull(PQgetvalue(res, i, 4), NULL, 10),
		    .time = strtoll(PQgetvalue(res, i, 5), NULL, 10),
		};
		r = fn(arg, &t);
		if (r < 0) {
			store_seterr(st, "read of the trash list stopped by its callback (%s)",
			             strerror(-r));
			break;
		}
	}
	PQclear(res);
	return r < 0 ? r : 0;
}

static int pg_trash_remove(struct store *st, const struct store_trash *rows, size_t n)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	struct pg_arr *a = &p->arr[COL_T_BUCKET];
	arr_begin(&a[0], OID_TEXT);
	arr_begin(&a[1], OID_TEXT);
	arr_begin(&a[2], OID_INT8);
	for (size_t i = 0; i < n; i++) {
		arr_bytes(&a[0], rows[i].bucket, strlen(rows[i].bucket));
		arr_bytes(&a[1], rows[i].key, strlen(rows[i].key));
		arr_i64(&a[2], store_i64_to_u64(rows[i].time));
	}
	const char *values[3];
	int lengths[3], formats[3] = {1, 1, 1};
	for (int k = 0; k < 3; k++) {
		arr_end(&a[k]);
		if (a[k].oom || a[k].len > INT32_MAX) {
			store_seterr(st, "removal of %zu trash rows: too large", n);
			return a[k].oom ? -ENOMEM : -E2BIG;
		}
		values[k] = (const char *)a[k].buf;
		lengths[k] = (int)a[k].len;
	}
	return pg_check(p,
	                PQexecParams(p->conn,
	                             "DELETE FROM trash t USING unnest($1::text[], $2::text[],"
	                             " $3::bigint[]) AS d(bucket, key, time) WHERE t.bucket ="
	                             " d.bucket AND t.key = d.key AND t.time = d.time",
	                             3, NULL, values, lengths, formats, 0),
	                PGRES_COMMAND_OK, "removal from the trash list");
}

static int pg_trash_stats(struct store *st, uint64_t *ret_count, uint64_t *ret_bytes)
{
	struct pg_store *p = pg(st);
	int r = pg_ready(p);
	if (r < 0)
		return r;
	PGresult *res =
	    PQexec(p->conn, "SELECT count(*), coalesce(sum(size), 0)::bigint FROM trash");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		r = pg_fail(p, res, "count of the trash list");
		PQclear(res);
		return r;
	}
	*ret_count = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	*ret_bytes = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	return 0;
}

static const struct store_ops pg_ops = {
    .kind = "postgres",
    .dialect = STORE_DIALECT_POSTGRES,
    .close = pg_close,
    .init_begin = pg_init_begin,
    .init_end = pg_init_end,
    .exec = pg_exec,
    .has_meta = pg_has_meta,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
    .load_nodes = pg_load_nodes,
    .commit = pg_commit,
    .log_bounds = pg_log_bounds,
    .read_changes = pg_read_changes,
    .log_version_before = pg_log_version_before,
    .trim_log = pg_trim_log,
    .trash_list = pg_trash_list,
    .trash_remove = pg_trash_remove,
    .trash_stats = pg_trash_stats,
    .lock = pg_lock,
};

int store_postgres_open(const char *url, struct store **ret, char **ret_err)
{
	/* Defaults first: the URL, expanded in place of dbname, may override
	 * any of them. The keepalives notice a dead server in about a minute
	 * instead of the kernel's two hours. */
	static const char *const keys[] = {
	    "connect_timeout",
	    "application_name",
	    "keepalives_idle",
	    "keepalives_interval",
	    "keepalives_count",
	    "dbname",
	    NULL,
	};
	const char *values[] = {"10", "mirrorplane", "30", "10", "3", url, NULL};
	struct pg_store *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->base.ops = &pg_ops;
	p->conn = PQconnectdbParams(keys, values, 1);
	if (p->conn == NULL) {
		free(p);
		return -ENOMEM;
	}
	int r;
	if (PQstatus(p->conn) != CONNECTION_OK) {
		char flat[STORE_ERR_MAX];
		pg_flatten(PQerrorMessage(p->conn), flat, sizeof(flat));
		if (ret_err != NULL && asprintf(ret_err, "postgres: cannot connect: %s", flat) < 0)
			*ret_err = NULL;
		r = -ECONNREFUSED;
		goto fail;
	}
	/* The default processor prints NOTICEs on stderr; the store never
	 * prints. */
	PQsetNoticeProcessor(p->conn, pg_ignore_notice, NULL);
	r = pg_session_setup(p);
	if (r < 0) {
		if (ret_err != NULL && asprintf(ret_err, "%s", p->base.err) < 0)
			*ret_err = NULL;
		goto fail;
	}
	*ret = &p->base;
	return 0;
fail:
	PQfinish(p->conn);
	free(p);
	return r;
}

#else /* !HAVE_POSTGRES */

int store_postgres_open(const char *url, struct store **ret, char **ret_err)
{
	if (ret_err != NULL &&
	    asprintf(ret_err, "postgres: this build has no PostgreSQL support (libpq was not "
	                      "found at build time); use a sqlite: store") < 0)
		*ret_err = NULL;
	return -EPROTONOSUPPORT;
}

#endif
