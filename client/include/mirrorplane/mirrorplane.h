/* libmirrorplane: the client side of mirrorplane.
 *
 * A client reads metadata at its site's mirror (the first healthy one of an
 * ordered list), writes through to the primary, and falls back to the
 * primary whenever a mirror refuses, times out or cannot reach the version
 * the read needs. File bytes live in object storage: put uploads them to the
 * origin bucket as a new, never-overwritten object and then commits the
 * file's layout at the primary; get and cat fetch the layout's extents with
 * ranged GETs in parallel, from the site's replica bucket when one is
 * configured, else from the origin.
 *
 * Consistency (per handle, overridable per call):
 *   MP_SESSION   read-your-writes and monotonic reads: every read carries the
 *                highest version the handle has written or read as
 *                min_version. With a session file the version outlives the
 *                process (the mp CLI keeps one per cluster).
 *   MP_STRONG    asks the primary for its current version first, then reads
 *                locally at >= that version: sees every write acknowledged
 *                before the read started, by anyone.
 *   MP_EVENTUAL  whatever the mirror has, unless it is staler than
 *                max_staleness (then the read goes to the primary).
 *
 * Threads and ownership:
 *   - An mp_client may be used by any number of threads at once. It keeps a
 *     pool of connections per server and one of object-store handles per
 *     bucket; a mirror marked down is probed again by a background thread, so
 *     a hung mirror costs the configured timeout once, not on every call.
 *   - An mp_config is not thread-safe; mp_client_open copies it, so it may be
 *     changed or freed afterwards.
 *   - Every pointer a call returns inside an output struct is owned by that
 *     struct and freed by its *_clear / *_free function; pointers passed to a
 *     callback are valid during the callback only.
 *   - Progress callbacks run on library threads, one call at a time.
 *   - The library never exits, never prints and never logs: every function
 *     returns 0 or a negative errno and fills *err (when err is not NULL)
 *     with the same code and a one-line message naming what failed.
 *
 * The process must not call curl_global_cleanup while a client is open;
 * mp_client_open initialises libcurl once (thread-safely) for the process.
 */
#ifndef MIRRORPLANE_H
#define MIRRORPLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MP_EXPORT __attribute__((visibility("default")))

/* ---- Errors ---- */

#define MP_ERROR_MAX 512

typedef struct mp_error {
	int code;                   /* the negative errno the call returned */
	char message[MP_ERROR_MAX]; /* one line, names what failed */
} mp_error;

/* ---- Site configuration ---- */

/* Options, by name (for mp_config_set / mp_config_add and in YAML files):
 *   primary          ordered list of HOST:PORT (default 127.0.0.1:7100)
 *   mirror           ordered list of HOST:PORT of this site's mirrors (default none)
 *   token            a token from `mp-primary token create` (default none)
 *   consistency      session | strong | eventual (default session)
 *   max_staleness    eventual reads refuse a mirror staler than this (default 5s)
 *   connect_timeout  per connection attempt (default 1s)
 *   timeout          per request to a server, after which it is marked down (default 2s)
 *   read_deadline    how long a mirror may wait to reach min_version (default 500ms)
 *   probe_interval   how often a server marked down is probed again (default 1s)
 *   session_file     where the session version is kept between processes
 *                    (default none; "-" also means none)
 *   origin           alias of the bucket put writes to (default "origin")
 *   parallel         transfers in flight: files and ranges (default 16)
 *   part_size        ranged GET and multipart part size (default 8MiB)
 *   object_size      put splits a file into objects of at most this size,
 *                    uploaded in parallel (default 64MiB)
 *   multipart_threshold  objects above this go up as multipart uploads with
 *                    parts in parallel (default 64MiB)
 *   tls.enabled      speak TLS to primaries and mirrors (default false)
 *   tls.ca           CA bundle their certificates must chain to (default: the system's)
 *   tls.cert, tls.key  a client certificate, for servers that verify clients
 *   tls.server_name  the name their certificates must carry (default: each
 *                    address's host)
 *   buckets.ALIAS.url        s3://BUCKET[/PREFIX] or file:///DIR; for the origin
 *                            alias it defaults to what the primary announces
 *   buckets.ALIAS.endpoint   http(s)://HOST[:PORT] (default $AWS_ENDPOINT_URL, then AWS)
 *   buckets.ALIAS.region     (default $AWS_REGION, then us-east-1)
 *   buckets.ALIAS.access_key (default $AWS_ACCESS_KEY_ID)
 *   buckets.ALIAS.secret_key (default $AWS_SECRET_ACCESS_KEY)
 *   buckets.ALIAS.path_style true for ENDPOINT/BUCKET/KEY addressing (default true)
 *   buckets.ALIAS.replica    alias of this site's bucket holding copies of this
 *                            bucket's objects: reads try it first
 * Endpoints and credentials stay in the site configuration: metadata only
 * ever names a bucket by its alias.
 */
