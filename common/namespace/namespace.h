/* The in-memory namespace shared by the primary and the mirrors: inodes in a
 * hash table by number, each directory's entries in a treap ordered by name
 * (so a page after a cursor costs O(log n + page)), and a running
 * order-independent digest of every entry.
 *
 * Records returned through struct node_rec borrow the namespace's memory and
 * stay valid until the next mutation. Not thread-safe: one thread owns it. */
#ifndef MP_NAMESPACE_H
#define MP_NAMESPACE_H

#include <stdint.h>

#include "node.h"

#define DIGEST_LEN 16

struct namespace;

/* A change to one inode: rec set puts the inode in exactly that state,
 * rec NULL drops it. */
struct ns_change {
	uint64_t ino;
	const struct node_rec *rec;
};

/* Returns a namespace holding only the root directory (mode 0755, times 0);
 * NULL on allocation failure. */
struct namespace *namespace_new(void);
void namespace_free(struct namespace *ns);

uint64_t namespace_count(const struct namespace *ns);
void namespace_digest(const struct namespace *ns, uint8_t out[DIGEST_LEN]);
/* Bytes the namespace holds on the heap (nodes, names, extras, tables). */
size_t namespace_memory(const struct namespace *ns);

int namespace_get(const struct namespace *ns, uint64_t ino, struct node_rec *ret_rec);
int namespace_lookup(const struct namespace *ns, uint64_t parent, const char *name, size_t len,
                     struct node_rec *ret_rec);
/* Resolves an absolute path without following symlinks. Repeated and
 * trailing slashes are accepted; "." and ".." are not. Returns 0, -ENOENT,
 * -ENOTDIR or -EINVAL. */
int namespace_resolve(const struct namespace *ns, const char *path, size_t len,
                      struct node_rec *ret_rec);
/* Writes the absolute path of ino into buf. Returns its length or -ENOENT /
 * -ENAMETOOLONG. */
int namespace_path(const struct namespace *ns, uint64_t ino, char *buf, size_t buflen);
int namespace_has_children(const struct namespace *ns, uint64_t dir_ino);
/* Is ino equal to or below ancestor? */
int namespace_is_within(const struct namespace *ns, uint64_t ino, uint64_t ancestor);

/* Calls fn for each entry of a directory whose name sorts after cursor
 * (all of them with cursor NULL), in name order, until fn returns non-zero.
 * Returns 0, -ENOENT or -ENOTDIR. */
typedef int (*namespace_visit_fn)(void *arg, const struct node_rec *rec);
int namespace_readdir(const struct namespace *ns, uint64_t dir_ino, const char *cursor,
                      size_t cursor_len, namespace_visit_fn fn, void *arg);
/* Every inode, the root included, in no particular order. */
int namespace_foreach(const struct namespace *ns, namespace_visit_fn fn, void *arg);

/* Applies a set of changes as one atomic step (each inode at most once):
 * detaches every changed inode,
 * drops and updates them, then re-attaches. Records are copied. On error
 * (-ENOENT parent missing, -ENOTDIR, -EEXIST name taken, -ENOTEMPTY dropped
 * directory with entries left, -EINVAL, -ENOMEM) the namespace is left
 * inconsistent and must be discarded: callers validate first (the primary)
 * or re-bootstrap (a mirror). err receives a reason. */
int namespace_apply(struct namespace *ns, const struct ns_change *changes, size_t n, char *err,
                    size_t errlen);

/* Bulk load (store start-up, snapshots): add inodes in any order, then link
 * them all and check the tree (every parent a directory, names unique, all
 * reachable from the root). namespace_load_finish returns -EINVAL with a
 * reason when the tree is broken; the namespace must then be discarded. */
int namespace_load_node(struct namespace *ns, const struct node_rec *rec);
int namespace_load_finish(struct namespace *ns, char *err, size_t errlen);

/* The digest contribution of one record; exposed for tests that recompute
 * a digest from a store. */
void namespace_record_hash(const struct node_rec *rec, uint64_t out[2]);

#endif
