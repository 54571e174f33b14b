/* Whole trees: put -r walks a local directory (directories and symlinks
 * made in batches first, then the files uploaded in parallel); get -r walks
 * a remote one (local directories and symlinks first, then files fetched in
 * parallel). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "node.h"
#include "proto.h"
#include "transfer.h"

int files_put_fd(struct mp_client *c, int fd, const char *local, const char *remote,
                 struct progress *pr, mp_call *call, mp_error *err);
int files_get_node(struct mp_client *c, const mp_node *n, const char *remote, const char *local,
                   int parallel, struct progress *pr, mp_error *err);

#define TREE_DEPTH_MAX 256

enum item_kind { ITEM_DIR, ITEM_FILE, ITEM_SYMLINK };

struct item {
	enum item_kind kind;
	char *local;
	char *remote;
	char *target; /* symlinks */
	mp_node node; /* get: the remote file */
};

struct items {
	struct item *v;
	size_t n, cap;
};

static int items_add(struct items *l, enum item_kind kind, char *local, char *remote, mp_error *err)
{
	if (local == NULL || remote == NULL)
		goto nomem;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct item *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL)
			goto nomem;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct item){.kind = kind, .local = local, .remote = remote};
	return 0;
nomem:
	free(local);
	free(remote);
	return mperr(err, -ENOMEM, "out of memory");
}

static void items_free(struct items *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].local);
		free(l->v[i].remote);
		free(l->v[i].target);
		mp_node_clear(&l->v[i].node);
	}
	free(l->v);
}

static char *join(const char *a, const char *b)
{
	char *p;
	size_t la = strlen(a);
	if (asprintf(&p, "%s%s%s", a, la > 0 && a[la - 1] == '/' ? "" : "/", b) < 0)
		return NULL;
	return p;
}

/* ---- put -r ---- */

static int scan_local(const char *local, const char *remote, unsigned depth, struct items *l,
                      struct progress *pr, mp_error *err)
{
	if (depth > TREE_DEPTH_MAX)
		return mperr(err, -ELOOP, "%s: deeper than %d levels", local, TREE_DEPTH_MAX);
	DIR *d = opendir(local);
	if (d == NULL)
		return mperr(err, -errno, "%s: %s", local, strerror(errno));
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char *lp = join(local, de->d_name), *rp = join(remote, de->d_name);
		struct stat sb;
		if (lp == NULL || rp == NULL) {
			free(lp);
			free(rp);
			r = mperr(err, -ENOMEM, "out of memory");
			break;
		}
		if (lstat(lp, &sb) < 0) {
			r = mperr(err, -errno, "%s: %s", lp, strerror(errno));
			free(lp);
			free(rp);
			break;
		}
		if (S_ISDIR(sb.st_mode)) {
			r = items_add(l, ITEM_DIR, lp, rp, err);
			if (r == 0)
				r = scan_local(l->v[l->n - 1].local, l->v[l->n - 1].remote,
				               depth + 1, l, pr, err);
		} else if (S_ISREG(sb.st_mode)) {
			r = items_add(l, ITEM_FILE, lp, rp, err);
			if (r == 0)
				progress_totals(pr, (uint64_t)sb.st_size, 1);
		} else if (S_ISLNK(sb.st_mode)) {
			char target[NODE_TARGET_MAX + 1];
			ssize_t n = readlink(lp, target, sizeof(target) - 1);
			if (n <= 0) {
				r = mperr(err, n < 0 ? -errno : -EINVAL, "%s: readlink", lp);
				free(lp);
				free(rp);
				break;
			}
			target[n] = '\0';
			r = items_add(l, ITEM_SYMLINK, lp, rp, err);
			if (r == 0 && (l->v[l->n - 1].target = strdup(target)) == NULL)
				r = mperr(err, -ENOMEM, "out of memory");
		} else {
			/* Sockets, fifos and devices have no bytes to mirror. */
			free(lp);
			free(rp);
		}
	}
	closedir(d);
	return r;
}

struct put_job {
	struct mp_client *c;
	struct items *l;
	size_t *files;
	struct progress *pr;
};

