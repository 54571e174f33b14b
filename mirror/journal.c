#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "change.h"
#include "hash.h"
#include "msg.h"
#include "paths.h"

#define SNAP_MAGIC       "MPSNAP1\n"
#define SNAP_MAGIC_LEN   8
#define SNAP_TRAILER_LEN 32 /* SHA-256 of everything before it */
#define REC_HEADER_LEN   12 /* u32 length, u64 checksum */
#define REC_MAX          (64u << 20)
#define REC_SEED         0x6a6f75726e616c31ULL

struct journal {
	char *dir;
	int fd; /* current journal file, -1 before the first append */
	uint64_t file_start;
	uint64_t last_version;    /* last appended */
	uint64_t durable_version; /* last fsynced */
	size_t bytes_since_snapshot;
	uint64_t pending_snapshot; /* version a forked snapshot is writing */
	/* Appends gather here and reach the file in large writes: one or two
	 * syscalls per record would cap catch-up at a few hundred thousand
	 * versions a second. Nothing is promised before journal_sync. */
	uint8_t *buf;
	size_t buflen;
};

#define JOURNAL_BUF_SIZE  (1u << 20)
#define JOURNAL_BUF_FLUSH (256u << 10)

static int write_all(int fd, const uint8_t *p, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, p + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += (size_t)w;
	}
	return 0;
}

static int flush_buf(struct journal *j)
{
	if (j->buflen == 0 || j->fd < 0)
		return 0;
	int r = write_all(j->fd, j->buf, j->buflen);
	if (r == 0)
		j->buflen = 0;
	return r;
}

static int fail(char **ret_err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char **ret_err, int code, const char *fmt, ...)
{
	if (ret_err != NULL) {
		va_list ap;
		va_start(ap, fmt);
		if (vasprintf(ret_err, fmt, ap) < 0)
			*ret_err = NULL;
		va_end(ap);
	}
	return code;
}

static char *path_of(const struct journal *j, const char *kind, uint64_t v, const char *ext)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s-%020" PRIu64 "%s", j->dir, kind, v, ext) < 0)
		return NULL;
	return p;
}

static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int journal_open(const char *dir, struct journal **ret, char **ret_err)
{
	int r = paths_mkdirs(dir);
	if (r < 0)
		return fail(ret_err, r, "journal: cannot create %s: %s", dir, strerror(-r));
	struct journal *j = calloc(1, sizeof(*j));
	if (j == NULL || (j->dir = strdup(dir)) == NULL) {
		free(j);
		return fail(ret_err, -ENOMEM, "out of memory");
	}
	j->fd = -1;
	*ret = j;
	return 0;
}

void journal_close(struct journal *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0) {
		flush_buf(j);
		fdatasync(j->fd);
		close(j->fd);
	}
	free(j->buf);
	free(j->dir);
	free(j);
}

/* ---- directory listing ---- */

