#include "blockstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "log.h"

enum queue { Q_SMALL = 1, Q_MAIN = 2, Q_GHOST = 3 };

struct entry {
	struct block_id id;
	uint64_t csum;
	/* The file as it was when its bytes last matched csum: a hit on an
	 * unchanged file within the verify interval skips the hash. */
	uint64_t v_ino;
	int64_t v_mtime_ns, v_ctime_ns, v_at_ns;
	uint32_t length;
	uint8_t dir;
	uint8_t freq;  /* hits since it entered its queue, at most 3 */
	uint8_t queue; /* enum queue */
	struct entry *hnext;
	TAILQ_ENTRY(entry) q;
};
TAILQ_HEAD(entry_queue, entry);

struct dir {
	char *path;
	int fd;
	uint64_t capacity, used, blocks;
	bool failed;
	char why[256];
	struct entry_queue small, main, ghost;
	uint64_t small_bytes;
	size_t nghost;
};

struct blockstore {
	pthread_mutex_t lock;
	int64_t verify_interval_ns;
	struct dir dirs[BLOCKSTORE_DIRS_MAX];
	size_t ndirs;
	unsigned min_free_pct;
	struct entry **table;
	size_t nbuckets, count; /* count: live and ghost entries */
	uint64_t evictions, corrupt, dir_failures;
};

/* Blocks live at DIR/h/hh/<id>-<length>-<checksum> (nginx's levels=1:2):
 * the name carries all the index needs. */
#define NAME_LEN (32 + 1 + 8 + 1 + 16)

static void block_name(const struct entry *e, char *out, size_t cap)
{
	snprintf(out, cap, "%x/%02x/%016" PRIx64 "%016" PRIx64 "-%08" PRIx32 "-%016" PRIx64,
	         (unsigned)(e->id.hi >> 60), (unsigned)((e->id.hi >> 52) & 0xff), e->id.hi,
	         e->id.lo, e->length, e->csum);
}

static size_t slot(const struct blockstore *bs, struct block_id id)
{
	return (size_t)(id.lo ^ (id.hi * 0x9e3779b97f4a7c15ull)) & (bs->nbuckets - 1);
}

static struct entry *find(struct blockstore *bs, struct block_id id)
{
	for (struct entry *e = bs->table[slot(bs, id)]; e != NULL; e = e->hnext)
		if (e->id.lo == id.lo && e->id.hi == id.hi)
			return e;
	return NULL;
}

