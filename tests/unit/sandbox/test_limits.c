/* Unit tests for sandbox/limits.c: which mechanism enforces each limit on
 * hosts with cgroup v2, v1 or none, strict vs degraded, and the rlimits a
 * job gets. */
#include <string.h>
#include <sys/resource.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "sb_int.h"

static const struct sb_limits all = {
    .wall_time_ms = 1000,
    .cpu_time_ms = 1500,
    .memory_bytes = 64 << 20,
    .pids = 32,
    .file_size_bytes = 1 << 20,
    .open_files = 64,
    .output_bytes = 4096,
    .cpu_millicores = 500,
};

static int find(const struct sb_limit_report *r, size_t n, enum sb_limit_kind k, int mech)
{
    for (size_t i = 0; i < n; i++)
        if (r[i].kind == k && (int)r[i].mechanism == mech)
            return (int)i;
    return -1;
}

static void test_v1_host(void)
{
    struct sb_caps caps = {SB_MECH_CGROUP_V1, SB_MECH_CGROUP_V1, SB_MECH_CGROUP_V1,
                           SB_MECH_CGROUP_V1};
    struct sb_limit_report r[SB_MAX_LIMITS];
    size_t n;
    char msg[256];
    CU_ASSERT_EQUAL_FATAL(sb_limits_decide(&caps, &all, 0, r, &n, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(n, 9); /* CPU time twice */
    CU_ASSERT(find(r, n, SB_LIMIT_WALL_TIME, SB_MECH_TIMER) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_CPU_TIME, SB_MECH_CGROUP_V1) >= 0);
    int rl = find(r, n, SB_LIMIT_CPU_TIME, SB_MECH_RLIMIT);
    CU_ASSERT_FATAL(rl >= 0);
    CU_ASSERT_EQUAL(r[rl].value, 2000); /* whole seconds, rounded up */
    CU_ASSERT(find(r, n, SB_LIMIT_MEMORY, SB_MECH_CGROUP_V1) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_PIDS, SB_MECH_CGROUP_V1) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_FILE_SIZE, SB_MECH_RLIMIT) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_OPEN_FILES, SB_MECH_RLIMIT) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_OUTPUT, SB_MECH_EXECUTOR) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_CPU_BANDWIDTH, SB_MECH_CGROUP_V1) >= 0);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_FALSE(r[i].hit);
    /* reported in LimitKind order */
    for (size_t i = 1; i < n; i++)
        CU_ASSERT(r[i - 1].kind <= r[i].kind);
}

static void test_v2_host(void)
{
    struct sb_caps caps = {SB_MECH_CGROUP_V2, SB_MECH_CGROUP_V2, SB_MECH_CGROUP_V2,
                           SB_MECH_CGROUP_V2};
    struct sb_limit_report r[SB_MAX_LIMITS];
    size_t n;
    char msg[256];
    CU_ASSERT_EQUAL_FATAL(sb_limits_decide(&caps, &all, 0, r, &n, msg, sizeof(msg)), 0);
    CU_ASSERT(find(r, n, SB_LIMIT_MEMORY, SB_MECH_CGROUP_V2) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_PIDS, SB_MECH_CGROUP_V2) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_CPU_BANDWIDTH, SB_MECH_CGROUP_V2) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_CPU_TIME, SB_MECH_CGROUP_V2) >= 0);
}

static void test_no_cgroups_strict_refuses(void)
{
    struct sb_caps caps = {0, 0, 0, 0};
    struct sb_limit_report r[SB_MAX_LIMITS];
    size_t n;
    char msg[256];
    CU_ASSERT_EQUAL(sb_limits_decide(&caps, &all, 0, r, &n, msg, sizeof(msg)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "memory_bytes"));
    struct sb_limits cpu_only = {.cpu_millicores = 100};
    CU_ASSERT_EQUAL(sb_limits_decide(&caps, &cpu_only, 0, r, &n, msg, sizeof(msg)), AL_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "cpu_millicores"));
    /* what rlimits can do is fine even in strict mode */
    struct sb_limits rl_only = {.pids = 10, .cpu_time_ms = 10, .file_size_bytes = 10};
    CU_ASSERT_EQUAL(sb_limits_decide(&caps, &rl_only, 0, r, &n, msg, sizeof(msg)), 0);
    CU_ASSERT(find(r, n, SB_LIMIT_PIDS, SB_MECH_RLIMIT) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_CPU_TIME, SB_MECH_RLIMIT) >= 0);
    CU_ASSERT_EQUAL(find(r, n, SB_LIMIT_CPU_TIME, SB_MECH_CGROUP_V1), -1);
}

