#include "txn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* The state of one inode before the transaction first touched it. */
struct saved {
	uint64_t ino;
	bool existed;
	struct node_rec rec; /* name and extra point at the copies below */
	char *name;
	uint8_t *extra;
};

struct txn {
	struct namespace *ns;
	uint64_t *next_ino;
	int64_t now;
	struct saved *saved;
	size_t nsaved, capsaved;
	uint32_t *index; /* open addressing: position+1 in saved, 0 = empty */
	size_t capindex;
	char err[256];
};

static int txn_fail(struct txn *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int txn_fail(struct txn *t, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
	return code;
}

struct txn *txn_new(struct namespace *ns, uint64_t *next_ino, int64_t now)
{
	struct txn *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->ns = ns;
	t->next_ino = next_ino;
	t->now = now;
	return t;
}

void txn_free(struct txn *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nsaved; i++) {
		free(t->saved[i].name);
		free(t->saved[i].extra);
	}
	free(t->saved);
	free(t->index);
	free(t);
}

const char *txn_error(const struct txn *t)
{
	return t->err;
}

size_t txn_touched_count(const struct txn *t)
{
	return t->nsaved;
}

uint64_t txn_touched_ino(const struct txn *t, size_t i)
{
	return t->saved[i].ino;
}

bool txn_touched_existed(const struct txn *t, size_t i)
{
	return t->saved[i].existed;
}

const struct node_rec *txn_touched_before(const struct txn *t, size_t i)
{
	return t->saved[i].existed ? &t->saved[i].rec : NULL;
}

static int index_rebuild(struct txn *t, size_t cap)
{
	uint32_t *idx = calloc(cap, sizeof(*idx));
	if (idx == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->nsaved; i++) {
		size_t h = hash_mix64(t->saved[i].ino) & (cap - 1);
		while (idx[h] != 0)
			h = (h + 1) & (cap - 1);
		idx[h] = (uint32_t)(i + 1);
	}
	free(t->index);
	t->index = idx;
	t->capindex = cap;
	return 0;
}

static bool is_touched(const struct txn *t, uint64_t ino)
{
	if (t->capindex == 0)
		return false;
	for (size_t h = hash_mix64(ino) & (t->capindex - 1);; h = (h + 1) & (t->capindex - 1)) {
		if (t->index[h] == 0)
			return false;
		if (t->saved[t->index[h] - 1].ino == ino)
			return true;
	}
}

/* Records ino's current state the first time the transaction changes it. */
static int touch(struct txn *t, uint64_t ino)
{
	if (is_touched(t, ino))
		return 0;
	if (t->nsaved == t->capsaved) {
		size_t cap = t->capsaved ? t->capsaved * 2 : 8;
		struct saved *s = realloc(t->saved, cap * sizeof(*s));
		if (s == NULL)
			return txn_fail(t, -ENOMEM, "out of memory");
		t->saved = s;
		t->capsaved = cap;
	}
	if ((t->nsaved + 1) * 2 > t->capindex) {
		if (index_rebuild(t, t->capindex ? t->capindex * 2 : 16) < 0)
			return txn_fail(t, -ENOMEM, "out of memory");
	}
	struct saved *s = &t->saved[t->nsaved];
	memset(s, 0, sizeof(*s));
	s->ino = ino;
	struct node_rec cur;
	if (namespace_get(t->ns, ino, &cur) == 0) {
		s->existed = true;
		s->rec = cur;
		s->name = malloc(cur.name_len + 1u);
		s->extra = cur.extra_len ? malloc(cur.extra_len) : NULL;
		if (s->name == NULL || (cur.extra_len && s->extra == NULL)) {
			free(s->name);
			free(s->extra);
			return txn_fail(t, -ENOMEM, "out of memory");
		}
		memcpy(s->name, cur.name, cur.name_len);
		if (cur.extra_len)
			memcpy(s->extra, cur.extra, cur.extra_len);
		s->rec.name = s->name;
		s->rec.extra = s->extra;
	}
	size_t h = hash_mix64(ino) & (t->capindex - 1);
	while (t->index[h] != 0)
		h = (h + 1) & (t->capindex - 1);
	t->index[h] = (uint32_t)(t->nsaved + 1);
	t->nsaved++;
	return 0;
}

static int put(struct txn *t, const struct node_rec *rec)
{
	int r = touch(t, rec->ino);
	if (r < 0)
		return r;
	char why[160];
	struct ns_change c = {rec->ino, rec};
	r = namespace_apply(t->ns, &c, 1, why, sizeof(why));
	if (r < 0)
		return txn_fail(t, r == -ENOMEM ? -ENOMEM : -EIO, "namespace refused a change: %s",
		                why);
	return 0;
}

