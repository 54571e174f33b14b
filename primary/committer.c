/* Group commit. Writes queue while a batch is being written; when it is
 * durable, the whole queue becomes the next batch: each write runs in its
 * own transaction and gets its own version, and one store transaction makes
 * them all durable. Replies, the change stream and parked reads are released
 * only after the store said the batch is durable.
 *
 * The store thread only runs store_commit / store_trim_log on its own
 * connection; everything else happens on the event loop. While a batch is in
 * flight the namespace does not change (new writes wait in the queue), so the
 * store may borrow node records straight from it. */
#include <errno.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "change.h"
#include "hash.h"
#include "log.h"
#include "primary.h"
#include "proto.h"
#include "txn.h"

struct idle_cb {
	void (*fn)(void *ctx);
	void *ctx;
};

struct batch {
	struct request_list reqs; /* executed, each holding its reply */
	struct store_version *versions;
	size_t nversions, capversions;
	uint64_t *inos; /* changed inodes, deduplicated through set */
	size_t ninos, capinos;
	uint64_t *set;
	size_t capset;
	struct store_node_change *changes;
	struct node_rec *recs;
	struct gc_trash trash; /* objects the batch's versions superseded */
	struct store_batch sb;
	int64_t started_ns;
};

struct committer {
	struct primary *p;
	struct store *writer;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct event *done_ev;
	struct request_list queue;
	size_t nqueued;
	struct batch *inflight;
	struct idle_cb *idle;
	size_t nidle, capidle;
	/* Shared with the store thread under lock. */
	struct batch *job;
	bool job_done;
	uint64_t trim_below;
	uint64_t trim_done;
	bool stop;
	bool failing;
};

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	struct request *r;
	while ((r = TAILQ_FIRST(&b->reqs)) != NULL) {
		TAILQ_REMOVE(&b->reqs, r, entry);
		request_free(r);
	}
	for (size_t i = 0; i < b->nversions; i++)
		free((void *)b->versions[i].record);
	free(b->versions);
	free(b->inos);
	free(b->set);
	free(b->changes);
	free(b->recs);
	gc_trash_free(&b->trash);
	free(b);
}

static int batch_note_ino(struct batch *b, uint64_t ino)
{
	if ((b->ninos + 1) * 2 > b->capset) {
		size_t cap = b->capset ? b->capset * 2 : 64;
		uint64_t *set = calloc(cap, sizeof(*set));
		if (set == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < b->ninos; i++) {
			size_t h = hash_mix64(b->inos[i]) & (cap - 1);
			while (set[h] != 0)
				h = (h + 1) & (cap - 1);
			set[h] = b->inos[i];
		}
		free(b->set);
		b->set = set;
		b->capset = cap;
	}
	size_t h = hash_mix64(ino) & (b->capset - 1);
	while (b->set[h] != 0) {
		if (b->set[h] == ino)
			return 0;
		h = (h + 1) & (b->capset - 1);
	}
	if (b->ninos == b->capinos) {
		size_t cap = b->capinos ? b->capinos * 2 : 64;
		uint64_t *inos = realloc(b->inos, cap * sizeof(*inos));
		if (inos == NULL)
			return -ENOMEM;
		b->inos = inos;
		b->capinos = cap;
	}
	b->set[h] = ino;
	b->inos[b->ninos++] = ino;
	return 0;
}

