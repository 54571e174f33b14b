#include "namespace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* One inode and its (single) directory entry. Kept small: with a 20-byte
 * name this is 104 bytes, 112 with malloc's header. */
struct ns_node {
	uint64_t ino;
	uint64_t parent;
	struct ns_node *left; /* treap links within the parent's entries */
	struct ns_node *right;
	union {
		struct ns_node *children; /* directories: root of the entry treap */
		uint8_t *extra;           /* files: layout; symlinks: target */
	} u;
	uint64_t size;
	int64_t mtime;
	int64_t ctime;
	uint32_t mode;
	uint32_t uid;
	uint32_t gid;
	uint32_t extra_len;
	uint8_t type;
	uint8_t name_len;
	char name[];
};

struct namespace
{
	struct ns_node **slots; /* open addressing by ino, linear probing */
	size_t cap;             /* power of two */
	size_t count;
	size_t heap_bytes;
	uint64_t digest[2];
	struct ns_node *records; /* treap of the records (parent 0) by name */
};

#define DIGEST_SEED_A 0x6d69727230706c61ULL
#define DIGEST_SEED_B 0x6e65646967657374ULL

static size_t node_alloc_size(size_t name_len)
{
	return sizeof(struct ns_node) + name_len;
}

static uint64_t treap_priority(const struct ns_node *n)
{
	return hash_mix64(n->ino);
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t m = alen < blen ? alen : blen;
	int c = memcmp(a, b, m);
	if (c != 0)
		return c;
	return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* ---- hash table of inodes ---- */

static size_t slot_of(const struct namespace *ns, uint64_t ino)
{
	return hash_mix64(ino) & (ns->cap - 1);
}

static struct ns_node *table_get(const struct namespace *ns, uint64_t ino)
{
	for (size_t i = slot_of(ns, ino);; i = (i + 1) & (ns->cap - 1)) {
		struct ns_node *n = ns->slots[i];
		if (n == NULL)
			return NULL;
		if (n->ino == ino)
			return n;
	}
}

static void table_place(struct ns_node **slots, size_t cap, struct ns_node *n)
{
	size_t i = hash_mix64(n->ino) & (cap - 1);
	while (slots[i] != NULL)
		i = (i + 1) & (cap - 1);
	slots[i] = n;
}

static int table_grow(struct namespace *ns)
{
	size_t cap = ns->cap * 2;
	struct ns_node **slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < ns->cap; i++)
		if (ns->slots[i] != NULL)
			table_place(slots, cap, ns->slots[i]);
	free(ns->slots);
	ns->heap_bytes += (cap - ns->cap) * sizeof(*slots);
	ns->slots = slots;
	ns->cap = cap;
	return 0;
}

static int table_insert(struct namespace *ns, struct ns_node *n)
{
	if ((ns->count + 1) * 4 > ns->cap * 3) {
		int r = table_grow(ns);
		if (r < 0)
			return r;
	}
	table_place(ns->slots, ns->cap, n);
	ns->count++;
	return 0;
}

/* Swaps the pointer stored for an inode after a realloc moved it; old is
 * only compared, never followed. */
static void table_replace(struct namespace *ns, uint64_t ino, uintptr_t old, struct ns_node *n)
{
	for (size_t i = slot_of(ns, ino);; i = (i + 1) & (ns->cap - 1)) {
		if ((uintptr_t)ns->slots[i] == old) {
			ns->slots[i] = n;
			return;
		}
	}
}