static int drop(struct txn *t, uint64_t ino)
{
	int r = touch(t, ino);
	if (r < 0)
		return r;
	char why[160];
	struct ns_change c = {ino, NULL};
	r = namespace_apply(t->ns, &c, 1, why, sizeof(why));
	if (r < 0)
		return txn_fail(t, -EIO, "namespace refused a drop: %s", why);
	return 0;
}

int txn_rollback(struct txn *t)
{
	if (t->nsaved == 0)
		return 0;
	struct ns_change *changes = calloc(t->nsaved, sizeof(*changes));
	if (changes == NULL)
		return txn_fail(t, -ENOMEM, "out of memory rolling back");
	for (size_t i = 0; i < t->nsaved; i++) {
		changes[i].ino = t->saved[i].ino;
		changes[i].rec = t->saved[i].existed ? &t->saved[i].rec : NULL;
	}
	char why[160];
	int r = namespace_apply(t->ns, changes, t->nsaved, why, sizeof(why));
	free(changes);
	if (r < 0)
		return txn_fail(t, -EIO, "rollback failed: %s", why);
	for (size_t i = 0; i < t->nsaved; i++) {
		free(t->saved[i].name);
		free(t->saved[i].extra);
	}
	t->nsaved = 0;
	if (t->capindex)
		memset(t->index, 0, t->capindex * sizeof(*t->index));
	return 0;
}

/* ---- paths ---- */

/* Splits an absolute path into its parent directory (resolved) and last
 * component. The root has no last component: -EEXIST-like cases are the
 * caller's; here it is reported as ret_name_len 0. */
static int split(struct txn *t, const char *path, size_t len, struct node_rec *ret_parent,
                 const char **ret_name, size_t *ret_name_len)
{
	if (len == 0 || path[0] != '/')
		return txn_fail(t, -EINVAL, "path '%.*s' is not absolute",
		                (int)(len > 200 ? 200 : len), path);
	if (len > NODE_PATH_MAX)
		return txn_fail(t, -E2BIG, "path is %zu bytes, at most %d allowed", len,
		                NODE_PATH_MAX);
	if (memchr(path, '\0', len) != NULL)
		return txn_fail(t, -EINVAL, "path contains a NUL byte");
	size_t end = len;
	while (end > 1 && path[end - 1] == '/')
		end--;
	size_t start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	size_t nlen = end - start;
	if (nlen == 0) {
		*ret_name = path;
		*ret_name_len = 0;
		return namespace_get(t->ns, NODE_ROOT_INO, ret_parent);
	}
	if (node_check_name(path + start, nlen) < 0)
		return txn_fail(
		    t, nlen > NODE_NAME_MAX ? -E2BIG : -EINVAL,
		    "bad name '%.*s' in path (names are 1..255 bytes, no '/', not . or ..)",
		    (int)(nlen > 200 ? 200 : nlen), path + start);
	int r = namespace_resolve(t->ns, path, start, ret_parent);
	if (r == -ENOENT)
		return txn_fail(t, r, "parent of '%.*s' does not exist",
		                (int)(len > 200 ? 200 : len), path);
	if (r == -ENOTDIR || (r == 0 && ret_parent->type != NODE_DIR))
		return txn_fail(t, -ENOTDIR, "parent of '%.*s' is not a directory",
		                (int)(len > 200 ? 200 : len), path);
	if (r < 0)
		return txn_fail(t, r, "bad path '%.*s'", (int)(len > 200 ? 200 : len), path);
	*ret_name = path + start;
	*ret_name_len = nlen;
	return 0;
}

static int resolve(struct txn *t, const char *path, size_t len, struct node_rec *ret)
{
	if (len > NODE_PATH_MAX)
		return txn_fail(t, -E2BIG, "path is %zu bytes, at most %d allowed", len,
		                NODE_PATH_MAX);
	int r = namespace_resolve(t->ns, path, len, ret);
	int shown = (int)(len > 200 ? 200 : len);
	switch (r) {
	case 0:
		return 0;
	case -ENOENT:
		return txn_fail(t, r, "'%.*s' does not exist", shown, path);
	case -ENOTDIR:
		return txn_fail(t, r, "a component of '%.*s' is not a directory", shown, path);
	default:
		return txn_fail(t, -EINVAL, "bad path '%.*s' (absolute, names without . or ..)",
		                shown, path);
	}
}

