/* mp mount: the low-level FUSE operations over libmirrorplane (model:
 * libfuse's example/passthrough_ll.c). */
#define FUSE_USE_VERSION 312

#include "mount.h"
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOUNT_BUCKETS  4096
#define MOUNT_FETCHERS 8        /* threads fetching windows ahead of readers */
#define MOUNT_FRESH    64       /* nodes a lookup just fetched, for the open that follows */
#define MOUNT_FRESH_NS 50000000 /* how long one serves an open (50 ms) */
#define MOUNT_POLL_MAX 2000     /* inodes checked per remote change */

/* An inode the kernel knows: its path as last looked up. */
struct inode {
	uint64_t ino;
	uint64_t parent;
	char *path;
	uint64_t nlookup;
	int64_t ctime_ns; /* as last reported to the kernel */
	/* The version last opened: the kernel may keep its cached pages at the
	 * next open while the file still has it. */
	int64_t open_ctime_ns, open_mtime_ns;
	uint64_t open_size;
	struct inode *next;
};

/* An open file: the version opened for reads, a staging file for writes. */
struct handle {
	pthread_mutex_t lock;
	char *path;
	struct reader *reader; /* opened for reading */
	int fd;                /* staging file, -1 when opened for reading */
	bool dirty;
	/* Open handles are listed, so that those the kernel never released
	 * (an unmount right after a close) are uploaded and freed at exit. */
	struct mount *owner;
	struct handle *prev, *next;
};

/* A directory listing, taken whole at opendir so that offsets are stable. */
struct dir_entry {
	char *name;
	mp_node node; /* without extents */
};
struct dir_handle {
	struct dir_entry *entries;
	size_t n, cap;
	struct mount *owner; /* listed while open, as file handles are */
	struct dir_handle *prev, *next;
};

struct mount {
	struct mount_options o;
	char *mountpoint;
	char *staging_dir;
	struct fuse_session *se;
	bool mounted;
	mp_client *client;
	struct fetch_pool *pool; /* fetches ahead of sequential readers */
	uint64_t root_ino;       /* the namespace's root inode, FUSE_ROOT_ID to the kernel */

	pthread_mutex_t lock; /* the inode table, and fresh */
	struct inode *table[MOUNT_BUCKETS];
	/* The file nodes lookups fetched last: an open right after its lookup
	 * (open(2) of a path: the kernel's lookup, then open) takes the node
	 * from here instead of asking the mirror a second time. */
	struct fresh_node {
		uint64_t ino; /* 0: empty */
		int64_t at_ns;
		mp_node node;
	} fresh[MOUNT_FRESH];
	unsigned fresh_next;

	pthread_t poller;
	bool poller_running;
	pthread_mutex_t poll_lock;
	pthread_cond_t poll_cond;
	bool stopping;

	pthread_mutex_t open_lock; /* the lists of open handles */
	struct handle *open_files;
	struct dir_handle *open_dirs;
};

/* Adds x to or removes it from a doubly linked list at *head. */
#define OPEN_LINK(head, x)                                                                         \
	do {                                                                                       \
		(x)->prev = NULL;                                                                  \
		(x)->next = *(head);                                                               \
		if (*(head) != NULL)                                                               \
			(*(head))->prev = (x);                                                     \
		*(head) = (x);                                                                     \
	} while (0)
#define OPEN_UNLINK(head, x)                                                                       \
	do {                                                                                       \
		if ((x)->prev != NULL)                                                             \
			(x)->prev->next = (x)->next;                                               \
		else                                                                               \
			*(head) = (x)->next;                                                       \
		if ((x)->next != NULL)                                                             \
			(x)->next->prev = (x)->prev;                                               \
	} while (0)

