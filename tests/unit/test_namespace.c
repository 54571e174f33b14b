/* Unit tests of the in-memory namespace: records, directory trees, cursors,
 * atomic multi-inode steps, bulk load and the digest. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "namespace.h"

static struct node_rec mk(uint64_t ino, uint64_t parent, const char *name, uint8_t type)
{
	struct node_rec r = {
	    .ino = ino,
	    .parent = parent,
	    .name = name,
	    .name_len = (uint8_t)strlen(name),
	    .type = type,
	    .mode = type == NODE_DIR ? 0755 : 0644,
	    .mtime = 1000,
	    .ctime = 1000,
	};
	return r;
}

static int put(struct namespace *ns, const struct node_rec *r)
{
	char err[128];
	struct ns_change c = {r->ino, r};
	return namespace_apply(ns, &c, 1, err, sizeof(err));
}

static int drop(struct namespace *ns, uint64_t ino)
{
	char err[128];
	struct ns_change c = {ino, NULL};
	return namespace_apply(ns, &c, 1, err, sizeof(err));
}

static void test_root(void **state)
{
	struct namespace *ns = namespace_new();
	assert_non_null(ns);
	assert_int_equal(namespace_count(ns), 1);
	struct node_rec r;
	assert_int_equal(namespace_get(ns, NODE_ROOT_INO, &r), 0);
	assert_int_equal(r.type, NODE_DIR);
	assert_int_equal(r.parent, 0);
	assert_int_equal(namespace_resolve(ns, "/", 1, &r), 0);
	assert_int_equal(r.ino, NODE_ROOT_INO);
	assert_int_equal(namespace_resolve(ns, "///", 3, &r), 0);
	assert_int_equal(namespace_resolve(ns, "x", 1, &r), -EINVAL);
	assert_int_equal(namespace_resolve(ns, "", 0, &r), -EINVAL);
	assert_int_equal(drop(ns, NODE_ROOT_INO), -EINVAL);
	namespace_free(ns);
}

static void test_tree_and_paths(void **state)
{
	struct namespace *ns = namespace_new();
	struct node_rec a = mk(2, 1, "a", NODE_DIR), b = mk(3, 2, "b", NODE_DIR),
	                f = mk(4, 3, "file.txt", NODE_FILE);
	assert_int_equal(put(ns, &a), 0);
	assert_int_equal(put(ns, &b), 0);
	assert_int_equal(put(ns, &f), 0);
	assert_int_equal(namespace_count(ns), 4);
	struct node_rec r;
	assert_int_equal(namespace_resolve(ns, "/a/b/file.txt", 13, &r), 0);
	assert_int_equal(r.ino, 4);
	assert_int_equal(namespace_resolve(ns, "/a//b/file.txt/", 15, &r), 0);
	assert_int_equal(namespace_resolve(ns, "/a/b/file.txt/x", 15, &r), -ENOTDIR);
	assert_int_equal(namespace_resolve(ns, "/a/c", 4, &r), -ENOENT);
	assert_int_equal(namespace_resolve(ns, "/a/../b", 7, &r), -EINVAL);
	assert_int_equal(namespace_resolve(ns, "/a/./b", 6, &r), -EINVAL);
	assert_int_equal(namespace_lookup(ns, 2, "b", 1, &r), 0);
	assert_int_equal(r.ino, 3);
	assert_int_equal(namespace_lookup(ns, 4, "b", 1, &r), -ENOTDIR);
	assert_int_equal(namespace_lookup(ns, 99, "b", 1, &r), -ENOENT);
	char path[64];
	assert_int_equal(namespace_path(ns, 4, path, sizeof(path)), 13);
	assert_string_equal(path, "/a/b/file.txt");
	assert_int_equal(namespace_path(ns, 1, path, sizeof(path)), 1);
	assert_string_equal(path, "/");
	assert_int_equal(namespace_path(ns, 4, path, 8), -ENAMETOOLONG);
	assert_true(namespace_is_within(ns, 4, 2));
	assert_false(namespace_is_within(ns, 2, 4));
	assert_true(namespace_has_children(ns, 2));
	assert_false(namespace_has_children(ns, 4));

	/* Errors leave the namespace to be discarded, so each runs on its own. */
	struct namespace *e = namespace_new();
	struct node_rec orphan = mk(5, 77, "x", NODE_FILE);
	assert_int_equal(put(e, &orphan), -ENOENT);
	namespace_free(e);
	e = namespace_new();
	struct node_rec x1 = mk(5, 1, "x", NODE_FILE), x2 = mk(6, 1, "x", NODE_FILE);
	assert_int_equal(put(e, &x1), 0);
	assert_int_equal(put(e, &x2), -EEXIST);
	namespace_free(e);
	e = namespace_new();
	struct node_rec d = mk(5, 1, "d", NODE_DIR), c = mk(6, 5, "c", NODE_FILE);
	assert_int_equal(put(e, &d), 0);
	assert_int_equal(put(e, &c), 0);
	assert_int_equal(drop(e, 5), -ENOTEMPTY);
	namespace_free(e);
	e = namespace_new();
	struct node_rec file = mk(5, 1, "f", NODE_FILE), under = mk(6, 5, "u", NODE_FILE);
	assert_int_equal(put(e, &file), 0);
	assert_int_equal(put(e, &under), -ENOTDIR);
	namespace_free(e);

	assert_int_equal(drop(ns, 4), 0);
	assert_int_equal(namespace_resolve(ns, "/a/b/file.txt", 13, &r), -ENOENT);
	assert_int_equal(namespace_count(ns), 3);
	namespace_free(ns);
}