/* Updates a directory's mtime and ctime after an entry changed. */
static int touch_dir_times(struct txn *t, uint64_t dir)
{
	struct node_rec rec;
	if (namespace_get(t->ns, dir, &rec) < 0)
		return txn_fail(t, -EIO, "directory %llu vanished", (unsigned long long)dir);
	if (rec.mtime == t->now && rec.ctime == t->now)
		return 0;
	rec.mtime = rec.ctime = t->now;
	return put(t, &rec);
}

static uint64_t new_ino(struct txn *t)
{
	return (*t->next_ino)++;
}

static void apply_attrs(struct node_rec *rec, const struct txn_attr *a)
{
	if (a == NULL)
		return;
	if (a->mask & ATTR_MODE)
		rec->mode = a->mode & 07777;
	if (a->mask & ATTR_UID)
		rec->uid = a->uid;
	if (a->mask & ATTR_GID)
		rec->gid = a->gid;
	if (a->mask & ATTR_MTIME)
		rec->mtime = a->mtime;
}

static int check_mode(struct txn *t, const struct txn_attr *a)
{
	if (a != NULL && (a->mask & ATTR_MODE) && (a->mode & ~07777u))
		return txn_fail(t, -EINVAL, "mode %o has bits outside 07777", a->mode);
	return 0;
}

static int make_node(struct txn *t, uint64_t parent, const char *name, size_t nlen, uint8_t type,
                     uint32_t mode, const struct txn_attr *a, const uint8_t *extra,
                     size_t extra_len, uint64_t *ret_ino)
{
	struct node_rec rec = {
	    .ino = new_ino(t),
	    .parent = parent,
	    .type = type,
	    .mode = mode,
	    .mtime = t->now,
	    .ctime = t->now,
	    .name = name,
	    .name_len = (uint8_t)nlen,
	    .extra = extra,
	    .extra_len = (uint32_t)extra_len,
	};
	apply_attrs(&rec, a);
	if (type == NODE_FILE && a != NULL && (a->mask & ATTR_SIZE))
		rec.size = a->size;
	if (type == NODE_SYMLINK)
		rec.size = extra_len;
	int r = put(t, &rec);
	if (r < 0)
		return r;
	r = touch_dir_times(t, parent);
	if (r < 0)
		return r;
	if (ret_ino != NULL)
		*ret_ino = rec.ino;
	return 0;
}

int txn_mkdir(struct txn *t, const char *path, size_t len, const struct txn_attr *a, bool parents,
              uint64_t *ret_ino)
{
	int r = check_mode(t, a);
	if (r < 0)
		return r;
	if (!parents) {
		struct node_rec parent, existing;
		const char *name;
		size_t nlen;
		r = split(t, path, len, &parent, &name, &nlen);
		if (r < 0)
			return r;
		if (nlen == 0)
			return txn_fail(t, -EEXIST, "'/' already exists");
		if (namespace_lookup(t->ns, parent.ino, name, nlen, &existing) == 0)
			return txn_fail(t, -EEXIST, "'%.*s' already exists",
			                (int)(len > 200 ? 200 : len), path);
		return make_node(t, parent.ino, name, nlen, NODE_DIR, 0755, a, NULL, 0, ret_ino);
	}
	/* mkdir -p: walk the components, making the missing ones. */
	if (len == 0 || path[0] != '/')
		return txn_fail(t, -EINVAL, "path '%.*s' is not absolute",
		                (int)(len > 200 ? 200 : len), path);
	if (len > NODE_PATH_MAX)
		return txn_fail(t, -E2BIG, "path is %zu bytes, at most %d allowed", len,
		                NODE_PATH_MAX);
	uint64_t cur = NODE_ROOT_INO;
	size_t i = 0;
	while (i < len) {
		while (i < len && path[i] == '/')
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && path[i] != '/')
			i++;
		size_t nlen = i - start;
		if (node_check_name(path + start, nlen) < 0)
			return txn_fail(t, nlen > NODE_NAME_MAX ? -E2BIG : -EINVAL,
			                "bad name '%.*s' in path", (int)(nlen > 200 ? 200 : nlen),
			                path + start);
		struct node_rec existing;
		if (namespace_lookup(t->ns, cur, path + start, nlen, &existing) == 0) {
			if (existing.type != NODE_DIR)
				return txn_fail(t, -ENOTDIR, "'%.*s' is not a directory", (int)i,
				                path);
			cur = existing.ino;
			continue;
		}
		r = make_node(t, cur, path + start, nlen, NODE_DIR, 0755, a, NULL, 0, &cur);
		if (r < 0)
			return r;
	}
	if (ret_ino != NULL)
		*ret_ino = cur;
	return 0;
}

