/* Change records (docs/PROTOCOL.md): encoding one from a transaction's
 * effect, and applying one to a namespace as a single atomic step with its
 * digest checked. Shared by the primary (which encodes), mirrors (which
 * apply what they receive) and journals (which replay). */
#ifndef MP_CHANGE_H
#define MP_CHANGE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "namespace.h"

struct txn;

/* Appends to sb the change record of a transaction that has just been
 * applied to ns: [version, time, digest of ns now, one put or drop per
 * inode the transaction touched]. */
void change_encode_txn(const struct namespace *ns, const struct txn *t, uint64_t version,
                       int64_t time, msgpack_sbuffer *sb);

/* Applies an encoded record whose version must be expect_version (0: any)
 * and checks the namespace's digest against the record's afterwards.
 * Returns 0 and the record's version and commit time, or:
 *   -EINVAL   the record does not decode (nothing applied)
 *   -ERANGE   its version is not the expected one (nothing applied)
 *   -EBADMSG  the namespace refused it or the digest differs afterwards:
 *             the namespace no longer matches the sender's and must be
 *             discarded (re-bootstrap).
 * err names what was wrong. next_ino, if given, is raised past every inode
 * the record puts. */
int change_apply(struct namespace *ns, const uint8_t *record, size_t len, uint64_t expect_version,
                 uint64_t *ret_version, int64_t *ret_time, uint64_t *next_ino, char *err,
                 size_t errlen);

/* Calls fn with each inode an encoded record puts (not the ones it drops),
 * in record order. Returns 0 or -EINVAL when the record does not decode. */
int change_each_put(const uint8_t *record, size_t len, void (*fn)(void *arg, uint64_t ino),
                    void *arg);

#endif