struct collect {
	char names[64][32];
	int n;
	int stop_after;
};

static int collect_visit(void *arg, const struct node_rec *rec)
{
	struct collect *c = arg;
	snprintf(c->names[c->n++], 32, "%.*s", rec->name_len, rec->name);
	return c->stop_after && c->n == c->stop_after;
}

static void test_readdir_order_and_cursor(void **state)
{
	struct namespace *ns = namespace_new();
	const char *names[] = {"m", "b", "zz", "a", "\xc3\xa9t\xc3\xa9", "B", "ab", "z"};
	for (int i = 0; i < 8; i++) {
		struct node_rec r = mk(10 + (uint64_t)i, 1, names[i], NODE_FILE);
		assert_int_equal(put(ns, &r), 0);
	}
	struct collect c = {0};
	assert_int_equal(namespace_readdir(ns, 1, NULL, 0, collect_visit, &c), 0);
	const char *want[] = {"B", "a", "ab", "b", "m", "z", "zz", "\xc3\xa9t\xc3\xa9"};
	assert_int_equal(c.n, 8);
	for (int i = 0; i < 8; i++)
		assert_string_equal(c.names[i], want[i]);
	memset(&c, 0, sizeof(c));
	c.stop_after = 3;
	namespace_readdir(ns, 1, "ab", 2, collect_visit, &c);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.names[0], "b");
	assert_string_equal(c.names[2], "z");
	memset(&c, 0, sizeof(c));
	namespace_readdir(ns, 1, "aa", 2, collect_visit, &c); /* cursor need not exist */
	assert_int_equal(c.n, 6);
	assert_string_equal(c.names[0], "ab");
	memset(&c, 0, sizeof(c));
	namespace_readdir(ns, 1, "zzz", 3, collect_visit, &c);
	assert_int_equal(c.n, 1);
	assert_int_equal(namespace_readdir(ns, 10, NULL, 0, collect_visit, &c), -ENOTDIR);
	assert_int_equal(namespace_readdir(ns, 999, NULL, 0, collect_visit, &c), -ENOENT);
	namespace_free(ns);
}

struct ordered {
	char last[300];
	int n;
	int bad;
};

static int ordered_visit(void *arg, const struct node_rec *rec)
{
	struct ordered *o = arg;
	char cur[300];
	snprintf(cur, sizeof(cur), "%.*s", rec->name_len, rec->name);
	if (o->n > 0 && strcmp(o->last, cur) >= 0)
		o->bad++;
	snprintf(o->last, sizeof(o->last), "%s", cur);
	o->n++;
	return 0;
}

