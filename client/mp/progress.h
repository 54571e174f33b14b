/* The progress bar of put, get and import: one line on stderr redrawn with
 * '\r' at most ten times a second, showing the whole command's progress
 * across its operands:
 *
 *	 42%  1.26 GiB / 3.00 GiB  85.3 MiB/s  ETA 0:21  files 3/10
 *
 * A command with several operands tells it the sizes it knows up front
 * (progress_expect) so the totals cover them all before they start. */
#ifndef MP_CLI_PROGRESS_H
#define MP_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include <mirrorplane/mirrorplane.h>

struct progress;

/* enabled false gives a progress that draws nothing (and whose opts have no
 * callback). NULL when out of memory. Free with progress_free. */
struct progress *progress_new(bool enabled);
void progress_free(struct progress *p); /* NULL-safe; ends the line if drawn */

/* Bytes and files of operands not started yet. */
void progress_expect(struct progress *p, uint64_t bytes, uint64_t files);
/* Before an operation that was counted in progress_expect with these
 * figures (0, 0 when it was not): fills opts for the library call. */
void progress_begin(struct progress *p, uint64_t bytes, uint64_t files, mp_transfer_opts *opts);
/* After it. When it failed, the bar is taken off the screen so that the
 * error can be printed on a line of its own; the next operation draws it
 * again. */
void progress_end(struct progress *p, bool ok);
/* Draws the final state and ends the line (if anything was drawn), before a
 * summary is printed. */
void progress_finish(struct progress *p);

#endif
