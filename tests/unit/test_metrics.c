/*
 * Unit tests for al_metrics: the exact exposition text for each metric type,
 * get-or-create stability, refusals (type clash, bad names and labels, the
 * series cap) and label escaping.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"

static char *render(struct al_metrics *m)
{
    char *out = NULL;
    size_t len = 0;

    CU_ASSERT_EQUAL(al_metrics_render(m, &out, &len), 0);
    CU_ASSERT_EQUAL(out ? strlen(out) : 0, len);
    return out;
}

/* Asserts that text equals want exactly, printing both when not. */
static void expect_text(const char *text, const char *want)
{
    CU_ASSERT_STRING_EQUAL(text, want);
    if (strcmp(text, want) != 0)
        fprintf(stderr, "\n--- got ---\n%s--- want ---\n%s", text, want);
}

static void test_counter_gauge(void)
{
    struct al_metrics *m;
    struct al_metric *a, *b, *g;
    char *text;

    CU_ASSERT_EQUAL_FATAL(al_metrics_new(&m), 0);
    a = al_metrics_counter(m, "airlock_jobs_total", "Jobs finished.", "result=\"ok\"");
    b = al_metrics_counter(m, "airlock_jobs_total", "ignored", "result=\"error\"");
    g = al_metrics_gauge(m, "airlock_queue_depth", "Jobs waiting.\nIn \\ all pools.", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_PTR_EQUAL(al_metrics_counter(m, "airlock_jobs_total", NULL, "result=\"ok\""), a);
    al_metric_add(a, 1);
    al_metric_add(a, 2);
    al_metric_add(a, -5); /* counters never go down */
    al_metric_add(a, NAN);
    al_metric_add(b, 0.25);
    al_metric_set(g, 7);
    al_metric_add(g, -2);
    CU_ASSERT_DOUBLE_EQUAL(al_metric_value(a), 3, 0);
    CU_ASSERT_DOUBLE_EQUAL(al_metric_value(g), 5, 0);
    text = render(m);
    expect_text(text, "# HELP airlock_jobs_total Jobs finished.\n"
                      "# TYPE airlock_jobs_total counter\n"
                      "airlock_jobs_total{result=\"ok\"} 3\n"
                      "airlock_jobs_total{result=\"error\"} 0.25\n"
                      "# HELP airlock_queue_depth Jobs waiting.\\nIn \\\\ all pools.\n"
                      "# TYPE airlock_queue_depth gauge\n"
                      "airlock_queue_depth 5\n");
    free(text);
    al_metrics_free(m);
}

static void test_histogram(void)
{
    static const double bounds[] = {0.1, 1, 10};
    struct al_metrics *m;
    struct al_metric *h, *d;
    char *text;

    CU_ASSERT_EQUAL_FATAL(al_metrics_new(&m), 0);
    h = al_metrics_histogram(m, "rpc_seconds", "RPC latency.", "method=\"/a.B/C\"", bounds, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    al_metric_observe(h, 0.05);
    al_metric_observe(h, 0.1); /* le is inclusive */
    al_metric_observe(h, 0.5);
    al_metric_observe(h, 100);
    al_metric_observe(h, NAN);
    al_metric_add(h, 1); /* not for histograms */
    CU_ASSERT_DOUBLE_EQUAL(al_metric_value(h), 4, 0);
    d = al_metrics_histogram(m, "plain_seconds", "Defaults.", NULL, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    al_metric_observe(d, 0.003);
    text = render(m);
    expect_text(text, "# HELP rpc_seconds RPC latency.\n"
                      "# TYPE rpc_seconds histogram\n"
                      "rpc_seconds_bucket{method=\"/a.B/C\",le=\"0.1\"} 2\n"
                      "rpc_seconds_bucket{method=\"/a.B/C\",le=\"1\"} 3\n"
                      "rpc_seconds_bucket{method=\"/a.B/C\",le=\"10\"} 3\n"
                      "rpc_seconds_bucket{method=\"/a.B/C\",le=\"+Inf\"} 4\n"
                      "rpc_seconds_sum{method=\"/a.B/C\"} 100.65\n"
                      "rpc_seconds_count{method=\"/a.B/C\"} 4\n"
                      "# HELP plain_seconds Defaults.\n"
                      "# TYPE plain_seconds histogram\n"
                      "plain_seconds_bucket{le=\"0.0005\"} 0\n"
                      "plain_seconds_bucket{le=\"0.001\"} 0\n"
                      "plain_seconds_bucket{le=\"0.0025\"} 0\n"
                      "plain_seconds_bucket{le=\"0.005\"} 1\n"
                      "plain_seconds_bucket{le=\"0.01\"} 1\n"
                      "plain_seconds_bucket{le=\"0.025\"} 1\n"
                      "plain_seconds_bucket{le=\"0.05\"} 1\n"
                      "plain_seconds_bucket{le=\"0.1\"} 1\n"
                      "plain_seconds_bucket{le=\"0.25\"} 1\n"
                      "plain_seconds_bucket{le=\"0.5\"} 1\n"
                      "plain_seconds_bucket{le=\"1\"} 1\n"
                      "plain_seconds_bucket{le=\"2.5\"} 1\n"
                      "plain_seconds_bucket{le=\"5\"} 1\n"
                      "plain_seconds_bucket{le=\"10\"} 1\n"
                      "plain_seconds_bucket{le=\"+Inf\"} 1\n"
                      "plain_seconds_sum 0.003\n"
                      "plain_seconds_count 1\n");
    free(text);
    /* same family, other label set, default bounds are not the family's bounds */
    CU_ASSERT_PTR_NOT_NULL(
        al_metrics_histogram(m, "rpc_seconds", NULL, "method=\"/x\"", bounds, 3));
    CU_ASSERT_PTR_NULL(al_metrics_histogram(m, "rpc_seconds", NULL, "method=\"/y\"", NULL, 0));
    al_metrics_free(m);
}

static void test_special_values(void)
{
    struct al_metrics *m;
    char *text;

    CU_ASSERT_EQUAL_FATAL(al_metrics_new(&m), 0);
    al_metric_set(al_metrics_gauge(m, "g_inf", "", NULL), INFINITY);
    al_metric_set(al_metrics_gauge(m, "g_ninf", "", NULL), -INFINITY);
    al_metric_set(al_metrics_gauge(m, "g_nan", "", NULL), NAN);
    al_metric_set(al_metrics_gauge(m, "g_frac", "", NULL), 0.1);
    al_metric_set(al_metrics_gauge(m, "g_big", "", NULL), 1e20);
    text = render(m);
    expect_text(text, "# HELP g_inf \n# TYPE g_inf gauge\ng_inf +Inf\n"
                      "# HELP g_ninf \n# TYPE g_ninf gauge\ng_ninf -Inf\n"
                      "# HELP g_nan \n# TYPE g_nan gauge\ng_nan NaN\n"
                      "# HELP g_frac \n# TYPE g_frac gauge\ng_frac 0.1\n"
                      "# HELP g_big \n# TYPE g_big gauge\ng_big 1e+20\n");
    free(text);
    al_metrics_free(m);
}

static void test_refusals(void)
{
    static const double unsorted[] = {1, 0.5};
    static const double inf[] = {1, INFINITY};
    struct al_metrics *m;
    char *text;

    CU_ASSERT_EQUAL_FATAL(al_metrics_new(&m), 0);
    CU_ASSERT_PTR_NOT_NULL(al_metrics_counter(m, "x_total", "x", NULL));
    CU_ASSERT_PTR_NULL(al_metrics_gauge(m, "x_total", "x", NULL));
    CU_ASSERT_PTR_NULL(al_metrics_gauge(m, "x_total", "x", "a=\"1\""));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "", "x", NULL));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "9lives", "x", NULL));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "has space", "x", NULL));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, NULL, "x", NULL));
    CU_ASSERT_PTR_NULL(al_metrics_counter(NULL, "ok", "x", NULL));
    CU_ASSERT_PTR_NOT_NULL(al_metrics_counter(m, "ns:sub_total", "colons are fine", NULL));
    /* label sets must be well formed and escaped */
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "a=1"));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "a=\"1\","));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "a=\"unterminated"));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "a=\"bad \\x escape\""));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "a=\"raw\nnewline\""));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "a=\"\xff\""));
    CU_ASSERT_PTR_NULL(al_metrics_counter(m, "y", "", "1a=\"x\""));
    CU_ASSERT_PTR_NULL(al_metrics_histogram(m, "h", "", "le=\"1\"", NULL, 0));
    CU_ASSERT_PTR_NULL(al_metrics_histogram(m, "h", "", NULL, unsorted, 2));
    CU_ASSERT_PTR_NULL(al_metrics_histogram(m, "h", "", NULL, inf, 2));
    CU_ASSERT_PTR_NOT_NULL(al_metrics_counter(m, "y", "", "a=\"q\\\"\\\\\\n\",b=\"\xc3\xa9\""));
    /* NULL series are no-ops */
    al_metric_add(NULL, 1);
    al_metric_set(NULL, 1);
    al_metric_observe(NULL, 1);
    CU_ASSERT_DOUBLE_EQUAL(al_metric_value(NULL), 0, 0);
    text = render(m);
    CU_ASSERT_PTR_NULL(strstr(text, "# TYPE h "));
    free(text);
    al_metrics_free(m);
    al_metrics_free(NULL);
}

