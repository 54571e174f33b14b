/* Unit tests of namespace operations (txn.c): POSIX-like semantics, their
 * error cases, and rollback. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "txn.h"

struct fx {
	struct namespace *ns;
	uint64_t next_ino;
	struct txn *t;
};

static int setup(void **state)
{
	static struct fx f;
	f.ns = namespace_new();
	f.next_ino = 2;
	f.t = txn_new(f.ns, &f.next_ino, 5000);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	txn_free(f->t);
	namespace_free(f->ns);
	return 0;
}

#define S(s) (s), strlen(s)

static uint64_t ino_of(struct fx *f, const char *path)
{
	struct node_rec r;
	if (namespace_resolve(f->ns, path, strlen(path), &r) < 0)
		return 0;
	return r.ino;
}

static void test_mkdir(void **state)
{
	struct fx *f = *state;
	uint64_t ino;
	assert_int_equal(txn_mkdir(f->t, S("/a"), NULL, false, &ino), 0);
	assert_int_equal(ino, 2);
	assert_int_equal(txn_mkdir(f->t, S("/a"), NULL, false, &ino), -EEXIST);
	assert_int_equal(txn_mkdir(f->t, S("/"), NULL, false, &ino), -EEXIST);
	assert_int_equal(txn_mkdir(f->t, S("/x/y"), NULL, false, &ino), -ENOENT);
	assert_non_null(strstr(txn_error(f->t), "does not exist"));
	assert_int_equal(txn_mkdir(f->t, S("relative"), NULL, false, &ino), -EINVAL);
	assert_int_equal(txn_mkdir(f->t, S("/a/.."), NULL, false, &ino), -EINVAL);
	assert_int_equal(txn_mkdir(f->t, S("/a/b/c/d"), NULL, true, &ino), 0);
	assert_int_not_equal(ino_of(f, "/a/b/c/d"), 0);
	uint64_t again;
	assert_int_equal(txn_mkdir(f->t, S("/a/b/c/d"), NULL, true, &again), 0);
	assert_int_equal(again, ino);
	assert_int_equal(txn_create(f->t, S("/a/file"), NULL, NULL, 0, NULL), 0);
	assert_int_equal(txn_mkdir(f->t, S("/a/file/sub"), NULL, true, &ino), -ENOTDIR);
	assert_int_equal(txn_mkdir(f->t, S("/a/file/sub"), NULL, false, &ino), -ENOTDIR);
	struct txn_attr a = {.mask = ATTR_MODE | ATTR_UID, .mode = 0700, .uid = 42};
	assert_int_equal(txn_mkdir(f->t, S("/m"), &a, false, &ino), 0);
	struct node_rec r;
	namespace_get(f->ns, ino, &r);
	assert_int_equal(r.mode, 0700);
	assert_int_equal(r.uid, 42);
	assert_int_equal(r.mtime, 5000);
	a.mode = 0170000;
	assert_int_equal(txn_mkdir(f->t, S("/bad"), &a, false, &ino), -EINVAL);
	char name[300];
	memset(name, 'n', sizeof(name));
	name[0] = '/';
	assert_int_equal(txn_mkdir(f->t, name, 257, NULL, false, &ino), -E2BIG);
	char huge[5000];
	memset(huge, 'a', sizeof(huge));
	huge[0] = '/';
	assert_int_equal(txn_mkdir(f->t, huge, sizeof(huge), NULL, false, &ino), -E2BIG);
}

static void test_create_replace(void **state)
{
	struct fx *f = *state;
	static const uint8_t layout[] = {0x91, 0x95, 0xa6, 'o',  'r', 'i',  'g', 'i',
	                                 'n',  0xa1, 'k',  0xa1, 'e', 0x00, 0x0a};
	struct txn_attr a = {.mask = ATTR_SIZE, .size = 10};
	uint64_t ino, ino2;
	assert_int_equal(txn_create(f->t, S("/f"), &a, layout, sizeof(layout), &ino), 0);
	struct node_rec r;
	namespace_get(f->ns, ino, &r);
	assert_int_equal(r.size, 10);
	assert_int_equal(r.extra_len, sizeof(layout));
	a.size = 20;
	assert_int_equal(txn_create(f->t, S("/f"), &a, NULL, 0, &ino2), 0);
	assert_int_equal(ino2, ino); /* replaced in place */
	namespace_get(f->ns, ino, &r);
	assert_int_equal(r.size, 20);
	assert_int_equal(r.extra_len, 0);
	assert_int_equal(txn_create(f->t, S("/"), NULL, NULL, 0, &ino), -EISDIR);
	txn_mkdir(f->t, S("/d"), NULL, false, NULL);
	assert_int_equal(txn_create(f->t, S("/d"), NULL, NULL, 0, &ino), -EISDIR);
	txn_symlink(f->t, S("/l"), S("/f"), NULL, NULL);
	assert_int_equal(txn_create(f->t, S("/l"), NULL, NULL, 0, &ino), -EEXIST);
	static const uint8_t bad[] = {0x91, 0x01};
	assert_int_equal(txn_create(f->t, S("/g"), NULL, bad, sizeof(bad), &ino), -EINVAL);
	assert_int_equal(txn_create(f->t, S("/nodir/g"), NULL, NULL, 0, &ino), -ENOENT);
	assert_int_equal(txn_create(f->t, S("/f/g"), NULL, NULL, 0, &ino), -ENOTDIR);
}