static int grow(struct blockstore *bs)
{
	size_t nb = bs->nbuckets ? bs->nbuckets * 2 : 1024;
	struct entry **t = calloc(nb, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	struct entry **old = bs->table;
	size_t oldn = bs->nbuckets;
	bs->table = t;
	bs->nbuckets = nb;
	for (size_t i = 0; i < oldn; i++)
		for (struct entry *e = old[i], *next; e != NULL; e = next) {
			next = e->hnext;
			size_t s = slot(bs, e->id);
			e->hnext = t[s];
			t[s] = e;
		}
	free(old);
	return 0;
}

static void unhash(struct blockstore *bs, struct entry *e)
{
	for (struct entry **p = &bs->table[slot(bs, e->id)]; *p != NULL; p = &(*p)->hnext)
		if (*p == e) {
			*p = e->hnext;
			bs->count--;
			return;
		}
}

static struct entry_queue *queue_of(struct dir *d, struct entry *e)
{
	return e->queue == Q_SMALL ? &d->small : e->queue == Q_MAIN ? &d->main : &d->ghost;
}

/* Takes e out of its queue and its dir's accounting (not the hash). */
static void dequeue(struct blockstore *bs, struct entry *e)
{
	struct dir *d = &bs->dirs[e->dir];
	TAILQ_REMOVE(queue_of(d, e), e, q);
	if (e->queue == Q_GHOST) {
		d->nghost--;
		return;
	}
	if (e->queue == Q_SMALL)
		d->small_bytes -= e->length;
	d->used -= e->length;
	d->blocks--;
}

static void enqueue(struct dir *d, struct entry *e, enum queue q)
{
	e->queue = (uint8_t)q;
	e->freq = 0;
	TAILQ_INSERT_TAIL(queue_of(d, e), e, q);
	if (q == Q_GHOST) {
		d->nghost++;
		return;
	}
	if (q == Q_SMALL)
		d->small_bytes += e->length;
	d->used += e->length;
	d->blocks++;
}

static void unlink_block(struct dir *d, const struct entry *e)
{
	char name[NAME_LEN + 16];
	block_name(e, name, sizeof(name));
	if (unlinkat(d->fd, name, 0) < 0 && errno != ENOENT)
		log_warn("cache dir %s: unlink %s: %s", d->path, name, strerror(errno));
}

static void forget(struct blockstore *bs, struct entry *e)
{
	dequeue(bs, e);
	unhash(bs, e);
	free(e);
}

/* The ghost queue remembers about as many keys as the dir holds blocks. */
static void trim_ghosts(struct blockstore *bs, struct dir *d)
{
	while (d->nghost > 0 && d->nghost > d->blocks + 16)
		forget(bs, TAILQ_FIRST(&d->ghost));
}

/* One S3-FIFO step: frees one block of d (or moves one to main). Returns
 * false when there is nothing left to evict. */
static bool evict_step(struct blockstore *bs, struct dir *d)
{
	struct entry *e;
	if ((d->small_bytes > d->capacity / 10 || TAILQ_EMPTY(&d->main)) &&
	    (e = TAILQ_FIRST(&d->small)) != NULL) {
		dequeue(bs, e);
		if (e->freq > 0) {
			enqueue(d, e, Q_MAIN); /* read again while probationary */
			return true;
		}
		unlink_block(d, e);
		enqueue(d, e, Q_GHOST);
		bs->evictions++;
		trim_ghosts(bs, d);
		return true;
	}
	if ((e = TAILQ_FIRST(&d->main)) == NULL)
		return false;
	if (e->freq > 0) {
		uint8_t f = e->freq;
		dequeue(bs, e);
		enqueue(d, e, Q_MAIN);
		e->freq = (uint8_t)(f - 1);
		return true;
	}
	unlink_block(d, e);
	forget(bs, e);
	bs->evictions++;
	return true;
}

/* Bytes the file system wants freed to keep min_free_pct free. */
static uint64_t free_space_deficit(const struct blockstore *bs, const struct dir *d)
{
	if (bs->min_free_pct == 0)
		return 0;
	struct statvfs sv;
	if (fstatvfs(d->fd, &sv) < 0)
		return 0;
	uint64_t total = (uint64_t)sv.f_blocks * sv.f_frsize;
	uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	uint64_t want = total / 100 * bs->min_free_pct;
	return avail >= want ? 0 : want - avail;
}

static void fail_dir(struct blockstore *bs, struct dir *d, const char *what, int e)
{
	if (d->failed)
		return;
	d->failed = true;
	snprintf(d->why, sizeof(d->why), "%s: %s", what, strerror(e));
	bs->dir_failures++;
	log_error("cache dir %s out of service: %s; serving from the others", d->path, d->why);
	/* Its blocks are gone for us: the index forgets them. */
	struct entry *e2;
	while ((e2 = TAILQ_FIRST(&d->small)) != NULL)
		forget(bs, e2);
	while ((e2 = TAILQ_FIRST(&d->main)) != NULL)
		forget(bs, e2);
	while ((e2 = TAILQ_FIRST(&d->ghost)) != NULL)
		forget(bs, e2);
}

static int insert(struct blockstore *bs, struct entry *e, enum queue q)
{
	if (bs->count + 1 > bs->nbuckets && grow(bs) < 0)
		return -ENOMEM;
	size_t s = slot(bs, e->id);
	e->hnext = bs->table[s];
	bs->table[s] = e;
	bs->count++;
	enqueue(&bs->dirs[e->dir], e, q);
	return 0;
}

/* ---- the index, rebuilt from file names ---- */

static int hexval(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (x < 0)
			return -1;
		v = v << 4 | (uint64_t)x;
	}
	*ret = v;
	return 0;
}

static int parse_name(const char *name, struct entry *e)
{
	uint64_t len;
	if (strlen(name) != NAME_LEN || name[32] != '-' || name[41] != '-' ||
	    hexval(name, 16, &e->id.hi) < 0 || hexval(name + 16, 16, &e->id.lo) < 0 ||
	    hexval(name + 33, 8, &len) < 0 || hexval(name + 42, 16, &e->csum) < 0 || len == 0 ||
	    len > (64u << 20))
		return -1;
	e->length = (uint32_t)len;
	return 0;
}