static void mount_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mount_log(const char *fmt, ...)
{
	char when[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s mp-mount: ", when);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void mount_errf(mp_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mount_errf(mp_error *err, int code, const char *fmt, ...)
{
	if (err == NULL)
		return;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/* ---- inode table ---- */

static uint64_t mount_fuse_ino(struct mount *m, uint64_t ino)
{
	return ino == m->root_ino ? FUSE_ROOT_ID : ino;
}

static struct inode **mount_slot(struct mount *m, uint64_t ino)
{
	struct inode **p = &m->table[(ino * 0x9E3779B97F4A7C15ull) >> 52 & (MOUNT_BUCKETS - 1)];
	while (*p != NULL && (*p)->ino != ino)
		p = &(*p)->next;
	return p;
}

/* The path of a FUSE inode, malloc'd; NULL when the kernel sent one it was
 * never told about (or out of memory). */
static char *mount_path_of(struct mount *m, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return strdup("/");
	pthread_mutex_lock(&m->lock);
	struct inode *in = *mount_slot(m, ino);
	char *p = in != NULL ? strdup(in->path) : NULL;
	pthread_mutex_unlock(&m->lock);
	return p;
}

static char *mount_join(const char *dir, const char *name)
{
	char *out = NULL;
	if (asprintf(&out, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", name) < 0)
		return NULL;
	return out;
}

/* Records one more kernel reference to the node at path. */
static int mount_remember(struct mount *m, const mp_node *n, const char *path)
{
	uint64_t ino = mount_fuse_ino(m, n->ino);
	if (ino == FUSE_ROOT_ID)
		return 0;
	pthread_mutex_lock(&m->lock);
	struct inode **slot = mount_slot(m, ino);
	struct inode *in = *slot;
	if (in == NULL) {
		in = calloc(1, sizeof(*in));
		if (in == NULL) {
			pthread_mutex_unlock(&m->lock);
			return -ENOMEM;
		}
		in->ino = ino;
		*slot = in;
	}
	/* A lookup names the node's current path: after a rename elsewhere
	 * the old one may be stale. */
	if (in->path == NULL || strcmp(in->path, path) != 0) {
		char *p = strdup(path);
		if (p != NULL) {
			free(in->path);
			in->path = p;
		}
	}
	in->parent = mount_fuse_ino(m, n->parent);
	in->ctime_ns = n->ctime_ns;
	in->nlookup++;
	int rc = in->path != NULL ? 0 : -ENOMEM;
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static void mount_forget_one(struct mount *m, fuse_ino_t ino, uint64_t n)
{
	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&m->lock);
	struct inode **slot = mount_slot(m, ino);
	struct inode *in = *slot;
	if (in != NULL) {
		in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
		if (in->nlookup == 0) {
			*slot = in->next;
			free(in->path);
			free(in);
		}
	}
	pthread_mutex_unlock(&m->lock);
}

/* After a rename: every known path at or below from now lives below to. */
static void mount_repath(struct mount *m, const char *from, const char *to)
{
	size_t fl = strlen(from);
	pthread_mutex_lock(&m->lock);
	for (size_t b = 0; b < MOUNT_BUCKETS; b++)
		for (struct inode *in = m->table[b]; in != NULL; in = in->next) {
			if (strncmp(in->path, from, fl) != 0 ||
			    (in->path[fl] != '\0' && in->path[fl] != '/'))
				continue;
			char *p = NULL;
			if (asprintf(&p, "%s%s", to, in->path + fl) < 0)
				continue;
			free(in->path);
			in->path = p;
		}
	pthread_mutex_unlock(&m->lock);
}

/* ---- replies ---- */

/* What the kernel gets for a library error. Errors of transport (every
 * server failed) become EIO: the only way an application can tell. */
static int mount_errno(int rc)
{
	switch (-rc) {
	case ENOENT:
	case EEXIST:
	case ENOTEMPTY:
	case EISDIR:
	case ENOTDIR:
	case EACCES:
	case EPERM:
	case EROFS:
	case EINVAL:
	case ENOMEM:
	case ENOSPC:
	case ENAMETOOLONG:
	case EXDEV:
	case EFBIG:
	case EDQUOT:
		return -rc;
	default:
		return EIO;
	}
}

static void mount_fail(fuse_req_t req, const char *op, const char *path, int rc,
                       const mp_error *err)
{
	int e = mount_errno(rc);
	/* A read-only token: the file system is read-only to this mount. */
	if (rc == -EACCES && err != NULL && strstr(err->message, "does not allow writes") != NULL)
		e = EROFS;
	if (e == EIO)
		mount_log("%s %s: %s", op, path != NULL ? path : "?",
		          err != NULL && err->message[0] ? err->message : strerror(-rc));
	fuse_reply_err(req, e);
}

static void mount_attr(struct mount *m, const mp_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = mount_fuse_ino(m, n->ino);
	mode_t type = n->type == MP_TYPE_DIR       ? S_IFDIR
	              : n->type == MP_TYPE_SYMLINK ? S_IFLNK
	                                           : S_IFREG;
	st->st_mode = type | (n->mode & 07777);
	st->st_nlink = n->type == MP_TYPE_DIR ? 2 : 1;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_size = n->type == MP_TYPE_SYMLINK && n->target != NULL ? (off_t)strlen(n->target)
	                                                              : (off_t)n->size;
	st->st_blksize = 1 << 20;
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_mtim.tv_sec = n->mtime_ns / 1000000000;
	st->st_mtim.tv_nsec = n->mtime_ns % 1000000000;
	st->st_ctim.tv_sec = n->ctime_ns / 1000000000;
	st->st_ctim.tv_nsec = n->ctime_ns % 1000000000;
	st->st_atim = st->st_mtim;
}

static int mount_entry(struct mount *m, const mp_node *n, const char *path,
                       struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	int rc = mount_remember(m, n, path);
	if (rc < 0)
		return rc;
	e->ino = mount_fuse_ino(m, n->ino);
	e->attr_timeout = m->o.attr_timeout;
	e->entry_timeout = m->o.entry_timeout;
	mount_attr(m, n, &e->attr);
	return 0;
}

/* Stats path and replies with its entry (one more lookup reference). */
static int64_t mount_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Keeps a file's node a lookup fetched (moved: *n is zeroed). */
static void mount_fresh_put(struct mount *m, mp_node *n)
{
	pthread_mutex_lock(&m->lock);
	struct fresh_node *f = &m->fresh[m->fresh_next++ % MOUNT_FRESH];
	mp_node_clear(&f->node);
	f->ino = mount_fuse_ino(m, n->ino);
	f->at_ns = mount_now_ns();
	f->node = *n;
	memset(n, 0, sizeof(*n));
	pthread_mutex_unlock(&m->lock);
}

/* The node of ino a lookup fetched within MOUNT_FRESH_NS, moved to *ret
 * (each serves one open); false when there is none. */
static bool mount_fresh_take(struct mount *m, fuse_ino_t ino, mp_node *ret)
{
	bool found = false;
	int64_t now = mount_now_ns();
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < MOUNT_FRESH && !found; i++) {
		struct fresh_node *f = &m->fresh[i];
		if (f->ino != ino || now - f->at_ns > MOUNT_FRESH_NS)
			continue;
		*ret = f->node;
		memset(&f->node, 0, sizeof(f->node));
		f->ino = 0;
		found = true;
	}
	pthread_mutex_unlock(&m->lock);
	return found;
}

static void mount_reply_entry(fuse_req_t req, struct mount *m, const char *op, const char *path)
{
	mp_node n = {0};
	mp_error err = {0};
	struct fuse_entry_param e;
	int rc = mp_stat(m->client, path, NULL, &n, &err);
	if (rc == 0)
		rc = mount_entry(m, &n, path, &e);
	if (rc == 0 && n.type == MP_TYPE_FILE)
		mount_fresh_put(m, &n);
	mp_node_clear(&n);
	if (rc < 0)
		mount_fail(req, op, path, rc, &err);
	else
		fuse_reply_entry(req, &e);
}

/* ---- metadata ---- */

static void mount_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_EXPORT_SUPPORT)
		conn->want |= FUSE_CAP_EXPORT_SUPPORT;
	/* open(O_TRUNC) arrives as such, not as a truncate (a commit of an
	 * empty file) before the open. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->max_readahead = 1 << 20;
}

static void mount_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mount *m = fuse_req_userdata(req);
	char *dir = mount_path_of(m, parent);
	char *path = dir != NULL ? mount_join(dir, name) : NULL;
	if (path == NULL)
		fuse_reply_err(req, dir == NULL ? ESTALE : ENOMEM);
	else
		mount_reply_entry(req, m, "lookup", path);
	free(path);
	free(dir);
}

static void mount_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	mount_forget_one(fuse_req_userdata(req), ino, nlookup);
	fuse_reply_none(req);
}

static void mount_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct mount *m = fuse_req_userdata(req);
	for (size_t i = 0; i < count; i++)
		mount_forget_one(m, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/* Answers a getattr or setattr with n's attributes; a file being written
 * through h reports what the writer sees. */
static void mount_reply_attr(fuse_req_t req, struct mount *m, const mp_node *n,
                             const struct handle *h)
{
	struct stat st;
	mount_attr(m, n, &st);
	struct stat local;
	if (h != NULL && h->fd >= 0 && fstat(h->fd, &local) == 0)
		st.st_size = local.st_size;
	fuse_reply_attr(req, &st, m->o.attr_timeout);
}

static void mount_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mount *m = fuse_req_userdata(req);
	char *path = mount_path_of(m, ino);
	if (path == NULL) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	mp_node n = {0};
	mp_error err = {0};
	int rc = mp_stat(m->client, path, NULL, &n, &err);
	if (rc < 0) {
		mount_fail(req, "getattr", path, rc, &err);
	} else {
		mount_reply_attr(req, m, &n,
		                 fi != NULL ? (struct handle *)(uintptr_t)fi->fh : NULL);
	}
	mp_node_clear(&n);
	free(path);
}

static void mount_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct mount *m = fuse_req_userdata(req);
	char *path = mount_path_of(m, ino);
	if (path == NULL) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	mp_node n = {0};
	mp_error err = {0};
	int rc = mp_stat(m->client, path, NULL, &n, &err);
	if (rc < 0)
		mount_fail(req, "readlink", path, rc, &err);
	else if (n.type != MP_TYPE_SYMLINK || n.target == NULL)
		fuse_reply_err(req, EINVAL);
	else
		fuse_reply_readlink(req, n.target);
	mp_node_clear(&n);
	free(path);
}

static int mount_dir_add(void *arg, const mp_node *entry)
{
	struct dir_handle *d = arg;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct dir_entry *e = realloc(d->entries, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		d->entries = e;
		d->cap = cap;
	}
	struct dir_entry *e = &d->entries[d->n];
	memset(e, 0, sizeof(*e));
	e->name = strdup(entry->name);
	if (e->name == NULL)
		return -ENOMEM;
	e->node = *entry;
	e->node.name = NULL;
	e->node.extents = NULL;
	e->node.n_extents = 0;
	e->node.target = entry->target != NULL ? strdup(entry->target) : NULL;
	d->n++;
	return 0;
}

static void mount_dir_free(struct dir_handle *d)
{
	if (d == NULL)
		return;
	if (d->owner != NULL) {
		pthread_mutex_lock(&d->owner->open_lock);
		OPEN_UNLINK(&d->owner->open_dirs, d);
		pthread_mutex_unlock(&d->owner->open_lock);
	}
	for (size_t i = 0; i < d->n; i++) {
		free(d->entries[i].name);
		free(d->entries[i].node.target);
	}
	free(d->entries);
	free(d);
}

static void mount_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mount *m = fuse_req_userdata(req);
	char *path = mount_path_of(m, ino);
	struct dir_handle *d = calloc(1, sizeof(*d));
	if (path == NULL || d == NULL) {
		fuse_reply_err(req, path == NULL ? ESTALE : ENOMEM);
		goto out;
	}
	mp_error err = {0};
	int rc = mp_list(m->client, path, NULL, mount_dir_add, d, &err);
	if (rc < 0) {
		mount_fail(req, "opendir", path, rc, &err);
		goto out;
	}
	fi->fh = (uintptr_t)d;
	fi->cache_readdir = 0;
	d->owner = m;
	pthread_mutex_lock(&m->open_lock);
	OPEN_LINK(&m->open_dirs, d);
	pthread_mutex_unlock(&m->open_lock);
	d = NULL;
	fuse_reply_open(req, fi);
out:
	mount_dir_free(d);
	free(path);
}