struct files {
	uint64_t *snaps;
	size_t nsnaps;
	uint64_t *journals;
	size_t njournals;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int push(uint64_t **arr, size_t *n, uint64_t v)
{
	uint64_t *a = realloc(*arr, (*n + 1) * sizeof(**arr));
	if (a == NULL)
		return -ENOMEM;
	a[(*n)++] = v;
	*arr = a;
	return 0;
}

static int list_files(struct journal *j, struct files *f)
{
	memset(f, 0, sizeof(*f));
	DIR *d = opendir(j->dir);
	if (d == NULL)
		return -errno;
	struct dirent *e;
	int r = 0;
	while ((e = readdir(d)) != NULL && r == 0) {
		uint64_t v;
		char tail[16];
		if (sscanf(e->d_name, "snapshot-%20" SCNu64 "%15s", &v, tail) == 2 &&
		    strcmp(tail, ".mps") == 0)
			r = push(&f->snaps, &f->nsnaps, v);
		else if (sscanf(e->d_name, "journal-%20" SCNu64 "%15s", &v, tail) == 2 &&
		         strcmp(tail, ".mpj") == 0)
			r = push(&f->journals, &f->njournals, v);
		else if (strstr(e->d_name, ".tmp") != NULL) {
			/* A snapshot that never finished. */
			char *p = NULL;
			if (asprintf(&p, "%s/%s", j->dir, e->d_name) >= 0) {
				unlink(p);
				free(p);
			}
		}
	}
	closedir(d);
	if (f->nsnaps)
		qsort(f->snaps, f->nsnaps, sizeof(uint64_t), cmp_u64);
	if (f->njournals)
		qsort(f->journals, f->njournals, sizeof(uint64_t), cmp_u64);
	return r;
}

static void files_free(struct files *f)
{
	free(f->snaps);
	free(f->journals);
}

/* ---- snapshots ---- */

struct snap_out {
	FILE *fp;
	EVP_MD_CTX *md;
	int err;
};

static int snap_write(void *data, const char *buf, size_t len)
{
	struct snap_out *o = data;
	if (fwrite(buf, 1, len, o->fp) != len)
		o->err = errno ? errno : EIO;
	EVP_DigestUpdate(o->md, buf, len);
	return 0;
}

static int snap_visit(void *arg, const struct node_rec *rec)
{
	msg_pack_node(arg, rec);
	return 0;
}

static int write_snapshot(const char *dir, const char *tmp, const char *final,
                          const struct namespace *ns, uint64_t version, uint64_t next_ino,
                          const char *cluster_id)
{
	struct snap_out o = {0};
	o.fp = fopen(tmp, "wb");
	if (o.fp == NULL)
		return -errno;
	o.md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(o.md, EVP_sha256(), NULL);
	snap_write(&o, SNAP_MAGIC, SNAP_MAGIC_LEN);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &o, snap_write);
	uint8_t digest[DIGEST_LEN];
	namespace_digest(ns, digest);
	msgpack_pack_map(&pk, 5);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	msg_pack_key(&pk, "digest");
	msg_pack_binn(&pk, digest, DIGEST_LEN);
	msg_pack_key(&pk, "next_ino");
	msgpack_pack_uint64(&pk, next_ino);
	msg_pack_key(&pk, "count");
	msgpack_pack_uint64(&pk, namespace_count(ns));
	msg_pack_key(&pk, "cluster_id");
	msg_pack_cstr(&pk, cluster_id);
	namespace_foreach(ns, snap_visit, &pk);
	uint8_t sum[SNAP_TRAILER_LEN];
	unsigned sumlen = 0;
	EVP_DigestFinal_ex(o.md, sum, &sumlen);
	EVP_MD_CTX_free(o.md);
	if (fwrite(sum, 1, sizeof(sum), o.fp) != sizeof(sum))
		o.err = errno ? errno : EIO;
	if (fflush(o.fp) != 0 || fsync(fileno(o.fp)) != 0)
		o.err = errno ? errno : EIO;
	if (fclose(o.fp) != 0 && o.err == 0)
		o.err = errno;
	if (o.err != 0) {
		unlink(tmp);
		return -o.err;
	}
	if (rename(tmp, final) < 0) {
		int e = errno;
		unlink(tmp);
		return -e;
	}
	sync_dir(dir);
	return 0;
}

/* Opens journal-<start>.mpj for appending, fsyncing the one it replaces. */
static int start_journal_file(struct journal *j, uint64_t start)
{
	if (j->fd >= 0) {
		flush_buf(j);
		fdatasync(j->fd);
		j->durable_version = j->last_version;
		close(j->fd);
		j->fd = -1;
	}
	char *p = path_of(j, "journal", start, ".mpj");
	if (p == NULL)
		return -ENOMEM;
	int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	free(p);
	if (fd < 0)
		return -errno;
	sync_dir(j->dir);
	j->fd = fd;
	j->file_start = start;
	return 0;
}

static void remove_older(struct journal *j, uint64_t snapshot_version)
{
	struct files f;
	if (list_files(j, &f) < 0)
		return;
	for (size_t i = 0; i < f.nsnaps; i++) {
		if (f.snaps[i] >= snapshot_version)
			continue;
		char *p = path_of(j, "snapshot", f.snaps[i], ".mps");
		if (p != NULL)
			unlink(p);
		free(p);
	}
	for (size_t i = 0; i < f.njournals; i++) {
		/* Journals starting at or before the snapshot hold nothing
		 * newer than it, except the one being appended to. */
		if (f.journals[i] > snapshot_version || f.journals[i] == j->file_start)
			continue;
		char *p = path_of(j, "journal", f.journals[i], ".mpj");
		if (p != NULL)
			unlink(p);
		free(p);
	}
	files_free(&f);
	sync_dir(j->dir);
}