static int scan_leaf(struct blockstore *bs, uint8_t di, const char *sub)
{
	struct dir *d = &bs->dirs[di];
	int fd = openat(d->fd, sub, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	DIR *dp = fdopendir(fd);
	if (dp == NULL) {
		close(fd);
		return -errno;
	}
	struct dirent *de;
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.') {
			if (strncmp(de->d_name, ".tmp-", 5) == 0)
				unlinkat(fd, de->d_name, 0); /* a fill a crash cut short */
			continue;
		}
		struct entry *e = calloc(1, sizeof(*e));
		if (e == NULL) {
			closedir(dp);
			return -ENOMEM;
		}
		if (parse_name(de->d_name, e) < 0) {
			free(e);
			continue;
		}
		e->dir = di;
		if (find(bs, e->id) != NULL) { /* the same block in two dirs */
			unlinkat(fd, de->d_name, 0);
			free(e);
			continue;
		}
		if (insert(bs, e, Q_MAIN) < 0) {
			free(e);
			closedir(dp);
			return -ENOMEM;
		}
	}
	closedir(dp);
	return 0;
}

static int scan_dir(struct blockstore *bs, uint8_t di)
{
	for (unsigned a = 0; a < 16; a++)
		for (unsigned b = 0; b < 256; b++) {
			char sub[8];
			snprintf(sub, sizeof(sub), "%x/%02x", a, b);
			int r = scan_leaf(bs, di, sub);
			if (r < 0)
				return r;
		}
	return 0;
}

int blockstore_open(const struct blockstore_dir_config *dirs, size_t n, unsigned min_free_pct,
                    struct blockstore **ret, char **why)
{
	if (n == 0 || n > BLOCKSTORE_DIRS_MAX)
		return asprintf(why, "cache dirs: want 1..%d, got %zu", BLOCKSTORE_DIRS_MAX, n) < 0
		           ? -ENOMEM
		           : -EINVAL;
	struct blockstore *bs = calloc(1, sizeof(*bs));
	if (bs == NULL || grow(bs) < 0) {
		free(bs);
		return -ENOMEM;
	}
	pthread_mutex_init(&bs->lock, NULL);
	bs->min_free_pct = min_free_pct;
	bs->verify_interval_ns = 60ll * 1000000000;
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		struct dir *d = &bs->dirs[i];
		TAILQ_INIT(&d->small);
		TAILQ_INIT(&d->main);
		TAILQ_INIT(&d->ghost);
		d->fd = -1;
		bs->ndirs = i + 1;
		d->path = strdup(dirs[i].path);
		if (d->path == NULL) {
			r = -ENOMEM;
			break;
		}
		if (mkdir(d->path, 0700) < 0 && errno != EEXIST) {
			r = -errno;
			asprintf(why, "cache dir %s: %s", d->path, strerror(errno));
			break;
		}
		d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct statvfs sv;
		if (d->fd < 0 || fstatvfs(d->fd, &sv) < 0) {
			r = -errno;
			asprintf(why, "cache dir %s: %s", d->path, strerror(errno));
			break;
		}
		d->capacity = dirs[i].capacity;
		if (d->capacity == 0)
			d->capacity = (uint64_t)sv.f_blocks * sv.f_frsize;
		for (size_t k = 0; k < i; k++)
			if (strcmp(bs->dirs[k].path, d->path) == 0) {
				r = -EINVAL;
				asprintf(why, "cache dir %s named twice", d->path);
			}
		if (r < 0)
			break;
		r = scan_dir(bs, (uint8_t)i);
		if (r < 0) {
			asprintf(why, "cache dir %s: rebuilding the index: %s", d->path,
			         strerror(-r));
			break;
		}
		while (d->used > d->capacity && evict_step(bs, d))
			;
	}
	if (r < 0) {
		blockstore_free(bs);
		return r;
	}
	*ret = bs;
	return 0;
}

