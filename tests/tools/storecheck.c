/* storecheck: reads a primary's store the way a fresh start would and prints
 * what the integration tests compare against the daemon:
 *
 *   storecheck STORE_URL
 *
 * prints one JSON object:
 *   version, meta_digest        the store's meta row (store_init, no cluster id)
 *   recomputed_digest, entries  every node loaded into a fresh namespace
 *   log_oldest, log_newest      bounds of the change log
 *   log_contiguous              every version from oldest to newest present once
 *   log_last_digest             the digest recorded with the newest version
 *   records_valid               every record parses and names its own version
 *                               and digest
 *   replay_digest               when the log starts at version 1: the digest of
 *                               an empty namespace after applying every record,
 *                               each intermediate digest checked against its
 *                               record (null when the log was trimmed)
 * and exits 0; exits 1 with a message on stderr on any error (a store that
 * cannot be opened, a broken tree, an unreadable log). A sqlite: store that
 * does not exist is an error, not a new empty store. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "msg.h"
#include "namespace.h"
#include "store.h"

#define READ_COUNT 4096
#define READ_BYTES (8u << 20)

struct log_walk {
	uint64_t first, last, count;
	bool contiguous;
	bool records_valid;
	char bad_record[256];
	uint8_t last_digest[DIGEST_LEN];
	struct namespace *replay; /* NULL when the log does not start at 1 */
	bool replay_ok;
	char replay_err[256];
};