static void mount_readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                                 struct fuse_file_info *fi, bool plus)
{
	struct mount *m = fuse_req_userdata(req);
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *dir = plus ? mount_path_of(m, ino) : NULL;
	if (plus && dir == NULL) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	char *buf = malloc(size);
	if (buf == NULL) {
		free(dir);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	/* Offsets: 0 ".", 1 "..", 2 + i entry i. */
	for (size_t i = (size_t)off; i < d->n + 2; i++) {
		const char *name = i == 0 ? "." : i == 1 ? ".." : d->entries[i - 2].name;
		size_t len;
		if (!plus) {
			struct stat st = {0};
			if (i >= 2) {
				mount_attr(m, &d->entries[i - 2].node, &st);
			} else {
				st.st_ino = i == 0 ? ino : FUSE_ROOT_ID;
				st.st_mode = S_IFDIR;
			}
			len = fuse_add_direntry(req, buf + used, size - used, name, &st,
			                        (off_t)i + 1);
			if (len > size - used)
				break;
		} else {
			struct fuse_entry_param e = {0};
			if (i < 2) {
				e.attr.st_ino = i == 0 ? ino : FUSE_ROOT_ID;
				e.attr.st_mode = S_IFDIR;
			} else {
				e.ino = mount_fuse_ino(m, d->entries[i - 2].node.ino);
				e.attr_timeout = m->o.attr_timeout;
				e.entry_timeout = m->o.entry_timeout;
				mount_attr(m, &d->entries[i - 2].node, &e.attr);
			}
			len = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
			                             (off_t)i + 1);
			if (len > size - used)
				break;
			/* The kernel now holds a reference to this entry. */
			if (i >= 2) {
				char *path = mount_join(dir, name);
				if (path == NULL ||
				    mount_remember(m, &d->entries[i - 2].node, path) < 0) {
					free(path);
					break;
				}
				free(path);
			}
		}
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
	free(dir);
}

static void mount_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
	mount_readdir_common(req, ino, size, off, fi, false);
}