/* Removes with backward shifting so that probe chains stay unbroken. */
static void table_remove(struct namespace *ns, const struct ns_node *n)
{
	size_t mask = ns->cap - 1;
	size_t i = slot_of(ns, n->ino);
	while (ns->slots[i] != n)
		i = (i + 1) & mask;
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		struct ns_node *m = ns->slots[j];
		if (m == NULL)
			break;
		size_t home = hash_mix64(m->ino) & mask;
		/* m may move into the hole at i if its home is not in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
			ns->slots[i] = m;
			i = j;
		}
	}
	ns->slots[i] = NULL;
	ns->count--;
}

/* ---- treap of directory entries ---- */

static struct ns_node *treap_find(struct ns_node *t, const char *name, size_t len)
{
	while (t != NULL) {
		int c = name_cmp(name, len, t->name, t->name_len);
		if (c == 0)
			return t;
		t = c < 0 ? t->left : t->right;
	}
	return NULL;
}

/* Inserts n (whose name is known to be absent). Recursion depth is the treap
 * depth, O(log n) expected since priorities are hashes of inode numbers. */
static struct ns_node *treap_insert(struct ns_node *t, struct ns_node *n)
{
	if (t == NULL) {
		n->left = n->right = NULL;
		return n;
	}
	if (name_cmp(n->name, n->name_len, t->name, t->name_len) < 0) {
		t->left = treap_insert(t->left, n);
		if (treap_priority(t->left) > treap_priority(t)) {
			struct ns_node *l = t->left;
			t->left = l->right;
			l->right = t;
			return l;
		}
	} else {
		t->right = treap_insert(t->right, n);
		if (treap_priority(t->right) > treap_priority(t)) {
			struct ns_node *r = t->right;
			t->right = r->left;
			r->left = t;
			return r;
		}
	}
	return t;
}

static struct ns_node *treap_merge(struct ns_node *a, struct ns_node *b)
{
	if (a == NULL)
		return b;
	if (b == NULL)
		return a;
	if (treap_priority(a) > treap_priority(b)) {
		a->right = treap_merge(a->right, b);
		return a;
	}
	b->left = treap_merge(a, b->left);
	return b;
}

static struct ns_node *treap_remove(struct ns_node *t, const struct ns_node *n)
{
	if (t == NULL)
		return NULL;
	if (t == n) {
		struct ns_node *m = treap_merge(t->left, t->right);
		t->left = t->right = NULL;
		return m;
	}
	if (name_cmp(n->name, n->name_len, t->name, t->name_len) < 0)
		t->left = treap_remove(t->left, n);
	else
		t->right = treap_remove(t->right, n);
	return t;
}

/* ---- records ---- */

static void node_to_rec(const struct ns_node *n, struct node_rec *rec)
{
	rec->ino = n->ino;
	rec->parent = n->parent;
	rec->size = n->size;
	rec->mtime = n->mtime;
	rec->ctime = n->ctime;
	rec->mode = n->mode;
	rec->uid = n->uid;
	rec->gid = n->gid;
	rec->type = n->type;
	rec->name_len = n->name_len;
	rec->name = n->name;
	if (n->type == NODE_DIR) {
		rec->extra = NULL;
		rec->extra_len = 0;
	} else {
		rec->extra = n->u.extra;
		rec->extra_len = n->extra_len;
	}
}

void namespace_record_hash(const struct node_rec *rec, uint64_t out[2])
{
	/* A fixed little-endian image of the attributes, then name and extra
	 * with their lengths, so that no two distinct records share an image. */
	uint8_t head[8 * 5 + 4 * 3 + 1 + 1 + 4];
	uint8_t *p = head;
	uint64_t v64[5] = {rec->ino, rec->parent, rec->size, (uint64_t)rec->mtime,
	                   (uint64_t)rec->ctime};
	for (int i = 0; i < 5; i++)
		for (int b = 0; b < 8; b++)
			*p++ = (uint8_t)(v64[i] >> (8 * b));
	uint32_t v32[4] = {rec->mode, rec->uid, rec->gid, rec->extra_len};
	for (int i = 0; i < 3; i++)
		for (int b = 0; b < 4; b++)
			*p++ = (uint8_t)(v32[i] >> (8 * b));
	*p++ = rec->type;
	*p++ = rec->name_len;
	for (int b = 0; b < 4; b++)
		*p++ = (uint8_t)(v32[3] >> (8 * b));
	uint64_t a = hash_bytes(head, sizeof(head), DIGEST_SEED_A);
	uint64_t b = hash_bytes(head, sizeof(head), DIGEST_SEED_B);
	a = hash_bytes(rec->name, rec->name_len, a);
	b = hash_bytes(rec->name, rec->name_len, b);
	if (rec->extra_len > 0) {
		a = hash_bytes(rec->extra, rec->extra_len, a);
		b = hash_bytes(rec->extra, rec->extra_len, b);
	}
	out[0] = hash_mix64(a);
	out[1] = hash_mix64(b ^ 0x9e3779b97f4a7c15ULL);
}

static void digest_add(struct namespace *ns, const struct ns_node *n, int sign)
{
	struct node_rec rec;
	uint64_t h[2];
	node_to_rec(n, &rec);
	namespace_record_hash(&rec, h);
	if (sign > 0) {
		ns->digest[0] += h[0];
		ns->digest[1] += h[1];
	} else {
		ns->digest[0] -= h[0];
		ns->digest[1] -= h[1];
	}
}

static void node_free(struct namespace *ns, struct ns_node *n)
{
	if (n->type != NODE_DIR && n->u.extra != NULL) {
		ns->heap_bytes -= n->extra_len;
		free(n->u.extra);
	}
	ns->heap_bytes -= node_alloc_size(n->name_len);
	free(n);
}

/* Writes rec's fields into n, which must have room for rec's name. */
static int node_fill(struct namespace *ns, struct ns_node *n, const struct node_rec *rec)
{
	uint8_t *extra = NULL;
	if (rec->type != NODE_DIR && rec->extra_len > 0) {
		extra = malloc(rec->extra_len);
		if (extra == NULL)
			return -ENOMEM;
		memcpy(extra, rec->extra, rec->extra_len);
	}
	if (n->type != NODE_DIR && n->u.extra != NULL) {
		ns->heap_bytes -= n->extra_len;
		free(n->u.extra);
		n->u.extra = NULL;
	}
	if (rec->type != NODE_DIR) {
		n->u.extra = extra;
		n->extra_len = extra != NULL ? rec->extra_len : 0;
		ns->heap_bytes += n->extra_len;
	} else if (n->type != NODE_DIR) {
		n->u.children = NULL;
		n->extra_len = 0;
	}
	n->ino = rec->ino;
	n->parent = rec->parent;
	n->size = rec->size;
	n->mtime = rec->mtime;
	n->ctime = rec->ctime;
	n->mode = rec->mode;
	n->uid = rec->uid;
	n->gid = rec->gid;
	n->type = rec->type;
	n->name_len = rec->name_len;
	if (rec->name_len > 0)
		memmove(n->name, rec->name, rec->name_len);
	return 0;
}

static struct ns_node *node_new(struct namespace *ns, const struct node_rec *rec)
{
	struct ns_node *n = calloc(1, node_alloc_size(rec->name_len));
	if (n == NULL)
		return NULL;
	n->type = NODE_DIR; /* nothing to free yet */
	if (node_fill(ns, n, rec) < 0) {
		free(n);
		return NULL;
	}
	ns->heap_bytes += node_alloc_size(rec->name_len);
	return n;
}

/* ---- public API ---- */

struct namespace *namespace_new(void)
{
	struct namespace *ns = calloc(1, sizeof(*ns));
	if (ns == NULL)
		return NULL;
	ns->cap = 16;
	ns->slots = calloc(ns->cap, sizeof(*ns->slots));
	if (ns->slots == NULL) {
		free(ns);
		return NULL;
	}
	ns->heap_bytes = sizeof(*ns) + ns->cap * sizeof(*ns->slots);
	struct node_rec root = {
	    .ino = NODE_ROOT_INO, .parent = 0, .type = NODE_DIR, .mode = 0755, .name = ""};
	struct ns_node *n = node_new(ns, &root);
	if (n == NULL || table_insert(ns, n) < 0) {
		free(n);
		namespace_free(ns);
		return NULL;
	}
	digest_add(ns, n, 1);
	return ns;
}

void namespace_free(struct namespace *ns)
{
	if (ns == NULL)
		return;
	for (size_t i = 0; i < ns->cap; i++)
		if (ns->slots[i] != NULL)
			node_free(ns, ns->slots[i]);
	free(ns->slots);
	free(ns);
}

uint64_t namespace_count(const struct namespace *ns)
{
	return ns->count;
}

void namespace_digest(const struct namespace *ns, uint8_t out[DIGEST_LEN])
{
	for (int i = 0; i < 2; i++)
		for (int b = 0; b < 8; b++)
			out[i * 8 + b] = (uint8_t)(ns->digest[i] >> (56 - 8 * b));
}

size_t namespace_memory(const struct namespace *ns)
{
	return ns->heap_bytes;
}

int namespace_get(const struct namespace *ns, uint64_t ino, struct node_rec *ret_rec)
{
	const struct ns_node *n = table_get(ns, ino);
	if (n == NULL)
		return -ENOENT;
	node_to_rec(n, ret_rec);
	return 0;
}

int namespace_lookup(const struct namespace *ns, uint64_t parent, const char *name, size_t len,
                     struct node_rec *ret_rec)
{
	if (parent == 0) {
		const struct ns_node *r =
		    node_check_name(name, len) < 0 ? NULL : treap_find(ns->records, name, len);
		if (r == NULL)
			return -ENOENT;
		node_to_rec(r, ret_rec);
		return 0;
	}
	const struct ns_node *dir = table_get(ns, parent);
	if (dir == NULL)
		return -ENOENT;
	if (dir->type != NODE_DIR)
		return -ENOTDIR;
	if (node_check_name(name, len) < 0)
		return -EINVAL;
	const struct ns_node *n = treap_find(dir->u.children, name, len);
	if (n == NULL)
		return -ENOENT;
	node_to_rec(n, ret_rec);
	return 0;
}

int namespace_resolve(const struct namespace *ns, const char *path, size_t len,
                      struct node_rec *ret_rec)
{
	if (len == 0 || path[0] != '/' || len > NODE_PATH_MAX || memchr(path, '\0', len) != NULL)
		return -EINVAL;
	const struct ns_node *cur = table_get(ns, NODE_ROOT_INO);
	size_t i = 0;
	while (i < len) {
		while (i < len && path[i] == '/')
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && path[i] != '/')
			i++;
		size_t clen = i - start;
		if (node_check_name(path + start, clen) < 0)
			return -EINVAL;
		if (cur->type != NODE_DIR)
			return -ENOTDIR;
		cur = treap_find(cur->u.children, path + start, clen);
		if (cur == NULL)
			return -ENOENT;
	}
	node_to_rec(cur, ret_rec);
	return 0;
}

