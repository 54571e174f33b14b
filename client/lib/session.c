/* The session cookie: the highest version a user has seen per cluster, kept
 * in a small file between processes (as LiteFS keeps a TXID cookie), so that
 * `mp put x` then `mp cat x` at a lagging mirror still reads its own write.
 * One line per cluster: "CLUSTER_ID VERSION". */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "paths.h"

#define SESSION_FILE_MAX (64 * 1024)
#define SESSION_LINES    64

/* The version stored for cluster in buf, or 0. */
static uint64_t find_version(const char *buf, size_t len, const char *cluster)
{
	size_t clen = strlen(cluster);
	const char *p = buf, *end = buf + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if ((size_t)(le - p) > clen + 1 && memcmp(p, cluster, clen) == 0 && p[clen] == ' ')
			return strtoull(p + clen + 1, NULL, 10);
		p = le + 1;
	}
	return 0;
}

void session_load(struct mp_client *c)
{
	if (c->session_loaded || c->cfg.session_file == NULL || c->cluster_id[0] == '\0')
		return;
	c->session_loaded = true;
	char *buf;
	size_t len;
	if (paths_read_file(c->cfg.session_file, SESSION_FILE_MAX, &buf, &len, NULL, NULL) < 0)
		return; /* no file yet, or unreadable: start a new session */
	uint64_t v = find_version(buf, len, c->cluster_id);
	free(buf);
	client_session_bump(c, v);
	c->session_saved = v;
}

int session_save(struct mp_client *c, mp_error *err)
{
	pthread_mutex_lock(&c->lock);
	uint64_t v = atomic_load(&c->session);
	if (c->cfg.session_file == NULL || c->cluster_id[0] == '\0' || v <= c->session_saved) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	const char *path = c->cfg.session_file;
	char *old = NULL;
	size_t oldlen = 0;
	if (paths_read_file(path, SESSION_FILE_MAX, &old, &oldlen, NULL, NULL) < 0) {
		old = NULL;
		oldlen = 0;
	}
	uint64_t there = old ? find_version(old, oldlen, c->cluster_id) : 0;
	if (there > v)
		v = there;
	char *tmp;
	int r = 0;
	if (asprintf(&tmp, "%s.%d.tmp", path, (int)getpid()) < 0) {
		r = mperr(err, -ENOMEM, "out of memory");
		goto out;
	}
	FILE *f = fopen(tmp, "w");
	if (f == NULL) {
		r = mperr(err, -errno, "session file %s: %s", tmp, strerror(errno));
		free(tmp);
		goto out;
	}
	fprintf(f, "%s %" PRIu64 "\n", c->cluster_id, v);
	/* Keep the other clusters' lines (a bounded number). */
	int kept = 0;
	const char *p = old, *end = old ? old + oldlen : NULL;
	size_t clen = strlen(c->cluster_id);
	while (p != NULL && p < end && kept < SESSION_LINES) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		bool mine = (size_t)(le - p) > clen && memcmp(p, c->cluster_id, clen) == 0 &&
		            p[clen] == ' ';
		if (!mine && le > p && memchr(p, ' ', (size_t)(le - p)) != NULL) {
			fprintf(f, "%.*s\n", (int)(le - p), p);
			kept++;
		}
		p = le + 1;
	}
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		r = mperr(err, -errno, "session file %s: %s", path, strerror(errno));
		unlink(tmp);
	} else {
		c->session_saved = v;
	}
	free(tmp);
out:
	free(old);
	pthread_mutex_unlock(&c->lock);
	return r;
}
