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

#define TMP_PREFIX ".objstore-tmp."
#define ETAG_XATTR "user.mirrorplane.etag"
#define IO_CHUNK   (1024 * 1024)
#define LIST_DEPTH 64

struct objstore_file {
	struct objstore base;
	char *dir;
	int dirfd;
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

/* ETag of an open file: the stored attribute, or the MD5 of its bytes. */
static int fd_etag(int fd, char out[OBJSTORE_ETAG_MAX])
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

static int file_put(struct objstore *st, const char *key, const void *data, size_t len,
                    char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	struct objstore_file *f = F(st);
	char path[PATH_MAX], tmp[PATH_MAX + 32], parent[PATH_MAX], etag[OBJSTORE_ETAG_MAX];
	char *slash;
	int fd = -1, pfd = -1, rc;

	rc = file_path(st, key, path, sizeof(path), err);
	if (rc < 0)
		return rc;
	if (md5_hex(data, len, etag) < 0)
		return objstore_fail(err, -EIO, 0, "IOError", "MD5 unavailable");
	rc = make_parents(f->dirfd, path);
	if (rc < 0)
		return errno_fail(st, key, "mkdir", -rc, err);
	snprintf(parent, sizeof(parent), "%s", path);
	slash = strrchr(parent, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(parent, sizeof(parent), ".");
	for (int attempt = 0;; attempt++) {
		unsigned long r = ((unsigned long)random() << 16) ^ (unsigned long)getpid();
		snprintf(tmp, sizeof(tmp), "%s/%s%lx", parent, TMP_PREFIX, r);
		fd = openat(f->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0 || errno != EEXIST || attempt > 100)
			break;
	}
	if (fd < 0)
		return errno_fail(st, key, "create temporary file", errno, err);
	rc = write_all(st, fd, data, len);
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
		rc = fd_etag(fd, etag);
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

struct keylist {
	char **keys;
	size_t n, cap;
	const char *want; /* full prefix (store prefix + list prefix) */
};

static int keylist_add(struct keylist *kl, const char *path)
{
	if (kl->n == kl->cap) {
		size_t cap = kl->cap ? kl->cap * 2 : 64;
		char **k = realloc(kl->keys, cap * sizeof(*k));
		if (k == NULL)
			return -ENOMEM;
		kl->keys = k;
		kl->cap = cap;
	}
	kl->keys[kl->n] = strdup(path);
	if (kl->keys[kl->n] == NULL)
		return -ENOMEM;
	kl->n++;
	return 0;
}

/* Collects regular files under rel (relative to dirfd) whose path starts with kl->want. */
static int walk(int dirfd, const char *rel, int depth, struct keylist *kl)
{
	size_t rlen = strlen(rel), wlen = strlen(kl->want);
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (depth > LIST_DEPTH)
		return 0;
	/* Prune directories that cannot hold a matching key. */
	if (rlen > 0 && strncmp(rel, kl->want, rlen < wlen ? rlen : wlen) != 0)
		return 0;
	fd = openat(dirfd, rlen ? rel : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	while (rc == 0 && (de = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat sb;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s%s", rel, de->d_name) >= sizeof(path))
			continue;
		if (fstatat(dirfd, path, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(sb.st_mode)) {
			strcat(path, "/");
			rc = walk(dirfd, path, depth + 1, kl);
		} else if (S_ISREG(sb.st_mode) && strncmp(path, kl->want, wlen) == 0) {
			rc = keylist_add(kl, path);
		}
	}
	closedir(d);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int file_list(struct objstore *st, const char *prefix, const char *continuation,
                     int max_keys, objstore_list_cb cb, void *arg, char **ret_next,
                     struct objstore_error *err)
{
	char want[OBJSTORE_KEY_MAX * 2 + 2], etag[OBJSTORE_ETAG_MAX];
	struct keylist kl = {.want = want};
	size_t plen = strlen(st->prefix), i = 0;
	char *next = NULL;
	int emitted = 0, rc;

	snprintf(want, sizeof(want), "%s%s", st->prefix, prefix);
	rc = walk(F(st)->dirfd, "", 0, &kl);
	if (rc < 0) {
		rc = objstore_fail(err, rc, 0, "IOError", "%s: listing %s: %s", st->bucket, want,
		                   strerror(-rc));
		goto out;
	}
	if (kl.n > 1)
		qsort(kl.keys, kl.n, sizeof(*kl.keys), cmp_str);
	/* The token is the last key of the previous page (relative to the store prefix). */
	if (continuation)
		while (i < kl.n && strcmp(kl.keys[i] + plen, continuation) <= 0)
			i++;
	for (; i < kl.n && emitted < max_keys; i++) {
		struct objstore_entry e = {.key = kl.keys[i] + plen, .etag = etag};
		struct stat sb;
		int fd = openat(F(st)->dirfd, kl.keys[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue; /* deleted meanwhile */
		if (fstat(fd, &sb) < 0 || fd_etag(fd, etag) < 0) {
			close(fd);
			continue;
		}
		close(fd);
		e.size = (uint64_t)sb.st_size;
		rc = cb(arg, &e);
		if (rc < 0)
			goto out;
		emitted++;
	}
	if (i < kl.n && emitted > 0) {
		next = strdup(kl.keys[i - 1] + plen);
		if (next == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (ret_next)
		*ret_next = next;
	else
		free(next);
out:
	for (size_t j = 0; j < kl.n; j++)
		free(kl.keys[j]);
	free(kl.keys);
	return rc;
}

static void file_free(struct objstore *st)
{
	struct objstore_file *f = F(st);

	if (f->dirfd >= 0)
		close(f->dirfd);
	free(f->dir);
	free(f);
}

static const struct objstore_ops file_ops = {
    .get = file_get,
    .put = file_put,
    .put_multipart = file_put,
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
	f->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->dir == NULL || f->dirfd < 0) {
		int e = f->dir == NULL ? ENOMEM : errno;
		if (f->dirfd >= 0)
			close(f->dirfd);
		free(f->dir);
		free(f);
		return objstore_fail(err, -e, 0, e == ENOENT ? "NoSuchBucket" : "IOError",
		                     "file://%s: %s", dir, strerror(e));
	}
	*ret_st = &f->base;
	return 0;
}