int namespace_path(const struct namespace *ns, uint64_t ino, char *buf, size_t buflen)
{
	if (buflen < 2)
		return -ENAMETOOLONG;
	/* Build right to left, then move into place. */
	size_t pos = buflen - 1;
	buf[pos] = '\0';
	const struct ns_node *n = table_get(ns, ino);
	if (n == NULL)
		return -ENOENT;
	int depth = 0;
	while (n->ino != NODE_ROOT_INO) {
		if (pos < (size_t)n->name_len + 1 || ++depth > NODE_PATH_MAX / 2)
			return -ENAMETOOLONG;
		pos -= n->name_len;
		memcpy(buf + pos, n->name, n->name_len);
		buf[--pos] = '/';
		n = table_get(ns, n->parent);
		if (n == NULL)
			return -ENOENT;
	}
	if (pos == buflen - 1)
		buf[--pos] = '/';
	size_t len = buflen - 1 - pos;
	memmove(buf, buf + pos, len + 1);
	return (int)len;
}

int namespace_has_children(const struct namespace *ns, uint64_t dir_ino)
{
	const struct ns_node *n = table_get(ns, dir_ino);
	return n != NULL && n->type == NODE_DIR && n->u.children != NULL;
}

int namespace_is_within(const struct namespace *ns, uint64_t ino, uint64_t ancestor)
{
	int guard = 0;
	while (ino != 0 && guard++ < NODE_PATH_MAX) {
		if (ino == ancestor)
			return 1;
		if (ino == NODE_ROOT_INO)
			return 0;
		const struct ns_node *n = table_get(ns, ino);
		if (n == NULL)
			return 0;
		ino = n->parent;
	}
	return 0;
}

