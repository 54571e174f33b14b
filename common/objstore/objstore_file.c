/* A local directory used as a bucket: key "a/b" is the file DIR/a/b. Writes go to a temporary
 * file in the target directory, are fsync'd and renamed into place, and the directory is fsync'd,
 * so a reader sees the old object or the new one, never a torn one. The ETag is the hex MD5 of the
 * content, as S3 gives for a single-part upload; it is kept in an extended attribute when the file
 * system allows and recomputed otherwise. */
#include "objstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <openssl/evp.h>

#define TMP_PREFIX   ".objstore-tmp."
#define ETAG_XATTR   "user.mirrorplane.etag"
#define STREAM_CHUNK (8u << 20) /* bytes held while a streamed object is written */
#define IO_CHUNK     (1024 * 1024)
#define LIST_DEPTH   64
#define SMALL_OBJECT (16 * 1024)

struct objstore_file {
	struct objstore base;
	char *dir;
	int dirfd;
	struct ldir *ldirs; /* LIST_DEPTH + 1: the last page's path, for the next page */
};

static struct objstore_file *F(struct objstore *st)
{
	return (struct objstore_file *)st;
}

/* Relative path of key under the directory; rejects anything that would leave it or alias. */
static int file_path(struct objstore *st, const char *key, char *out, size_t cap,
                     struct objstore_error *err)
{
	const char *p;
	int n;