void blockstore_free(struct blockstore *bs)
{
	if (bs == NULL)
		return;
	for (size_t i = 0; i < bs->nbuckets; i++)
		for (struct entry *e = bs->table[i], *next; e != NULL; e = next) {
			next = e->hnext;
			free(e);
		}
	free(bs->table);
	for (size_t i = 0; i < bs->ndirs; i++) {
		if (bs->dirs[i].fd >= 0)
			close(bs->dirs[i].fd);
		free(bs->dirs[i].path);
	}
	pthread_mutex_destroy(&bs->lock);
	free(bs);
}

/* ---- reads ---- */

static bool live(const struct entry *e)
{
	return e != NULL && (e->queue == Q_SMALL || e->queue == Q_MAIN);
}

bool blockstore_has(struct blockstore *bs, struct block_id id)
{
	pthread_mutex_lock(&bs->lock);
	bool has = live(find(bs, id));
	pthread_mutex_unlock(&bs->lock);
	return has;
}

/* Drops e if it is still the entry the reader found bad; returns -EIO
 * then, -ENOENT when it was evicted or replaced meanwhile (a plain miss). */
static int drop_bad(struct blockstore *bs, const struct entry *seen, const char *what)
{
	pthread_mutex_lock(&bs->lock);
	struct entry *e = find(bs, seen->id);
	bool still = live(e) && e->csum == seen->csum && e->length == seen->length;
	if (still) {
		struct dir *d = &bs->dirs[e->dir];
		log_warn("cache dir %s: block %016" PRIx64 "%016" PRIx64 " %s: dropped, refetching",
		         d->path, e->id.hi, e->id.lo, what);
		unlink_block(d, e);
		forget(bs, e);
		bs->corrupt++;
	}
	pthread_mutex_unlock(&bs->lock);
	return still ? -EIO : -ENOENT;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Notes that e's file, as st describes it, matched its checksum. */
static void note_verified(struct blockstore *bs, const struct entry *seen, const struct stat *st)
{
	pthread_mutex_lock(&bs->lock);
	struct entry *e = find(bs, seen->id);
	if (live(e) && e->csum == seen->csum) {
		e->v_ino = (uint64_t)st->st_ino;
		e->v_mtime_ns = ts_ns(&st->st_mtim);
		e->v_ctime_ns = ts_ns(&st->st_ctim);
		e->v_at_ns = now_ns();
	}
	pthread_mutex_unlock(&bs->lock);
}

/* 0 when the first length bytes of fd hash to csum, -EBADMSG when not,
 * -EIO when they cannot be read. Read in chunks into a buffer on the
 * stack rather than mapped: a mapping costs a page fault per page and a
 * TLB shootdown at munmap, which on a virtual machine made verifying a
 * 100 KiB block cost more than a millisecond. */
static int file_csum_matches(int fd, uint32_t length, uint64_t csum)
{
	char buf[64 * 1024];
	XXH3_state_t *st = XXH3_createState();
	if (st == NULL)
		return -EIO;
	int r = 0;
	XXH3_64bits_reset(st);
	for (uint64_t off = 0; off < length && r == 0;) {
		size_t want = length - off < sizeof(buf) ? (size_t)(length - off) : sizeof(buf);
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			r = -EIO;
		else {
			XXH3_64bits_update(st, buf, (size_t)n);
			off += (uint64_t)n;
		}
	}
	if (r == 0 && XXH3_64bits_digest(st) != csum)
		r = -EBADMSG;
	XXH3_freeState(st);
	return r;
}

int blockstore_get(struct blockstore *bs, struct block_id id, struct block_ref *ref)
{
	pthread_mutex_lock(&bs->lock);
	struct entry *e = find(bs, id);
	if (!live(e)) {
		pthread_mutex_unlock(&bs->lock);
		return -ENOENT;
	}
	if (e->freq < 3)
		e->freq++;
	struct entry seen = *e;
	struct dir *d = &bs->dirs[e->dir];
	int dfd = d->fd;
	pthread_mutex_unlock(&bs->lock);

	char name[NAME_LEN + 16];
	block_name(&seen, name, sizeof(name));
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		if (err == EIO) {
			pthread_mutex_lock(&bs->lock);
			fail_dir(bs, d, "read", err);
			pthread_mutex_unlock(&bs->lock);
			return -EIO;
		}
		/* Evicted meanwhile is a plain miss; gone from under us is
		 * damage. */
		return drop_bad(bs, &seen, "missing");
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != seen.length) {
		close(fd);
		return drop_bad(bs, &seen, "truncated");
	}
	/* The checksum is checked whenever the file may have changed since it
	 * last matched (another inode, mtime or ctime: any write or rename),
	 * and at least every verify interval, so the bytes are checked as
	 * they come from the disk rather than on every hit from the page
	 * cache. */
	bool unchanged = seen.v_at_ns != 0 && seen.v_ino == (uint64_t)st.st_ino &&
	                 seen.v_mtime_ns == ts_ns(&st.st_mtim) &&
	                 seen.v_ctime_ns == ts_ns(&st.st_ctim) &&
	                 now_ns() - seen.v_at_ns < bs->verify_interval_ns;
	if (!unchanged) {
		int r = file_csum_matches(fd, seen.length, seen.csum);
		if (r < 0) {
			close(fd);
			return drop_bad(bs, &seen, r == -EIO ? "unreadable" : "fails its checksum");
		}
		note_verified(bs, &seen, &st);
	}
	ref->fd = fd;
	ref->length = seen.length;
	ref->map = NULL;
	return 0;
}