struct walk {
	const char *cursor;
	size_t cursor_len;
	namespace_visit_fn fn;
	void *arg;
	int stop;
};

static void treap_walk(const struct ns_node *t, struct walk *w)
{
	while (t != NULL && !w->stop) {
		if (w->cursor != NULL &&
		    name_cmp(t->name, t->name_len, w->cursor, w->cursor_len) <= 0) {
			t = t->right; /* everything left of and at t is before the cursor */
			continue;
		}
		treap_walk(t->left, w);
		if (w->stop)
			return;
		struct node_rec rec;
		node_to_rec(t, &rec);
		if (w->fn(w->arg, &rec) != 0) {
			w->stop = 1;
			return;
		}
		t = t->right;
	}
}

int namespace_readdir(const struct namespace *ns, uint64_t dir_ino, const char *cursor,
                      size_t cursor_len, namespace_visit_fn fn, void *arg)
{
	const struct ns_node *dir = table_get(ns, dir_ino);
	if (dir == NULL)
		return -ENOENT;
	if (dir->type != NODE_DIR)
		return -ENOTDIR;
	struct walk w = {cursor, cursor_len, fn, arg, 0};
	treap_walk(dir->u.children, &w);
	return 0;
}

int namespace_foreach(const struct namespace *ns, namespace_visit_fn fn, void *arg)
{
	for (size_t i = 0; i < ns->cap; i++) {
		const struct ns_node *n = ns->slots[i];
		if (n == NULL)
			continue;
		struct node_rec rec;
		node_to_rec(n, &rec);
		if (fn(arg, &rec) != 0)
			break;
	}
	return 0;
}