static void *store_thread(void *arg)
{
	struct committer *cm = arg;
	pthread_mutex_lock(&cm->lock);
	for (;;) {
		while (!cm->stop && cm->job == NULL && cm->trim_below == 0)
			pthread_cond_wait(&cm->cond, &cm->lock);
		if (cm->stop)
			break;
		if (cm->job != NULL) {
			struct batch *b = cm->job;
			pthread_mutex_unlock(&cm->lock);
			int delay_ms = 50;
			for (;;) {
				int r = store_commit(cm->writer, &b->sb);
				if (r == 0)
					break;
				/* Another primary owns the store, or it already
				 * holds these versions: retrying cannot help, and
				 * going on would fork the namespace. */
				if (r == -EBUSY || r == -EEXIST || r == -EPROTO)
					fatal("commit of versions %llu..%llu: %s; stopping (the "
					      "store "
					      "belongs to another writer or was changed under this "
					      "one)",
					      (unsigned long long)b->versions[0].version,
					      (unsigned long long)b->sb.version,
					      store_error(cm->writer));
				/* Nothing was acknowledged: keep the batch and
				 * retry, so a store outage costs latency and
				 * loses nothing. */
				log_error(
				    "commit of versions %llu..%llu failed (%s); retrying in %d ms",
				    (unsigned long long)b->versions[0].version,
				    (unsigned long long)b->sb.version, store_error(cm->writer),
				    delay_ms);
				pthread_mutex_lock(&cm->lock);
				cm->failing = true;
				if (!cm->stop) {
					struct timespec until;
					clock_gettime(CLOCK_REALTIME, &until);
					until.tv_nsec += (long)delay_ms * 1000000;
					until.tv_sec += until.tv_nsec / 1000000000;
					until.tv_nsec %= 1000000000;
					pthread_cond_timedwait(&cm->cond, &cm->lock, &until);
				}
				bool stop = cm->stop;
				pthread_mutex_unlock(&cm->lock);
				if (stop) {
					pthread_mutex_lock(&cm->lock);
					goto out;
				}
				delay_ms = delay_ms * 2 > 5000 ? 5000 : delay_ms * 2;
			}
			pthread_mutex_lock(&cm->lock);
			cm->failing = false;
			cm->job = NULL;
			cm->job_done = true;
			event_active(cm->done_ev, EV_READ, 0);
			continue;
		}
		uint64_t below = cm->trim_below;
		cm->trim_below = 0;
		pthread_mutex_unlock(&cm->lock);
		int r = store_trim_log(cm->writer, below);
		if (r < 0)
			log_warn("trimming the change log below version %llu failed: %s",
			         (unsigned long long)below, store_error(cm->writer));
		pthread_mutex_lock(&cm->lock);
		if (r == 0) {
			cm->trim_done = below;
			event_active(cm->done_ev, EV_READ, 0);
		}
	}
out:
	pthread_mutex_unlock(&cm->lock);
	return NULL;
}

static void form_batches(struct committer *cm);

static void send_replies(struct batch *b)
{
	struct request *r;
	while ((r = TAILQ_FIRST(&b->reqs)) != NULL) {
		TAILQ_REMOVE(&b->reqs, r, entry);
		r->c->pending_writes--;
		if (r->reply != NULL)
			conn_send(r->c, r->reply, r->reply_len);
		request_free(r);
	}
}

static void run_idle_callbacks(struct committer *cm)
{
	/* A callback may register another; take the list first. */
	while (cm->nidle > 0 && cm->inflight == NULL) {
		struct idle_cb cb = cm->idle[0];
		memmove(cm->idle, cm->idle + 1, (cm->nidle - 1) * sizeof(*cm->idle));
		cm->nidle--;
		cb.fn(cb.ctx);
	}
}

static void finish_batch(struct committer *cm)
{
	struct primary *p = cm->p;
	struct batch *b = cm->inflight;
	cm->inflight = NULL;
	p->version = b->sb.version;
	memcpy(p->digest, b->sb.digest, DIGEST_LEN);
	p->version_time = b->versions[b->nversions - 1].time;
	double seconds = (double)(mono_ns() - b->started_ns) / 1e9;
	metric_observe(p->m_commit_seconds, seconds);
	metric_observe(p->m_batch_size, (double)b->nversions);
	metric_set(p->m_version, (double)p->version);
	metric_set(p->m_entries, (double)namespace_count(p->ns));
	uint64_t first = b->versions[0].version;
	for (size_t i = 0; i < b->nversions; i++) {
		struct changelog_entry e = {
		    .version = b->versions[i].version,
		    .time = b->versions[i].time,
		    .record = (uint8_t *)b->versions[i].record,
		    .record_len = b->versions[i].record_len,
		};
		memcpy(e.digest, b->versions[i].digest, DIGEST_LEN);
		changelog_append(p->log, &e);
		b->versions[i].record = NULL; /* owned by the changelog now */
	}
	if (changelog_store_oldest(p->log) == 0)
		changelog_set_store_oldest(p->log, first);
	/* Replies first (a connection's reads come after its writes), then
	 * what needs the namespace to equal the durable state; then the next
	 * batch goes to the store, and the stream is fed while it works. */
	send_replies(b);
	primary_answer_parked(p);
	run_idle_callbacks(cm);
	form_batches(cm);
	stream_publish(p->stream, first, b->sb.version);
	batch_free(b);
	primary_maybe_finish_drain(p);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct committer *cm = arg;
	pthread_mutex_lock(&cm->lock);
	bool done = cm->job_done;
	uint64_t trimmed = cm->trim_done;
	cm->job_done = false;
	cm->trim_done = 0;
	pthread_mutex_unlock(&cm->lock);
	if (trimmed > 0 && trimmed > changelog_store_oldest(cm->p->log))
		changelog_set_store_oldest(cm->p->log, trimmed);
	if (done && cm->inflight != NULL)
		finish_batch(cm);
}