static void mount_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                              struct fuse_file_info *fi)
{
	mount_readdir_common(req, ino, size, off, fi, true);
}

static void mount_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	mount_dir_free((struct dir_handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- namespace changes (at the primary) ---- */

static bool mount_refuse_ro(fuse_req_t req, struct mount *m)
{
	if (!m->o.read_only)
		return false;
	fuse_reply_err(req, EROFS);
	return true;
}

/* parent's path joined with name, or a reply with the error and NULL. */
static char *mount_child(fuse_req_t req, struct mount *m, fuse_ino_t parent, const char *name)
{
	char *dir = mount_path_of(m, parent);
	char *path = dir != NULL ? mount_join(dir, name) : NULL;
	if (path == NULL)
		fuse_reply_err(req, dir == NULL ? ESTALE : ENOMEM);
	free(dir);
	return path;
}

static void mount_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct mount *m = fuse_req_userdata(req);
	if (mount_refuse_ro(req, m))
		return;
	char *path = mount_child(req, m, parent, name);
	if (path == NULL)
		return;
	mp_error err = {0};
	int rc = mp_mkdir(m->client, path, mode & 07777, false, NULL, &err);
	if (rc < 0)
		mount_fail(req, "mkdir", path, rc, &err);
	else
		mount_reply_entry(req, m, "mkdir", path);
	free(path);
}

static void mount_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct mount *m = fuse_req_userdata(req);
	if (mount_refuse_ro(req, m))
		return;
	char *path = mount_child(req, m, parent, name);
	if (path == NULL)
		return;
	mp_error err = {0};
	int rc = mp_symlink(m->client, target, path, NULL, &err);
	if (rc < 0)
		mount_fail(req, "symlink", path, rc, &err);
	else
		mount_reply_entry(req, m, "symlink", path);
	free(path);
}

/* unlink (want_dir false) and rmdir (true): the type is checked first so
 * that each gets the errno POSIX names. */
static void mount_remove(fuse_req_t req, fuse_ino_t parent, const char *name, bool want_dir)
{
	struct mount *m = fuse_req_userdata(req);
	if (mount_refuse_ro(req, m))
		return;
	char *path = mount_child(req, m, parent, name);
	if (path == NULL)
		return;
	const char *op = want_dir ? "rmdir" : "unlink";
	mp_node n = {0};
	mp_error err = {0};
	int rc = mp_stat(m->client, path, NULL, &n, &err);
	if (rc == 0 && want_dir && n.type != MP_TYPE_DIR)
		rc = -ENOTDIR;
	else if (rc == 0 && !want_dir && n.type == MP_TYPE_DIR)
		rc = -EISDIR;
	else if (rc == 0)
		rc = mp_remove(m->client, path, false, NULL, &err);
	if (rc < 0)
		mount_fail(req, op, path, rc, &err);
	else
		fuse_reply_err(req, 0);
	mp_node_clear(&n);
	free(path);
}

static void mount_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	mount_remove(req, parent, name, false);
}

static void mount_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	mount_remove(req, parent, name, true);
}