int journal_snapshot(struct journal *j, const struct namespace *ns, uint64_t version,
                     uint64_t next_ino, const char *cluster_id, int in_process, char **ret_err)
{
	if (j->pending_snapshot != 0)
		return fail(ret_err, -EBUSY, "journal: a snapshot is already being written");
	char *tmp = path_of(j, "snapshot", version, ".tmp");
	char *final = path_of(j, "snapshot", version, ".mps");
	if (tmp == NULL || final == NULL) {
		free(tmp);
		free(final);
		return fail(ret_err, -ENOMEM, "out of memory");
	}
	/* New appends go to a journal that starts after the snapshot. */
	int r = start_journal_file(j, version + 1);
	if (r < 0) {
		free(tmp);
		free(final);
		return fail(ret_err, r, "journal: cannot start a new journal in %s: %s", j->dir,
		            strerror(-r));
	}
	j->bytes_since_snapshot = 0;
	if (in_process) {
		r = write_snapshot(j->dir, tmp, final, ns, version, next_ino, cluster_id);
		free(tmp);
		free(final);
		if (r < 0)
			return fail(ret_err, r, "journal: snapshot at version %llu failed: %s",
			            (unsigned long long)version, strerror(-r));
		remove_older(j, version);
		if (version > j->last_version)
			j->last_version = j->durable_version = version;
		return 0;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		free(tmp);
		free(final);
		return fail(ret_err, -errno, "journal: fork for a snapshot: %s", strerror(errno));
	}
	if (pid == 0) {
		/* The child sees the namespace as it was at fork time. */
		r = write_snapshot(j->dir, tmp, final, ns, version, next_ino, cluster_id);
		free(tmp);
		free(final);
		_exit(r < 0 ? 1 : 0);
	}
	free(tmp);
	free(final);
	j->pending_snapshot = version;
	return pid;
}

int journal_snapshot_done(struct journal *j, int exit_status, char **ret_err)
{
	uint64_t v = j->pending_snapshot;
	j->pending_snapshot = 0;
	if (!WIFEXITED(exit_status) || WEXITSTATUS(exit_status) != 0)
		return fail(ret_err, -EIO, "journal: writing the snapshot at version %llu failed",
		            (unsigned long long)v);
	remove_older(j, v);
	return 0;
}

/* ---- appends ---- */

