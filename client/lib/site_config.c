/* The site configuration a client runs with: servers, consistency, timeouts
 * and bucket aliases. It reuses the daemons' table-driven loader
 * (common/daemon/config.c); since bucket aliases are names the user chooses, the
 * table grows one group of options per alias ("buckets.ALIAS.url", ...),
 * found by a first pass over the YAML before the real load. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "internal.h"
#include "paths.h"

static const char *const consistency_choices[] = {"session", "strong", "eventual", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define OPT(f) offsetof(struct mp_config, f)
static const struct config_option base_options[] = {
    {"primary", CONFIG_STRLIST, OPT(primary), 0, 0, "127.0.0.1:7100",
     "the primary's HOST:PORT, in order of preference", NULL},
    {"mirror", CONFIG_STRLIST, OPT(mirror), 0, 0, NULL,
     "this site's mirrors (HOST:PORT), in order of preference", NULL},
    {"token", CONFIG_STRING, OPT(token), 0, 0, NULL, "a token from mp-primary token create", NULL},
    {"consistency", CONFIG_ENUM, OPT(consistency), 0, 0, "session", "session, strong or eventual",
     consistency_choices},
    {"max_staleness", CONFIG_DURATION, OPT(max_staleness_ms), 1, 86400000, "5s",
     "eventual reads refuse a mirror staler than this", NULL},
    {"connect_timeout", CONFIG_DURATION, OPT(connect_timeout_ms), 1, 600000, "1s",
     "per connection attempt", NULL},
    {"timeout", CONFIG_DURATION, OPT(timeout_ms), 10, 3600000, "2s",
     "per request; a server that does not answer in time is marked down", NULL},
    {"read_deadline", CONFIG_DURATION, OPT(read_deadline_ms), 0, 60000, "500ms",
     "how long a mirror may wait to reach the version a read needs", NULL},
    {"probe_interval", CONFIG_DURATION, OPT(probe_interval_ms), 10, 3600000, "1s",
     "how often a server marked down is probed again", NULL},
    {"session_file", CONFIG_PATH, OPT(session_file), 0, 0, NULL,
     "where the session version is kept between processes", NULL},
    {"origin", CONFIG_STRING, OPT(origin), 0, 0, "origin", "alias of the bucket put writes to",
     NULL},
    {"parallel", CONFIG_UINT, OPT(parallel), 1, 256, "16", "transfers in flight", NULL},
    {"part_size", CONFIG_SIZE, OPT(part_size), 5 << 20, 1ull << 32, "8MiB",
     "ranged GET and multipart part size", NULL},
    {"object_size", CONFIG_SIZE, OPT(object_size), 1 << 20, 5ull << 40, "64MiB",
     "a put splits a file into objects of at most this size, uploaded in parallel", NULL},
    {"tls.enabled", CONFIG_BOOL, OPT(tls_enabled), 0, 0, "false",
     "speak TLS to the primaries and mirrors", NULL},
    {"tls.ca", CONFIG_PATH, OPT(tls_ca), 0, 0, NULL,
     "CA bundle the servers' certificates must chain to (default: the system's)", NULL},
    {"tls.cert", CONFIG_PATH, OPT(tls_cert), 0, 0, NULL,
     "client certificate, for servers that verify clients", NULL},
    {"tls.key", CONFIG_PATH, OPT(tls_key), 0, 0, NULL, "its private key", NULL},
    {"tls.server_name", CONFIG_STRING, OPT(tls_server_name), 0, 0, NULL,
     "name the servers' certificates must carry (default: each address's host)", NULL},
    {"multipart_threshold", CONFIG_SIZE, OPT(multipart_threshold), 5 << 20, 5ull << 30, "64MiB",
     "objects larger than this go up as multipart uploads", NULL},
    {"hedge_delay", CONFIG_DURATION, OPT(hedge_delay_ms), 1, 60000, "50ms",
     "a read not answered this soon also goes to the next server (until latencies are known)",
     NULL},
    {"hedge_max", CONFIG_DURATION, OPT(hedge_max_ms), 1, 60000, "200ms",
     "the longest a read waits before it is hedged", NULL},
    {"site", CONFIG_STRING, OPT(site), 0, 0, NULL, "this site's name", NULL},
    {"cache.enabled", CONFIG_BOOL, OPT(cache_enabled), 0, 0, "true",
     "read file data through the site's cache group when its mirror lists one", NULL},
    {"cache.hedge_delay", CONFIG_DURATION, OPT(cache_hedge_ms), 1, 60000, "500ms",
     "a block read not answered this soon (or in twice the node's usual time) also goes to "
     "the next node",
     NULL},
    {"cache.refresh", CONFIG_DURATION, OPT(members_refresh_ms), 100, 3600000, "5s",
     "how often clients ask the mirror for the group's members", NULL},
    {"cache.listen", CONFIG_HOSTPORT, OPT(cache_listen), 0, 0, "127.0.0.1:7400",
     "mp-cache: address for block reads", NULL},
    {"cache.advertise", CONFIG_HOSTPORT, OPT(cache_advertise), 0, 0, NULL,
     "mp-cache: the address clients reach it at (default: cache.listen)", NULL},
    {"cache.admin", CONFIG_HOSTPORT, OPT(cache_admin), 0, 0, "127.0.0.1:7480",
     "mp-cache: admin HTTP address", NULL},
    {"cache.dirs", CONFIG_STRLIST, OPT(cache_dirs), 0, 0, NULL,
     "mp-cache: block dirs, DIR[:SIZE], one per disk", NULL},
    {"cache.weight", CONFIG_UINT, OPT(cache_weight), 0, 1000000, "100",
     "mp-cache: share of the group's blocks (0 drains the node)", NULL},
    {"cache.block_size", CONFIG_SIZE, OPT(cache_block_size), 1 << 20, 64 << 20, "4MiB",
     "mp-cache: block size (the same on every node of a group)", NULL},
    {"cache.min_free", CONFIG_UINT, OPT(cache_min_free_pct), 0, 90, "5",
     "mp-cache: percent of each cache dir's file system kept free", NULL},
    {"cache.fetch_concurrency", CONFIG_UINT, OPT(cache_fetch_concurrency), 1, 1024, "16",
     "mp-cache: block fetches from buckets and parents in flight at most", NULL},
    {"cache.fetch_rate", CONFIG_SIZE, OPT(cache_fetch_rate), 0, 0, "0",
     "mp-cache: bytes per second fetched at most (0: no limit)", NULL},
    {"cache.parent", CONFIG_STRLIST, OPT(cache_parent), 0, 0, NULL,
     "mp-cache: the parent site's mirrors; misses ask the parent's group first", NULL},
    {"cache.parent_timeout", CONFIG_DURATION, OPT(cache_parent_timeout_ms), 10, 3600000, "60s",
     "mp-cache: how long a miss waits for the parent's group, which may be filling the block "
     "from the origin itself",
     NULL},
    {"cache.warming_period", CONFIG_DURATION, OPT(cache_warming_ms), 0, 86400000, "60s",
     "mp-cache: after joining, misses ask a block's previous owner first", NULL},
    {"cache.verify_interval", CONFIG_DURATION, OPT(cache_verify_ms), 0, 86400000, "60s",
     "mp-cache: a block's checksum is checked when its file changed and at least this often "
     "(0: on every read)",
     NULL},
    {"cache.drain_period", CONFIG_DURATION, OPT(cache_drain_ms), 0, 3600000, "6s",
     "mp-cache: on SIGTERM or weight 0, how long it keeps serving its blocks to their new "
     "owners before it leaves",
     NULL},
    {"cache.heartbeat_interval", CONFIG_DURATION, OPT(cache_heartbeat_ms), 50, 60000, "1s",
     "mp-cache: how often it registers with the site's mirrors", NULL},
    {"cache.serve_threads", CONFIG_UINT, OPT(cache_serve_threads), 1, 64, "2",
     "mp-cache: event loops serving blocks", NULL},
    {"cache.secret_file", CONFIG_PATH, OPT(cache_secret_file), 0, 0, NULL,
     "mp-cache: the cluster secret; reads then need a token and a read grant", NULL},
    {"cache.max_connections", CONFIG_UINT, OPT(cache_max_connections), 1, 1000000, "10000",
     "mp-cache: open connections at most", NULL},
    {"cache.log_level", CONFIG_ENUM, OPT(cache_log_level), 0, 0, "info",
     "mp-cache: debug, info, warn or error", log_levels},
};
#define NBASE (sizeof(base_options) / sizeof(base_options[0]))

struct bucket_field {
	const char *name;
	enum config_type type;
	size_t offset;
	const char *default_value;
	const char *help;
};
#define BOPT(f) offsetof(struct bucket_config, f)
static const struct bucket_field bucket_fields[] = {
    {"url", CONFIG_STRING, BOPT(url), NULL, "s3://BUCKET[/PREFIX] or file:///DIR"},
    {"endpoint", CONFIG_STRING, BOPT(endpoint), NULL, "http(s)://HOST[:PORT]"},
    {"region", CONFIG_STRING, BOPT(region), NULL, "the S3 region"},
    {"access_key", CONFIG_STRING, BOPT(access_key), NULL, "access key id"},
    {"secret_key", CONFIG_STRING, BOPT(secret_key), NULL, "secret access key"},
    {"path_style", CONFIG_BOOL, BOPT(path_style), "true", "ENDPOINT/BUCKET/KEY addressing"},
    {"replica", CONFIG_STRING, BOPT(replica), NULL,
     "alias of this site's bucket with copies of this one's objects"},
};
#define NBFIELDS (sizeof(bucket_fields) / sizeof(bucket_fields[0]))

int site_config_check_alias(const char *alias, size_t len)
{
	if (len == 0 || len > ALIAS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		char ch = alias[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return -EINVAL;
	}
	return 0;
}

int site_config_bucket(const struct mp_config *cfg, const char *alias)
{
	for (size_t i = 0; i < cfg->nbuckets; i++)
		if (strcmp(cfg->bucket_alias[i], alias) == 0)
			return (int)i;
	return -1;
}

static void free_table(struct config_option *table)
{
	if (table == NULL)
		return;
	for (struct config_option *o = table + NBASE; o->name != NULL; o++)
		free((char *)o->name);
	free(table);
}

/* (Re)builds cfg->table for the current aliases. */
static int build_table(struct mp_config *cfg)
{
	size_t n = NBASE + cfg->nbuckets * NBFIELDS + 1;
	struct config_option *t = calloc(n, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	memcpy(t, base_options, sizeof(base_options));
	size_t k = NBASE;
	for (size_t i = 0; i < cfg->nbuckets; i++)
		for (size_t f = 0; f < NBFIELDS; f++, k++) {
			char *name;
			if (asprintf(&name, "buckets.%s.%s", cfg->bucket_alias[i],
			             bucket_fields[f].name) < 0) {
				free_table(t);
				return -ENOMEM;
			}
			t[k] = (struct config_option){
			    .name = name,
			    .type = bucket_fields[f].type,
			    .offset = OPT(buckets) + i * sizeof(struct bucket_config) +
			              bucket_fields[f].offset,
			    .default_value = bucket_fields[f].default_value,
			    .help = bucket_fields[f].help,
			};
		}
	free_table(cfg->table);
	cfg->table = t;
	return 0;
}

/* Registers alias (with its defaults) unless it is known already. */
static int add_bucket(struct mp_config *cfg, const char *alias, size_t len, mp_error *err)
{
	if (site_config_check_alias(alias, len) < 0)
		return mperr(err, -EINVAL,
		             "bucket alias '%.*s': use 1..%d letters, digits, '-' or '_'",
		             (int)(len > 80 ? 80 : len), alias, ALIAS_MAX);
	for (size_t i = 0; i < cfg->nbuckets; i++)
		if (strlen(cfg->bucket_alias[i]) == len &&
		    memcmp(cfg->bucket_alias[i], alias, len) == 0)
			return 0;
	if (cfg->nbuckets == BUCKETS_MAX)
		return mperr(err, -E2BIG, "more than %d bucket aliases", BUCKETS_MAX);
	char *name = strndup(alias, len);
	if (name == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	size_t i = cfg->nbuckets++;
	cfg->bucket_alias[i] = name;
	memset(&cfg->buckets[i], 0, sizeof(cfg->buckets[i]));
	int r = build_table(cfg);
	if (r < 0) {
		cfg->nbuckets--;
		free(name);
		return mperr(err, r, "out of memory");
	}
	/* Defaults for the new alias only: a terminated slice of the table. */
	struct config_option slice[NBFIELDS + 1];
	memcpy(slice, cfg->table + NBASE + i * NBFIELDS, NBFIELDS * sizeof(slice[0]));
	memset(&slice[NBFIELDS], 0, sizeof(slice[0]));
	config_defaults(slice, cfg);
	return 0;
}

MP_EXPORT int mp_config_new(mp_config **ret, mp_error *err)
{
	struct mp_config *cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL || build_table(cfg) < 0) {
		free(cfg);
		return mperr(err, -ENOMEM, "out of memory");
	}
	config_defaults(cfg->table, cfg);
	*ret = cfg;
	return 0;
}

void site_config_release(struct mp_config *cfg)
{
	if (cfg->table != NULL)
		config_free(cfg->table, cfg);
	free_table(cfg->table);
	for (size_t i = 0; i < cfg->nbuckets; i++)
		free(cfg->bucket_alias[i]);
	memset(cfg, 0, sizeof(*cfg));
}

MP_EXPORT void mp_config_free(mp_config *cfg)
{
	if (cfg == NULL)
		return;
	site_config_release(cfg);
	free(cfg);
}

int site_config_copy(struct mp_config *dst, const struct mp_config *src)
{
	memset(dst, 0, sizeof(*dst));
	for (size_t i = 0; i < src->nbuckets; i++) {
		dst->bucket_alias[i] = strdup(src->bucket_alias[i]);
		if (dst->bucket_alias[i] == NULL)
			goto fail;
		dst->nbuckets = i + 1;
	}
	if (build_table(dst) < 0)
		goto fail;
	/* Copy the plain fields first, then deep-copy the strings over them. */
	dst->consistency = src->consistency;
	if (config_copy(dst->table, dst, src) < 0) {
		free_table(dst->table);
		dst->table = NULL;
		goto fail;
	}
	dst->primary_added = src->primary_added;
	dst->mirror_added = src->mirror_added;
	return 0;
fail:
	for (size_t i = 0; i < dst->nbuckets; i++)
		free(dst->bucket_alias[i]);
	memset(dst, 0, sizeof(*dst));
	return -ENOMEM;
}

/* First pass over a YAML file: registers every alias under "buckets" (as
 * a nested mapping or in dotted keys), so that the table knows them. A file
 * that does not parse is left to the real load to report. */
static int scan_aliases(struct mp_config *cfg, const char *name, const char *buf, size_t len,
                        mp_error *err)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	if (!yaml_parser_initialize(&parser))
		return mperr(err, -ENOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	/* Per mapping depth: whether the next scalar is a key, and the key. */
	enum { DEPTH = CONFIG_MAX_DEPTH + 2 };
	bool expect_key[DEPTH] = {0}, is_map[DEPTH] = {0};
	char keys[DEPTH][CONFIG_MAX_NAME];
	int depth = 0, rc = 0;
	bool done = false;
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&parser, &ev))
			break;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			if (depth > 0 && expect_key[depth - 1] == false)
				expect_key[depth - 1] = true; /* this container was a value */
			if (++depth >= DEPTH) {
				done = true;
				break;
			}
			is_map[depth - 1] = ev.type == YAML_MAPPING_START_EVENT;
			expect_key[depth - 1] = is_map[depth - 1];
			keys[depth - 1][0] = '\0';
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		case YAML_SCALAR_EVENT: {
			if (depth == 0 || !is_map[depth - 1])
				break;
			if (!expect_key[depth - 1]) {
				expect_key[depth - 1] = true;
				break;
			}
			const char *k = (const char *)ev.data.scalar.value;
			size_t klen = ev.data.scalar.length;
			snprintf(keys[depth - 1], sizeof(keys[0]), "%.*s", (int)klen, k);
			expect_key[depth - 1] = false;
			const char *alias = NULL;
			size_t alen = 0;
			if (depth == 1 && klen > 8 && strncmp(k, "buckets.", 8) == 0) {
				alias = k + 8;
				const char *dot = memchr(alias, '.', klen - 8);
				alen = dot ? (size_t)(dot - alias) : klen - 8;
			} else if (depth == 2 && strcmp(keys[0], "buckets") == 0) {
				alias = k;
				const char *dot = memchr(k, '.', klen);
				alen = dot ? (size_t)(dot - k) : klen;
			}
			if (alias != NULL && site_config_check_alias(alias, alen) < 0)
				rc = mperr(
				    err, -EINVAL,
				    "%s:%zu:%zu: bucket alias '%.*s': use 1..%d letters, digits, "
				    "'-' or '_'",
				    name, ev.start_mark.line + 1, ev.start_mark.column + 1,
				    (int)(alen > 80 ? 80 : alen), alias, ALIAS_MAX);
			else if (alias != NULL)
				rc = add_bucket(cfg, alias, alen, err);
			break;
		}
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

