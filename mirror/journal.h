/* A mirror's durable copy of what it applied: an append-only journal of
 * change records plus periodic snapshots of the whole namespace, in its data
 * directory:
 *
 *   snapshot-<V>.mps   the namespace at version V (written to a temporary
 *                      name, fsynced, renamed: never half there)
 *   journal-<S>.mpj    change records of versions S, S+1, ... each framed as
 *                      [u32 length][u64 checksum][record]
 *
 * Appends are buffered by the kernel and fsynced in batches (journal_sync);
 * a torn or unsynced tail after a crash is cut off at load, and the mirror
 * asks its upstream for the rest. A record that is complete but whose digest
 * or checksum is wrong in the middle of the journal means tampering or a bad
 * disk: load fails with -EBADMSG and the mirror re-bootstraps.
 *
 * One thread owns a journal. */
#ifndef MP_JOURNAL_H
#define MP_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "namespace.h"

#define JOURNAL_CLUSTER_ID_MAX 64

struct journal;

/* What a load recovered. ns is the caller's (namespace_free). */
struct journal_state {
	struct namespace *ns;
	uint64_t version;
	uint64_t next_ino;
	uint8_t digest[DIGEST_LEN];
	char cluster_id[JOURNAL_CLUSTER_ID_MAX + 1];
	uint64_t replayed;        /* records applied on top of the snapshot */
	uint64_t truncated_bytes; /* torn tail cut off */
};

/* Opens (creating) dir. ret_err is malloc'd. */
int journal_open(const char *dir, struct journal **ret, char **ret_err);
void journal_close(struct journal *j);

/* Loads the newest snapshot and replays the journal after it. Returns 0
 * with ret->ns NULL and version 0 when the directory holds nothing yet,
 * -EBADMSG when what it holds is corrupt (ret_err says where), or another
 * negative errno. */
int journal_load(struct journal *j, struct journal_state *ret, char **ret_err);

/* Appends one encoded change record of the given version, which must follow
 * the last one (-ERANGE otherwise). Not durable until journal_sync. */
int journal_append(struct journal *j, uint64_t version, const uint8_t *record, size_t len);
/* fdatasync of what was appended; returns the version now durable. */
int journal_sync(struct journal *j, uint64_t *ret_durable);
uint64_t journal_durable_version(const struct journal *j);
/* For an fsync on another thread: writes out what is buffered and returns
 * a duplicate of the journal's descriptor (the caller fdatasyncs and closes
 * it) and the last version written. Returns 0, or -errno. */
int journal_flush(struct journal *j, int *ret_fd, uint64_t *ret_version);
/* Records that version is durable (after such an fsync). */
void journal_set_durable(struct journal *j, uint64_t version);
size_t journal_bytes_since_snapshot(const struct journal *j);

/* Writes a snapshot of ns at version and starts a new journal after it;
 * older files are removed once the snapshot is durable. The work happens in
 * a forked child so the caller's loop keeps running: returns the child's pid
 * (> 0); journal_snapshot_done must be called with its exit status. With
 * in_process set it writes synchronously and returns 0. */
int journal_snapshot(struct journal *j, const struct namespace *ns, uint64_t version,
                     uint64_t next_ino, const char *cluster_id, int in_process, char **ret_err);
int journal_snapshot_done(struct journal *j, int exit_status, char **ret_err);

/* Removes every snapshot and journal file (before a re-bootstrap). */
int journal_reset(struct journal *j);

#endif