typedef struct mp_config mp_config;

/* A configuration holding the defaults. Free with mp_config_free. */
MP_EXPORT int mp_config_new(mp_config **ret, mp_error *err);
/* Loads a YAML file over cfg (options it sets replace cfg's). path NULL means
 * $MP_CONFIG, and nothing at all when that is unset or empty. Errors read
 * "FILE:LINE:COL: what". On error cfg is unchanged. */
MP_EXPORT int mp_config_load(mp_config *cfg, const char *path, mp_error *err);
/* Sets one option by name ("timeout", "buckets.origin.endpoint", ...); lists
 * take comma-separated items and are replaced. */
MP_EXPORT int mp_config_set(mp_config *cfg, const char *name, const char *value, mp_error *err);
/* Appends comma-separated items to a list option ("primary", "mirror"). The
 * first mp_config_add of a list replaces its default. */
MP_EXPORT int mp_config_add(mp_config *cfg, const char *name, const char *value, mp_error *err);
MP_EXPORT void mp_config_free(mp_config *cfg); /* NULL-safe */

/* ---- The client handle ---- */

typedef struct mp_client mp_client;

enum mp_consistency {
	MP_CONSISTENCY_DEFAULT = 0, /* in an mp_call: the handle's level */
	MP_SESSION,
	MP_STRONG,
	MP_EVENTUAL,
};

/* Parses "session", "strong", "eventual". Returns 0 or -EINVAL. */
MP_EXPORT int mp_consistency_parse(const char *s, enum mp_consistency *ret);
MP_EXPORT const char *mp_consistency_name(enum mp_consistency c);

/* Opens a handle on a copy of cfg. It does not connect yet: the first call
 * does, so opening never blocks. Close with mp_client_close. */
MP_EXPORT int mp_client_open(const mp_config *cfg, mp_client **ret, mp_error *err);
/* Stops the probe thread, closes connections, and writes the session file
 * (if any). NULL-safe. No call may be running on the handle. */
MP_EXPORT void mp_client_close(mp_client *c);
/* Changes the handle's default level (max_staleness_ms 0 keeps the current
 * bound). */
MP_EXPORT int mp_client_set_consistency(mp_client *c, enum mp_consistency level,
                                        uint64_t max_staleness_ms);
/* The highest version the handle has written or read (its session). */
MP_EXPORT uint64_t mp_client_session_version(mp_client *c);
/* Writes the session file now (mp_client_close does it too). */
MP_EXPORT int mp_client_save_session(mp_client *c, mp_error *err);

/* Per-call settings and what the call did. Pass NULL for the handle's
 * defaults. The in-fields are read; the out-fields are written whenever a
 * server answered (also with an error such as ENOENT), and fallbacks is
 * added to: zero the struct before each call. */
typedef struct mp_call {
	/* in */
	enum mp_consistency consistency; /* MP_CONSISTENCY_DEFAULT: the handle's */
	uint64_t max_staleness_ms;       /* eventual: 0 = the handle's bound */
	/* out */
	uint64_t version;   /* the version the answer is at (writes: the new version) */
	char served_by[96]; /* "mirror HOST:PORT" or "primary HOST:PORT" (the last server) */
	unsigned fallbacks; /* servers tried and given up on during this call */
} mp_call;

/* ---- Metadata ---- */

enum mp_type { MP_TYPE_DIR = 1, MP_TYPE_FILE = 2, MP_TYPE_SYMLINK = 3 };