static int put_one(void *ctx, size_t i, mp_error *err)
{
	struct put_job *j = ctx;
	struct item *it = &j->l->v[j->files[i]];
	int fd = open(it->local, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return mperr(err, -errno, "%s: %s", it->local, strerror(errno));
	mp_call call = {0};
	int r = files_put_fd(j->c, fd, it->local, it->remote, j->pr, &call, err);
	close(fd);
	return r;
}

static void pack_op(struct batch *b, uint32_t type, const char *path, const char *target)
{
	msgpack_pack_array(&b->pk, 2);
	msgpack_pack_uint32(&b->pk, type);
	msgpack_pack_map(&b->pk, target ? 2 : 2);
	msg_pack_key(&b->pk, "path");
	msg_pack_cstr(&b->pk, path);
	if (target != NULL) {
		msg_pack_key(&b->pk, "target");
		msg_pack_cstr(&b->pk, target);
	} else {
		msg_pack_key(&b->pk, "parents");
		msgpack_pack_true(&b->pk);
	}
	b->nops++;
}

MP_EXPORT int mp_put_tree(mp_client *c, const char *local_dir, const char *remote_dir,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err)
{
	int r = nodes_check_path(remote_dir, err);
	if (r < 0)
		return r;
	struct stat sb;
	if (local_dir == NULL || stat(local_dir, &sb) < 0)
		return mperr(err, -errno, "%s: %s", local_dir ? local_dir : "", strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return mperr(err, -ENOTDIR, "%s: not a directory", local_dir);
	struct progress pr;
	progress_init(&pr, opts);
	struct items l = {0};
	size_t *files = NULL, nfiles = 0;
	r = scan_local(local_dir, remote_dir, 0, &l, &pr, err);
	if (r == 0)
		r = mp_mkdir(c, remote_dir, sb.st_mode & 07777, true, call, err);
	/* Directories (parents first, as scanned) and symlinks in batches. */
	struct batch b;
	batch_init(&b);
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		if (l.v[i].kind == ITEM_FILE)
			continue;
		pack_op(&b, l.v[i].kind == ITEM_DIR ? MT_MKDIR : MT_SYMLINK, l.v[i].remote,
		        l.v[i].target);
		if (b.nops >= BATCH_OPS)
			r = batch_flush(c, &b, call, err);
	}
	if (r == 0)
		r = batch_flush(c, &b, call, err);
	batch_destroy(&b);
	if (r == 0 && (files = calloc(l.n ? l.n : 1, sizeof(*files))) == NULL)
		r = mperr(err, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < l.n; i++)
		if (l.v[i].kind == ITEM_FILE)
			files[nfiles++] = i;
	if (r == 0) {
		struct put_job j = {c, &l, files, &pr};
		r = transfer_run(nfiles, transfer_parallel(c, opts), put_one, &j, err);
	}
	progress_finish(&pr);
	progress_destroy(&pr);
	if (r == 0 && call != NULL)
		call->version = mp_client_session_version(c);
	free(files);
	items_free(&l);
	return r;
}

/* ---- get -r ---- */

struct scan_remote {
	struct mp_client *c;
	mp_call *call;
	struct items *l;
	struct progress *pr;
	const char *local, *remote;
	mp_error *err;
	size_t first_dir; /* subdirectories found in this listing start here */
};

static int remote_entry(void *arg, const mp_node *n)
{
	struct scan_remote *s = arg;
	enum item_kind kind = n->type == MP_TYPE_DIR    ? ITEM_DIR
	                      : n->type == MP_TYPE_FILE ? ITEM_FILE
	                                                : ITEM_SYMLINK;
	int r = items_add(s->l, kind, join(s->local, n->name), join(s->remote, n->name), s->err);
	if (r < 0)
		return r;
	struct item *it = &s->l->v[s->l->n - 1];
	if (kind == ITEM_SYMLINK && (it->target = strdup(n->target ? n->target : "")) == NULL)
		return -ENOMEM;
	if (kind == ITEM_FILE) {
		/* Keep the node (its layout) for the download. */
		mp_node copy = *n;
		copy.name = strdup(n->name);
		copy.target = NULL;
		copy.extents = n->n_extents ? calloc(n->n_extents, sizeof(mp_extent)) : NULL;
		if (copy.name == NULL || (n->n_extents && copy.extents == NULL)) {
			free(copy.name);
			free(copy.extents);
			return -ENOMEM;
		}
		for (size_t i = 0; i < n->n_extents; i++) {
			copy.extents[i] = n->extents[i];
			copy.extents[i].bucket = strdup(n->extents[i].bucket);
			copy.extents[i].key = strdup(n->extents[i].key);
			copy.extents[i].etag = strdup(n->extents[i].etag);
		}
		it->node = copy;
		progress_totals(s->pr, n->size, 1);
	}
	return 0;
}

static int scan_remote_dir(struct scan_remote *s, const char *remote, const char *local,
                           unsigned depth)
{
	if (depth > TREE_DEPTH_MAX)
		return mperr(s->err, -ELOOP, "%s: deeper than %d levels", remote, TREE_DEPTH_MAX);
	size_t start = s->l->n;
	s->remote = remote;
	s->local = local;
	int r = mp_list(s->c, remote, s->call, remote_entry, s, s->err);
	if (r < 0)
		return r;
	size_t end = s->l->n;
	for (size_t i = start; i < end && r == 0; i++) {
		if (s->l->v[i].kind != ITEM_DIR)
			continue;
		/* Copies: the list may move while it grows. */
		char *rp = strdup(s->l->v[i].remote), *lp = strdup(s->l->v[i].local);
		if (rp == NULL || lp == NULL)
			r = mperr(s->err, -ENOMEM, "out of memory");
		else
			r = scan_remote_dir(s, rp, lp, depth + 1);
		free(rp);
		free(lp);
	}
	return r;
}

struct get_job {
	struct mp_client *c;
	struct items *l;
	size_t *files;
	struct progress *pr;
};

static int get_one(void *ctx, size_t i, mp_error *err)
{
	struct get_job *j = ctx;
	struct item *it = &j->l->v[j->files[i]];
	/* Parallelism is across files; each file's ranges go one at a time. */
	return files_get_node(j->c, &it->node, it->remote, it->local, 1, j->pr, err);
}

MP_EXPORT int mp_get_tree(mp_client *c, const char *remote_dir, const char *local_dir,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err)
{
	mp_node root;
	int r = mp_stat(c, remote_dir, call, &root, err);
	if (r < 0)
		return r;
	bool is_dir = root.type == MP_TYPE_DIR;
	mp_node_clear(&root);
	if (!is_dir)
		return mperr(err, -ENOTDIR, "%s: not a directory", remote_dir);
	if (local_dir == NULL || local_dir[0] == '\0')
		return mperr(err, -EINVAL, "no local directory named");
	if (mkdir(local_dir, 0755) < 0 && errno != EEXIST)
		return mperr(err, -errno, "%s: %s", local_dir, strerror(errno));
	struct progress pr;
	progress_init(&pr, opts);
	struct items l = {0};
	struct scan_remote s = {.c = c, .call = call, .l = &l, .pr = &pr, .err = err};
	r = scan_remote_dir(&s, remote_dir, local_dir, 0);
	size_t *files = NULL, nfiles = 0;
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		struct item *it = &l.v[i];
		if (it->kind == ITEM_DIR && mkdir(it->local, 0755) < 0 && errno != EEXIST)
			r = mperr(err, -errno, "%s: %s", it->local, strerror(errno));
		if (it->kind == ITEM_SYMLINK) {
			unlink(it->local);
			if (symlink(it->target, it->local) < 0)
				r = mperr(err, -errno, "%s: %s", it->local, strerror(errno));
		}
	}
	if (r == 0 && (files = calloc(l.n ? l.n : 1, sizeof(*files))) == NULL)
		r = mperr(err, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < l.n; i++)
		if (l.v[i].kind == ITEM_FILE)
			files[nfiles++] = i;
	if (r == 0) {
		struct get_job j = {c, &l, files, &pr};
		r = transfer_run(nfiles, transfer_parallel(c, opts), get_one, &j, err);
	}
	progress_finish(&pr);
	progress_destroy(&pr);
	free(files);
	items_free(&l);
	return r;
}