	n = snprintf(out, cap, "%s%s", st->prefix, key);
	if (n < 0 || (size_t)n >= cap)
		return objstore_fail(err, -ENAMETOOLONG, 0, "InvalidKey", "%s: key too long",
		                     st->bucket);
	p = out;
	if (*p == '/')
		goto bad;
	while (*p) {
		const char *end = strchrnul(p, '/');
		size_t len = (size_t)(end - p);
		if (len == 0 || (len == 1 && p[0] == '.') ||
		    (len == 2 && p[0] == '.' && p[1] == '.'))
			goto bad;
		if (len > NAME_MAX || strncmp(p, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
			goto bad;
		if (*end == '\0')
			break;
		p = end + 1;
		if (*p == '\0')
			goto bad; /* trailing '/' */
	}
	return 0;
bad:
	return objstore_fail(err, -EINVAL, 0, "InvalidKey",
	                     "%s: key %s cannot be a file name (empty, '.', '..' or reserved "
	                     "component)",
	                     st->bucket, key);
}

static int errno_fail(struct objstore *st, const char *key, const char *what, int e,
                      struct objstore_error *err)
{
	const char *code = e == ENOENT ? "NoSuchKey" : e == EACCES ? "AccessDenied" : "IOError";

	return objstore_fail(err, -e, e == ENOENT ? 404 : 0, code, "%s/%s%s: %s: %s", st->bucket,
	                     st->prefix, key, what, strerror(e));
}

static void hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int md5_hex(const void *data, size_t len, char out[OBJSTORE_ETAG_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL))
		return -EIO;
	hex(md, mdlen, out);
	return 0;
}

/* ETag of an open file of `size` bytes: the stored attribute, or the MD5 of its bytes. */
static int fd_etag(int fd, uint64_t size, char out[OBJSTORE_ETAG_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	char *buf;
	ssize_t n;
	off_t off = 0;
	int rc = 0;

	n = fgetxattr(fd, ETAG_XATTR, out, OBJSTORE_ETAG_MAX - 1);
	if (n == 32) {
		out[n] = '\0';
		return 0;
	}
	if (size < SMALL_OBJECT) {
		/* Small objects, the common case of a listing: `size` bytes in one read (the
		 * ETag goes with the size the caller reports). */
		char small[SMALL_OBJECT];
		size_t got = 0;
		while (got < size) {
			n = pread(fd, small + got, size - got, (off_t)got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (n == 0)
				break; /* shrunk meanwhile: hash what is there now */
			got += (size_t)n;
		}
		if (got == size)
			return md5_hex(small, got, out);
	}
	ctx = EVP_MD_CTX_new();
	buf = malloc(IO_CHUNK);
	if (ctx == NULL || buf == NULL || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL)) {
		rc = -ENOMEM;
		goto out;
	}
	while ((n = pread(fd, buf, IO_CHUNK, off)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += n;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	hex(md, mdlen, out);
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return rc;
}

/* mkdir -p for the directories of relpath, under dirfd. */
static int make_parents(int dirfd, const char *relpath)
{
	char tmp[PATH_MAX];
	char *p;

	snprintf(tmp, sizeof(tmp), "%s", relpath);
	for (p = strchr(tmp, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdirat(dirfd, tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

/* Writes everything, reporting progress chunk by chunk. */
static int write_all(struct objstore *st, int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len > IO_CHUNK ? IO_CHUNK : len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
		objstore_report(st, (uint64_t)n);
	}
	return 0;
}

/* Writes the object through a temporary file, chunk by chunk as fill gives
 * it, hashing as it goes; fsync, rename, fsync of the directory. */
static int file_put_stream(struct objstore *st, const char *key, uint64_t len,
                           objstore_fill_cb fill, void *arg, char ret_etag[OBJSTORE_ETAG_MAX],
                           struct objstore_error *err)
{
	struct objstore_file *f = F(st);
	char path[PATH_MAX], tmp[PATH_MAX + 32], parent[PATH_MAX], etag[OBJSTORE_ETAG_MAX];
	char *slash;
	int fd = -1, pfd = -1, rc;

	rc = file_path(st, key, path, sizeof(path), err);
	if (rc < 0)
		return rc;
	rc = make_parents(f->dirfd, path);
	if (rc < 0)
		return errno_fail(st, key, "mkdir", -rc, err);
	snprintf(parent, sizeof(parent), "%s", path);
	slash = strrchr(parent, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(parent, sizeof(parent), ".");
	size_t chunk = len < STREAM_CHUNK ? (size_t)len : STREAM_CHUNK;
	char *buf = malloc(chunk ? chunk : 1);
	EVP_MD_CTX *md5 = EVP_MD_CTX_new();
	if (buf == NULL || md5 == NULL || !EVP_DigestInit_ex(md5, EVP_md5(), NULL)) {
		free(buf);
		EVP_MD_CTX_free(md5);
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	}
	for (int attempt = 0;; attempt++) {
		unsigned long r = ((unsigned long)random() << 16) ^ (unsigned long)getpid();
		snprintf(tmp, sizeof(tmp), "%s/%s%lx", parent, TMP_PREFIX, r);
		fd = openat(f->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0 || errno != EEXIST || attempt > 100)
			break;
	}
	if (fd < 0) {
		free(buf);
		EVP_MD_CTX_free(md5);
		return errno_fail(st, key, "create temporary file", errno, err);
	}
	int filled = 0;
	for (uint64_t off = 0; rc == 0 && off < len;) {
		size_t n = len - off < chunk ? (size_t)(len - off) : chunk;
		if ((rc = fill(arg, off, buf, n)) < 0) {
			filled = rc;
			break;
		}
		EVP_DigestUpdate(md5, buf, n);
		rc = write_all(st, fd, buf, n);
		off += n;
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_DigestFinal_ex(md5, md, &mdlen);
	hex(md, mdlen, etag);
	EVP_MD_CTX_free(md5);
	free(buf);
	if (rc == 0) {
		/* Best effort: without it the ETag is recomputed on read. */
		(void)fsetxattr(fd, ETAG_XATTR, etag, strlen(etag), 0);
		if (fsync(fd) < 0)
			rc = -errno;
	}
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && renameat(f->dirfd, tmp, f->dirfd, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(f->dirfd, tmp, 0);
		if (filled < 0)
			return objstore_fail(err, filled, 0, "SourceFailed",
			                     "%s/%s: the data to store could not be read: %s",
			                     st->bucket, key, strerror(-filled));
		return errno_fail(st, key, "write", -rc, err);
	}
	pfd = openat(f->dirfd, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0 || fsync(pfd) < 0)
		rc = -errno;
	if (pfd >= 0)
		close(pfd);
	if (rc < 0)
		return errno_fail(st, key, "fsync directory", -rc, err);
	if (ret_etag)
		memcpy(ret_etag, etag, strlen(etag) + 1);
	return 0;
}

static int fill_from_memory(void *arg, uint64_t offset, void *buf, size_t len)
{
	memcpy(buf, (const char *)arg + offset, len);
	return 0;
}

static int file_put(struct objstore *st, const char *key, const void *data, size_t len,
                    char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	return file_put_stream(st, key, len, fill_from_memory, (void *)data, ret_etag, err);
}

static int file_open_key(struct objstore *st, const char *key, int *ret_fd, struct stat *sb,
                         struct objstore_error *err)
{
	char path[PATH_MAX];
	int fd, rc;

	rc = file_path(st, key, path, sizeof(path), err);
	if (rc < 0)
		return rc;
	fd = openat(F(st)->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno_fail(st, key, "open", errno == ELOOP ? ENOENT : errno, err);
	if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
		close(fd);
		return errno_fail(st, key, "open", ENOENT, err);
	}
	*ret_fd = fd;
	return 0;
}

static int file_get(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
                    objstore_data_cb cb, void *arg, struct objstore_error *err)
{
	struct stat sb;
	uint64_t size, end;
	char *buf;
	int fd, rc;

	rc = file_open_key(st, key, &fd, &sb, err);
	if (rc < 0)
		return rc;
	size = (uint64_t)sb.st_size;
	if (offset >= size && !(offset == 0 && length == 0)) {
		close(fd);
		return objstore_fail(err, -ERANGE, 416, "InvalidRange",
		                     "%s/%s%s: range starts at %llu, object has %llu bytes",
		                     st->bucket, st->prefix, key, (unsigned long long)offset,
		                     (unsigned long long)size);
	}
	end = length == 0 || offset + length > size ? size : offset + length;
	buf = malloc(IO_CHUNK);
	if (buf == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while (offset < end) {
		size_t want = end - offset > IO_CHUNK ? IO_CHUNK : (size_t)(end - offset);
		ssize_t n = pread(fd, buf, want, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = errno_fail(st, key, "read", n < 0 ? errno : EIO, err);
			break;
		}
		rc = cb(arg, buf, (size_t)n);
		if (rc < 0)
			break;
		offset += (uint64_t)n;
	}
	free(buf);
	close(fd);
	return rc;
}

static int file_head(struct objstore *st, const char *key, uint64_t *ret_size,
                     char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	char etag[OBJSTORE_ETAG_MAX];
	struct stat sb;
	int fd, rc;

	rc = file_open_key(st, key, &fd, &sb, err);
	if (rc < 0)
		return rc;
	if (ret_etag) {
		rc = fd_etag(fd, (uint64_t)sb.st_size, etag);
		if (rc < 0) {
			close(fd);
			return errno_fail(st, key, "read", -rc, err);
		}
		memcpy(ret_etag, etag, strlen(etag) + 1);
	}
	close(fd);
	if (ret_size)
		*ret_size = (uint64_t)sb.st_size;
	return 0;
}

static int file_del(struct objstore *st, const char *key, struct objstore_error *err)
{
	char path[PATH_MAX];
	int rc;

	rc = file_path(st, key, path, sizeof(path), err);
	if (rc < 0)
		return rc;
	if (unlinkat(F(st)->dirfd, path, 0) < 0 && errno != ENOENT)
		return errno_fail(st, key, "unlink", errno, err);
	return 0;
}

/* ---- Listing ----
 *
 * Keys come out in S3's byte order without collecting and sorting the tree. Each directory's
 * entries are sorted by the key they stand for: a file "a" by "a", a directory "a" by "a/",
 * the start of every key below it (so "a-b" < directory "a" < "a0", as '-' < '/' < '0').
 * Visiting them in that order, depth first, yields keys in byte order. A page finds where
 * to start by binary search for the continuation token in each directory on its way down,
 * never enters a directory that cannot hold a wanted key, and stops at the first key past
 * max_keys, so a whole listing reads each directory about once. The sorted directories on
 * the path of the last page are kept for the next page while they are unchanged (same
 * inode, mtime and ctime): a flat directory of 100,000 files is read once, not per page. */

/* One directory entry: its name, plus '/' after it for a directory, is its sort key. */
struct lent {
	const char *name;
	uint16_t len;
	bool dir;
};

/* The entries of one directory, sorted. */
struct ldir {
	char *rel; /* NULL (unused), "" or "a/b/" */
	struct lent *ents;
	size_t n;
	char *names;
	dev_t dev;
	ino_t ino;
	struct timespec mtim, ctim;
};

static void ldir_clear(struct ldir *d)
{
	free(d->rel);
	free(d->ents);
	free(d->names);
	memset(d, 0, sizeof(*d));
}

static void ldirs_clear(struct objstore_file *f)
{
	for (int i = 0; i <= LIST_DEPTH; i++)
		ldir_clear(&f->ldirs[i]);
}

/* Byte i of an entry's sort key, or -1 past its end. */
static int lent_at(const struct lent *e, size_t i)
{
	if (i < e->len)
		return (unsigned char)e->name[i];
	return i == e->len && e->dir ? '/' : -1;
}

static int lent_cmp(const void *a, const void *b)
{
	const struct lent *x = a, *y = b;
	size_t m = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->name, y->name, m);

	/* Names in one directory differ, so the byte after the common part decides. */
	return c != 0 ? c : lent_at(x, m) - lent_at(y, m);
}

static int lent_cmp_str(const struct lent *e, const char *t)
{
	for (size_t i = 0;; i++) {
		int a = lent_at(e, i), b = (unsigned char)t[i];
		if (b == 0)
			return a < 0 ? 0 : 1;
		if (a != b)
			return a < 0 ? -1 : a - b;
	}
}

/* Whether a key the entry stands for can start with t: all of them do, or t starts with its
 * sort key (a directory). */
static bool lent_overlaps(const struct lent *e, const char *t)
{
	size_t n = strnlen(t, e->len + 1u);

	if (n <= e->len)
		return memcmp(e->name, t, n) == 0;
	return memcmp(e->name, t, e->len) == 0 && (e->dir ? t[e->len] == '/' : false);
}

/* Index of the first entry whose keys can be > t (strict) or >= t: the first that sorts after
 * (or at) t, or the directory just before it whose sort key t starts with. */
static size_t ldir_seek(const struct ldir *d, const char *t, bool strict)
{
	size_t lo = 0, hi = d->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = lent_cmp_str(&d->ents[mid], t);
		if (c < 0 || (strict && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && d->ents[lo - 1].dir && lent_overlaps(&d->ents[lo - 1], t))
		lo--;
	return lo;
}

static int ldir_read(struct ldir *d, int fd, const char *rel)
{
	size_t cap = 0, used = 0, ncap = 0;
	struct dirent *de;
	DIR *dir;
	int dfd = dup(fd), rc = 0;

	dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (dir == NULL) {
		rc = -errno;
		if (dfd >= 0)
			close(dfd);
		return rc;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(dir)) == NULL) {
			rc = -errno;
			break;
		}
		const char *name = de->d_name;
		size_t len = strlen(name);
		unsigned char type = de->d_type;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
		    strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0 || len > NAME_MAX)
			continue;
		if (type == DT_UNKNOWN) {
			struct stat sb;
			if (fstatat(fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			type = S_ISDIR(sb.st_mode)   ? DT_DIR
			       : S_ISREG(sb.st_mode) ? DT_REG
			                             : DT_UNKNOWN;
		}
		if (type != DT_DIR && type != DT_REG)
			continue; /* symbolic links and special files are not keys */
		if (d->n == ncap) {
			size_t c = ncap ? ncap * 2 : 64;
			struct lent *e = realloc(d->ents, c * sizeof(*e));
			if (e == NULL) {
				rc = -ENOMEM;
				break;
			}
			d->ents = e;
			ncap = c;
		}
		if (used + len + 1 > cap) {
			size_t c = cap ? cap * 2 : 4096;
			while (c < used + len + 1)
				c *= 2;
			char *p = realloc(d->names, c);
			if (p == NULL) {
				rc = -ENOMEM;
				break;
			}
			d->names = p;
			cap = c;
		}
		memcpy(d->names + used, name, len + 1);
		/* An offset until the names stop moving. */
		d->ents[d->n++] = (struct lent){.name = (const char *)(uintptr_t)used,
		                                .len = (uint16_t)len,
		                                .dir = type == DT_DIR};
		used += len + 1;
	}
	closedir(dir);
	if (rc == 0 && (d->rel = strdup(rel)) == NULL)
		rc = -ENOMEM;
	if (rc < 0) {
		ldir_clear(d);
		return rc;
	}
	for (size_t i = 0; i < d->n; i++)
		d->ents[i].name = d->names + (uintptr_t)d->ents[i].name;
	if (d->n > 1)
		qsort(d->ents, d->n, sizeof(*d->ents), lent_cmp);
	return 0;
}

/* The sorted entries of the open directory fd at rel, kept at depth for the next page. */
static int ldir_get(struct objstore_file *f, int depth, int fd, const char *rel, struct ldir **ret)
{
	struct ldir *d = &f->ldirs[depth];
	struct stat sb;
	int rc;

	/* Stat before reading: a change during the read shows on the next page. */
	if (fstat(fd, &sb) < 0)
		return -errno;
	if (d->rel == NULL || strcmp(d->rel, rel) != 0 || d->dev != sb.st_dev ||
	    d->ino != sb.st_ino || d->mtim.tv_sec != sb.st_mtim.tv_sec ||
	    d->mtim.tv_nsec != sb.st_mtim.tv_nsec || d->ctim.tv_sec != sb.st_ctim.tv_sec ||
	    d->ctim.tv_nsec != sb.st_ctim.tv_nsec) {
		ldir_clear(d);
		rc = ldir_read(d, fd, rel);
		if (rc < 0)
			return rc;
		d->dev = sb.st_dev;
		d->ino = sb.st_ino;
		d->mtim = sb.st_mtim;
		d->ctim = sb.st_ctim;
	}
	*ret = d;
	return 0;
}

struct lwalk {
	struct objstore_file *f;
	const char *want; /* keys start with this (store prefix + list prefix) */
	size_t wlen;
	const char *after; /* and sort after this (store prefix + token), or NULL */
	int max_keys, emitted;
	bool more;   /* a key past this page exists */
	int cb_rc;   /* what the callback stopped the listing with */
	size_t plen; /* of the store prefix, cut from the keys given */
	objstore_list_cb cb;
	void *arg;
	char last[PATH_MAX]; /* the last key given */
	char path[PATH_MAX]; /* the directory being walked, then each entry's path */
};

/* The file name in directory fd, whose key is w->path (len bytes). */
static int lwalk_file(struct lwalk *w, int fd, const char *name, size_t len)
{
	char etag[OBJSTORE_ETAG_MAX];
	struct stat sb;
	int ffd, rc;

	if (w->after && strcmp(w->path, w->after) <= 0)
		return 0;
	if (w->emitted == w->max_keys) {
		w->more = true;
		return 1;
	}
	/* O_NONBLOCK: a FIFO put there meanwhile must not hang the listing. */
	ffd = openat(fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (ffd < 0)
		return 0; /* deleted meanwhile */
	if (fstat(ffd, &sb) < 0 || !S_ISREG(sb.st_mode) ||
	    fd_etag(ffd, (uint64_t)sb.st_size, etag) < 0) {
		close(ffd);
		return 0;
	}
	close(ffd);
	struct objstore_entry e = {
	    .key = w->path + w->plen, .size = (uint64_t)sb.st_size, .etag = etag};
	rc = w->cb(w->arg, &e);
	if (rc < 0) {
		w->cb_rc = rc;
		return rc;
	}
	w->emitted++;
	memcpy(w->last, w->path, len + 1);
	return 0;
}

/* Walks the directory w->path (rlen bytes, "" or ending with '/'). 0 when it is done, 1 when
 * the page is full, or a negative errno. */
static int lwalk_dir(struct lwalk *w, size_t rlen, int depth)
{
	const char *wrest = rlen < w->wlen ? w->want + rlen : NULL;
	struct ldir *d = NULL;
	size_t i = 0;
	int fd, rc;

	if (depth > LIST_DEPTH)
		return 0;
	fd = openat(w->f->dirfd, rlen ? w->path : ".",
	            O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR || errno == ELOOP ? 0 : -errno;
	rc = ldir_get(w->f, depth, fd, w->path, &d);
	if (rc < 0)
		goto out;
	if (w->after && strncmp(w->after, w->path, rlen) == 0)
		i = ldir_seek(d, w->after + rlen, true);
	if (wrest) {
		size_t j = ldir_seek(d, wrest, false);
		i = j > i ? j : i;
	}
	for (; i < d->n; i++) {
		const struct lent *e = &d->ents[i];
		size_t len = rlen + e->len + (e->dir ? 1 : 0);
		if (wrest && !lent_overlaps(e, wrest)) {
			if (lent_cmp_str(e, wrest) > 0)
				break; /* past every wanted key */
			continue;
		}
		if (len >= sizeof(w->path))
			continue;
		memcpy(w->path + rlen, e->name, e->len);
		if (e->dir)
			w->path[rlen + e->len] = '/';
		w->path[len] = '\0';
		if (!e->dir)
			rc = lwalk_file(w, fd, e->name, len);
		else if (w->after == NULL || strcmp(w->path, w->after) > 0 ||
		         strncmp(w->after, w->path, len) == 0)
			rc = lwalk_dir(w, len, depth + 1);
		if (rc != 0)
			break;
	}
	w->path[rlen] = '\0';
out:
	close(fd);
	return rc;
}

static int file_list(struct objstore *st, const char *prefix, const char *continuation,
                     int max_keys, objstore_list_cb cb, void *arg, char **ret_next,
                     struct objstore_error *err)
{
	char want[OBJSTORE_KEY_MAX + 2], after[OBJSTORE_KEY_MAX + 4098];
	struct objstore_file *f = F(st);
	struct lwalk *w;
	char *next = NULL;
	int rc;

	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	snprintf(want, sizeof(want), "%s%s", st->prefix, prefix);
	if (continuation)
		snprintf(after, sizeof(after), "%s%s", st->prefix, continuation);
	*w = (struct lwalk){.f = f,
	                    .want = want,
	                    .wlen = strlen(want),
	                    .after = continuation ? after : NULL,
	                    .max_keys = max_keys,
	                    .plen = strlen(st->prefix),
	                    .cb = cb,
	                    .arg = arg};
	/* A new listing reads the tree afresh. */
	if (continuation == NULL)
		ldirs_clear(f);
	rc = lwalk_dir(w, 0, 0);
	if (rc < 0 && w->cb_rc == 0)
		rc = objstore_fail(err, rc, 0, "IOError", "%s: listing %s: %s", st->bucket, want,
		                   strerror(-rc));
	if (rc >= 0 && w->more && (next = strdup(w->last + w->plen)) == NULL)
		rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	if (rc < 0 || next == NULL)
		ldirs_clear(f); /* the listing is over */
	free(w);
	if (rc < 0)
		return rc;
	if (ret_next)
		*ret_next = next;
	else
		free(next);
	return 0;
}

static void file_free(struct objstore *st)
{
	struct objstore_file *f = F(st);

	if (f->dirfd >= 0)
		close(f->dirfd);
	if (f->ldirs)
		ldirs_clear(f);
	free(f->ldirs);
	free(f->dir);
	free(f);
}

static const struct objstore_ops file_ops = {
    .get = file_get,
    .put = file_put,
    .put_multipart = file_put,
    .put_stream = file_put_stream,
    .head = file_head,
    .del = file_del,
    .list = file_list,
    .free = file_free,
};

int objstore_file_new(const char *dir, const char *prefix, struct objstore **ret_st,
                      struct objstore_error *err)
{
	struct objstore_file *f = calloc(1, sizeof(*f));

	(void)prefix;
	if (f == NULL)
		return -ENOMEM;
	f->base.ops = &file_ops;
	f->dir = strdup(dir);
	f->ldirs = calloc(LIST_DEPTH + 1, sizeof(*f->ldirs));
	f->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->dir == NULL || f->ldirs == NULL || f->dirfd < 0) {
		int e = f->dir == NULL || f->ldirs == NULL ? ENOMEM : errno;
		if (f->dirfd >= 0)
			close(f->dirfd);
		free(f->ldirs);
		free(f->dir);
		free(f);
		return objstore_fail(err, -e, 0, e == ENOENT ? "NoSuchBucket" : "IOError",
		                     "file://%s: %s", dir, strerror(e));
	}
	*ret_st = &f->base;
	return 0;
}