static void test_large_directory(void **state)
{
	struct namespace *ns = namespace_new();
	enum { N = 20000 };
	char name[32];
	srand(7);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "f%08x-%d", (unsigned)rand(), i);
		struct node_rec r = mk(100 + (uint64_t)i, 1, name, NODE_FILE);
		assert_int_equal(put(ns, &r), 0);
	}
	for (int i = 0; i < N; i += 2)
		assert_int_equal(drop(ns, 100 + (uint64_t)i), 0);
	struct ordered o = {0};
	namespace_readdir(ns, 1, NULL, 0, ordered_visit, &o);
	assert_int_equal(o.n, N / 2);
	assert_int_equal(o.bad, 0);
	assert_int_equal(namespace_count(ns), 1 + N / 2);
	namespace_free(ns);
}

static void test_digest_order_independent(void **state)
{
	struct namespace *a = namespace_new(), *b = namespace_new();
	uint8_t empty[DIGEST_LEN], da[DIGEST_LEN], db[DIGEST_LEN];
	namespace_digest(a, empty);
	struct node_rec d = mk(2, 1, "d", NODE_DIR), f = mk(3, 2, "f", NODE_FILE),
	                g = mk(4, 1, "g", NODE_FILE);
	put(a, &d);
	put(a, &f);
	put(a, &g);
	put(b, &g);
	put(b, &d);
	put(b, &f);
	namespace_digest(a, da);
	namespace_digest(b, db);
	assert_memory_equal(da, db, DIGEST_LEN);
	assert_memory_not_equal(da, empty, DIGEST_LEN);
	/* Any attribute changes it; changing it back restores it. */
	struct node_rec g2 = g;
	g2.size = 1;
	put(b, &g2);
	namespace_digest(b, db);
	assert_memory_not_equal(da, db, DIGEST_LEN);
	put(b, &g);
	namespace_digest(b, db);
	assert_memory_equal(da, db, DIGEST_LEN);
	drop(a, 3);
	drop(a, 2);
	drop(a, 4);
	namespace_digest(a, da);
	assert_memory_equal(da, empty, DIGEST_LEN);
	namespace_free(a);
	namespace_free(b);
}

static void test_atomic_swap(void **state)
{
	struct namespace *ns = namespace_new();
	struct node_rec x = mk(2, 1, "x", NODE_FILE), y = mk(3, 1, "y", NODE_FILE);
	put(ns, &x);
	put(ns, &y);
	/* x -> y and y -> x in one step: only possible if all detach first. */
	struct node_rec x2 = mk(2, 1, "y", NODE_FILE), y2 = mk(3, 1, "x", NODE_FILE);
	struct ns_change ch[2] = {{2, &x2}, {3, &y2}};
	char err[128];
	assert_int_equal(namespace_apply(ns, ch, 2, err, sizeof(err)), 0);
	struct node_rec r;
	assert_int_equal(namespace_resolve(ns, "/x", 2, &r), 0);
	assert_int_equal(r.ino, 3);
	/* A longer name forces the node to be reallocated. */
	struct node_rec longer = mk(3, 1, "a-much-longer-name-than-before", NODE_FILE);
	assert_int_equal(put(ns, &longer), 0);
	assert_int_equal(namespace_resolve(ns, "/a-much-longer-name-than-before", 31, &r), 0);
	assert_int_equal(r.ino, 3);
	assert_int_equal(namespace_get(ns, 3, &r), 0);
	/* Move a directory with entries and drop the old parent in one step. */
	struct node_rec d = mk(4, 1, "d", NODE_DIR), e = mk(5, 4, "e", NODE_DIR),
	                f = mk(6, 5, "f", NODE_FILE);
	put(ns, &d);
	put(ns, &e);
	put(ns, &f);
	struct node_rec e2 = mk(5, 1, "e", NODE_DIR);
	struct ns_change mv[2] = {{4, NULL}, {5, &e2}};
	assert_int_equal(namespace_apply(ns, mv, 2, err, sizeof(err)), 0);
	assert_int_equal(namespace_resolve(ns, "/e/f", 4, &r), 0);
	assert_int_equal(r.ino, 6);
	assert_int_equal(namespace_get(ns, 4, &r), -ENOENT);
	namespace_free(ns);
}