static void mount_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                         const char *newname, unsigned int flags)
{
	struct mount *m = fuse_req_userdata(req);
	if (mount_refuse_ro(req, m))
		return;
	if (flags & ~RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	char *from = mount_child(req, m, parent, name);
	if (from == NULL)
		return;
	char *to = mount_child(req, m, newparent, newname);
	if (to == NULL) {
		free(from);
		return;
	}
	mp_error err = {0};
	int rc = 0;
	if (flags & RENAME_NOREPLACE) {
		mp_node n = {0};
		rc = mp_stat(m->client, to, NULL, &n, &err);
		mp_node_clear(&n);
		rc = rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
	}
	if (rc == 0)
		rc = mp_rename(m->client, from, to, NULL, &err);
	if (rc < 0) {
		mount_fail(req, "rename", from, rc, &err);
	} else {
		mount_repath(m, from, to);
		fuse_reply_err(req, 0);
	}
	free(from);
	free(to);
}

/* ---- file data ---- */

static void mount_handle_free(struct handle *h)
{
	if (h == NULL)
		return;
	if (h->owner != NULL) {
		pthread_mutex_lock(&h->owner->open_lock);
		OPEN_UNLINK(&h->owner->open_files, h);
		pthread_mutex_unlock(&h->owner->open_lock);
	}
	if (h->fd >= 0)
		close(h->fd);
	reader_free(h->reader);
	free(h->path);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

/* A handle for path with an unlinked staging file when writing. */
static int mount_handle_new(struct mount *m, const char *path, bool writing, struct handle **ret)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	h->fd = -1;
	h->path = strdup(path);
	if (h->path == NULL) {
		mount_handle_free(h);
		return -ENOMEM;
	}
	if (writing) {
		char tmpl[4096];
		snprintf(tmpl, sizeof(tmpl), "%s/mp-mount-XXXXXX", m->staging_dir);
		h->fd = mkstemp(tmpl);
		if (h->fd < 0) {
			int e = errno;
			mount_log("staging file in %s: %s", m->staging_dir, strerror(e));
			mount_handle_free(h);
			return -EIO;
		}
		unlink(tmpl);
	}
	h->owner = m;
	pthread_mutex_lock(&m->open_lock);
	OPEN_LINK(&m->open_files, h);
	pthread_mutex_unlock(&m->open_lock);
	*ret = h;
	return 0;
}

/* Uploads a dirty staging file as the new content of the file and commits
 * it at the primary (mp_put_file reads the file by name: /proc/self/fd). */
static int mount_handle_upload(struct mount *m, struct handle *h, mp_error *err)
{
	if (h->fd < 0 || !h->dirty)
		return 0;
	char local[64];
	snprintf(local, sizeof(local), "/proc/self/fd/%d", h->fd);
	int rc = mp_put_file(m->client, local, h->path, NULL, NULL, err);
	if (rc == 0)
		h->dirty = false;
	return rc;
}

struct read_sink {
	char *buf;
	size_t len, cap;
};

static int mount_read_sink(void *arg, const void *data, size_t len)
{
	struct read_sink *s = arg;
	if (len > s->cap - s->len)
		len = s->cap - s->len;
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	return 0;
}

/* The upload takes the staging file's permission bits for the file's. */
static void mount_handle_mode(struct handle *h, uint32_t mode)
{
	if (h->fd >= 0 && fchmod(h->fd, (mode_t)(mode & 07777)) != 0)
		mount_log("%s: cannot set mode %o on its staging file: %s", h->path, mode & 07777,
		          strerror(errno));
}

/* Fills the staging file with the file's current bytes (open without
 * O_TRUNC for writing). */
static int mount_handle_fetch(struct mount *m, struct handle *h, mp_error *err)
{
	char local[64];
	snprintf(local, sizeof(local), "/proc/self/fd/%d", h->fd);
	/* mp_get_file renames a temporary file over its target: read the
	 * bytes through mp_read instead, a part at a time. */
	mp_node n = {0};
	int rc = mp_stat(m->client, h->path, NULL, &n, err);
	uint64_t size = n.size;
	uint32_t mode = n.mode;
	mp_node_clear(&n);
	if (rc < 0)
		return rc;
	mount_handle_mode(h, mode);
	struct read_sink s = {.cap = 8u << 20};
	s.buf = malloc(s.cap);
	if (s.buf == NULL)
		return -ENOMEM;
	for (uint64_t off = 0; off < size && rc == 0; off += s.len) {
		uint64_t want = size - off < s.cap ? size - off : s.cap;
		s.len = 0;
		rc = mp_read(m->client, h->path, off, want, mount_read_sink, &s, NULL, NULL, err);
		if (rc == 0 && s.len == 0)
			break;
		if (rc == 0 && pwrite(h->fd, s.buf, s.len, (off_t)off) != (ssize_t)s.len)
			rc = -EIO;
	}
	free(s.buf);
	return rc;
}

/* Records the version of ino an open for reading found; true when it is
 * the one the previous open found (the kernel's cached pages are good). */
static bool mount_opened(struct mount *m, fuse_ino_t ino, const mp_node *n)
{
	bool same = false;
	pthread_mutex_lock(&m->lock);
	struct inode *in = ino == FUSE_ROOT_ID ? NULL : *mount_slot(m, ino);
	if (in != NULL) {
		same = in->open_ctime_ns == n->ctime_ns && in->open_mtime_ns == n->mtime_ns &&
		       in->open_size == n->size && n->ctime_ns != 0;
		in->open_ctime_ns = n->ctime_ns;
		in->open_mtime_ns = n->mtime_ns;
		in->open_size = n->size;
	}
	pthread_mutex_unlock(&m->lock);
	return same;
}

static void mount_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mount *m = fuse_req_userdata(req);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	if (writing && mount_refuse_ro(req, m))
		return;
	char *path = mount_path_of(m, ino);
	if (path == NULL) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	mp_node n = {0};
	mp_error err = {0};
	struct handle *h = NULL;
	/* Close-to-open: the file as it is now. A lookup that fetched it a
	 * moment ago (the kernel's, for this very open) answers for that. */
	int rc =
	    !writing && mount_fresh_take(m, ino, &n) ? 0 : mp_stat(m->client, path, NULL, &n, &err);
	if (rc == 0 && n.type == MP_TYPE_DIR)
		rc = -EISDIR;
	if (rc == 0)
		rc = mount_handle_new(m, path, writing, &h);
	bool unchanged = false;
	if (rc == 0) {
		if (writing && (fi->flags & O_TRUNC)) {
			h->dirty = true;
			mount_handle_mode(h, n.mode);
		} else if (writing) {
			rc = mount_handle_fetch(m, h, &err);
		} else {
			unchanged = mount_opened(m, ino, &n);
			rc = reader_new(m->pool, &n, &h->reader);
		}
	}
	if (rc < 0) {
		mount_handle_free(h);
		mount_fail(req, "open", path, rc, &err);
	} else {
		fi->fh = (uintptr_t)h;
		/* Close-to-open: the kernel keeps what it cached of the file's
		 * pages only while the file is the version they came from. */
		fi->keep_cache = unchanged;
		fuse_reply_open(req, fi);
	}
	mp_node_clear(&n);
	free(path);
}

