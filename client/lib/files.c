/* Single files: put (a local file or a buffer), get (to a local file,
 * atomically) and read (a byte range, in order, for cat). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "transfer.h"

static const char *base_name(const char *path)
{
	const char *end = path + strlen(path);
	while (end > path && end[-1] == '/')
		end--;
	const char *b = end;
	while (b > path && b[-1] != '/')
		b--;
	return b;
}

/* Where a put of `local` to `remote` lands: remote itself, or
 * remote/NAME when remote is a directory (or ends with '/'). */
static int put_target(struct mp_client *c, const char *local, const char *remote, char **ret,
                      mp_error *err)
{
	int r = nodes_check_path(remote, err);
	if (r < 0)
		return r;
	const char *name = base_name(local);
	size_t nlen = strcspn(name, "/");
	size_t rlen = strlen(remote);
	bool into = remote[rlen - 1] == '/';
	if (!into) {
		mp_node n;
		r = mp_stat(c, remote, NULL, &n, err);
		if (r == 0) {
			into = n.type == MP_TYPE_DIR;
			mp_node_clear(&n);
		} else if (r != -ENOENT) {
			return r;
		}
	}
	if (!into)
		return (*ret = strdup(remote)) ? 0 : mperr(err, -ENOMEM, "out of memory");
	if (nlen == 0)
		return mperr(err, -EINVAL, "'%s': cannot tell the file's name", local);
	if (asprintf(ret, "%s%s%.*s", remote, into && remote[rlen - 1] == '/' ? "" : "/", (int)nlen,
	             name) < 0)
		return mperr(err, -ENOMEM, "out of memory");
	return 0;
}