int txn_create(struct txn *t, const char *path, size_t len, const struct txn_attr *a,
               const uint8_t *layout, size_t layout_len, uint64_t *ret_ino)
{
	int r = check_mode(t, a);
	if (r < 0)
		return r;
	if (layout_len > 0) {
		char why[160];
		r = node_check_layout(layout, layout_len, why, sizeof(why));
		if (r < 0)
			return txn_fail(t, r, "%s", why);
	}
	struct node_rec parent, existing;
	const char *name;
	size_t nlen;
	r = split(t, path, len, &parent, &name, &nlen);
	if (r < 0)
		return r;
	if (nlen == 0)
		return txn_fail(t, -EISDIR, "'/' is a directory");
	if (namespace_lookup(t->ns, parent.ino, name, nlen, &existing) < 0)
		return make_node(t, parent.ino, name, nlen, NODE_FILE, 0644, a, layout, layout_len,
		                 ret_ino);
	if (existing.type == NODE_DIR)
		return txn_fail(t, -EISDIR, "'%.*s' is a directory", (int)(len > 200 ? 200 : len),
		                path);
	if (existing.type != NODE_FILE)
		return txn_fail(t, -EEXIST, "'%.*s' exists and is a %s",
		                (int)(len > 200 ? 200 : len), path, node_type_name(existing.type));
	/* Replace: same inode, new layout (the old objects stay immutable). */
	struct node_rec rec = existing;
	rec.extra = layout;
	rec.extra_len = (uint32_t)layout_len;
	rec.size = (a != NULL && (a->mask & ATTR_SIZE)) ? a->size : 0;
	rec.mtime = rec.ctime = t->now;
	apply_attrs(&rec, a);
	r = put(t, &rec);
	if (r < 0)
		return r;
	r = touch_dir_times(t, parent.ino);
	if (r == 0 && ret_ino != NULL)
		*ret_ino = rec.ino;
	return r;
}

int txn_symlink(struct txn *t, const char *path, size_t len, const char *target, size_t target_len,
                const struct txn_attr *a, uint64_t *ret_ino)
{
	if (target_len == 0 || target_len > NODE_TARGET_MAX ||
	    memchr(target, '\0', target_len) != NULL)
		return txn_fail(t, target_len > NODE_TARGET_MAX ? -E2BIG : -EINVAL,
		                "symlink target must be 1..%d bytes without NUL", NODE_TARGET_MAX);
	struct node_rec parent, existing;
	const char *name;
	size_t nlen;
	int r = split(t, path, len, &parent, &name, &nlen);
	if (r < 0)
		return r;
	if (nlen == 0 || namespace_lookup(t->ns, parent.ino, name, nlen, &existing) == 0)
		return txn_fail(t, -EEXIST, "'%.*s' already exists", (int)(len > 200 ? 200 : len),
		                path);
	struct txn_attr sa = a != NULL ? *a : (struct txn_attr){0};
	sa.mask &= ~(unsigned)ATTR_MODE; /* symlinks are always 0777 */
	return make_node(t, parent.ino, name, nlen, NODE_SYMLINK, 0777, &sa,
	                 (const uint8_t *)target, target_len, ret_ino);
}

int txn_rename(struct txn *t, const char *from, size_t from_len, const char *to, size_t to_len,
               uint64_t *ret_ino)
{
	struct node_rec src, dst_parent, dst;
	const char *name;
	size_t nlen;
	int r = resolve(t, from, from_len, &src);
	if (r < 0)
		return r;
	if (src.ino == NODE_ROOT_INO)
		return txn_fail(t, -EBUSY, "the root cannot be renamed");
	r = split(t, to, to_len, &dst_parent, &name, &nlen);
	if (r < 0)
		return r;
	if (nlen == 0)
		return txn_fail(t, -EBUSY, "nothing can be renamed onto the root");
	if (src.type == NODE_DIR && namespace_is_within(t->ns, dst_parent.ino, src.ino))
		return txn_fail(t, -EINVAL, "cannot move '%.*s' into its own subtree",
		                (int)(from_len > 200 ? 200 : from_len), from);
	uint64_t old_parent = src.parent;
	if (namespace_lookup(t->ns, dst_parent.ino, name, nlen, &dst) == 0) {
		if (dst.ino == src.ino) {
			if (ret_ino != NULL)
				*ret_ino = src.ino;
			return 0; /* rename onto itself changes nothing */
		}
		int shown = (int)(to_len > 200 ? 200 : to_len);
		if (src.type == NODE_DIR && dst.type != NODE_DIR)
			return txn_fail(t, -ENOTDIR, "'%.*s' is not a directory", shown, to);
		if (src.type != NODE_DIR && dst.type == NODE_DIR)
			return txn_fail(t, -EISDIR, "'%.*s' is a directory", shown, to);
		if (dst.type == NODE_DIR && namespace_has_children(t->ns, dst.ino))
			return txn_fail(t, -ENOTEMPTY, "'%.*s' is not empty", shown, to);
		r = drop(t, dst.ino);
		if (r < 0)
			return r;
	}
	/* src's name may point into the node that put() rewrites. */
	char namebuf[NODE_NAME_MAX];
	memcpy(namebuf, name, nlen);
	r = namespace_get(t->ns, src.ino, &src);
	if (r < 0)
		return txn_fail(t, -EIO, "source vanished during rename");
	src.parent = dst_parent.ino;
	src.name = namebuf;
	src.name_len = (uint8_t)nlen;
	src.ctime = t->now;
	r = put(t, &src);
	if (r < 0)
		return r;
	r = touch_dir_times(t, old_parent);
	if (r == 0 && dst_parent.ino != old_parent)
		r = touch_dir_times(t, dst_parent.ino);
	if (r == 0 && ret_ino != NULL)
		*ret_ino = src.ino;
	return r;
}