static void mount_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                         struct fuse_file_info *fi)
{
	struct mount *m = fuse_req_userdata(req);
	if (mount_refuse_ro(req, m))
		return;
	char *path = mount_child(req, m, parent, name);
	if (path == NULL)
		return;
	mp_error err = {0};
	mp_node n = {0};
	struct handle *h = NULL;
	struct fuse_entry_param e;
	int rc = mp_stat(m->client, path, NULL, &n, &err);
	if (rc == 0 && (fi->flags & O_EXCL))
		rc = -EEXIST;
	else if (rc == 0 && n.type == MP_TYPE_DIR)
		rc = -EISDIR;
	bool created = false;
	if (rc == -ENOENT) {
		created = true;
		rc = 0;
	}
	if (rc == 0)
		rc = mount_handle_new(m, path, true, &h);
	if (rc == 0)
		mount_handle_mode(h,
		                  created ? (uint32_t)(mode & ~fuse_req_ctx(req)->umask) : n.mode);
	if (rc == 0 && created) {
		/* The file exists at once (empty, with its mode), so that a
		 * stat or an open elsewhere before the close finds it, as on a
		 * local disk. */
		h->dirty = true;
		rc = mount_handle_upload(m, h, &err);
		mp_node_clear(&n);
		if (rc == 0)
			rc = mp_stat(m->client, path, NULL, &n, &err);
	}
	if (rc == 0) {
		h->dirty = (fi->flags & O_TRUNC) != 0;
		if (!(fi->flags & O_TRUNC) && n.size > 0)
			rc = mount_handle_fetch(m, h, &err);
	}
	if (rc == 0)
		rc = mount_entry(m, &n, path, &e);
	if (rc < 0) {
		mount_handle_free(h);
		mount_fail(req, "create", path, rc, &err);
	} else {
		fi->fh = (uintptr_t)h;
		fi->keep_cache = 0;
		fuse_reply_create(req, &e, fi);
	}
	mp_node_clear(&n);
	free(path);
}

static void mount_reply_iov(void *arg, const struct iovec *iov, int cnt)
{
	fuse_reply_iov(arg, iov, cnt);
}

static void mount_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	if (h->reader != NULL) {
		mp_error err = {0};
		int rc = reader_read(h->reader, (uint64_t)off, size, mount_reply_iov, req, &err);
		if (rc < 0) {
			/* Data that cannot be read from any source. */
			mount_log("read %s at %lld: %s", h->path, (long long)off,
			          err.message[0] ? err.message : strerror(-rc));
			fuse_reply_err(req, rc == -ENOENT ? ENOENT : EIO);
		}
		return;
	}
	pthread_mutex_lock(&h->lock);
	char *buf = malloc(size ? size : 1);
	ssize_t n = buf != NULL ? pread(h->fd, buf, size, off) : -1;
	if (n < 0)
		fuse_reply_err(req, buf == NULL ? ENOMEM : EIO);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
	pthread_mutex_unlock(&h->lock);
}

static void mount_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                        struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	pthread_mutex_lock(&h->lock);
	if (h->fd < 0) {
		fuse_reply_err(req, EBADF);
	} else {
		ssize_t n = pwrite(h->fd, buf, size, off);
		if (n < 0) {
			fuse_reply_err(req, errno == ENOSPC ? ENOSPC : EIO);
		} else {
			h->dirty = true;
			fuse_reply_write(req, (size_t)n);
		}
	}
	pthread_mutex_unlock(&h->lock);
}

static void mount_sync(fuse_req_t req, struct fuse_file_info *fi, const char *op)
{
	struct mount *m = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	mp_error err = {0};
	pthread_mutex_lock(&h->lock);
	int rc = mount_handle_upload(m, h, &err);
	pthread_mutex_unlock(&h->lock);
	if (rc < 0) {
		/* A write that did not land is always reported. */
		mount_log("%s %s: %s", op, h->path, err.message[0] ? err.message : strerror(-rc));
		mount_fail(req, op, h->path, rc, &err);
	} else {
		fuse_reply_err(req, 0);
	}
}

static void mount_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	mount_sync(req, fi, "flush");
}

static void mount_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	mount_sync(req, fi, "fsync");
}

static void mount_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct mount *m = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	mp_error err = {0};
	/* flush normally uploaded already; this catches writes after it
	 * (mmap, a dup'd descriptor). Nobody is left to see an error. */
	int rc = mount_handle_upload(m, h, &err);
	if (rc < 0)
		mount_log("release %s: %s", h->path, err.message);
	mount_handle_free(h);
	fuse_reply_err(req, 0);
}

/* truncate(2) of a file not open for writing: fetch, cut, upload. */
static int mount_truncate_path(struct mount *m, const char *path, uint64_t size, mp_error *err)
{
	if (size == 0)
		return mp_put_buffer(m->client, "", 0, path, NULL, NULL, err);
	struct handle *h = NULL;
	int rc = mount_handle_new(m, path, true, &h);
	if (rc == 0)
		rc = mount_handle_fetch(m, h, err);
	if (rc == 0 && ftruncate(h->fd, (off_t)size) < 0)
		rc = -EIO;
	if (rc == 0) {
		h->dirty = true;
		rc = mount_handle_upload(m, h, err);
	}
	mount_handle_free(h);
	return rc;
}

