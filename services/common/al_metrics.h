/*
 * al_metrics: a Prometheus registry of counters, gauges and histograms.
 *
 * A family is a metric name with one type and help text; a series is a family
 * plus one label set. al_metrics_counter() and friends get or create a series
 * and return a pointer that stays valid until al_metrics_free(), so hot paths
 * look a series up once and keep the pointer:
 *
 *   struct al_metric *ok = al_metrics_counter(m, "airlock_jobs_total",
 *                                             "Jobs finished", "result=\"ok\"");
 *   al_metric_add(ok, 1);
 *
 * Labels are given as the text that goes between the braces, already
 * escaped: name="value" pairs separated by commas. Values that come from the
 * network must go through al_metrics_label_escape(). The same label set must
 * be written in the same order each time: "a=\"1\",b=\"2\"" and
 * "b=\"2\",a=\"1\"" are two series.
 *
 * Failure is quiet by design: a getter returns NULL on OOM, on a malformed
 * name or label set, when the name exists with another type (or histogram
 * buckets), or when the registry already holds AL_METRICS_MAX_SERIES series
 * (a cap against label values chosen by peers). Every update function accepts
 * NULL and then does nothing, so a metric can never fail a request. The
 * first few refusals of a registry are logged (event metrics.refused).
 *
 * Not thread-safe: a registry belongs to one event loop thread.
 */
#ifndef AL_METRICS_H
#define AL_METRICS_H

#include <stddef.h>

#define AL_METRICS_MAX_SERIES  10000 /* per registry */
#define AL_METRICS_MAX_LABELS  1024  /* bytes of label text per series */
#define AL_METRICS_MAX_BUCKETS 64    /* histogram bounds, +Inf not counted */

struct al_metrics;
struct al_metric;

/* Creates an empty registry in *out (owned by the caller; al_metrics_free).
 * Returns 0 or AL_ERR_NOMEM. */
int al_metrics_new(struct al_metrics **out);

/* Frees the registry and every series pointer it handed out. NULL is fine. */
void al_metrics_free(struct al_metrics *m);

/*
 * Gets or creates a counter series. name is [a-zA-Z_:][a-zA-Z0-9_:]*; help is
 * kept from the first call for the family; labels as described above or NULL
 * for none. All strings are copied. Returns the series (owned by m) or NULL.
 */
struct al_metric *al_metrics_counter(struct al_metrics *m, const char *name, const char *help,
                                     const char *labels);

/* As al_metrics_counter(), for a gauge. */
struct al_metric *al_metrics_gauge(struct al_metrics *m, const char *name, const char *help,
                                   const char *labels);

/*
 * As al_metrics_counter(), for a histogram with nbounds finite, strictly
 * increasing upper bounds (copied; at most AL_METRICS_MAX_BUCKETS). NULL
 * bounds selects the default latency buckets in seconds, 0.0005 .. 10. The
 * first call fixes a family's buckets; a later call with other bounds gets
 * NULL.
 */
struct al_metric *al_metrics_histogram(struct al_metrics *m, const char *name, const char *help,
                                       const char *labels, const double *bounds, size_t nbounds);

/* Counter: adds v (v < 0 or NaN ignored). Gauge: adds v (may be negative).
 * Histogram or NULL: no-op. */
void al_metric_add(struct al_metric *s, double v);

/* Counter or gauge: sets the value. Histogram or NULL: no-op. */
void al_metric_set(struct al_metric *s, double v);

/* Histogram: records one observation (NaN ignored). Others or NULL: no-op. */
void al_metric_observe(struct al_metric *s, double v);

/* The current value of a counter or gauge, or the observation count of a
 * histogram; 0 for NULL. For tests and for readiness logic. */
double al_metric_value(const struct al_metric *s);

/*
 * Renders the registry in the Prometheus text exposition format 0.0.4:
 * families in creation order, one HELP and TYPE line each, series in
 * creation order; histograms as _bucket{le=...} (cumulative, ending with
 * le="+Inf"), _sum and _count. On success *out is a NUL-terminated heap
 * buffer owned by the caller (free it) and *len its length. Returns 0 or
 * AL_ERR_NOMEM (*out is then NULL).
 */
int al_metrics_render(struct al_metrics *m, char **out, size_t *len);

/*
 * Escapes src (srclen bytes, borrowed) for use inside a label value's double
 * quotes: backslash, double quote and newline are escaped, bytes that are not
 * valid UTF-8 become '?'. Writes at most n bytes including the NUL. Returns
 * the length written, or AL_ERR_TOOBIG when it did not fit (dst then holds a
 * truncated, still valid, NUL-terminated prefix).
 */
int al_metrics_label_escape(char *dst, size_t n, const char *src, size_t srclen);

#endif