void blockstore_set_verify_interval(struct blockstore *bs, uint64_t ms)
{
	pthread_mutex_lock(&bs->lock);
	bs->verify_interval_ns = (int64_t)ms * 1000000;
	pthread_mutex_unlock(&bs->lock);
}

void blockstore_release(struct block_ref *ref)
{
	if (ref->fd >= 0)
		close(ref->fd);
	ref->map = NULL;
	ref->fd = -1;
}

/* ---- writes ---- */

/* The dir a block goes to: rendezvous over the healthy dirs, weighted by
 * capacity, so that a block has one home while its dirs stay up. */
static int pick_dir(struct blockstore *bs, struct block_id id)
{
	int best = -1;
	double best_score = 0;
	for (size_t i = 0; i < bs->ndirs; i++) {
		struct dir *d = &bs->dirs[i];
		if (d->failed)
			continue;
		double s = hrw_score(id.hi, (uint64_t)i * 0x9e3779b97f4a7c15ull + 1,
		                     d->capacity >> 20 ? d->capacity >> 20 : 1);
		if (best < 0 || s > best_score) {
			best = (int)i;
			best_score = s;
		}
	}
	return best;
}

static int write_file(int dfd, const char *tmp, const void *data, uint32_t length)
{
	int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	const char *p = data;
	size_t left = length;
	while (left > 0) {
		ssize_t n = write(fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			unlinkat(dfd, tmp, 0);
			return -e;
		}
		p += n;
		left -= (size_t)n;
	}
	if (close(fd) < 0) {
		int e = errno;
		unlinkat(dfd, tmp, 0);
		return -e;
	}
	return 0;
}