static void test_extra_and_checks(void **state)
{
	struct namespace *ns = namespace_new();
	struct node_rec s = mk(2, 1, "link", NODE_SYMLINK);
	s.extra = (const uint8_t *)"/target";
	s.extra_len = 7;
	assert_int_equal(put(ns, &s), 0);
	struct node_rec r;
	assert_int_equal(namespace_get(ns, 2, &r), 0);
	assert_int_equal(r.extra_len, 7);
	assert_memory_equal(r.extra, "/target", 7);
	struct node_rec bad = mk(3, 1, "f", NODE_FILE);
	bad.extra = (const uint8_t *)"\x91\x01"; /* [1]: not an extent */
	bad.extra_len = 2;
	char err[128];
	struct ns_change c = {3, &bad};
	assert_int_equal(namespace_apply(ns, &c, 1, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "extent 0"));
	struct node_rec badmode = mk(3, 1, "f", NODE_FILE);
	badmode.mode = 0100644;
	c.rec = &badmode;
	assert_int_equal(namespace_apply(ns, &c, 1, err, sizeof(err)), -EINVAL);
	assert_int_equal(node_check_name("ok", 2), 0);
	assert_int_equal(node_check_name(".", 1), -EINVAL);
	assert_int_equal(node_check_name("..", 2), -EINVAL);
	assert_int_equal(node_check_name("a/b", 3), -EINVAL);
	assert_int_equal(node_check_name("a\0b", 3), -EINVAL);
	assert_int_equal(node_check_name("", 0), -EINVAL);
	char big[257];
	memset(big, 'x', sizeof(big));
	assert_int_equal(node_check_name(big, 255), 0);
	assert_int_equal(node_check_name(big, 256), -EINVAL);
	namespace_free(ns);
}

static void test_bulk_load(void **state)
{
	struct namespace *ns = namespace_new();
	/* Children before parents, as a snapshot or a store may give them. */
	struct node_rec f = mk(5, 4, "f", NODE_FILE), d = mk(4, 2, "d", NODE_DIR),
	                a = mk(2, 1, "a", NODE_DIR);
	assert_int_equal(namespace_load_node(ns, &f), 0);
	assert_int_equal(namespace_load_node(ns, &d), 0);
	assert_int_equal(namespace_load_node(ns, &a), 0);
	assert_int_equal(namespace_load_node(ns, &a), -EEXIST);
	char err[128];
	assert_int_equal(namespace_load_finish(ns, err, sizeof(err)), 0);
	struct node_rec r;
	assert_int_equal(namespace_resolve(ns, "/a/d/f", 6, &r), 0);
	assert_int_equal(r.ino, 5);
	uint8_t d1[DIGEST_LEN], d2[DIGEST_LEN];
	namespace_digest(ns, d1);
	struct namespace *inc = namespace_new();
	put(inc, &a);
	put(inc, &d);
	put(inc, &f);
	namespace_digest(inc, d2);
	assert_memory_equal(d1, d2, DIGEST_LEN);
	namespace_free(inc);
	namespace_free(ns);

	/* A cycle: two directories that are each other's parent. */
	ns = namespace_new();
	struct node_rec c1 = mk(2, 3, "c1", NODE_DIR), c2 = mk(3, 2, "c2", NODE_DIR);
	namespace_load_node(ns, &c1);
	namespace_load_node(ns, &c2);
	assert_int_equal(namespace_load_finish(ns, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not reachable"));
	namespace_free(ns);

	ns = namespace_new();
	struct node_rec o = mk(2, 42, "orphan", NODE_FILE);
	namespace_load_node(ns, &o);
	assert_int_equal(namespace_load_finish(ns, err, sizeof(err)), -EINVAL);
	namespace_free(ns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_root),
	    cmocka_unit_test(test_tree_and_paths),
	    cmocka_unit_test(test_readdir_order_and_cursor),
	    cmocka_unit_test(test_large_directory),
	    cmocka_unit_test(test_digest_order_independent),
	    cmocka_unit_test(test_atomic_swap),
	    cmocka_unit_test(test_extra_and_checks),
	    cmocka_unit_test(test_bulk_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