int journal_append(struct journal *j, uint64_t version, const uint8_t *record, size_t len)
{
	if (len > REC_MAX)
		return -E2BIG;
	if (j->last_version != 0 && version != j->last_version + 1)
		return -ERANGE;
	if (j->fd < 0) {
		int r = start_journal_file(j, version);
		if (r < 0)
			return r;
	}
	uint8_t hdr[REC_HEADER_LEN];
	uint64_t sum = hash_bytes(record, len, REC_SEED);
	for (int i = 0; i < 4; i++)
		hdr[i] = (uint8_t)(len >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		hdr[4 + i] = (uint8_t)(sum >> (56 - 8 * i));
	if (j->buf == NULL && (j->buf = malloc(JOURNAL_BUF_SIZE)) == NULL)
		return -ENOMEM;
	if (j->buflen + sizeof(hdr) + len > JOURNAL_BUF_SIZE) {
		int r = flush_buf(j);
		if (r < 0)
			return r;
	}
	if (sizeof(hdr) + len > JOURNAL_BUF_SIZE) {
		int r = write_all(j->fd, hdr, sizeof(hdr));
		if (r == 0)
			r = write_all(j->fd, record, len);
		if (r < 0)
			return r;
	} else {
		memcpy(j->buf + j->buflen, hdr, sizeof(hdr));
		memcpy(j->buf + j->buflen + sizeof(hdr), record, len);
		j->buflen += sizeof(hdr) + len;
		if (j->buflen >= JOURNAL_BUF_FLUSH) {
			int r = flush_buf(j);
			if (r < 0)
				return r;
		}
	}
	j->last_version = version;
	j->bytes_since_snapshot += sizeof(hdr) + len;
	return 0;
}

int journal_sync(struct journal *j, uint64_t *ret_durable)
{
	if (j->fd >= 0 && j->durable_version != j->last_version) {
		int r = flush_buf(j);
		if (r < 0)
			return r;
		if (fdatasync(j->fd) < 0)
			return -errno;
		j->durable_version = j->last_version;
	}
	if (ret_durable != NULL)
		*ret_durable = j->durable_version;
	return 0;
}

int journal_flush(struct journal *j, int *ret_fd, uint64_t *ret_version)
{
	if (j->fd < 0) {
		*ret_fd = -1;
		*ret_version = j->durable_version;
		return 0;
	}
	int r = flush_buf(j);
	if (r < 0)
		return r;
	int fd = dup(j->fd);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	*ret_version = j->last_version;
	return 0;
}

void journal_set_durable(struct journal *j, uint64_t version)
{
	if (version > j->durable_version && version <= j->last_version)
		j->durable_version = version;
}

uint64_t journal_durable_version(const struct journal *j)
{
	return j->durable_version;
}

size_t journal_bytes_since_snapshot(const struct journal *j)
{
	return j->bytes_since_snapshot;
}

int journal_reset(struct journal *j)
{
	j->buflen = 0;
	if (j->fd >= 0) {
		close(j->fd);
		j->fd = -1;
	}
	struct files f;
	int r = list_files(j, &f);
	if (r < 0)
		return r;
	for (size_t i = 0; i < f.nsnaps; i++) {
		char *p = path_of(j, "snapshot", f.snaps[i], ".mps");
		if (p != NULL)
			unlink(p);
		free(p);
	}
	for (size_t i = 0; i < f.njournals; i++) {
		char *p = path_of(j, "journal", f.journals[i], ".mpj");
		if (p != NULL)
			unlink(p);
		free(p);
	}
	files_free(&f);
	sync_dir(j->dir);
	j->last_version = j->durable_version = 0;
	j->bytes_since_snapshot = 0;
	j->file_start = 0;
	return 0;
}

/* ---- loading ---- */

static int map_file(const char *path, uint8_t **ret, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	*ret_len = (size_t)st.st_size;
	if (st.st_size == 0) {
		*ret = NULL;
		close(fd);
		return 0;
	}
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return -errno;
	*ret = m;
	return 0;
}

static int load_snapshot(struct journal *j, uint64_t v, struct journal_state *st, char **ret_err)
{
	char *path = path_of(j, "snapshot", v, ".mps");
	if (path == NULL)
		return fail(ret_err, -ENOMEM, "out of memory");
	uint8_t *buf;
	size_t len;
	int r = map_file(path, &buf, &len);
	if (r < 0) {
		fail(ret_err, r, "journal: cannot read %s: %s", path, strerror(-r));
		free(path);
		return r;
	}
	char why[256];
	uint8_t sum[SNAP_TRAILER_LEN];
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	struct namespace *ns = NULL;
	r = -EBADMSG;
	if (len < SNAP_MAGIC_LEN + SNAP_TRAILER_LEN || memcmp(buf, SNAP_MAGIC, SNAP_MAGIC_LEN)) {
		fail(ret_err, r, "journal: %s is not a snapshot", path);
		goto out;
	}
	unsigned sumlen;
	EVP_Digest(buf, len - SNAP_TRAILER_LEN, sum, &sumlen, EVP_sha256(), NULL);
	if (memcmp(sum, buf + len - SNAP_TRAILER_LEN, SNAP_TRAILER_LEN) != 0) {
		fail(ret_err, r, "journal: %s fails its checksum", path);
		goto out;
	}
	size_t pos = SNAP_MAGIC_LEN, end = len - SNAP_TRAILER_LEN, used;
	if (msg_check(buf + pos, end - pos, 4, &used, why, sizeof(why)) < 0 ||
	    msg_unpack(buf + pos, used, &u, why, sizeof(why)) < 0) {
		fail(ret_err, r, "journal: %s header: %s", path, why);
		goto out;
	}
	pos += used;
	uint64_t version, next_ino, count;
	const char *cid, *digest;
	size_t cidlen, dlen;
	if (msg_get_u64(&u.data, "version", true, UINT64_MAX, &version, why, sizeof(why)) < 0 ||
	    msg_get_u64(&u.data, "next_ino", true, UINT64_MAX, &next_ino, why, sizeof(why)) < 0 ||
	    msg_get_u64(&u.data, "count", true, UINT64_MAX, &count, why, sizeof(why)) < 0 ||
	    msg_get_bytes(&u.data, "digest", true, DIGEST_LEN, DIGEST_LEN, &digest, &dlen, why,
	                  sizeof(why)) < 0 ||
	    msg_get_bytes(&u.data, "cluster_id", true, 1, JOURNAL_CLUSTER_ID_MAX, &cid, &cidlen,
	                  why, sizeof(why)) < 0 ||
	    version != v) {
		fail(ret_err, r, "journal: %s header: %s", path,
		     version != v ? "wrong version" : why);
		goto out;
	}
	ns = namespace_new();
	if (ns == NULL) {
		r = fail(ret_err, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < count; i++) {
		msgpack_unpacked n;
		struct node_rec rec;
		if (pos >= end || msg_check(buf + pos, end - pos, 4, &used, why, sizeof(why)) < 0 ||
		    msg_unpack(buf + pos, used, &n, why, sizeof(why)) < 0) {
			fail(ret_err, r, "journal: %s node %llu: %s", path, (unsigned long long)i,
			     pos >= end ? "missing" : why);
			goto out;
		}
		int lr = msg_parse_node(&n.data, &rec, why, sizeof(why));
		if (lr == 0)
			lr = namespace_load_node(ns, &rec);
		msgpack_unpacked_destroy(&n);
		if (lr < 0) {
			fail(ret_err, r, "journal: %s node %llu: %s", path, (unsigned long long)i,
			     lr == -EINVAL ? why : strerror(-lr));
			goto out;
		}
		pos += used;
	}
	if (pos != end || namespace_load_finish(ns, why, sizeof(why)) < 0) {
		fail(ret_err, r, "journal: %s: %s", path, pos != end ? "trailing bytes" : why);
		goto out;
	}
	uint8_t have[DIGEST_LEN];
	namespace_digest(ns, have);
	if (memcmp(have, digest, DIGEST_LEN) != 0) {
		fail(ret_err, r, "journal: %s: the nodes do not match the recorded digest", path);
		goto out;
	}
	st->ns = ns;
	ns = NULL;
	st->version = version;
	st->next_ino = next_ino;
	memcpy(st->digest, digest, DIGEST_LEN);
	snprintf(st->cluster_id, sizeof(st->cluster_id), "%.*s", (int)cidlen, cid);
	r = 0;
out:
	msgpack_unpacked_destroy(&u);
	namespace_free(ns);
	if (buf != NULL)
		munmap(buf, len);
	free(path);
	return r;
}

/* Replays one journal file. Returns 0, or -EBADMSG for corruption that is
 * not a torn tail. *ret_tail gets the offset of a torn tail (== len when
 * the file ends cleanly). */
static int replay_file(struct journal *j, uint64_t start, struct journal_state *st, bool last,
                       char **ret_err)
{
	char *path = path_of(j, "journal", start, ".mpj");
	if (path == NULL)
		return fail(ret_err, -ENOMEM, "out of memory");
	uint8_t *buf;
	size_t len;
	int r = map_file(path, &buf, &len);
	if (r < 0) {
		fail(ret_err, r, "journal: cannot read %s: %s", path, strerror(-r));
		free(path);
		return r;
	}
	size_t pos = 0;
	char why[300];
	r = 0;
	while (pos < len) {
		bool torn = len - pos < REC_HEADER_LEN;
		uint32_t rlen = 0;
		uint64_t sum = 0;
		if (!torn) {
			for (int i = 0; i < 4; i++)
				rlen = rlen << 8 | buf[pos + (size_t)i];
			for (int i = 0; i < 8; i++)
				sum = sum << 8 | buf[pos + 4 + (size_t)i];
			torn = rlen > REC_MAX || len - pos - REC_HEADER_LEN < rlen;
		}
		const uint8_t *rec = buf + pos + REC_HEADER_LEN;
		bool bad = !torn && hash_bytes(rec, rlen, REC_SEED) != sum;
		if (torn || bad) {
			/* Only the very end of the newest journal may be torn:
			 * the crash hit before those bytes were synced. */
			size_t rec_end = torn ? len : pos + REC_HEADER_LEN + rlen;
			if (last && rec_end == len) {
				st->truncated_bytes = len - pos;
				if (truncate(path, (off_t)pos) < 0)
					r = fail(ret_err, -errno,
					         "journal: cannot cut the torn tail of "
					         "%s: %s",
					         path, strerror(errno));
				break;
			}
			r = fail(ret_err, -EBADMSG, "journal: %s: record at byte %zu is corrupt",
			         path, pos);
			break;
		}
		/* Peek at the version without applying, to skip what the
		 * snapshot already holds. */
		msgpack_unpacked u;
		struct change_header h;
		if (msg_unpack(rec, rlen, &u, why, sizeof(why)) < 0 ||
		    msg_parse_change(&u.data, &h, why, sizeof(why)) < 0) {
			r = fail(ret_err, -EBADMSG, "journal: %s at byte %zu: %s", path, pos, why);
			break;
		}
		uint64_t v = h.version;
		msgpack_unpacked_destroy(&u);
		if (v > st->version) {
			uint64_t got;
			int ar = change_apply(st->ns, rec, rlen, st->version + 1, &got, NULL,
			                      &st->next_ino, why, sizeof(why));
			if (ar < 0) {
				r = fail(ret_err, -EBADMSG, "journal: %s at byte %zu: %s", path,
				         pos, why);
				break;
			}
			st->version = got;
			namespace_digest(st->ns, st->digest);
			st->replayed++;
		}
		pos += REC_HEADER_LEN + rlen;
	}
	j->bytes_since_snapshot += pos;
	if (buf != NULL)
		munmap(buf, len);
	free(path);
	return r;
}

int journal_load(struct journal *j, struct journal_state *ret, char **ret_err)
{
	struct files f;
	int r = list_files(j, &f);
	if (r < 0)
		return fail(ret_err, r, "journal: cannot list %s: %s", j->dir, strerror(-r));
	struct journal_state st;
	memset(&st, 0, sizeof(st));
	if (f.nsnaps == 0) {
		files_free(&f);
		if (f.njournals > 0)
			return fail(ret_err, -EBADMSG,
			            "journal: %s holds journals but no snapshot to replay them on",
			            j->dir);
		*ret = st;
		return 0;
	}
	uint64_t snap = f.snaps[f.nsnaps - 1];
	r = load_snapshot(j, snap, &st, ret_err);
	for (size_t i = 0; r == 0 && i < f.njournals; i++) {
		/* A journal that starts after the next version would leave a
		 * gap. */
		if (f.journals[i] > st.version + 1) {
			r = fail(ret_err, -EBADMSG,
			         "journal: versions %llu..%llu are missing in %s",
			         (unsigned long long)st.version + 1,
			         (unsigned long long)f.journals[i] - 1, j->dir);
			break;
		}
		r = replay_file(j, f.journals[i], &st, i + 1 == f.njournals, ret_err);
	}
	uint64_t last_start = f.njournals ? f.journals[f.njournals - 1] : 0;
	files_free(&f);
	if (r < 0) {
		namespace_free(st.ns);
		return r;
	}
	j->last_version = j->durable_version = st.version;
	/* Keep appending to the newest journal if it continues the state. */
	if (last_start != 0 && last_start <= st.version + 1) {
		char *p = path_of(j, "journal", last_start, ".mpj");
		int fd = p ? open(p, O_WRONLY | O_APPEND | O_CLOEXEC) : -1;
		free(p);
		if (fd >= 0) {
			j->fd = fd;
			j->file_start = last_start;
		}
	}
	*ret = st;
	return 0;
}