static int make_levels(int dfd, const char *name)
{
	char sub[8];
	memcpy(sub, name, 1);
	sub[1] = '\0';
	if (mkdirat(dfd, sub, 0700) < 0 && errno != EEXIST)
		return -errno;
	memcpy(sub, name, 4);
	sub[4] = '\0';
	if (mkdirat(dfd, sub, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int blockstore_put(struct blockstore *bs, struct block_id id, const void *data, uint32_t length)
{
	if (length == 0 || length > (64u << 20))
		return -EINVAL; /* names carry at most 64 MiB; empty blocks are never asked for */
	struct entry *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	e->id = id;
	e->length = length;
	e->csum = XXH3_64bits(data, length);
	for (;;) {
		pthread_mutex_lock(&bs->lock);
		int di = pick_dir(bs, id);
		if (di < 0) {
			pthread_mutex_unlock(&bs->lock);
			free(e);
			return -ENOSPC;
		}
		struct dir *d = &bs->dirs[di];
		if (length > d->capacity) {
			pthread_mutex_unlock(&bs->lock);
			free(e);
			return -ENOSPC; /* larger than the dir itself: evicting would not help */
		}
		e->dir = (uint8_t)di;
		struct entry *old = find(bs, id);
		bool was_ghost = old != NULL && old->queue == Q_GHOST;
		if (old != NULL) {
			if (live(old))
				unlink_block(&bs->dirs[old->dir], old);
			forget(bs, old);
		}
		uint64_t deficit = free_space_deficit(bs, d);
		uint64_t target = d->capacity > length ? d->capacity - length : 0;
		uint64_t freed = 0, before;
		while ((d->used > target || freed < deficit) &&
		       (before = d->used, evict_step(bs, d)))
			freed += before - d->used;
		if (d->used > target) {
			pthread_mutex_unlock(&bs->lock);
			free(e);
			return -ENOSPC; /* the block is larger than the dir */
		}
		/* Reserve the space now; the file is written outside the lock. */
		d->used += length;
		int dfd = d->fd;
		pthread_mutex_unlock(&bs->lock);

		char name[NAME_LEN + 16], tmp[NAME_LEN + 40];
		block_name(e, name, sizeof(name));
		uint64_t rnd = 0;
		getrandom(&rnd, sizeof(rnd), 0);
		snprintf(tmp, sizeof(tmp), "%.4s/.tmp-%016" PRIx64, name, rnd);
		int r = make_levels(dfd, name);
		if (r == 0)
			r = write_file(dfd, tmp, data, length);
		if (r == 0 && renameat(dfd, tmp, dfd, name) < 0) {
			r = -errno;
			unlinkat(dfd, tmp, 0);
		}
		pthread_mutex_lock(&bs->lock);
		d->used -= length;
		if (r == 0 && !d->failed) {
			struct entry *raced = find(bs, id); /* a put of the same block meanwhile */
			if (raced != NULL)
				forget(bs, raced);
			r = insert(bs, e, was_ghost ? Q_MAIN : Q_SMALL);
			pthread_mutex_unlock(&bs->lock);
			if (r < 0)
				free(e);
			return r;
		}
		if (r == 0)
			r = -EIO; /* the dir failed while we wrote */
		if (r == -EIO || r == -ENOSPC || r == -EROFS || r == -EDQUOT)
			fail_dir(bs, d, "write", -r);
		pthread_mutex_unlock(&bs->lock);
		if (r != -EIO && r != -ENOSPC && r != -EROFS && r != -EDQUOT) {
			free(e);
			return r;
		}
		/* Try the next healthy dir. */
	}
}

void blockstore_drop(struct blockstore *bs, struct block_id id)
{
	pthread_mutex_lock(&bs->lock);
	struct entry *e = find(bs, id);
	if (live(e)) {
		unlink_block(&bs->dirs[e->dir], e);
		forget(bs, e);
	}
	pthread_mutex_unlock(&bs->lock);
}

void blockstore_stats(struct blockstore *bs, struct blockstore_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&bs->lock);
	for (size_t i = 0; i < bs->ndirs; i++) {
		const struct dir *d = &bs->dirs[i];
		ret->dirs++;
		if (d->failed) {
			ret->dirs_failed++;
			continue;
		}
		ret->blocks += d->blocks;
		ret->used += d->used;
		ret->capacity += d->capacity;
	}
	ret->evictions = bs->evictions;
	ret->corrupt = bs->corrupt;
	ret->dir_failures = bs->dir_failures;
	pthread_mutex_unlock(&bs->lock);
}

size_t blockstore_dir_stats(struct blockstore *bs, struct blockstore_dir_stats *out, size_t cap)
{
	pthread_mutex_lock(&bs->lock);
	size_t n = 0;
	for (; n < bs->ndirs && n < cap; n++) {
		const struct dir *d = &bs->dirs[n];
		out[n] = (struct blockstore_dir_stats){d->path,   d->used,   d->capacity,
		                                       d->blocks, d->failed, d->why};
	}
	pthread_mutex_unlock(&bs->lock);
	return n;
}

void blockstore_each(struct blockstore *bs, int (*cb)(void *arg, struct block_id id, uint32_t len),
                     void *arg)
{
	pthread_mutex_lock(&bs->lock);
	for (size_t i = 0; i < bs->ndirs; i++) {
		struct entry *e;
		TAILQ_FOREACH(e, &bs->dirs[i].main, q)
		if (cb(arg, e->id, e->length) != 0)
			goto out;
		TAILQ_FOREACH(e, &bs->dirs[i].small, q)
		if (cb(arg, e->id, e->length) != 0)
			goto out;
	}
out:
	pthread_mutex_unlock(&bs->lock);
}