static void test_symlink(void **state)
{
	struct fx *f = *state;
	uint64_t ino;
	assert_int_equal(txn_symlink(f->t, S("/l"), S("../target"), NULL, &ino), 0);
	struct node_rec r;
	namespace_get(f->ns, ino, &r);
	assert_int_equal(r.type, NODE_SYMLINK);
	assert_int_equal(r.mode, 0777);
	assert_int_equal(r.size, 9);
	assert_memory_equal(r.extra, "../target", 9);
	assert_int_equal(txn_symlink(f->t, S("/l"), S("x"), NULL, &ino), -EEXIST);
	assert_int_equal(txn_symlink(f->t, S("/m"), "", 0, NULL, &ino), -EINVAL);
	assert_int_equal(txn_symlink(f->t, S("/m"), "a\0b", 3, NULL, &ino), -EINVAL);
}

static void test_rename(void **state)
{
	struct fx *f = *state;
	uint64_t ino;
	txn_mkdir(f->t, S("/a/b/c"), NULL, true, NULL);
	txn_create(f->t, S("/a/f1"), NULL, NULL, 0, NULL);
	txn_create(f->t, S("/a/f2"), NULL, NULL, 0, NULL);
	txn_mkdir(f->t, S("/empty"), NULL, false, NULL);
	txn_mkdir(f->t, S("/full/x"), NULL, true, NULL);
	uint64_t f1 = ino_of(f, "/a/f1");
	/* Replace a file. */
	assert_int_equal(txn_rename(f->t, S("/a/f1"), S("/a/f2"), &ino), 0);
	assert_int_equal(ino, f1);
	assert_int_equal(ino_of(f, "/a/f2"), f1);
	assert_int_equal(ino_of(f, "/a/f1"), 0);
	/* Onto itself: nothing. */
	assert_int_equal(txn_rename(f->t, S("/a/f2"), S("/a/f2"), &ino), 0);
	/* Directory into its own subtree. */
	assert_int_equal(txn_rename(f->t, S("/a"), S("/a/b/c/a"), &ino), -EINVAL);
	assert_int_equal(txn_rename(f->t, S("/a"), S("/a/x"), &ino), -EINVAL);
	/* Directory over an empty directory, not over a full one or a file. */
	assert_int_equal(txn_rename(f->t, S("/a/b"), S("/full"), &ino), -ENOTEMPTY);
	assert_int_equal(txn_rename(f->t, S("/a/b"), S("/a/f2"), &ino), -ENOTDIR);
	assert_int_equal(txn_rename(f->t, S("/a/f2"), S("/empty"), &ino), -EISDIR);
	uint64_t b = ino_of(f, "/a/b");
	assert_int_equal(txn_rename(f->t, S("/a/b"), S("/empty"), &ino), 0);
	assert_int_equal(ino_of(f, "/empty"), b);
	assert_int_not_equal(ino_of(f, "/empty/c"), 0);
	assert_int_equal(txn_rename(f->t, S("/nope"), S("/x"), &ino), -ENOENT);
	assert_int_equal(txn_rename(f->t, S("/empty"), S("/nodir/x"), &ino), -ENOENT);
	assert_int_equal(txn_rename(f->t, S("/"), S("/x"), &ino), -EBUSY);
	assert_int_equal(txn_rename(f->t, S("/empty"), S("/"), &ino), -EBUSY);
	/* Parents' times change. */
	struct node_rec r;
	namespace_get(f->ns, NODE_ROOT_INO, &r);
	assert_int_equal(r.mtime, 5000);
}