MP_EXPORT int mp_config_load(mp_config *cfg, const char *path, mp_error *err)
{
	if (path == NULL) {
		path = getenv("MP_CONFIG");
		if (path == NULL || path[0] == '\0')
			return 0;
	}
	char *buf;
	size_t len;
	char *why = NULL;
	int r = paths_read_file(path, CONFIG_MAX_FILE_BYTES, &buf, &len, NULL, &why);
	if (r < 0) {
		mperr(err, r, "%s", why ? why : path);
		free(why);
		return r;
	}
	r = site_config_load_buffer(cfg, path, buf, len, err);
	free(buf);
	return r;
}

int site_config_load_buffer(struct mp_config *cfg, const char *name, const char *buf, size_t len,
                            mp_error *err)
{
	int r = scan_aliases(cfg, name, buf, len, err);
	if (r == 0) {
		char *msg = NULL;
		r = config_load_buffer(cfg->table, cfg, name, buf, len, &msg);
		if (r < 0)
			mperr(err, r, "%s", msg ? msg : "out of memory");
		free(msg);
	}
	return r;
}

/* For a "buckets.ALIAS.field" name, registers ALIAS. */
static int note_bucket_name(struct mp_config *cfg, const char *name, mp_error *err)
{
	if (strncmp(name, "buckets.", 8) != 0)
		return 0;
	const char *alias = name + 8;
	const char *dot = strchr(alias, '.');
	if (dot == NULL)
		return mperr(err, -ENOENT, "'%s': say buckets.ALIAS.FIELD", name);
	return add_bucket(cfg, alias, (size_t)(dot - alias), err);
}