static void mount_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                          struct fuse_file_info *fi)
{
	struct mount *m = fuse_req_userdata(req);
	if (mount_refuse_ro(req, m))
		return;
	/* The library sets no mode, owner or explicit times; "now" is what a
	 * commit records anyway, so touch works. */
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		to_set &= ~FUSE_SET_ATTR_ATIME;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		to_set &= ~FUSE_SET_ATTR_MTIME;
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
	              FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	char *path = mount_path_of(m, ino);
	if (path == NULL) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	mp_error err = {0};
	int rc = 0;
	struct handle *h = fi != NULL ? (struct handle *)(uintptr_t)fi->fh : NULL;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (h != NULL && h->fd >= 0) {
			pthread_mutex_lock(&h->lock);
			rc = ftruncate(h->fd, attr->st_size) < 0 ? -EIO : 0;
			h->dirty = true;
			pthread_mutex_unlock(&h->lock);
		} else {
			rc = mount_truncate_path(m, path, (uint64_t)attr->st_size, &err);
		}
	}
	mp_node n = {0};
	if (rc == 0)
		rc = mp_stat(m->client, path, NULL, &n, &err);
	if (rc < 0) {
		mount_fail(req, "setattr", path, rc, &err);
	} else {
		mount_reply_attr(req, m, &n, h);
	}
	mp_node_clear(&n);
	free(path);
}

static void mount_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct statvfs st = {0};
	st.f_bsize = 1 << 20;
	st.f_frsize = 1 << 20;
	st.f_blocks = st.f_bfree = st.f_bavail = 1ull << 30;
	st.f_files = st.f_ffree = 1ull << 40;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops mount_ops = {
    .init = mount_init,
    .lookup = mount_lookup,
    .forget = mount_forget,
    .forget_multi = mount_forget_multi,
    .getattr = mount_getattr,
    .setattr = mount_setattr,
    .readlink = mount_readlink,
    .mkdir = mount_mkdir,
    .symlink = mount_symlink,
    .unlink = mount_unlink,
    .rmdir = mount_rmdir,
    .rename = mount_rename,
    .open = mount_open,
    .create = mount_create,
    .read = mount_read,
    .write = mount_write,
    .flush = mount_flush,
    .fsync = mount_fsync,
    .release = mount_release,
    .opendir = mount_opendir,
    .readdir = mount_readdir,
    .readdirplus = mount_readdirplus,
    .releasedir = mount_releasedir,
    .statfs = mount_statfs,
};

/* ---- remote changes ---- */

struct stale {
	uint64_t ino, parent;
	char *path;
	int64_t ctime_ns;
};

/* When the site's mirror applies a new version, every inode the kernel
 * holds whose ctime moved (or that is gone) is invalidated, so that a file
 * replaced at the primary is seen before the attribute timeout. */
static void mount_check_changes(struct mount *m)
{
	struct stale *list = NULL;
	size_t n = 0;
	pthread_mutex_lock(&m->lock);
	list = calloc(MOUNT_POLL_MAX, sizeof(*list));
	for (size_t b = 0; list != NULL && b < MOUNT_BUCKETS && n < MOUNT_POLL_MAX; b++)
		for (struct inode *in = m->table[b]; in != NULL && n < MOUNT_POLL_MAX;
		     in = in->next) {
			list[n].path = strdup(in->path);
			if (list[n].path == NULL)
				break;
			list[n].ino = in->ino;
			list[n].parent = in->parent;
			list[n].ctime_ns = in->ctime_ns;
			n++;
		}
	pthread_mutex_unlock(&m->lock);
	mp_call call = {.consistency = MP_EVENTUAL};
	for (size_t i = 0; i < n; i++) {
		mp_node node = {0};
		mp_error err = {0};
		int rc = mp_stat(m->client, list[i].path, &call, &node, &err);
		if (rc == -ENOENT || (rc == 0 && mount_fuse_ino(m, node.ino) != list[i].ino)) {
			const char *name = strrchr(list[i].path, '/');
			name = name != NULL ? name + 1 : list[i].path;
			fuse_lowlevel_notify_inval_entry(m->se, list[i].parent, name, strlen(name));
		} else if (rc == 0 && node.ctime_ns != list[i].ctime_ns) {
			fuse_lowlevel_notify_inval_inode(m->se, list[i].ino, 0, 0);
			pthread_mutex_lock(&m->lock);
			struct inode *in = *mount_slot(m, list[i].ino);
			if (in != NULL)
				in->ctime_ns = node.ctime_ns;
			pthread_mutex_unlock(&m->lock);
		}
		mp_node_clear(&node);
		free(list[i].path);
	}
	free(list);
}

static void *mount_poll(void *arg)
{
	struct mount *m = arg;
	uint64_t seen = 0;
	long ns = (long)(m->o.poll_interval * 1e9);
	pthread_mutex_lock(&m->poll_lock);
	while (!m->stopping) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += ns / 1000000000;
		until.tv_nsec += ns % 1000000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&m->poll_cond, &m->poll_lock, &until);
		if (m->stopping)
			break;
		pthread_mutex_unlock(&m->poll_lock);
		mp_versions v = {0};
		mp_error err = {0};
		if (mp_version(m->client, &v, &err) == 0) {
			uint64_t now = v.mirror ? v.mirror : v.primary;
			if (seen != 0 && now != seen)
				mount_check_changes(m);
			seen = now;
		}
		pthread_mutex_lock(&m->poll_lock);
	}
	pthread_mutex_unlock(&m->poll_lock);
	return NULL;
}