int txn_unlink(struct txn *t, const char *path, size_t len)
{
	struct node_rec rec;
	int r = resolve(t, path, len, &rec);
	if (r < 0)
		return r;
	if (rec.type == NODE_DIR)
		return txn_fail(t, -EISDIR, "'%.*s' is a directory (use rmdir)",
		                (int)(len > 200 ? 200 : len), path);
	uint64_t parent = rec.parent;
	r = drop(t, rec.ino);
	return r < 0 ? r : touch_dir_times(t, parent);
}

int txn_rmdir(struct txn *t, const char *path, size_t len)
{
	struct node_rec rec;
	int r = resolve(t, path, len, &rec);
	if (r < 0)
		return r;
	int shown = (int)(len > 200 ? 200 : len);
	if (rec.type != NODE_DIR)
		return txn_fail(t, -ENOTDIR, "'%.*s' is not a directory", shown, path);
	if (rec.ino == NODE_ROOT_INO)
		return txn_fail(t, -EBUSY, "the root cannot be removed");
	if (namespace_has_children(t->ns, rec.ino))
		return txn_fail(t, -ENOTEMPTY, "'%.*s' is not empty", shown, path);
	uint64_t parent = rec.parent;
	r = drop(t, rec.ino);
	return r < 0 ? r : touch_dir_times(t, parent);
}

int txn_setattr(struct txn *t, const char *path, size_t len, const struct txn_attr *a,
                uint64_t *ret_ino)
{
	int r = check_mode(t, a);
	if (r < 0)
		return r;
	struct node_rec rec;
	r = resolve(t, path, len, &rec);
	if (r < 0)
		return r;
	if (a != NULL && (a->mask & ATTR_SIZE)) {
		if (rec.type != NODE_FILE)
			return txn_fail(t, rec.type == NODE_DIR ? -EISDIR : -EINVAL,
			                "size can only be set on a file");
		rec.size = a->size;
	}
	if (a != NULL && (a->mask & ATTR_MODE) && rec.type == NODE_SYMLINK)
		return txn_fail(t, -EINVAL, "a symlink's mode cannot be changed");
	apply_attrs(&rec, a);
	rec.ctime = t->now;
	r = put(t, &rec);
	if (r == 0 && ret_ino != NULL)
		*ret_ino = rec.ino;
	return r;
}

int txn_put_record(struct txn *t, const char *name, size_t len, const uint8_t *doc, size_t doc_len,
                   uint64_t *ret_ino)
{
	if (node_check_name(name, len) < 0)
		return txn_fail(t, -EINVAL, "record name '%.*s' is not a valid name",
		                (int)(len > 200 ? 200 : len), name);
	if (doc_len > NODE_RECORD_MAX)
		return txn_fail(t, -E2BIG, "record '%.*s' is %zu bytes, more than %d", (int)len,
		                name, doc_len, NODE_RECORD_MAX);
	struct node_rec old;
	int r = namespace_lookup(t->ns, 0, name, len, &old);
	struct node_rec rec = {
	    .ino = r == 0 ? old.ino : new_ino(t),
	    .parent = 0,
	    .type = NODE_RECORD,
	    .mtime = t->now,
	    .ctime = t->now,
	    .size = doc_len,
	    .name = name,
	    .name_len = (uint8_t)len,
	    .extra = doc,
	    .extra_len = (uint32_t)doc_len,
	};
	r = put(t, &rec);
	if (r < 0)
		return r;
	if (ret_ino != NULL)
		*ret_ino = rec.ino;
	return 0;
}