typedef struct mp_extent {
	char *bucket; /* alias */
	char *key;
	char *etag;
	uint64_t offset; /* within the object */
	uint64_t length;
	char *grant; /* a read grant for cache nodes, when the cluster has a secret; else NULL */
	/* The site bucket alias holding a verified copy of the object (key
	 * "BUCKET/KEY" there), as the site's mirror reports it; else NULL. */
	char *replica;
} mp_extent;

typedef struct mp_node {
	uint64_t ino;
	uint64_t parent;
	char *name; /* "" for the root */
	enum mp_type type;
	uint32_t mode; /* permission bits */
	uint32_t uid, gid;
	uint64_t size;
	int64_t mtime_ns, ctime_ns;
	char *target;       /* symlinks: the target; else NULL */
	mp_extent *extents; /* files: the layout, in file order (n_extents may be 0) */
	size_t n_extents;
} mp_node;

/* Frees what a node owns and zeroes it. NULL-safe. */
MP_EXPORT void mp_node_clear(mp_node *n);
MP_EXPORT const char *mp_type_name(enum mp_type t); /* "dir", "file", "symlink" */

/* The node at path (symlinks are not followed). */
MP_EXPORT int mp_stat(mp_client *c, const char *path, mp_call *call, mp_node *ret, mp_error *err);
/* Every entry of the directory at path, in name order, page by page. cb
 * returns 0 to go on or a negative errno to stop (returned by mp_list). The
 * node is valid during the callback only. */
typedef int (*mp_list_cb)(void *arg, const mp_node *entry);
MP_EXPORT int mp_list(mp_client *c, const char *path, mp_call *call, mp_list_cb cb, void *arg,
                      mp_error *err);

/* Writes (always at the primary; call->version gets the new version). */
MP_EXPORT int mp_mkdir(mp_client *c, const char *path, uint32_t mode, bool parents, mp_call *call,
                       mp_error *err);
MP_EXPORT int mp_rename(mp_client *c, const char *from, const char *to, mp_call *call,
                        mp_error *err);
MP_EXPORT int mp_symlink(mp_client *c, const char *target, const char *linkpath, mp_call *call,
                         mp_error *err);
/* A file, a symlink or an empty directory; with recursive, a whole tree
 * (removed in batches, deepest first). */
MP_EXPORT int mp_remove(mp_client *c, const char *path, bool recursive, mp_call *call,
                        mp_error *err);

/* ---- Policies (replication and warmup; see policies/examples/) ---- */

/* Applies a policy document (YAML) at the primary, which checks it again:
 * on any error nothing changes and err lists the FILE:LINE:COL errors, one
 * per line. file names the document in messages (its base name is kept).
 * call->version gets the version the policy took effect at. */
MP_EXPORT int mp_policy_apply(mp_client *c, const char *file, const void *doc, size_t len,
                              mp_call *call, mp_error *err);
/* The policy in force at the server that answers (a mirror at the call's
 * consistency, like any read): *ret_doc is malloc'd and NUL-terminated,
 * the caller's to free, or NULL when no policy was ever applied.
 * *ret_ctime_ns is when it was applied. */
MP_EXPORT int mp_policy_get(mp_client *c, mp_call *call, char **ret_doc, size_t *ret_len,
                            int64_t *ret_ctime_ns, mp_error *err);

/* Replication at the site, per rule, as the site's first answering mirror
 * reports it. */
typedef struct mp_replication_rule {
	char site[64];
	char rule[64];
	uint64_t pending_objects, pending_bytes;
	uint64_t verified_objects, verified_bytes;
	uint64_t copied_bytes;     /* since the mirror started */
	uint64_t failures;         /* failed attempts since the mirror started */
	uint64_t failing_objects;  /* objects that failed 3 times or more */
	uint64_t lag_ms;           /* age of the oldest change not yet copied */
	uint64_t bytes_per_second; /* copied, over the last 10 s */
	char last_error[256];
} mp_replication_rule;
/* Fills up to cap rules; *ret_n gets how many the site has. */
MP_EXPORT int mp_replication_status(mp_client *c, mp_replication_rule *out, size_t cap,
                                    size_t *ret_n, mp_error *err);

