/* A cache node's blocks on disk (mirror/cache/blockstore.c), in real
 * temporary dirs: round trips, damage found by the checksum and dropped,
 * capacity kept, S3-FIFO scan resistance, the index rebuilt from file
 * names, blocks spread over dirs, and a dir that fills up (a 2 MiB tmpfs)
 * taken out of service while the others carry on. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockstore.h"
#include "hrw.h"

#define MiB (1024u * 1024)
#define KiB 1024u

/* ---- helpers ---- */

static struct block_id bid(unsigned i)
{
	char key[32];
	snprintf(key, sizeof(key), "object-%u", i / 4);
	return hrw_block_id("media", key, "\"etag-1\"", i % 4);
}

/* Bytes that differ per block and per version. */
static void fill(uint8_t *buf, uint32_t len, unsigned seed)
{
	uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
	for (uint32_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

static void put_block(struct blockstore *bs, unsigned i, uint32_t len)
{
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	fill(buf, len, i);
	int r = blockstore_put(bs, bid(i), buf, len);
	if (r != 0)
		fail_msg("put block %u (%u bytes): %s", i, len, strerror(-r));
	free(buf);
}

/* The bytes of a block ref (malloc'd), read from its fd as a server would
 * send them. */
static uint8_t *ref_bytes(const struct block_ref *ref)
{
	uint8_t *b = malloc(ref->length ? ref->length : 1);
	assert_non_null(b);
	assert_int_equal(pread(ref->fd, b, ref->length, 0), (ssize_t)ref->length);
	return b;
}

/* 0 when block i is there with the bytes put_block wrote, else the error. */
static int check_block(struct blockstore *bs, unsigned i, uint32_t len)
{
	struct block_ref ref = {.fd = -1};
	int r = blockstore_get(bs, bid(i), &ref);
	if (r != 0)
		return r;
	uint8_t *want = malloc(len);
	assert_non_null(want);
	fill(want, len, i);
	assert_int_equal(ref.length, len);
	assert_true(ref.fd >= 0);
	uint8_t *got = ref_bytes(&ref);
	assert_memory_equal(got, want, len);
	free(got);
	free(want);
	blockstore_release(&ref);
	assert_int_equal(ref.fd, -1);
	return 0;
}

static struct blockstore *open_dirs(const struct blockstore_dir_config *dirs, size_t n)
{
	struct blockstore *bs = NULL;
	char *why = NULL;
	int r = blockstore_open(dirs, n, 0, &bs, &why);
	if (r != 0)
		fail_msg("blockstore_open: %d: %s", r, why ? why : "?");
	assert_null(why);
	return bs;
}

static struct blockstore *open_one(const char *path, uint64_t capacity)
{
	struct blockstore_dir_config d = {path, capacity};
	return open_dirs(&d, 1);
}

/* The files under a dir: how many block files (and their bytes), and how
 * many dot files; `path` gets the last block file seen. */
static struct walk {
	unsigned blocks, dotfiles;
	uint64_t bytes;
	char path[4096];
} walked;

static int walk_cb(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type != FTW_F)
		return 0;
	const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
	if (base[0] == '.') {
		walked.dotfiles++;
		return 0;
	}
	walked.blocks++;
	walked.bytes += (uint64_t)st->st_size;
	snprintf(walked.path, sizeof(walked.path), "%s", p);
	return 0;
}

static struct walk walk(const char *dir)
{
	memset(&walked, 0, sizeof(walked));
	assert_int_equal(nftw(dir, walk_cb, 16, FTW_PHYS | FTW_MOUNT), 0);
	return walked;
}

static int rm_cb(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(p);
	return unlink(p);
}

struct fixture {
	char dir[64]; /* a fresh temporary dir; the store's dirs go inside */
	char a[96], b[96];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	strcpy(f->dir, "/tmp/mp-test-blockstore-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->a, sizeof(f->a), "%s/a", f->dir);
	snprintf(f->b, sizeof(f->b), "%s/b", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	umount2(f->a, MNT_DETACH); /* if a test left its tmpfs mounted */
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	struct blockstore *bs = open_one(f->a, 64 * MiB);
	struct blockstore_stats st;
	blockstore_stats(bs, &st);
	assert_int_equal(st.blocks, 0);
	assert_int_equal(st.capacity, 64 * MiB);
	assert_int_equal(st.dirs, 1);

	struct block_ref ref = {.fd = -1};
	assert_int_equal(blockstore_get(bs, bid(0), &ref), -ENOENT);
	assert_false(blockstore_has(bs, bid(0)));

	uint32_t sizes[] = {1, 4097, 64 * KiB, MiB, 4 * MiB};
	for (unsigned i = 0; i < 5; i++)
		put_block(bs, i, sizes[i]);
	for (unsigned i = 0; i < 5; i++) {
		assert_true(blockstore_has(bs, bid(i)));
		assert_int_equal(check_block(bs, i, sizes[i]), 0);
		assert_int_equal(check_block(bs, i, sizes[i]), 0);
	}
	assert_int_equal(blockstore_get(bs, bid(99), &ref), -ENOENT);
	blockstore_stats(bs, &st);
	assert_int_equal(st.blocks, 5);
	assert_int_equal(st.used, 1 + 4097 + 64 * KiB + MiB + 4 * MiB);
	assert_int_equal(st.corrupt, 0);
	struct walk w = walk(f->a);
	assert_int_equal(w.blocks, 5);
	assert_int_equal(w.bytes, st.used);
	assert_int_equal(w.dotfiles, 0);

	/* A put replaces: new bytes, one file. */
	uint8_t *buf = malloc(MiB);
	fill(buf, 1000, 777);
	assert_int_equal(blockstore_put(bs, bid(2), buf, 1000), 0);
	struct block_ref r2 = {.fd = -1};
	assert_int_equal(blockstore_get(bs, bid(2), &r2), 0);
	assert_int_equal(r2.length, 1000);
	uint8_t *got2 = ref_bytes(&r2);
	assert_memory_equal(got2, buf, 1000);
	free(got2);
	blockstore_release(&r2);
	free(buf);
	w = walk(f->a);
	assert_int_equal(w.blocks, 5);
	blockstore_stats(bs, &st);
	assert_int_equal(st.used, 1 + 4097 + 1000 + MiB + 4 * MiB);

	/* Two refs to the same block at once. */
	struct block_ref x = {.fd = -1}, y = {.fd = -1};
	assert_int_equal(blockstore_get(bs, bid(3), &x), 0);
	assert_int_equal(blockstore_get(bs, bid(3), &y), 0);
	uint8_t *bx = ref_bytes(&x), *by = ref_bytes(&y);
	assert_memory_equal(bx, by, MiB);
	free(bx);
	free(by);
	blockstore_release(&x);
	blockstore_release(&y);

	/* Drop */
	blockstore_drop(bs, bid(3));
	assert_false(blockstore_has(bs, bid(3)));
	assert_int_equal(check_block(bs, 3, MiB), -ENOENT);
	blockstore_drop(bs, bid(3));
	assert_int_equal(walk(f->a).blocks, 4);

	/* blockstore_each sees the live blocks. */
	blockstore_stats(bs, &st);
	assert_int_equal(st.blocks, 4);
	blockstore_free(bs);
	blockstore_free(NULL);
}

/* Damages the only block file under dir with `how` and checks that the
 * next get fails with -EIO, counts it, and the one after is a miss. */
enum damage { FLIP, TRUNCATE, GROW, DELETE };

static void damage_one(struct fixture *f, enum damage how)
{
	struct blockstore *bs = open_one(f->a, 64 * MiB);
	put_block(bs, 1, 256 * KiB);
	put_block(bs, 2, 256 * KiB);
	assert_int_equal(check_block(bs, 1, 256 * KiB), 0);
	/* Find block 1's file: drop block 2 so it is the only one. */
	blockstore_drop(bs, bid(2));
	struct walk w = walk(f->a);
	assert_int_equal(w.blocks, 1);
	switch (how) {
	case FLIP: {
		int fd = open(w.path, O_RDWR);
		assert_true(fd >= 0);
		uint8_t c;
		assert_int_equal(pread(fd, &c, 1, 100 * KiB), 1);
		c ^= 0x01;
		assert_int_equal(pwrite(fd, &c, 1, 100 * KiB), 1);
		close(fd);
		break;
	}
	case TRUNCATE:
		assert_int_equal(truncate(w.path, 256 * KiB - 1), 0);
		break;
	case GROW:
		assert_int_equal(truncate(w.path, 256 * KiB + 1), 0);
		break;
	case DELETE:
		assert_int_equal(unlink(w.path), 0);
		break;
	}
	assert_true(blockstore_has(bs, bid(1))); /* no I/O: not noticed yet */
	struct block_ref ref = {.fd = -1};
	assert_int_equal(blockstore_get(bs, bid(1), &ref), -EIO);
	struct blockstore_stats st;
	blockstore_stats(bs, &st);
	assert_int_equal(st.corrupt, 1);
	assert_int_equal(st.blocks, 0);
	assert_int_equal(st.used, 0);
	assert_int_equal(st.dirs_failed, 0);
	assert_false(blockstore_has(bs, bid(1)));
	assert_int_equal(blockstore_get(bs, bid(1), &ref), -ENOENT);
	blockstore_stats(bs, &st);
	assert_int_equal(st.corrupt, 1);
	/* The bad file is gone from disk too. */
	assert_int_equal(walk(f->a).blocks, 0);
	/* and a refetch stores it again */
	put_block(bs, 1, 256 * KiB);
	assert_int_equal(check_block(bs, 1, 256 * KiB), 0);
	blockstore_free(bs);
}

static void test_corrupt_flip(void **state)
{
	damage_one(*state, FLIP);
}

static void test_corrupt_truncate(void **state)
{
	damage_one(*state, TRUNCATE);
}

static void test_corrupt_grow(void **state)
{
	damage_one(*state, GROW);
}

static void test_corrupt_delete(void **state)
{
	damage_one(*state, DELETE);
}

static void test_capacity(void **state)
{
	struct fixture *f = *state;
	struct blockstore *bs = open_one(f->a, 32 * MiB);
	struct blockstore_stats st;
	for (unsigned i = 0; i < 100; i++) {
		put_block(bs, i, MiB);
		blockstore_stats(bs, &st);
		if (st.used > st.capacity)
			fail_msg("after put %u: used %llu > capacity %llu", i,
			         (unsigned long long)st.used, (unsigned long long)st.capacity);
		assert_true(blockstore_has(bs, bid(i))); /* the newest is kept */
	}
	blockstore_stats(bs, &st);
	assert_int_equal(st.capacity, 32 * MiB);
	assert_true(st.blocks <= 32 && st.blocks >= 28);
	assert_int_equal(st.evictions, 100 - st.blocks);
	/* Evicted files are gone from disk, and what is left matches. */
	struct walk w = walk(f->a);
	assert_int_equal(w.blocks, st.blocks);
	assert_int_equal(w.bytes, st.used);
	unsigned held = 0;
	for (unsigned i = 0; i < 100; i++)
		if (blockstore_has(bs, bid(i))) {
			assert_int_equal(check_block(bs, i, MiB), 0);
			held++;
		}
	assert_int_equal(held, st.blocks);
	blockstore_free(bs);
}

/* A block larger than the dir cannot be stored ("the block is larger than
 * the dir": -ENOSPC), and what the dir holds stays within its capacity. */
static void test_block_larger_than_dir(void **state)
{
	struct fixture *f = *state;
	struct blockstore *bs = open_one(f->a, 32 * MiB);
	for (unsigned i = 0; i < 4; i++)
		put_block(bs, i, MiB);
	uint8_t *big = calloc(1, 33 * MiB);
	assert_non_null(big);
	int r = blockstore_put(bs, bid(1000), big, 33 * MiB);
	free(big);
	struct blockstore_stats st;
	blockstore_stats(bs, &st);
	print_message("33 MiB block into a 32 MiB dir: put %d, used %llu of %llu, %llu blocks\n", r,
	              (unsigned long long)st.used, (unsigned long long)st.capacity,
	              (unsigned long long)st.blocks);
	blockstore_free(bs);
	assert_int_equal(r, -ENOSPC);
	assert_true(st.used <= st.capacity);
	assert_int_equal(st.dirs_failed, 0);
}

/* The hot set stays while a one-pass scan three times the cache's size
 * goes through; with `keep_reading`, the hot set is also read between the
 * puts (as a hot set is), else only before the scan (what tells S3-FIFO
 * from LRU/FIFO, which would flush it). */
static void scan(struct fixture *f, bool keep_reading)
{
	struct blockstore *bs = open_one(f->a, 32 * MiB);
	for (unsigned h = 0; h < 8; h++)
		put_block(bs, h, MiB);
	for (int round = 0; round < 3; round++)
		for (unsigned h = 0; h < 8; h++)
			assert_int_equal(check_block(bs, h, MiB), 0);
	for (unsigned c = 0; c < 96; c++) {
		put_block(bs, 100 + c, MiB);
		if (keep_reading && c % 4 == 3)
			for (unsigned h = 0; h < 8; h++)
				assert_int_equal(check_block(bs, h, MiB), 0);
	}
	unsigned hot = 0, cold = 0;
	for (unsigned h = 0; h < 8; h++)
		hot += blockstore_has(bs, bid(h));
	for (unsigned c = 0; c < 96; c++)
		cold += blockstore_has(bs, bid(100 + c));
	struct blockstore_stats st;
	blockstore_stats(bs, &st);
	print_message("scan (%s): %u/8 hot and %u/96 cold blocks held, %llu evictions\n",
	              keep_reading ? "hot set read throughout" : "hot set read before", hot, cold,
	              (unsigned long long)st.evictions);
	assert_int_equal(hot, 8);
	for (unsigned h = 0; h < 8; h++)
		assert_int_equal(check_block(bs, h, MiB), 0);
	assert_true(st.used <= st.capacity);
	assert_true(cold > 0);
	blockstore_free(bs);
}

static void test_scan_resistance(void **state)
{
	scan(*state, false);
}

static void test_scan_resistance_reading(void **state)
{
	scan(*state, true);
}

static void test_rebuild(void **state)
{
	struct fixture *f = *state;
	enum { N = 40 };
	struct blockstore *bs = open_one(f->a, 64 * MiB);
	for (unsigned i = 0; i < N; i++)
		put_block(bs, i, 16 * KiB + i);
	struct blockstore_stats before;
	blockstore_stats(bs, &before);
	assert_int_equal(before.blocks, N);
	blockstore_free(bs);

	/* Leftovers of a crash: a temp file in a leaf dir (where puts write
	 * them); and a foreign file that is not a block. */
	char tmp[256], other[256];
	snprintf(other, sizeof(other), "%s/7", f->a);
	mkdir(other, 0700);
	snprintf(other, sizeof(other), "%s/7/3c", f->a);
	mkdir(other, 0700);
	snprintf(tmp, sizeof(tmp), "%s/7/3c/.tmp-00000000deadbeef", f->a);
	FILE *fp = fopen(tmp, "w");
	assert_non_null(fp);
	fputs("half a block", fp);
	fclose(fp);
	snprintf(other, sizeof(other), "%s/7/3c/notes.txt", f->a);
	fp = fopen(other, "w");
	assert_non_null(fp);
	fputs("not a block", fp);
	fclose(fp);

	bs = open_one(f->a, 64 * MiB);
	struct blockstore_stats after;
	blockstore_stats(bs, &after);
	assert_int_equal(after.blocks, N);
	assert_int_equal(after.used, before.used);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(check_block(bs, i, 16 * KiB + i), 0);
	assert_int_equal(check_block(bs, N, 16 * KiB), -ENOENT);
	/* Rebuilt blocks are evicted like any others. */
	put_block(bs, N, 16 * KiB);
	blockstore_free(bs);
	unlink(other);

	/* Reopened smaller than what is there: trimmed to the capacity. */
	bs = open_one(f->a, 256 * KiB);
	blockstore_stats(bs, &after);
	assert_true(after.used <= 256 * KiB);
	assert_true(after.blocks >= 10 && after.blocks < N);
	struct walk w = walk(f->a);
	assert_int_equal(w.blocks, after.blocks);
	assert_int_equal(w.bytes, after.used);
	blockstore_free(bs);
}

static void test_open_errors(void **state)
{
	struct fixture *f = *state;
	struct blockstore *bs = NULL;
	char *why = NULL;
	assert_int_equal(blockstore_open(NULL, 0, 0, &bs, &why), -EINVAL);
	assert_non_null(why);
	free(why);
	why = NULL;
	struct blockstore_dir_config twice[2] = {{f->a, MiB}, {f->a, MiB}};
	assert_int_equal(blockstore_open(twice, 2, 0, &bs, &why), -EINVAL);
	assert_non_null(why);
	assert_non_null(strstr(why, f->a));
	free(why);
	why = NULL;
	char missing[128];
	snprintf(missing, sizeof(missing), "%s/no/such/parent", f->dir);
	struct blockstore_dir_config bad = {missing, MiB};
	assert_int_equal(blockstore_open(&bad, 1, 0, &bs, &why), -ENOENT);
	assert_non_null(why);
	free(why);
	assert_null(bs);
}

static void test_two_dirs(void **state)
{
	struct fixture *f = *state;
	struct blockstore_dir_config dirs[2] = {{f->a, 64 * MiB}, {f->b, 64 * MiB}};
	struct blockstore *bs = open_dirs(dirs, 2);
	enum { N = 200 };
	for (unsigned i = 0; i < N; i++)
		put_block(bs, i, 8 * KiB);
	struct blockstore_dir_stats ds[2];
	assert_int_equal(blockstore_dir_stats(bs, ds, 2), 2);
	print_message("two dirs: %llu and %llu blocks\n", (unsigned long long)ds[0].blocks,
	              (unsigned long long)ds[1].blocks);
	assert_int_equal(ds[0].blocks + ds[1].blocks, N);
	assert_true(ds[0].blocks > N / 4 && ds[1].blocks > N / 4);
	assert_false(ds[0].failed || ds[1].failed);
	assert_string_equal(ds[0].path, f->a);
	assert_int_equal(walk(f->a).blocks, ds[0].blocks);
	assert_int_equal(walk(f->b).blocks, ds[1].blocks);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(check_block(bs, i, 8 * KiB), 0);
	blockstore_free(bs);

	/* Rebuilt from both. */
	bs = open_dirs(dirs, 2);
	struct blockstore_stats st;
	blockstore_stats(bs, &st);
	assert_int_equal(st.blocks, N);
	assert_int_equal(st.dirs, 2);
	assert_int_equal(st.capacity, 128 * MiB);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(check_block(bs, i, 8 * KiB), 0);
	blockstore_free(bs);
}

/* Dir a is a 2 MiB tmpfs that claims 64 MiB: it fills up (ENOSPC), is
 * taken out of service, and the puts go to dir b. */
static void test_dir_enospc(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(mkdir(f->a, 0700), 0);
	if (mount("tmpfs", f->a, "tmpfs", 0, "size=2m,mode=0700") < 0) {
		print_message("skipped: cannot mount a tmpfs to fill up (%s)\n", strerror(errno));
		skip();
	}
	struct blockstore_dir_config dirs[2] = {{f->a, 64 * MiB}, {f->b, 64 * MiB}};
	struct blockstore *bs = open_dirs(dirs, 2);
	enum { N = 64 };
	int failed_at = -1;
	for (unsigned i = 0; i < N; i++) {
		put_block(bs, i, 256 * KiB); /* never fails: the other dir takes it */
		struct blockstore_stats st;
		blockstore_stats(bs, &st);
		if (failed_at < 0 && st.dirs_failed == 1)
			failed_at = (int)i;
	}
	print_message("tmpfs dir failed at put %d\n", failed_at);
	assert_true(failed_at >= 0);
	struct blockstore_stats st;
	blockstore_stats(bs, &st);
	assert_int_equal(st.dirs, 2);
	assert_int_equal(st.dirs_failed, 1);
	assert_int_equal(st.dir_failures, 1);
	assert_int_equal(st.capacity, 64 * MiB); /* the failed dir no longer counts */
	struct blockstore_dir_stats ds[2];
	assert_int_equal(blockstore_dir_stats(bs, ds, 2), 2);
	assert_true(ds[0].failed);
	assert_false(ds[1].failed);
	assert_non_null(ds[0].why);
	print_message("why: %s\n", ds[0].why);
	assert_non_null(strstr(ds[0].why, strerror(ENOSPC)));
	assert_int_equal(ds[0].blocks, 0);
	/* From the put that found the dir full on, every block is in dir b. */
	assert_int_equal(ds[1].blocks, st.blocks);
	for (unsigned i = (unsigned)failed_at; i < N; i++)
		assert_int_equal(check_block(bs, i, 256 * KiB), 0);
	assert_int_equal(st.blocks, walk(f->b).blocks);
	/* and no temp file is left behind in the full dir */
	assert_int_equal(walk(f->a).dotfiles, 0);
	for (unsigned i = N; i < N + 16; i++) {
		put_block(bs, i, 256 * KiB);
		assert_int_equal(check_block(bs, i, 256 * KiB), 0);
	}
	assert_int_equal(blockstore_dir_stats(bs, ds, 2), 2);
	assert_int_equal(ds[0].blocks, 0);
	blockstore_free(bs);
	assert_int_equal(umount2(f->a, MNT_DETACH), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_flip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_truncate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_grow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_capacity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_block_larger_than_dir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scan_resistance, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scan_resistance_reading, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rebuild, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_dirs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dir_enospc, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