static int set_err(char *err, size_t errlen, int code, const char *fmt, unsigned long long ino)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, fmt, ino);
	return code;
}

static void detach(struct namespace *ns, struct ns_node *n)
{
	if (n->ino == NODE_ROOT_INO)
		return;
	if (n->type == NODE_RECORD) {
		ns->records = treap_remove(ns->records, n);
		return;
	}
	struct ns_node *dir = table_get(ns, n->parent);
	if (dir != NULL && dir->type == NODE_DIR)
		dir->u.children = treap_remove(dir->u.children, n);
}

static int attach(struct namespace *ns, struct ns_node *n, char *err, size_t errlen)
{
	if (n->ino == NODE_ROOT_INO)
		return 0;
	if (n->type == NODE_RECORD) {
		if (treap_find(ns->records, n->name, n->name_len) != NULL)
			return set_err(err, errlen, -EEXIST,
			               "name of record %llu is taken by another record",
			               (unsigned long long)n->ino);
		ns->records = treap_insert(ns->records, n);
		return 0;
	}
	struct ns_node *dir = table_get(ns, n->parent);
	if (dir == NULL)
		return set_err(err, errlen, -ENOENT, "parent of inode %llu does not exist",
		               (unsigned long long)n->ino);
	if (dir->type != NODE_DIR)
		return set_err(err, errlen, -ENOTDIR, "parent of inode %llu is not a directory",
		               (unsigned long long)n->ino);
	if (treap_find(dir->u.children, n->name, n->name_len) != NULL)
		return set_err(err, errlen, -EEXIST, "name of inode %llu is taken in its directory",
		               (unsigned long long)n->ino);
	dir->u.children = treap_insert(dir->u.children, n);
	return 0;
}

static int check_change(const struct ns_change *c, char *err, size_t errlen)
{
	if (c->rec == NULL) {
		if (c->ino == NODE_ROOT_INO)
			return set_err(err, errlen, -EINVAL,
			               "the root (inode %llu) cannot be dropped",
			               (unsigned long long)c->ino);
		return 0;
	}
	if (c->rec->ino != c->ino || c->ino == 0)
		return set_err(err, errlen, -EINVAL, "record for inode %llu names another inode",
		               (unsigned long long)c->ino);
	if (c->ino == NODE_ROOT_INO && (c->rec->type != NODE_DIR || c->rec->parent != 0))
		return set_err(err, errlen, -EINVAL, "the root (inode %llu) must stay a directory",
		               (unsigned long long)c->ino);
	if (c->ino != NODE_ROOT_INO && c->rec->parent == 0 && c->rec->type != NODE_RECORD)
		return set_err(err, errlen, -EINVAL, "inode %llu has no parent",
		               (unsigned long long)c->ino);
	return node_check(c->rec, err, errlen);
}