/* The tree of sites as the primary knows it from their reports (every
 * mirror, cascaded ones too, reports each heartbeat); when the primary
 * cannot be reached, a mirror's view of itself and the sites behind it.
 * ret_from (may be NULL) names who answered. */
typedef struct mp_site_info {
	char site[64];
	char upstream[64]; /* the address it streams from */
	char state[16];
	uint64_t version, lag_versions, lag_ms;
	uint64_t repl_pending_objects, repl_pending_bytes, repl_failing_objects;
	uint64_t cache_nodes, cache_used, cache_capacity;
} mp_site_info;
MP_EXPORT int mp_sites(mp_client *c, mp_site_info *out, size_t cap, size_t *ret_n, char *ret_from,
                       size_t from_len, mp_error *err);

/* The primary's current version and the applied version of the first
 * healthy mirror (0 and an empty mirror string when none answers). */
typedef struct mp_versions {
	uint64_t primary;
	uint64_t mirror;
	char mirror_address[80];
	char cluster_id[80];
} mp_versions;
MP_EXPORT int mp_version(mp_client *c, mp_versions *ret, mp_error *err);

/* Every configured server, asked now. */
typedef struct mp_server_status {
	char address[80];
	char role[16]; /* "primary", "mirror" (as configured when it does not answer) */
	char site[64]; /* the mirror's site name; "" for a primary */
	bool up;
	bool marked_down; /* the handle is currently avoiding it */
	uint64_t version;
	uint64_t lag_versions; /* behind the primary's version (mirrors) */
	int64_t staleness_ms;  /* how old the mirror's state is; -1 unknown */
	double rtt_ms;
	char error[256]; /* why it is not up */
} mp_server_status;
/* Fills up to cap entries; *ret_n gets the number of configured servers. */
MP_EXPORT int mp_status(mp_client *c, mp_server_status *out, size_t cap, size_t *ret_n,
                        mp_error *err);

/* The site's cache group, as its mirror lists it. */
typedef struct mp_cache_node {
	char address[80];
	char state[16]; /* "active", "warming", "draining" */
	uint64_t weight;
	uint64_t used, capacity; /* bytes */
	uint64_t hits, misses;
	uint64_t block_size;
	uint64_t age_ms; /* since the mirror last heard from it */
} mp_cache_node;
/* Fills up to cap nodes; *ret_n gets how many the group has (0 without a
 * group). Asks the first mirror that answers. */
MP_EXPORT int mp_cache_status(mp_client *c, mp_cache_node *out, size_t cap, size_t *ret_n,
                              mp_error *err);

/* ---- File data ---- */

typedef struct mp_progress {
	uint64_t bytes_done, bytes_total;
	uint64_t files_done, files_total; /* files_total grows while a tree is scanned */
	const char *current;              /* the path being worked on, may be NULL */
} mp_progress;
typedef void (*mp_progress_cb)(void *arg, const mp_progress *p);

/* NULL for the defaults. */
typedef struct mp_transfer_opts {
	mp_progress_cb progress; /* may be NULL; called at most every ~100 ms and at the end */
	void *progress_arg;
	int parallel; /* 0: the configuration's */
} mp_transfer_opts;

/* Uploads a local regular file (or len bytes from memory) as a new object in
 * the origin bucket, checks its checksum, then creates or replaces the file
 * at remote. remote may name an existing directory (the local file's name is
 * appended). */
MP_EXPORT int mp_put_file(mp_client *c, const char *local, const char *remote,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err);
MP_EXPORT int mp_put_buffer(mp_client *c, const void *data, size_t len, const char *remote,
                            const mp_transfer_opts *opts, mp_call *call, mp_error *err);
/* A whole local directory tree into remote (created with parents): files
 * uploaded in parallel, symlinks recreated; stops at the first error. */
MP_EXPORT int mp_put_tree(mp_client *c, const char *local_dir, const char *remote_dir,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err);

/* Downloads a file to a local path (written to a temporary file, then
 * renamed). local may name an existing directory. */