static void test_no_cgroups_degraded(void)
{
    struct sb_caps caps = {0, 0, 0, 0};
    struct sb_limit_report r[SB_MAX_LIMITS];
    struct sb_plan p;
    size_t n;
    char msg[256];
    CU_ASSERT_EQUAL_FATAL(sb_limits_decide(&caps, &all, 1, r, &n, msg, sizeof(msg)), 0);
    CU_ASSERT(find(r, n, SB_LIMIT_MEMORY, SB_MECH_RLIMIT) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_PIDS, SB_MECH_RLIMIT) >= 0);
    CU_ASSERT(find(r, n, SB_LIMIT_CPU_BANDWIDTH, SB_MECH_NONE) >= 0);
    memset(&p, 0, sizeof(p));
    sb_limits_rlimits(&all, r, n, &p);
    int seen_as = 0, seen_nproc = 0;
    for (size_t i = 0; i < p.n_rl; i++) {
        if (p.rl[i].resource == RLIMIT_AS) {
            seen_as = 1;
            CU_ASSERT_EQUAL(p.rl[i].value, (rlim_t)(64 << 20));
        }
        if (p.rl[i].resource == RLIMIT_NPROC) {
            seen_nproc = 1;
            CU_ASSERT_EQUAL(p.rl[i].value, 33); /* + the sandbox's init */
        }
    }
    CU_ASSERT_TRUE(seen_as);
    CU_ASSERT_TRUE(seen_nproc);
}

static void test_rlimits(void)
{
    struct sb_caps caps = {SB_MECH_CGROUP_V1, SB_MECH_CGROUP_V1, 0, SB_MECH_CGROUP_V1};
    struct sb_limit_report r[SB_MAX_LIMITS];
    struct sb_plan p;
    size_t n;
    char msg[256];
    struct sb_limits l = all;
    l.cpu_millicores = 0;
    CU_ASSERT_EQUAL_FATAL(sb_limits_decide(&caps, &l, 0, r, &n, msg, sizeof(msg)), 0);
    memset(&p, 0, sizeof(p));
    sb_limits_rlimits(&l, r, n, &p);
    int core = 0, cpu = 0, fsize = 0, nofile = 0;
    for (size_t i = 0; i < p.n_rl; i++) {
        CU_ASSERT_NOT_EQUAL(p.rl[i].resource, RLIMIT_AS);    /* the cgroup does memory */
        CU_ASSERT_NOT_EQUAL(p.rl[i].resource, RLIMIT_NPROC); /* and pids */
        if (p.rl[i].resource == RLIMIT_CORE)
            core = p.rl[i].value == 0;
        if (p.rl[i].resource == RLIMIT_CPU)
            cpu = p.rl[i].value == 2;
        if (p.rl[i].resource == RLIMIT_FSIZE)
            fsize = p.rl[i].value == (rlim_t)(1 << 20);
        if (p.rl[i].resource == RLIMIT_NOFILE)
            nofile = p.rl[i].value == 64;
    }
    CU_ASSERT_TRUE(core && cpu && fsize && nofile);
    /* no limits: only RLIMIT_CORE, no report */
    struct sb_limits none = {0};
    CU_ASSERT_EQUAL(sb_limits_decide(&caps, &none, 0, r, &n, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(n, 0);
    sb_limits_rlimits(&none, r, n, &p);
    CU_ASSERT_EQUAL(p.n_rl, 1);
    /* negative values are refused */
    struct sb_limits neg = {.pids = -1};
    CU_ASSERT_EQUAL(sb_limits_decide(&caps, &neg, 1, r, &n, msg, sizeof(msg)), AL_ERR_INVAL);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox limits", NULL, NULL);
    CU_add_test(s, "cgroup v1 host", test_v1_host);
    CU_add_test(s, "cgroup v2 host", test_v2_host);
    CU_add_test(s, "no cgroups, strict: refused", test_no_cgroups_strict_refuses);
    CU_add_test(s, "no cgroups, degraded: rlimits and NONE", test_no_cgroups_degraded);
    CU_add_test(s, "rlimits of a job", test_rlimits);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
