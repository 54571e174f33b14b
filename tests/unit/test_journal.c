/* Unit tests of the mirror's journal: append, sync, snapshot (in process
 * and forked), reload after a clean stop, a torn tail, and tampering. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "change.h"
#include "journal.h"
#include "txn.h"

struct fx {
	char dir[64];
	struct namespace *src; /* the "primary" side */
	uint64_t next_ino;
	uint64_t version;
	struct journal *j;
	uint8_t last[4096]; /* the newest record written */
	size_t last_len;
};

static int setup(void **state)
{
	static struct fx f;
	memset(&f, 0, sizeof(f));
	snprintf(f.dir, sizeof(f.dir), "/tmp/mp-journal-XXXXXX");
	assert_non_null(mkdtemp(f.dir));
	f.src = namespace_new();
	f.next_ino = 2;
	char *err = NULL;
	assert_int_equal(journal_open(f.dir, &f.j, &err), 0);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	journal_close(f->j);
	namespace_free(f->src);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Makes one version on the source namespace and journals its record. */
static void write_version(struct fx *f, const char *path)
{
	struct txn *t = txn_new(f->src, &f->next_ino, 1000 + (int64_t)f->version);
	assert_int_equal(txn_mkdir(t, path, strlen(path), NULL, true, NULL), 0);
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	change_encode_txn(f->src, t, ++f->version, 1000, &sb);
	assert_int_equal(journal_append(f->j, f->version, (uint8_t *)sb.data, sb.size), 0);
	assert_true(sb.size <= sizeof(f->last));
	memcpy(f->last, sb.data, sb.size);
	f->last_len = sb.size;
	msgpack_sbuffer_destroy(&sb);
	txn_free(t);
}

static void assert_same(struct fx *f, const struct journal_state *st)
{
	uint8_t a[DIGEST_LEN], b[DIGEST_LEN];
	namespace_digest(f->src, a);
	namespace_digest(st->ns, b);
	assert_memory_equal(a, b, DIGEST_LEN);
	assert_memory_equal(a, st->digest, DIGEST_LEN);
	assert_int_equal(namespace_count(f->src), namespace_count(st->ns));
}

static void reopen(struct fx *f, struct journal_state *st, int expect)
{
	journal_close(f->j);
	char *err = NULL;
	assert_int_equal(journal_open(f->dir, &f->j, &err), 0);
	memset(st, 0, sizeof(*st));
	int r = journal_load(f->j, st, &err);
	if (r != expect)
		fail_msg("journal_load returned %d (%s), expected %d", r, err ? err : "", expect);
	free(err);
}

static void test_empty(void **state)
{
	struct fx *f = *state;
	struct journal_state st;
	reopen(f, &st, 0);
	assert_null(st.ns);
	assert_int_equal(st.version, 0);
}

static void test_snapshot_then_journal(void **state)
{
	struct fx *f = *state;
	char *err = NULL;
	write_version(f, "/a");
	write_version(f, "/a/b");
	assert_int_equal(journal_snapshot(f->j, f->src, f->version, f->next_ino, "cl-1", 1, &err),
	                 0);
	write_version(f, "/c");
	write_version(f, "/c/d/e");
	uint64_t durable;
	assert_int_equal(journal_sync(f->j, &durable), 0);
	assert_int_equal(durable, 4);
	struct journal_state st;
	reopen(f, &st, 0);
	assert_int_equal(st.version, 4);
	assert_int_equal(st.replayed, 2);
	assert_string_equal(st.cluster_id, "cl-1");
	assert_true(st.next_ino >= f->next_ino);
	assert_same(f, &st);
	namespace_free(st.ns);
	/* Appending goes on where it stopped, and reloads again. */
	write_version(f, "/f");
	journal_sync(f->j, NULL);
	reopen(f, &st, 0);
	assert_int_equal(st.version, 5);
	assert_same(f, &st);
	namespace_free(st.ns);
}

static void test_forked_snapshot(void **state)
{
	struct fx *f = *state;
	char *err = NULL;
	assert_int_equal(journal_snapshot(f->j, f->src, 0, 2, "cl-1", 1, &err), 0);
	for (int i = 0; i < 50; i++) {
		char p[32];
		snprintf(p, sizeof(p), "/d%d", i);
		write_version(f, p);
	}
	int pid = journal_snapshot(f->j, f->src, f->version, f->next_ino, "cl-1", 0, &err);
	assert_true(pid > 0);
	/* The loop goes on writing while the child writes the snapshot. */
	write_version(f, "/after");
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(journal_snapshot_done(f->j, status, &err), 0);
	journal_sync(f->j, NULL);
	struct journal_state st;
	reopen(f, &st, 0);
	assert_int_equal(st.version, 51);
	assert_int_equal(st.replayed, 1);
	assert_same(f, &st);
	namespace_free(st.ns);
}

static char *newest_journal(struct fx *f)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "ls %s/journal-*.mpj | tail -1", f->dir);
	FILE *p = popen(cmd, "r");
	static char path[256];
	assert_non_null(fgets(path, sizeof(path), p));
	pclose(p);
	path[strcspn(path, "\n")] = '\0';
	return path;
}

static void test_torn_tail(void **state)
{
	struct fx *f = *state;
	char *err = NULL;
	assert_int_equal(journal_snapshot(f->j, f->src, 0, 2, "cl-1", 1, &err), 0);
	write_version(f, "/x");
	write_version(f, "/y");
	journal_sync(f->j, NULL);
	char *path = newest_journal(f);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	/* A crash in the middle of the last record. */
	assert_int_equal(truncate(path, sb.st_size - 5), 0);
	struct journal_state st;
	reopen(f, &st, 0);
	assert_int_equal(st.version, 1);
	assert_true(st.truncated_bytes > 0);
	namespace_free(st.ns);
	/* The file was cut back to whole records: the lost version can be
	 * appended again (as the upstream would resend it), not another. */
	assert_int_equal(journal_append(f->j, 3, f->last, f->last_len), -ERANGE);
	assert_int_equal(journal_append(f->j, 2, f->last, f->last_len), 0);
	journal_sync(f->j, NULL);
	reopen(f, &st, 0);
	assert_int_equal(st.version, 2);
	assert_same(f, &st);
	namespace_free(st.ns);
}

static void test_tampered(void **state)
{
	struct fx *f = *state;
	char *err = NULL;
	assert_int_equal(journal_snapshot(f->j, f->src, 0, 2, "cl-1", 1, &err), 0);
	write_version(f, "/x");
	write_version(f, "/y");
	write_version(f, "/z");
	journal_sync(f->j, NULL);
	char *path = newest_journal(f);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	/* Flip a byte inside the first record, which is followed by more. */
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, 20), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, 20), 1);
	close(fd);
	struct journal_state st;
	reopen(f, &st, -EBADMSG);
	assert_null(st.ns);
	assert_int_equal(journal_reset(f->j), 0);
	reopen(f, &st, 0);
	assert_null(st.ns);
}

static void test_tampered_snapshot(void **state)
{
	struct fx *f = *state;
	char *err = NULL;
	write_version(f, "/a/b/c");
	assert_int_equal(journal_snapshot(f->j, f->src, f->version, f->next_ino, "cl-1", 1, &err),
	                 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd),
	         "f=$(ls %s/snapshot-*.mps); printf 'X' | dd of=$f bs=1 seek=30 conv=notrunc "
	         "2>/dev/null",
	         f->dir);
	assert_int_equal(system(cmd), 0);
	struct journal_state st;
	reopen(f, &st, -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_then_journal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forked_snapshot, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tampered_snapshot, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