static void test_unlink_rmdir_setattr(void **state)
{
	struct fx *f = *state;
	txn_mkdir(f->t, S("/d/e"), NULL, true, NULL);
	txn_create(f->t, S("/d/f"), NULL, NULL, 0, NULL);
	assert_int_equal(txn_unlink(f->t, S("/d")), -EISDIR);
	assert_int_equal(txn_unlink(f->t, S("/d/zz")), -ENOENT);
	assert_int_equal(txn_rmdir(f->t, S("/d")), -ENOTEMPTY);
	assert_int_equal(txn_rmdir(f->t, S("/d/f")), -ENOTDIR);
	assert_int_equal(txn_rmdir(f->t, S("/")), -EBUSY);
	assert_int_equal(txn_unlink(f->t, S("/d/f")), 0);
	assert_int_equal(txn_rmdir(f->t, S("/d/e")), 0);
	assert_int_equal(txn_rmdir(f->t, S("/d")), 0);
	assert_int_equal(namespace_count(f->ns), 1);

	txn_create(f->t, S("/g"), NULL, NULL, 0, NULL);
	struct txn_attr a = {.mask = ATTR_MODE | ATTR_SIZE | ATTR_MTIME | ATTR_GID,
	                     .mode = 0600,
	                     .size = 77,
	                     .mtime = 123,
	                     .gid = 9};
	uint64_t ino;
	assert_int_equal(txn_setattr(f->t, S("/g"), &a, &ino), 0);
	struct node_rec r;
	namespace_get(f->ns, ino, &r);
	assert_int_equal(r.mode, 0600);
	assert_int_equal(r.size, 77);
	assert_int_equal(r.mtime, 123);
	assert_int_equal(r.gid, 9);
	txn_mkdir(f->t, S("/dd"), NULL, false, NULL);
	struct txn_attr sz = {.mask = ATTR_SIZE, .size = 1};
	assert_int_equal(txn_setattr(f->t, S("/dd"), &sz, &ino), -EISDIR);
	assert_int_equal(txn_setattr(f->t, S("/none"), &sz, &ino), -ENOENT);
}

static void test_rollback(void **state)
{
	struct fx *f = *state;
	txn_mkdir(f->t, S("/keep/sub"), NULL, true, NULL);
	txn_create(f->t, S("/keep/file"), NULL, NULL, 0, NULL);
	/* Commit point: start a new transaction on the same namespace. */
	txn_free(f->t);
	f->t = txn_new(f->ns, &f->next_ino, 6000);
	uint8_t before[DIGEST_LEN], after[DIGEST_LEN];
	namespace_digest(f->ns, before);
	uint64_t count = namespace_count(f->ns);

	assert_int_equal(txn_mkdir(f->t, S("/new/a/b"), NULL, true, NULL), 0);
	assert_int_equal(txn_rename(f->t, S("/keep/sub"), S("/new/a/b/moved"), NULL), 0);
	assert_int_equal(txn_unlink(f->t, S("/keep/file")), 0);
	assert_int_equal(txn_rmdir(f->t, S("/keep")), 0);
	assert_true(txn_touched_count(f->t) > 0);
	bool some_existed = false, some_new = false;
	for (size_t i = 0; i < txn_touched_count(f->t); i++) {
		if (txn_touched_existed(f->t, i))
			some_existed = true;
		else
			some_new = true;
	}
	assert_true(some_existed && some_new);
	assert_int_equal(txn_rollback(f->t), 0);
	namespace_digest(f->ns, after);
	assert_memory_equal(before, after, DIGEST_LEN);
	assert_int_equal(namespace_count(f->ns), count);
	assert_int_not_equal(ino_of(f, "/keep/sub"), 0);
	assert_int_not_equal(ino_of(f, "/keep/file"), 0);
	assert_int_equal(ino_of(f, "/new"), 0);
	assert_int_equal(txn_touched_count(f->t), 0);
	struct node_rec r;
	namespace_get(f->ns, NODE_ROOT_INO, &r);
	assert_int_equal(r.mtime, 5000); /* the root's times are back too */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_mkdir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_replace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_symlink, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unlink_rmdir_setattr, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
