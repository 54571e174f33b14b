/* A registry of Prometheus metrics — counters, gauges and histograms, each
 * either plain or a family with one label — rendered in the text exposition
 * format 0.0.4 for the admin listener's /metrics.
 *
 * Updates may come from any thread (the commit thread observes latencies
 * while the event loop renders): one mutex in the registry serialises them.
 *
 * The registry owns every metric. A metric pointer stays valid until
 * metrics_free, except a family's child, which is freed by
 * metric_remove_child: whoever removes a child must make sure no other
 * thread still uses it.
 *
 * Update functions accept NULL and then do nothing, so that a daemon whose
 * registration failed (and was logged) keeps running without metrics rather
 * than crashing. They also ignore updates that do not fit the kind
 * (metric_set on a counter, a negative metric_add on a counter, any update
 * on a family itself). */
#ifndef MP_METRICS_H
#define MP_METRICS_H

#include <stddef.h>

struct evbuffer;
struct metrics;
struct metric;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_BOUNDS   64
#define METRICS_MAX_LABEL    256 /* bytes in a label value */

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics *metrics_new(void);
/* Frees the registry and every metric in it. NULL-safe. */
void metrics_free(struct metrics *m);

/* Registration. Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* without a leading "__" (and not "le" for a
 * histogram). Histogram bounds must be finite and strictly increasing, at
 * most METRICS_MAX_BOUNDS of them; the +Inf bucket is implicit. NULL bounds
 * select Prometheus' default buckets (0.005 s .. 10 s). Metrics render in
 * the order they were registered.
 *
 * Each returns the metric, or NULL with errno set: EINVAL for a bad name,
 * label or bounds, EEXIST when the name is taken, ENOMEM. */
struct metric *metrics_counter(struct metrics *m, const char *name, const char *help);
struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help);
struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                 const double *bounds, size_t nbounds);
/* A family of metrics distinguished by one label, e.g.
 * mp_primary_subscriber_lag_versions{site="eu-1"}. Families of histograms
 * use the default buckets; metrics_labeled_histogram chooses them. */
struct metric *metrics_labeled(struct metrics *m, const char *name, const char *help,
                               enum metric_kind kind, const char *label_name);
struct metric *metrics_labeled_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *label_name, const double *bounds,
                                         size_t nbounds);

/* The family's child for label_value, created on first use (value 0).
 * Any byte string up to METRICS_MAX_LABEL bytes of valid UTF-8 is accepted;
 * it is escaped on output. Returns NULL with errno EINVAL (not a family, bad
 * value) or ENOMEM. */
struct metric *metric_child(struct metric *family, const char *label_value);
/* Drops the child (a subscriber that went away) so that it no longer
 * renders. Unknown values are ignored. */
void metric_remove_child(struct metric *family, const char *label_value);

/* Counters: v >= 0. Gauges: any v. */
void metric_add(struct metric *c, double v);
void metric_set(struct metric *g, double v);
/* Histograms: NaN is ignored. */
void metric_observe(struct metric *h, double v);
/* The current value of a counter or gauge, or the observation count of a
 * histogram; NaN for NULL or a family. */
double metric_value(struct metric *mt);

/* Appends the whole registry in the text format. Returns 0 or -ENOMEM. */
int metrics_render(struct metrics *m, struct evbuffer *out);

/* An admin_handler_fn serving arg (a struct metrics *) as /metrics. */
int metrics_handler(void *arg, struct evbuffer *body, const char **ret_content_type);

#endif