MP_EXPORT int mp_config_set(mp_config *cfg, const char *name, const char *value, mp_error *err)
{
	if (name == NULL || value == NULL)
		return mperr(err, -EINVAL, "option name and value are required");
	int r = note_bucket_name(cfg, name, err);
	if (r < 0)
		return r;
	char *msg = NULL;
	r = config_set(cfg->table, cfg, name, value, &msg);
	if (r < 0)
		mperr(err, r, "%s", msg ? msg : "out of memory");
	free(msg);
	if (r == 0 && strcmp(name, "primary") == 0)
		cfg->primary_added = true;
	if (r == 0 && strcmp(name, "mirror") == 0)
		cfg->mirror_added = true;
	return r;
}

MP_EXPORT int mp_config_add(mp_config *cfg, const char *name, const char *value, mp_error *err)
{
	struct config_strlist *list;
	bool *added;
	if (name != NULL && strcmp(name, "primary") == 0) {
		list = &cfg->primary;
		added = &cfg->primary_added;
	} else if (name != NULL && strcmp(name, "mirror") == 0) {
		list = &cfg->mirror;
		added = &cfg->mirror_added;
	} else {
		return mperr(err, -EINVAL, "'%s' is not a list option (primary, mirror)",
		             name ? name : "");
	}
	if (value == NULL)
		return mperr(err, -EINVAL, "%s: no value", name);
	/* Join with what is there (unless it is the default), then parse the
	 * whole list again, so that every item is checked the same way. */
	size_t need = strlen(value) + 1;
	if (*added)
		for (size_t i = 0; i < list->n; i++)
			need += strlen(list->items[i]) + 1;
	char *joined = malloc(need);
	if (joined == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	joined[0] = '\0';
	if (*added)
		for (size_t i = 0; i < list->n; i++) {
			strcat(joined, list->items[i]);
			strcat(joined, ",");
		}
	strcat(joined, value);
	int r = mp_config_set(cfg, name, joined, err);
	free(joined);
	return r;
}

MP_EXPORT int mp_consistency_parse(const char *s, enum mp_consistency *ret)
{
	for (int i = 0; consistency_choices[i] != NULL; i++)
		if (s != NULL && strcmp(s, consistency_choices[i]) == 0) {
			*ret = (enum mp_consistency)(MP_SESSION + i);
			return 0;
		}
	return -EINVAL;
}

MP_EXPORT const char *mp_consistency_name(enum mp_consistency c)
{
	if (c >= MP_SESSION && c <= MP_EVENTUAL)
		return consistency_choices[c - MP_SESSION];
	return "default";
}