MP_EXPORT int mp_get_file(mp_client *c, const char *remote, const char *local,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err);
/* A whole remote tree into local_dir (created), files in parallel. */
MP_EXPORT int mp_get_tree(mp_client *c, const char *remote_dir, const char *local_dir,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err);
/* Bytes [offset, offset + length) of a file (length 0: to the end), in
 * order, to sink (cat). sink returns 0 or a negative errno to stop. */
typedef int (*mp_sink_cb)(void *arg, const void *data, size_t len);
MP_EXPORT int mp_read(mp_client *c, const char *remote, uint64_t offset, uint64_t length,
                      mp_sink_cb sink, void *arg, const mp_transfer_opts *opts, mp_call *call,
                      mp_error *err);
/* The same from a file's node as mp_stat returned it (with its extents),
 * without asking for it again: what an open file handle reads, so that it
 * keeps reading the version it opened, even once that is replaced or
 * removed (until garbage collection takes its objects). */
MP_EXPORT int mp_read_node(mp_client *c, const mp_node *file, uint64_t offset, uint64_t length,
                           mp_sink_cb sink, void *arg, const mp_transfer_opts *opts, mp_error *err);

/* Makes the objects under an existing bucket prefix files under dest_dir,
 * without copying: source is "ALIAS" or "ALIAS/PREFIX" (a configured bucket
 * alias). Keys map to paths below dest_dir ("a/b.jpg" -> DEST/a/b.jpg).
 * Re-running updates files whose object changed (ETag or size) and removes
 * files whose object vanished. Committed in batches. */
typedef struct mp_import_stats {
	uint64_t listed, created, updated, unchanged, removed, skipped;
	uint64_t bytes; /* total size of the listed objects */
} mp_import_stats;
MP_EXPORT int mp_import(mp_client *c, const char *source, const char *dest_dir,
                        const mp_transfer_opts *opts, mp_import_stats *ret, mp_call *call,
                        mp_error *err);

/* ---- Warmup (the site's cache group filled ahead of reads) ---- */

/* A warmup run at the site, as its mirror reports it. */
typedef struct mp_warmup_run {
	int64_t run;
	char pipeline[64]; /* "adhoc" for mp_warmup_start with paths */
	char trigger[16];  /* once, schedule, on-change, manual, evict */
	char kind[8];      /* warm or evict */
	char state[16];    /* queued, running, done, failed */
	uint64_t version;  /* the namespace version whose files it warms */
	uint64_t files, files_done, bytes, bytes_done, blocks, blocks_done;
	uint64_t failures;       /* block fills that failed (and were retried) */
	uint64_t evicted_blocks; /* evict runs, and evict_previous */
	int64_t created_ns, started_ns, finished_ns, now_ns; /* the mirror's clock */
	char error[512]; /* a failed run: what is missing and why */
} mp_warmup_run;

/* Starts a run at the site's mirror: the files under paths (files,
 * directories, or globs) at the mirror's version, or with evict their
 * blocks dropped from the group; or, with pipeline set (paths NULL), a run
 * of that policy pipeline. ret gets the run as started. */
MP_EXPORT int mp_warmup_start(mp_client *c, const char *const *paths, size_t n_paths, bool evict,
                              const char *pipeline, mp_warmup_run *ret, mp_error *err);
/* The site's runs (run 0: all; pipeline NULL: any), newest active first;
 * *ret_n gets how many there are. */
MP_EXPORT int mp_warmup_status(mp_client *c, int64_t run, const char *pipeline, mp_warmup_run *out,
                               size_t cap, size_t *ret_n, mp_error *err);

/* How much of what is under path is cached in the site's group now: each
 * block is asked of its owner (the first live node in rendezvous order,
 * where readers go first). */
typedef struct mp_warmup_cached {
	uint64_t files, files_cached;
	uint64_t blocks, blocks_cached;
	uint64_t bytes, bytes_cached;
	uint64_t version;
	char first_missing[256]; /* a file with a block not cached, or "" */
} mp_warmup_cached;
MP_EXPORT int mp_warmup_check(mp_client *c, const char *path, mp_warmup_cached *ret, mp_error *err);

#ifdef __cplusplus
}
#endif

#endif