/* Uploads an open local file to exactly `remote`. */
int files_put_fd(struct mp_client *c, int fd, const char *local, const char *remote,
                 struct progress *pr, mp_call *call, mp_error *err)
{
	struct stat sb;
	if (fstat(fd, &sb) < 0)
		return mperr(err, -errno, "%s: %s", local, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return mperr(err, -EINVAL, "%s: not a regular file%s", local,
		             S_ISDIR(sb.st_mode) ? " (a directory: use put -r)" : "");
	size_t len = (size_t)sb.st_size;
	void *data = NULL;
	if (len > 0) {
		data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (data == MAP_FAILED)
			return mperr(err, -errno, "%s: mmap: %s", local, strerror(errno));
		madvise(data, len, MADV_SEQUENTIAL); /* advice values, not flags */
		madvise(data, len, MADV_WILLNEED);
	}
	int64_t mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
	int r = transfer_put_data(c, data, len, remote, sb.st_mode & 07777, mtime, pr, call, err);
	if (len > 0)
		munmap(data, len);
	if (r == 0)
		progress_add(pr, 0, 1, remote);
	return r;
}

MP_EXPORT int mp_put_file(mp_client *c, const char *local, const char *remote,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err)
{
	if (local == NULL || local[0] == '\0')
		return mperr(err, -EINVAL, "no local file named");
	int fd = open(local, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mperr(err, -errno, "%s: %s", local, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		close(fd);
		return mperr(err, -EISDIR, "%s: a directory (use put -r)", local);
	}
	char *target;
	int r = put_target(c, local, remote, &target, err);
	if (r < 0) {
		close(fd);
		return r;
	}
	struct progress pr;
	progress_init(&pr, opts);
	progress_totals(&pr, (uint64_t)sb.st_size, 1);
	r = files_put_fd(c, fd, local, target, &pr, call, err);
	progress_finish(&pr);
	progress_destroy(&pr);
	free(target);
	close(fd);
	return r;
}

MP_EXPORT int mp_put_buffer(mp_client *c, const void *data, size_t len, const char *remote,
                            const mp_transfer_opts *opts, mp_call *call, mp_error *err)
{
	if (data == NULL && len > 0)
		return mperr(err, -EINVAL, "no data");
	struct progress pr;
	progress_init(&pr, opts);
	progress_totals(&pr, len, 1);
	int r = transfer_put_data(c, data, len, remote, 0644, 0, &pr, call, err);
	if (r == 0)
		progress_add(&pr, 0, 1, remote);
	progress_finish(&pr);
	progress_destroy(&pr);
	return r;
}

/* Downloads a file node to exactly `local`, through a temporary file in the
 * same directory renamed into place. */
int files_get_node(struct mp_client *c, const mp_node *n, const char *remote, const char *local,
                   int parallel, struct progress *pr, mp_error *err)
{
	char *tmp;
	char *dir = strdup(local);
	if (dir == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	if (asprintf(&tmp, "%s/.%s.mp-XXXXXX", dirname(dir), base_name(local)) < 0) {
		free(dir);
		return mperr(err, -ENOMEM, "out of memory");
	}
	free(dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		int r = mperr(err, -errno, "%s: %s", local, strerror(errno));
		free(tmp);
		return r;
	}
	int r = 0;
	if (n->size > 0 && ftruncate(fd, (off_t)n->size) < 0)
		r = mperr(err, -errno, "%s: %s", local, strerror(errno));
	if (r == 0) {
		uint64_t sum = 0;
		for (size_t i = 0; i < n->n_extents; i++)
			sum += n->extents[i].length;
		if (sum != n->size)
			r = mperr(err, -EIO, "%s: the layout holds %llu bytes, the file %llu",
			          remote, (unsigned long long)sum, (unsigned long long)n->size);
	}
	if (r == 0)
		r = transfer_get_fd(c, n, fd, parallel, pr, err);
	if (r == 0) {
		struct timespec ts[2] = {{0, UTIME_OMIT},
		                         {n->mtime_ns / 1000000000, n->mtime_ns % 1000000000}};
		fchmod(fd, n->mode & 07777);
		futimens(fd, ts);
	}
	if (close(fd) < 0 && r == 0)
		r = mperr(err, -errno, "%s: %s", local, strerror(errno));
	if (r == 0 && rename(tmp, local) < 0)
		r = mperr(err, -errno, "%s: %s", local, strerror(errno));
	if (r < 0)
		unlink(tmp);
	else
		progress_add(pr, 0, 1, remote);
	free(tmp);
	return r;
}

static int stat_file(struct mp_client *c, const char *remote, mp_call *call, mp_node *n,
                     mp_error *err)
{
	int r = mp_stat(c, remote, call, n, err);
	if (r < 0)
		return r;
	if (n->type == MP_TYPE_FILE)
		return 0;
	r = n->type == MP_TYPE_DIR
	        ? mperr(err, -EISDIR, "%s: a directory (use get -r)", remote)
	        : mperr(err, -EINVAL, "%s: a symlink to %s", remote, n->target ? n->target : "");
	mp_node_clear(n);
	return r;
}

MP_EXPORT int mp_get_file(mp_client *c, const char *remote, const char *local,
                          const mp_transfer_opts *opts, mp_call *call, mp_error *err)
{
	if (local == NULL || local[0] == '\0')
		return mperr(err, -EINVAL, "no local path named");
	mp_node n;
	int r = stat_file(c, remote, call, &n, err);
	if (r < 0)
		return r;
	char *target = NULL;
	struct stat sb;
	if (stat(local, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		if (asprintf(&target, "%s/%s", local, n.name) < 0)
			target = NULL;
	} else {
		target = strdup(local);
	}
	if (target == NULL) {
		mp_node_clear(&n);
		return mperr(err, -ENOMEM, "out of memory");
	}
	struct progress pr;
	progress_init(&pr, opts);
	progress_totals(&pr, n.size, 1);
	r = files_get_node(c, &n, remote, target, transfer_parallel(c, opts), &pr, err);
	progress_finish(&pr);
	progress_destroy(&pr);
	free(target);
	mp_node_clear(&n);
	return r;
}

/* ---- ordered reads ---- */

struct mem_sink {
	char *buf;
	size_t len;
};

static int mem_sink_write(void *arg, const void *data, size_t len)
{
	struct mem_sink *m = arg;
	memcpy(m->buf + m->len, data, len);
	m->len += len;
	return 0;
}

struct round {
	struct mp_client *c;
	const struct chunk *chunks;
	struct mem_sink *bufs;
	struct progress *pr;
};

static int fetch_to_mem(void *ctx, size_t i, mp_error *err)
{
	struct round *rd = ctx;
	rd->bufs[i].len = 0;
	return transfer_fetch(rd->c, &rd->chunks[i], mem_sink_write, &rd->bufs[i], rd->pr, err);
}

/* The layout of bytes [offset, offset + length) of n. */
static int sub_layout(const mp_node *n, uint64_t offset, uint64_t length, mp_node *ret,
                      mp_error *err)
{
	memset(ret, 0, sizeof(*ret));
	ret->extents = calloc(n->n_extents ? n->n_extents : 1, sizeof(mp_extent));
	if (ret->extents == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	uint64_t pos = 0, end = offset + length;
	for (size_t i = 0; i < n->n_extents; i++) {
		const mp_extent *e = &n->extents[i];
		uint64_t s = pos, t = pos + e->length;
		pos = t;
		if (t <= offset || s >= end)
			continue;
		uint64_t from = offset > s ? offset - s : 0;
		uint64_t to = end < t ? end - s : e->length;
		mp_extent *x = &ret->extents[ret->n_extents++];
		*x = *e; /* borrowed strings: never cleared */
		x->offset = e->offset + from;
		x->length = to - from;
	}
	return 0;
}

MP_EXPORT int mp_read(mp_client *c, const char *remote, uint64_t offset, uint64_t length,
                      mp_sink_cb sink, void *arg, const mp_transfer_opts *opts, mp_call *call,
                      mp_error *err)
{
	mp_node n;
	int r = stat_file(c, remote, call, &n, err);
	if (r < 0)
		return r;
	r = mp_read_node(c, &n, offset, length, sink, arg, opts, err);
	mp_node_clear(&n);
	return r;
}

MP_EXPORT int mp_read_node(mp_client *c, const mp_node *file, uint64_t offset, uint64_t length,
                           mp_sink_cb sink, void *arg, const mp_transfer_opts *opts, mp_error *err)
{
	if (file == NULL || file->type != MP_TYPE_FILE)
		return mperr(err, -EINVAL, "read: not a file's node");
	const mp_node n = *file;
	const char *remote = n.name != NULL ? n.name : "";
	int r;
	if (offset > n.size)
		return mperr(err, -ERANGE, "%s: offset %llu is past the end (%llu bytes)", remote,
		             (unsigned long long)offset, (unsigned long long)n.size);
	if (length == 0 || length > n.size - offset)
		length = n.size - offset;
	mp_node sub;
	struct chunk *chunks = NULL;
	size_t count = 0;
	r = sub_layout(&n, offset, length, &sub, err);
	if (r == 0)
		r = transfer_chunks(c, &sub, &chunks, &count, err);
	/* Chunks of an extent the range cut name the whole extent: the cache
	 * group asks for blocks of the object as the layout knows it (its size
	 * is the extent's end, not the cut's), and a chunk covering the cut is
	 * not the whole object, whose MD5 ETag its bytes cannot match. Only
	 * the first and last extents of the range can be cut; the cut ones
	 * borrow the original's strings, so the key pointer finds it. */
	for (size_t i = 0; r == 0 && i < count; i++) {
		const mp_extent *x = chunks[i].ext;
		if (x != &sub.extents[0] && x != &sub.extents[sub.n_extents - 1])
			continue;
		for (size_t k = 0; k < n.n_extents; k++) {
			if (n.extents[k].key != x->key)
				continue;
			if (n.extents[k].offset != x->offset || n.extents[k].length != x->length)
				chunks[i].whole_extent = false;
			chunks[i].ext = &n.extents[k];
			break;
		}
	}
	struct progress pr;
	progress_init(&pr, opts);
	progress_totals(&pr, length, 1);
	int window = transfer_parallel(c, opts);
	if (window > 8)
		window = 8;
	struct mem_sink *bufs = NULL;
	if (r == 0 && count > 1) {
		bufs = calloc((size_t)window, sizeof(*bufs));
		for (int i = 0; bufs != NULL && i < window; i++)
			if ((bufs[i].buf = malloc(c->cfg.part_size)) == NULL)
				r = mperr(err, -ENOMEM, "out of memory");
		if (bufs == NULL)
			r = mperr(err, -ENOMEM, "out of memory");
	}
	if (r == 0 && count == 1)
		r = transfer_fetch(c, &chunks[0], sink, arg, &pr, err);
	/* Larger reads go a window of ranges at a time, fetched in parallel
	 * and handed over in order. */
	for (size_t at = 0; r == 0 && count > 1 && at < count; at += (size_t)window) {
		size_t m = count - at < (size_t)window ? count - at : (size_t)window;
		struct round rd = {c, chunks + at, bufs, &pr};
		r = transfer_run(m, window, fetch_to_mem, &rd, err);
		for (size_t i = 0; r == 0 && i < m; i++) {
			r = sink(arg, bufs[i].buf, bufs[i].len);
			if (r < 0)
				mperr(err, r, "%s: output: %s", remote, strerror(-r));
		}
	}
	if (r == 0)
		progress_add(&pr, 0, 1, NULL);
	progress_finish(&pr);
	progress_destroy(&pr);
	for (int i = 0; bufs != NULL && i < window; i++)
		free(bufs[i].buf);
	free(bufs);
	free(chunks);
	free(sub.extents);
	return r;
}
