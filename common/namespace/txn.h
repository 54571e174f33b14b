/* A write transaction over the namespace: POSIX-like operations on paths
 * that check their preconditions, apply their effect at once (so the next
 * operation of the same transaction sees it) and remember each touched
 * inode's prior state, so that the whole transaction can be rolled back or
 * turned into one change record.
 *
 * The primary runs every write request as a txn; a failed operation inside a
 * batch rolls the whole batch back. Not thread-safe. */
#ifndef MP_TXN_H
#define MP_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "namespace.h"

enum txn_attr_mask {
	ATTR_MODE = 1 << 0,
	ATTR_UID = 1 << 1,
	ATTR_GID = 1 << 2,
	ATTR_SIZE = 1 << 3,
	ATTR_MTIME = 1 << 4,
};

struct txn_attr {
	unsigned mask; /* which of the fields below are set */
	uint32_t mode;
	uint32_t uid;
	uint32_t gid;
	uint64_t size;
	int64_t mtime;
};

struct txn;

/* next_ino is the caller's inode counter, advanced as inodes are made. */
struct txn *txn_new(struct namespace *ns, uint64_t *next_ino, int64_t now);
void txn_free(struct txn *t);

/* Each returns 0 or a negative errno with a message in txn_error(); on
 * success *ret_ino (where given) is the inode the operation produced. */
int txn_mkdir(struct txn *t, const char *path, size_t len, const struct txn_attr *a, bool parents,
              uint64_t *ret_ino);
/* Creates a file or replaces an existing file's attributes and layout. */
int txn_create(struct txn *t, const char *path, size_t len, const struct txn_attr *a,
               const uint8_t *layout, size_t layout_len, uint64_t *ret_ino);
int txn_symlink(struct txn *t, const char *path, size_t len, const char *target, size_t target_len,
                const struct txn_attr *a, uint64_t *ret_ino);
int txn_rename(struct txn *t, const char *from, size_t from_len, const char *to, size_t to_len,
               uint64_t *ret_ino);
int txn_unlink(struct txn *t, const char *path, size_t len);
int txn_rmdir(struct txn *t, const char *path, size_t len);
int txn_setattr(struct txn *t, const char *path, size_t len, const struct txn_attr *a,
                uint64_t *ret_ino);

/* Creates or replaces the record called name (a node of type NODE_RECORD,
 * outside the tree: see node.h) with doc as its document. */
int txn_put_record(struct txn *t, const char *name, size_t len, const uint8_t *doc, size_t doc_len,
                   uint64_t *ret_ino);

const char *txn_error(const struct txn *t);

/* Puts every touched inode back as it was. Returns 0, or -EIO if the
 * namespace refused (a broken invariant). */
int txn_rollback(struct txn *t);

/* The inodes this transaction changed, in first-touch order, with whether
 * each existed before. Their final state is what the namespace now holds:
 * present means put, absent and existed means drop, absent and new means
 * nothing to record. */
size_t txn_touched_count(const struct txn *t);
uint64_t txn_touched_ino(const struct txn *t, size_t i);
bool txn_touched_existed(const struct txn *t, size_t i);
/* Touched inode i as it was before the transaction, or NULL if it did not
 * exist. Borrowed from the txn: valid until txn_free. */
const struct node_rec *txn_touched_before(const struct txn *t, size_t i);

#endif