/* ---- lifecycle ---- */

int mount_new(const char *mountpoint, const struct mount_options *o, struct mount **ret,
              mp_error *err)
{
	struct mount *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		mount_errf(err, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	m->o = *o;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->open_lock, NULL);
	pthread_mutex_init(&m->poll_lock, NULL);
	pthread_cond_init(&m->poll_cond, NULL);
	const char *tmp = o->staging_dir;
	if (tmp == NULL || *tmp == '\0')
		tmp = getenv("TMPDIR");
	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	m->staging_dir = realpath(tmp, NULL);
	m->mountpoint = realpath(mountpoint, NULL);
	int rc = 0;
	if (m->mountpoint == NULL || m->staging_dir == NULL) {
		rc = -errno;
		mount_errf(err, rc, "%s: %s", m->mountpoint == NULL ? mountpoint : tmp,
		           strerror(errno));
		goto fail;
	}
	char opts[256];
	snprintf(opts, sizeof(opts), "-ofsname=mirrorplane,subtype=mp,default_permissions%s%s",
	         o->read_only ? ",ro" : "", o->allow_other ? ",allow_other" : "");
	char *argv[] = {"mp-mount", opts, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(2, argv);
	m->se = fuse_session_new(&args, &mount_ops, sizeof(mount_ops), m);
	fuse_opt_free_args(&args);
	if (m->se == NULL) {
		rc = -EINVAL;
		mount_errf(err, rc, "cannot start a FUSE session");
		goto fail;
	}
	if (fuse_session_mount(m->se, m->mountpoint) != 0) {
		rc = -EIO;
		mount_errf(err, rc, "%s: cannot mount (is /dev/fuse there, and fusermount3?)",
		           m->mountpoint);
		goto fail;
	}
	m->mounted = true;
	if (fuse_set_signal_handlers(m->se) != 0) {
		rc = -EIO;
		mount_errf(err, rc, "cannot install signal handlers");
		goto fail;
	}
	*ret = m;
	return 0;
fail:
	mount_free(m);
	return rc;
}

int mount_daemonize(struct mount *m, const char *log_path, mp_error *err)
{
	(void)m;
	int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		int rc = -errno;
		mount_errf(err, rc, "%s: %s", log_path, strerror(errno));
		return rc;
	}
	if (fuse_daemonize(0) != 0) {
		close(fd);
		mount_errf(err, -EIO, "cannot go into the background");
		return -EIO;
	}
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	setvbuf(stderr, NULL, _IOLBF, 0);
	return 0;
}

int mount_run(struct mount *m, mp_client *c, mp_error *err)
{
	m->client = c;
	mp_node root = {0};
	int rc = mp_stat(c, "/", NULL, &root, err);
	m->root_ino = root.ino;
	mp_node_clear(&root);
	if (rc < 0)
		return rc;
	if ((rc = fetch_pool_start(c, MOUNT_FETCHERS, &m->pool, err)) < 0)
		return rc;
	if (m->o.poll_interval > 0 && pthread_create(&m->poller, NULL, mount_poll, m) == 0)
		m->poller_running = true;
	mount_log("serving %s (pid %ld)", m->mountpoint, (long)getpid());
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	if (cfg == NULL) {
		rc = -ENOMEM;
		mount_errf(err, rc, "out of memory");
	} else {
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		fuse_loop_cfg_set_idle_threads(cfg, 8);
		rc = fuse_session_loop_mt(m->se, cfg);
		fuse_loop_cfg_destroy(cfg);
		if (rc < 0)
			mount_errf(err, rc, "the FUSE loop failed: %s", strerror(-rc));
		else
			rc = 0;
	}
	if (m->poller_running) {
		pthread_mutex_lock(&m->poll_lock);
		m->stopping = true;
		pthread_cond_signal(&m->poll_cond);
		pthread_mutex_unlock(&m->poll_lock);
		pthread_join(m->poller, NULL);
		m->poller_running = false;
	}
	/* Handles the kernel never released: what was written is uploaded. */
	for (;;) {
		pthread_mutex_lock(&m->open_lock);
		struct handle *h = m->open_files;
		pthread_mutex_unlock(&m->open_lock);
		if (h == NULL)
			break;
		mp_error uerr = {0};
		if (mount_handle_upload(m, h, &uerr) < 0)
			mount_log("at exit, %s: %s", h->path, uerr.message);
		mount_handle_free(h);
	}
	for (;;) {
		pthread_mutex_lock(&m->open_lock);
		struct dir_handle *d = m->open_dirs;
		pthread_mutex_unlock(&m->open_lock);
		if (d == NULL)
			break;
		mount_dir_free(d);
	}
	fetch_pool_stop(m->pool);
	m->pool = NULL;
	mount_log("unmounting %s", m->mountpoint);
	return rc;
}

void mount_free(struct mount *m)
{
	if (m == NULL)
		return;
	if (m->se != NULL) {
		fuse_remove_signal_handlers(m->se);
		if (m->mounted)
			fuse_session_unmount(m->se);
		fuse_session_destroy(m->se);
	}
	for (size_t b = 0; b < MOUNT_BUCKETS; b++)
		while (m->table[b] != NULL) {
			struct inode *in = m->table[b];
			m->table[b] = in->next;
			free(in->path);
			free(in);
		}
	for (unsigned i = 0; i < MOUNT_FRESH; i++)
		mp_node_clear(&m->fresh[i].node);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->open_lock);
	pthread_mutex_destroy(&m->poll_lock);
	pthread_cond_destroy(&m->poll_cond);
	free(m->mountpoint);
	free(m->staging_dir);
	free(m);
}