static void hex(const uint8_t *d, char out[2 * DIGEST_LEN + 1])
{
	for (int i = 0; i < DIGEST_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static int load_cb(void *arg, const struct node_rec *rec)
{
	return namespace_load_node(arg, rec);
}

static void replay_record(struct log_walk *w, const struct change_header *h)
{
	if (w->replay == NULL || !w->replay_ok)
		return;
	size_t n = h->mutations->size;
	struct ns_change *ch = calloc(n ? n : 1, sizeof(*ch));
	struct node_rec *recs = calloc(n ? n : 1, sizeof(*recs));
	if (ch == NULL || recs == NULL) {
		snprintf(w->replay_err, sizeof(w->replay_err), "out of memory");
		w->replay_ok = false;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		bool put;
		char why[160];
		if (msg_parse_mutation(&h->mutations->ptr[i], &ch[i].ino, &recs[i], &put, why,
		                       sizeof(why)) < 0) {
			snprintf(w->replay_err, sizeof(w->replay_err),
			         "version %llu mutation %zu: %s", (unsigned long long)h->version, i,
			         why);
			w->replay_ok = false;
			goto out;
		}
		ch[i].rec = put ? &recs[i] : NULL;
	}
	char why[160];
	if (namespace_apply(w->replay, ch, n, why, sizeof(why)) < 0) {
		snprintf(w->replay_err, sizeof(w->replay_err), "version %llu does not apply: %s",
		         (unsigned long long)h->version, why);
		w->replay_ok = false;
		goto out;
	}
	uint8_t d[DIGEST_LEN];
	namespace_digest(w->replay, d);
	if (memcmp(d, h->digest, DIGEST_LEN) != 0) {
		char a[2 * DIGEST_LEN + 1], b[2 * DIGEST_LEN + 1];
		hex(d, a);
		hex(h->digest, b);
		snprintf(w->replay_err, sizeof(w->replay_err),
		         "after replaying version %llu the digest is %s, the record says %s",
		         (unsigned long long)h->version, a, b);
		w->replay_ok = false;
	}
out:
	free(ch);
	free(recs);
}

static int change_cb(void *arg, const struct store_version *v)
{
	struct log_walk *w = arg;
	if (w->count == 0)
		w->first = v->version;
	else if (v->version != w->last + 1)
		w->contiguous = false;
	w->last = v->version;
	w->count++;
	memcpy(w->last_digest, v->digest, DIGEST_LEN);

	msgpack_unpacked u;
	char why[200];
	if (msg_unpack(v->record, v->record_len, &u, why, sizeof(why)) < 0) {
		if (w->records_valid)
			snprintf(w->bad_record, sizeof(w->bad_record), "version %llu: %s",
			         (unsigned long long)v->version, why);
		w->records_valid = false;
		w->replay_ok = false;
		return 0;
	}
	struct change_header h;
	if (msg_parse_change(&u.data, &h, why, sizeof(why)) < 0 || h.version != v->version ||
	    memcmp(h.digest, v->digest, DIGEST_LEN) != 0) {
		if (w->records_valid)
			snprintf(w->bad_record, sizeof(w->bad_record),
			         "version %llu: the record does not match its row%s%s",
			         (unsigned long long)v->version, why[0] ? ": " : "", why);
		w->records_valid = false;
		w->replay_ok = false;
	} else {
		replay_record(w, &h);
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: storecheck STORE_URL\n");
		return 2;
	}
	const char *url = argv[1];
	struct stat sb;
	if (strncmp(url, "sqlite:", 7) == 0 && stat(url + 7, &sb) < 0) {
		fprintf(stderr, "storecheck: %s: %s\n", url + 7, strerror(errno));
		return 1;
	}
	struct store *st = NULL;
	char *err = NULL;
	if (store_open(url, &st, &err) < 0) {
		fprintf(stderr, "storecheck: cannot open the store: %s\n", err ? err : url);
		free(err);
		return 1;
	}
	int rc = 1;
	struct namespace *ns = NULL;
	struct log_walk w = {.contiguous = true, .records_valid = true, .replay_ok = true};
	struct store_meta meta;
	if (store_init(st, NULL, &meta) < 0) {
		fprintf(stderr, "storecheck: %s\n", store_error(st));
		goto out;
	}
	ns = namespace_new();
	if (ns == NULL) {
		fprintf(stderr, "storecheck: out of memory\n");
		goto out;
	}
	if (store_load_nodes(st, load_cb, ns) < 0) {
		fprintf(stderr, "storecheck: loading the nodes: %s\n", store_error(st));
		goto out;
	}
	char why[256];
	if (namespace_load_finish(ns, why, sizeof(why)) < 0) {
		fprintf(stderr, "storecheck: the stored tree is broken: %s\n", why);
		goto out;
	}
	uint64_t oldest, newest;
	if (store_log_bounds(st, &oldest, &newest) < 0) {
		fprintf(stderr, "storecheck: change log bounds: %s\n", store_error(st));
		goto out;
	}
	if (oldest == 1) {
		w.replay = namespace_new();
		if (w.replay == NULL) {
			fprintf(stderr, "storecheck: out of memory\n");
			goto out;
		}
	}
	uint64_t from = oldest ? oldest : 1;
	while (newest > 0 && from <= newest) {
		uint64_t before = w.count;
		if (store_read_changes(st, from, READ_COUNT, READ_BYTES, change_cb, &w) < 0) {
			fprintf(stderr, "storecheck: reading the change log from %llu: %s\n",
			        (unsigned long long)from, store_error(st));
			goto out;
		}
		if (w.count == before)
			break; /* nothing at or after from: a gap up to newest */
		from = w.last + 1;
	}
	if (w.count == 0
	        ? newest != 0
	        : (w.first != oldest || w.last != newest || w.count != newest - oldest + 1))
		w.contiguous = false;

	uint8_t d[DIGEST_LEN];
	char mh[2 * DIGEST_LEN + 1], rh[2 * DIGEST_LEN + 1], lh[2 * DIGEST_LEN + 1];
	namespace_digest(ns, d);
	hex(meta.digest, mh);
	hex(d, rh);
	if (w.count > 0)
		hex(w.last_digest, lh);
	else
		lh[0] = '\0';
	printf("{\"version\":%llu,\"meta_digest\":\"%s\",\"recomputed_digest\":\"%s\","
	       "\"entries\":%llu,\"next_ino\":%llu,\"cluster_id\":\"%s\",\"log_oldest\":%llu,"
	       "\"log_newest\":%llu,\"log_count\":%llu,\"log_contiguous\":%s,"
	       "\"log_last_digest\":\"%s\",\"records_valid\":%s",
	       (unsigned long long)meta.version, mh, rh, (unsigned long long)namespace_count(ns),
	       (unsigned long long)meta.next_ino, meta.cluster_id, (unsigned long long)oldest,
	       (unsigned long long)newest, (unsigned long long)w.count,
	       w.contiguous ? "true" : "false", lh, w.records_valid ? "true" : "false");
	if (!w.records_valid) {
		printf(",\"bad_record\":");
		json_str(w.bad_record);
	}
	if (w.replay != NULL && w.replay_ok) {
		namespace_digest(w.replay, d);
		hex(d, rh);
		printf(",\"replay_digest\":\"%s\"", rh);
	} else if (w.replay != NULL) {
		printf(",\"replay_digest\":null,\"replay_error\":");
		json_str(w.replay_err);
	} else {
		printf(",\"replay_digest\":null");
	}
	printf("}\n");
	rc = 0;
out:
	namespace_free(w.replay);
	namespace_free(ns);
	store_close(st);
	return rc;
}