int namespace_apply(struct namespace *ns, const struct ns_change *changes, size_t n, char *err,
                    size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		int r = check_change(&changes[i], err, errlen);
		if (r < 0)
			return r;
	}
	/* Phase 1: take every changed inode out of its directory and out of
	 * the digest, so that renames within one step never collide. */
	for (size_t i = 0; i < n; i++) {
		struct ns_node *node = table_get(ns, changes[i].ino);
		if (node != NULL) {
			detach(ns, node);
			digest_add(ns, node, -1);
		}
	}
	/* Phase 2: drop and update. */
	for (size_t i = 0; i < n; i++) {
		const struct ns_change *c = &changes[i];
		struct ns_node *node = table_get(ns, c->ino);
		if (c->rec == NULL) {
			if (node == NULL)
				continue; /* dropped twice in one step */
			if (node->type == NODE_DIR && node->u.children != NULL)
				return set_err(err, errlen, -ENOTEMPTY,
				               "dropped directory %llu still has entries",
				               (unsigned long long)c->ino);
			table_remove(ns, node);
			node_free(ns, node);
			continue;
		}
		if (node == NULL) {
			node = node_new(ns, c->rec);
			if (node == NULL || table_insert(ns, node) < 0) {
				if (node != NULL)
					node_free(ns, node);
				return set_err(err, errlen, -ENOMEM,
				               "out of memory adding inode %llu",
				               (unsigned long long)c->ino);
			}
			continue;
		}
		if (node->type == NODE_DIR && c->rec->type != NODE_DIR && node->u.children != NULL)
			return set_err(err, errlen, -ENOTEMPTY,
			               "directory %llu with entries cannot change type",
			               (unsigned long long)c->ino);
		struct ns_node *children = node->type == NODE_DIR ? node->u.children : NULL;
		if (node->name_len != c->rec->name_len) {
			uintptr_t old = (uintptr_t)node;
			struct ns_node *grown = realloc(node, node_alloc_size(c->rec->name_len));
			if (grown == NULL)
				return set_err(err, errlen, -ENOMEM,
				               "out of memory renaming inode %llu",
				               (unsigned long long)c->ino);
			ns->heap_bytes += node_alloc_size(c->rec->name_len);
			ns->heap_bytes -= node_alloc_size(grown->name_len);
			if ((uintptr_t)grown != old)
				table_replace(ns, c->ino, old, grown);
			node = grown;
		}
		if (node_fill(ns, node, c->rec) < 0)
			return set_err(err, errlen, -ENOMEM, "out of memory updating inode %llu",
			               (unsigned long long)c->ino);
		if (node->type == NODE_DIR)
			node->u.children = children;
	}
	/* Phase 3: back into their directories and the digest. */
	for (size_t i = 0; i < n; i++) {
		if (changes[i].rec == NULL)
			continue;
		struct ns_node *node = table_get(ns, changes[i].ino);
		if (node == NULL)
			continue;
		int r = attach(ns, node, err, errlen);
		if (r < 0)
			return r;
		digest_add(ns, node, 1);
	}
	return 0;
}

int namespace_load_node(struct namespace *ns, const struct node_rec *rec)
{
	char err[16];
	struct ns_change c = {rec->ino, rec};
	if (check_change(&c, err, sizeof(err)) < 0)
		return -EINVAL;
	struct ns_node *old = table_get(ns, rec->ino);
	if (old != NULL) {
		/* Only the root may be loaded over (it exists from the start). */
		if (rec->ino != NODE_ROOT_INO || old->u.children != NULL)
			return -EEXIST;
		digest_add(ns, old, -1);
		table_remove(ns, old);
		node_free(ns, old);
	}
	struct ns_node *n = node_new(ns, rec);
	if (n == NULL)
		return -ENOMEM;
	if (table_insert(ns, n) < 0) {
		node_free(ns, n);
		return -ENOMEM;
	}
	n->left = n->right = NULL;
	if (n->type == NODE_DIR)
		n->u.children = NULL;
	digest_add(ns, n, 1);
	return 0;
}

static size_t count_reachable(const struct ns_node *t)
{
	size_t total = 0;
	while (t != NULL) {
		total += 1 + count_reachable(t->left);
		if (t->type == NODE_DIR)
			total += count_reachable(t->u.children);
		t = t->right;
	}
	return total;
}

int namespace_load_finish(struct namespace *ns, char *err, size_t errlen)
{
	for (size_t i = 0; i < ns->cap; i++) {
		struct ns_node *n = ns->slots[i];
		if (n == NULL || n->ino == NODE_ROOT_INO)
			continue;
		int r = attach(ns, n, err, errlen);
		if (r < 0)
			return -EINVAL;
	}
	const struct ns_node *root = table_get(ns, NODE_ROOT_INO);
	size_t reachable = 1 + count_reachable(root->u.children) + count_reachable(ns->records);
	if (reachable != ns->count)
		return set_err(err, errlen, -EINVAL,
		               "%llu inodes are not reachable from the root (a cycle)",
		               (unsigned long long)(ns->count - reachable));
	return 0;
}