struct committer *committer_new(struct primary *p, struct store *writer, char **ret_err)
{
	struct committer *cm = calloc(1, sizeof(*cm));
	if (cm == NULL)
		return NULL;
	cm->p = p;
	cm->writer = writer;
	TAILQ_INIT(&cm->queue);
	pthread_mutex_init(&cm->lock, NULL);
	pthread_cond_init(&cm->cond, NULL);
	cm->done_ev = event_new(p->base, -1, 0, done_cb, cm);
	if (cm->done_ev == NULL || pthread_create(&cm->thread, NULL, store_thread, cm) != 0) {
		if (ret_err)
			*ret_err = strdup("cannot start the store thread");
		if (cm->done_ev)
			event_free(cm->done_ev);
		free(cm);
		return NULL;
	}
	return cm;
}

void committer_free(struct committer *cm)
{
	if (cm == NULL)
		return;
	pthread_mutex_lock(&cm->lock);
	cm->stop = true;
	pthread_cond_signal(&cm->cond);
	pthread_mutex_unlock(&cm->lock);
	pthread_join(cm->thread, NULL);
	event_free(cm->done_ev);
	struct request *r;
	while ((r = TAILQ_FIRST(&cm->queue)) != NULL) {
		TAILQ_REMOVE(&cm->queue, r, entry);
		request_free(r);
	}
	batch_free(cm->inflight);
	free(cm->idle);
	pthread_mutex_destroy(&cm->lock);
	pthread_cond_destroy(&cm->cond);
	store_close(cm->writer);
	free(cm);
}

bool committer_busy(const struct committer *cm)
{
	return cm->inflight != NULL;
}

size_t committer_queued(const struct committer *cm)
{
	return cm->nqueued;
}

bool committer_store_failing(const struct committer *cm)
{
	struct committer *m = (struct committer *)cm;
	pthread_mutex_lock(&m->lock);
	bool f = m->failing;
	pthread_mutex_unlock(&m->lock);
	return f;
}

void committer_when_idle(struct committer *cm, void (*fn)(void *ctx), void *ctx)
{
	if (cm->inflight == NULL) {
		fn(ctx);
		return;
	}
	if (cm->nidle == cm->capidle) {
		size_t cap = cm->capidle ? cm->capidle * 2 : 8;
		struct idle_cb *n = realloc(cm->idle, cap * sizeof(*n));
		if (n == NULL) {
			log_error("out of memory queueing work for after the commit");
			return;
		}
		cm->idle = n;
		cm->capidle = cap;
	}
	cm->idle[cm->nidle++] = (struct idle_cb){fn, ctx};
}

void committer_trim(struct committer *cm, uint64_t below)
{
	pthread_mutex_lock(&cm->lock);
	if (below > cm->trim_below)
		cm->trim_below = below;
	pthread_cond_signal(&cm->cond);
	pthread_mutex_unlock(&cm->lock);
}

void committer_submit(struct committer *cm, struct request *r)
{
	TAILQ_INSERT_TAIL(&cm->queue, r, entry);
	cm->nqueued++;
	if (cm->inflight == NULL)
		form_batches(cm);
}

static void set_reply(struct request *r, msgpack_sbuffer *sb)
{
	r->reply = (uint8_t *)sb->data;
	r->reply_len = sb->size;
	sb->data = NULL; /* taken over */
	sb->size = sb->alloc = 0;
}

static void error_reply(struct primary *p, struct request *r, int err, const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msg_build_error(&sb, r->id, err, p->mem_version, msg);
	set_reply(r, &sb);
}

static void success_reply(struct primary *p, struct request *r, uint64_t version, uint64_t ino,
                          const uint64_t *inos, size_t ninos)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	struct node_rec rec;
	bool has_node = ino != 0 && namespace_get(p->ns, ino, &rec) == 0;
	msg_begin(&sb, &pk, MT_REPLY, r->id, 1 + (has_node || inos != NULL));
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	if (has_node) {
		msg_pack_key(&pk, "node");
		msg_pack_node(&pk, &rec);
	} else if (inos != NULL) {
		msg_pack_key(&pk, "inos");
		msgpack_pack_array(&pk, (uint32_t)ninos);
		for (size_t i = 0; i < ninos; i++)
			msgpack_pack_uint64(&pk, inos[i]);
	}
	msg_end(&sb);
	set_reply(r, &sb);
}

/* Runs one queued write. Returns 1 if it made a new version, 0 if it was
 * answered without one, -ENOMEM if the batch could not take it. */