static void test_series_cap(void)
{
    struct al_metrics *m;
    char labels[64];
    int made = 0;

    CU_ASSERT_EQUAL_FATAL(al_metrics_new(&m), 0);
    for (int i = 0; i < AL_METRICS_MAX_SERIES + 10; i++) {
        snprintf(labels, sizeof(labels), "peer=\"%d\"", i);
        made += al_metrics_counter(m, "peers_total", "", labels) != NULL;
    }
    CU_ASSERT_EQUAL(made, AL_METRICS_MAX_SERIES);
    /* existing series still resolve, and to the same pointer */
    CU_ASSERT_PTR_EQUAL(al_metrics_counter(m, "peers_total", "", "peer=\"7\""),
                        al_metrics_counter(m, "peers_total", "", "peer=\"7\""));
    CU_ASSERT_PTR_NOT_NULL(al_metrics_counter(m, "peers_total", "", "peer=\"7\""));
    al_metrics_free(m);
}

static void test_label_escape(void)
{
    char buf[64];
    struct al_metrics *m;
    char labels[128], *text;

    CU_ASSERT_EQUAL(al_metrics_label_escape(buf, sizeof(buf), "a\"b\\c\nd", 7), 10);
    CU_ASSERT_STRING_EQUAL(buf, "a\\\"b\\\\c\\nd");
    CU_ASSERT_EQUAL(al_metrics_label_escape(buf, sizeof(buf), "\xc3\xa9\xff\xc3", 4), 4);
    CU_ASSERT_STRING_EQUAL(buf, "\xc3\xa9??");
    CU_ASSERT_EQUAL(al_metrics_label_escape(buf, sizeof(buf), "a\0b", 3), 3);
    CU_ASSERT_STRING_EQUAL(buf, "a?b");
    /* truncation never splits an escape or a UTF-8 sequence */
    CU_ASSERT_EQUAL(al_metrics_label_escape(buf, 4, "ab\"", 3), AL_ERR_TOOBIG);
    CU_ASSERT_STRING_EQUAL(buf, "ab");
    CU_ASSERT_EQUAL(al_metrics_label_escape(buf, 3, "a\xc3\xa9", 3), AL_ERR_TOOBIG);
    CU_ASSERT_STRING_EQUAL(buf, "a");
    CU_ASSERT_EQUAL(al_metrics_label_escape(buf, 0, "a", 1), AL_ERR_TOOBIG);

    /* escaped output is accepted back as a label value */
    CU_ASSERT_EQUAL_FATAL(al_metrics_new(&m), 0);
    al_metrics_label_escape(buf, sizeof(buf), "/evil\"}\n\xfe", 9);
    snprintf(labels, sizeof(labels), "method=\"%s\"", buf);
    al_metric_add(al_metrics_counter(m, "calls_total", "h", labels), 1);
    text = render(m);
    expect_text(text, "# HELP calls_total h\n# TYPE calls_total counter\n"
                      "calls_total{method=\"/evil\\\"}\\n?\"} 1\n");
    free(text);
    al_metrics_free(m);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    al_log_min_level = AL_LOG_OFF; /* refusals are logged; keep the output readable */
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("metrics", NULL, NULL);
    CU_add_test(s, "counters and gauges", test_counter_gauge);
    CU_add_test(s, "histograms", test_histogram);
    CU_add_test(s, "special values", test_special_values);
    CU_add_test(s, "refusals", test_refusals);
    CU_add_test(s, "series cap", test_series_cap);
    CU_add_test(s, "label escaping", test_label_escape);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
