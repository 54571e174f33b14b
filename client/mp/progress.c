/* The progress bar. The library calls progress_cb on its own threads, one
 * call at a time, while the main thread waits in the transfer; the lock
 * only guards against a late callback racing progress_end. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "output.h"
#include "progress.h"

#define PROGRESS_INTERVAL 0.1 /* seconds between redraws */
#define PROGRESS_DELAY    0.3 /* no bar for work done quicker than this */

struct progress {
	pthread_mutex_t lock;
	bool enabled;
	int columns;
	double start, last_draw;
	/* Finished operations. */
	uint64_t base_bytes_done, base_bytes_total, base_files_done, base_files_total;
	/* Operations not started, as far as known. */
	uint64_t pending_bytes, pending_files;
	/* The running one: what was expected of it and what it reported. */
	uint64_t step_bytes, step_files;
	uint64_t cur_bytes_done, cur_bytes_total, cur_files_done, cur_files_total;
	bool on_screen; /* a bar is shown and its line not ended */
	bool drawn;     /* a bar was shown at some point */
};

static double progress_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

struct progress *progress_new(bool enabled)
{
	struct progress *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	p->enabled = enabled;
	p->columns = 80;
	struct winsize ws;
	if (enabled && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		p->columns = ws.ws_col;
	p->start = progress_now();
	return p;
}

static void progress_write(const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, s, len);
		if (n <= 0)
			return; /* a bar is not worth an error */
		s += n;
		len -= (size_t)n;
	}
}

static void progress_eta(double secs, char *out, size_t len)
{
	if (secs < 0 || secs > 99 * 3600.0) {
		snprintf(out, len, "--:--");
		return;
	}
	unsigned s = (unsigned)(secs + 0.5);
	if (s >= 3600)
		snprintf(out, len, "%u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(out, len, "%u:%02u", s / 60, s % 60);
}

/* With the lock held. */
static void progress_draw(struct progress *p, const char *current)
{
	uint64_t bytes_total =
	    p->base_bytes_total + max_u64(p->cur_bytes_total, p->step_bytes) + p->pending_bytes;
	uint64_t bytes_done = p->base_bytes_done + p->cur_bytes_done;
	uint64_t files_total =
	    p->base_files_total + max_u64(p->cur_files_total, p->step_files) + p->pending_files;
	uint64_t files_done = p->base_files_done + p->cur_files_done;
	bytes_total = max_u64(bytes_total, bytes_done);
	files_total = max_u64(files_total, files_done);

	unsigned pct = 100;
	if (bytes_total > 0)
		pct = (unsigned)((double)bytes_done * 100.0 / (double)bytes_total);
	else if (files_total > 0)
		pct = (unsigned)(files_done * 100 / files_total);

	double elapsed = progress_now() - p->start;
	double rate = elapsed > 0.05 ? (double)bytes_done / elapsed : 0.0;
	char done_s[16], total_s[16], eta[16];
	output_size(bytes_done, done_s, sizeof(done_s));
	output_size(bytes_total, total_s, sizeof(total_s));
	progress_eta(rate > 0 ? (double)(bytes_total - bytes_done) / rate : -1, eta, sizeof(eta));

	char line[512];
	int n = snprintf(line, sizeof(line),
	                 "\r%3u%%  %s / %s  %.1f MiB/s  ETA %s  files %" PRIu64 "/%" PRIu64, pct,
	                 done_s, total_s, rate / (1024.0 * 1024.0), eta, files_done, files_total);
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
	/* The line must not wrap, or '\r' would only redraw its last row: at
	 * most columns - 1 characters, plus the leading '\r'. */
	size_t room = (size_t)p->columns;
	if (current != NULL && len + 3 < room) {
		size_t clen = strlen(current), avail = room - len - 2;
		const char *tail = clen > avail ? current + (clen - avail) : current;
		line[len++] = ' ';
		line[len++] = ' ';
		for (; *tail != '\0' && len < sizeof(line) - 1; tail++) {
			unsigned char c = (unsigned char)*tail;
			line[len++] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
		}
	}
	if (len > room)
		len = room;
	progress_write(line, len);
	progress_write("\033[K", 3);
	p->on_screen = true;
	p->drawn = true;
	p->last_draw = progress_now();
}

static void progress_cb(void *arg, const mp_progress *mp)
{
	struct progress *p = arg;
	pthread_mutex_lock(&p->lock);
	p->cur_bytes_done = mp->bytes_done;
	p->cur_bytes_total = mp->bytes_total;
	p->cur_files_done = mp->files_done;
	p->cur_files_total = mp->files_total;
	double now = progress_now();
	bool last = mp->bytes_done == mp->bytes_total && mp->files_done == mp->files_total;
	/* The library already calls at most every ~100 ms; this keeps a series
	 * of operands from redrawing more often than that. */
	if (now - p->start >= PROGRESS_DELAY && (now - p->last_draw >= PROGRESS_INTERVAL || last))
		progress_draw(p, mp->current);
	pthread_mutex_unlock(&p->lock);
}

void progress_expect(struct progress *p, uint64_t bytes, uint64_t files)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->pending_bytes += bytes;
	p->pending_files += files;
	pthread_mutex_unlock(&p->lock);
}

void progress_begin(struct progress *p, uint64_t bytes, uint64_t files, mp_transfer_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->pending_bytes -= bytes < p->pending_bytes ? bytes : p->pending_bytes;
	p->pending_files -= files < p->pending_files ? files : p->pending_files;
	p->step_bytes = bytes;
	p->step_files = files;
	p->cur_bytes_done = p->cur_bytes_total = p->cur_files_done = p->cur_files_total = 0;
	pthread_mutex_unlock(&p->lock);
	if (p->enabled) {
		opts->progress = progress_cb;
		opts->progress_arg = p;
	}
}

void progress_end(struct progress *p, bool ok)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	uint64_t bytes = p->cur_bytes_done, files = p->cur_files_done;
	if (ok) {
		bytes = max_u64(bytes, max_u64(p->cur_bytes_total, p->step_bytes));
		files = max_u64(files, max_u64(p->cur_files_total, p->step_files));
	}
	p->base_bytes_done += bytes;
	p->base_bytes_total += bytes;
	p->base_files_done += files;
	p->base_files_total += files;
	p->step_bytes = p->step_files = 0;
	p->cur_bytes_done = p->cur_bytes_total = p->cur_files_done = p->cur_files_total = 0;
	if (!ok && p->on_screen) {
		progress_write("\r\033[K", 4);
		p->on_screen = false;
		p->drawn = false;
	}
	pthread_mutex_unlock(&p->lock);
}

void progress_finish(struct progress *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->drawn) {
		progress_draw(p, NULL);
		progress_write("\n", 1);
		p->on_screen = false;
		p->drawn = false;
	}
	pthread_mutex_unlock(&p->lock);
}

void progress_free(struct progress *p)
{
	if (p == NULL)
		return;
	progress_finish(p);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