static int run_request(struct committer *cm, struct batch *b, struct request *r, int64_t now)
{
	struct primary *p = cm->p;
	struct txn *t = txn_new(p->ns, &p->next_ino, now);
	if (t == NULL)
		return -ENOMEM;
	char err[600];
	uint64_t ino = 0, *inos = NULL;
	size_t ninos = 0;
	int rc = rpc_execute_write(p, t, r->c, r->type, r->frame.body, &ino, &inos, &ninos, err,
	                           sizeof(err));
	if (rc < 0) {
		if (txn_rollback(t) < 0)
			fatal("broken invariant: %s", txn_error(t));
		char msg[700];
		snprintf(msg, sizeof(msg), "%s: %s", proto_msg_name(r->type), err);
		error_reply(p, r, rc, msg);
		metric_add(p->m_write_errors, 1);
		txn_free(t);
		return 0;
	}
	if (txn_touched_count(t) == 0) {
		success_reply(p, r, p->mem_version, ino, inos, ninos);
		free(inos);
		txn_free(t);
		return 0;
	}
	if (b->nversions == b->capversions) {
		size_t cap = b->capversions ? b->capversions * 2 : 64;
		struct store_version *v = realloc(b->versions, cap * sizeof(*v));
		if (v == NULL)
			goto nomem;
		b->versions = v;
		b->capversions = cap;
	}
	for (size_t i = 0; i < txn_touched_count(t); i++)
		if (batch_note_ino(b, txn_touched_ino(t, i)) < 0)
			goto nomem;
	uint64_t version = ++p->mem_version;
	/* Losing a row leaks an object; failing the write cannot undo it. */
	if (gc_note_txn(p->gc, t, version, now, &b->trash) < 0)
		log_error("out of memory noting the objects version %llu superseded: they stay in "
		          "the origin",
		          (unsigned long long)version);
	struct store_version *v = &b->versions[b->nversions++];
	memset(v, 0, sizeof(*v));
	v->version = version;
	v->time = now;
	namespace_digest(p->ns, v->digest);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	change_encode_txn(p->ns, t, version, now, &sb);
	v->record = (const uint8_t *)sb.data;
	v->record_len = sb.size;
	success_reply(p, r, version, ino, inos, ninos);
	free(inos);
	txn_free(t);
	metric_add(p->m_writes, 1);
	return 1;
nomem:
	txn_rollback(t);
	txn_free(t);
	free(inos);
	error_reply(p, r, -ENOMEM, "out of memory");
	return 0;
}

static int prepare_store_batch(struct committer *cm, struct batch *b)
{
	struct primary *p = cm->p;
	b->changes = calloc(b->ninos, sizeof(*b->changes));
	b->recs = calloc(b->ninos, sizeof(*b->recs));
	if (b->ninos > 0 && (b->changes == NULL || b->recs == NULL))
		return -ENOMEM;
	for (size_t i = 0; i < b->ninos; i++) {
		b->changes[i].ino = b->inos[i];
		if (namespace_get(p->ns, b->inos[i], &b->recs[i]) == 0)
			b->changes[i].rec = &b->recs[i];
	}
	b->sb.versions = b->versions;
	b->sb.nversions = b->nversions;
	b->sb.changes = b->changes;
	b->sb.nchanges = b->ninos;
	b->sb.version = p->mem_version;
	b->sb.trash = b->trash.rows;
	b->sb.ntrash = b->trash.n;
	b->sb.next_ino = p->next_ino;
	memcpy(b->sb.digest, b->versions[b->nversions - 1].digest, DIGEST_LEN);
	return 0;
}

static void form_batches(struct committer *cm)
{
	struct primary *p = cm->p;
	while (cm->inflight == NULL && !TAILQ_EMPTY(&cm->queue)) {
		struct batch *b = calloc(1, sizeof(*b));
		if (b == NULL) {
			log_error("out of memory forming a commit batch");
			return;
		}
		TAILQ_INIT(&b->reqs);
		b->started_ns = mono_ns();
		int64_t now = primary_now_ns();
		size_t taken = 0;
		struct request *r;
		while (taken < p->cfg.max_batch_writes && (r = TAILQ_FIRST(&cm->queue)) != NULL) {
			TAILQ_REMOVE(&cm->queue, r, entry);
			cm->nqueued--;
			run_request(cm, b, r, now);
			TAILQ_INSERT_TAIL(&b->reqs, r, entry);
			taken++;
		}
		if (b->nversions == 0) {
			/* Only errors and no-ops: nothing to make durable. */
			send_replies(b);
			batch_free(b);
			primary_answer_parked(p);
			continue;
		}
		if (prepare_store_batch(cm, b) < 0)
			fatal("out of memory preparing a commit");
		cm->inflight = b;
		pthread_mutex_lock(&cm->lock);
		cm->job = b;
		pthread_cond_signal(&cm->cond);
		pthread_mutex_unlock(&cm->lock);
	}
}
