/* Unit tests for sandbox/cgroup.c: locating our cgroups from /proc/self/cgroup
 * and mountinfo texts (v1, v2, hybrid, containers, escapes), choosing a
 * version per controller, and parsing cgroup files. */
#include <string.h>

#include <CUnit/Basic.h>

#include "sb_int.h"

/* This machine: hybrid, v1 controllers, memory under a container path. */
static const char *hybrid_self = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n"
                                 "5:devices:/\n4:memory:/process_api/3d7b\n3:cpuset:/\n"
                                 "2:cpuacct:/\n1:cpu:/\n0::/\n";
static const char *hybrid_mounts =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "37 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "38 30 0:35 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "39 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

static void test_hybrid(void)
{
    struct sb_cg_where w;
    CU_ASSERT_EQUAL_FATAL(sb_cg_locate(hybrid_self, hybrid_mounts, &w), 0);
    CU_ASSERT_TRUE(w.v1[SB_CTL_MEMORY]);
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_MEMORY], "/sys/fs/cgroup/memory/process_api/3d7b");
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_PIDS], "/sys/fs/cgroup/pids");
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_CPU], "/sys/fs/cgroup/cpu");
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_CPUACCT], "/sys/fs/cgroup/cpuacct");
    CU_ASSERT_TRUE(w.v2);
    CU_ASSERT_STRING_EQUAL(w.v2_dir, "/sys/fs/cgroup/unified");
    CU_ASSERT_STRING_EQUAL(w.v2_mount, "/sys/fs/cgroup/unified");
}

/* A systemd service with Delegate=yes on a pure v2 host; optional fields. */
static void test_pure_v2(void)
{
    const char *self = "0::/system.slice/airlock-executor.service\n";
    const char *mounts = "25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 "
                         "- cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
    struct sb_cg_where w;
    CU_ASSERT_EQUAL_FATAL(sb_cg_locate(self, mounts, &w), 0);
    CU_ASSERT_TRUE(w.v2);
    CU_ASSERT_STRING_EQUAL(w.v2_dir, "/sys/fs/cgroup/system.slice/airlock-executor.service");
    CU_ASSERT_STRING_EQUAL(w.v2_mount, "/sys/fs/cgroup");
    for (int k = 0; k < SB_CTL_N; k++)
        CU_ASSERT_FALSE(w.v1[k]);
}

/* A container: the mount shows a subtree (root field) of the hierarchy. */
static void test_mount_root_subtree(void)
{
    const char *self = "5:memory:/docker/abc/job\n4:cpu,cpuacct:/docker/abc\n"
                       "3:pids:/elsewhere\n";
    const char *mounts =
        "40 30 0:31 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
        "41 30 0:32 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n"
        "42 30 0:33 /docker/abcd /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n";
    struct sb_cg_where w;
    CU_ASSERT_EQUAL_FATAL(sb_cg_locate(self, mounts, &w), 0);
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_MEMORY], "/sys/fs/cgroup/memory/job");
    /* co-mounted controllers share one directory */
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_CPU], "/sys/fs/cgroup/cpu,cpuacct");
    CU_ASSERT_STRING_EQUAL(w.v1_dir[SB_CTL_CPUACCT], "/sys/fs/cgroup/cpu,cpuacct");
    /* /elsewhere is not below the mounted /docker/abcd (nor is a prefix match enough) */
    CU_ASSERT_FALSE(w.v1[SB_CTL_PIDS]);
    CU_ASSERT_FALSE(w.v2);
}

static void test_escapes_and_garbage(void)
{
    const char *self = "0::/a b\n";
    const char *mounts = "garbage line\n"
                         "1 2 3\n"
                         "50 1 0:40 / /mnt/cg\\040two rw - cgroup2 none rw\n";
    struct sb_cg_where w;
    CU_ASSERT_EQUAL_FATAL(sb_cg_locate(self, mounts, &w), 0);
    CU_ASSERT_TRUE(w.v2);
    CU_ASSERT_STRING_EQUAL(w.v2_dir, "/mnt/cg two/a b");
    char s[] = "a\\011b\\134c\\0";
    sb_cg_unescape(s);
    CU_ASSERT_STRING_EQUAL(s, "a\tb\\c\\0");
    CU_ASSERT_EQUAL(sb_cg_locate("", "", &w), 0);
    CU_ASSERT_FALSE(w.v2);
}

static void test_choose(void)
{
    struct sb_cg_where w;
    int all[SB_CTL_N] = {1, 1, 1, 1}, none[SB_CTL_N] = {0}, v[SB_CTL_N];
    sb_cg_locate(hybrid_self, hybrid_mounts, &w);
    /* hybrid host: v2 offers only hugetlb -> everything on v1, cpuacct too */
    sb_cg_choose(SB_CGROUPS_AUTO, &w, "hugetlb\n", all, 1, v);
    for (int k = 0; k < SB_CTL_N; k++)
        CU_ASSERT_EQUAL(v[k], 1);
    /* v2 delegated with every controller -> v2 */
    sb_cg_choose(SB_CGROUPS_AUTO, &w, "cpuset cpu io memory pids\n", all, 1, v);
    for (int k = 0; k < SB_CTL_N; k++)
        CU_ASSERT_EQUAL(v[k], 2);
    /* v2 present but not writable -> v1 */
    sb_cg_choose(SB_CGROUPS_AUTO, &w, "cpu memory pids", all, 0, v);
    CU_ASSERT_EQUAL(v[SB_CTL_MEMORY], 1);
    /* forced versions */
    sb_cg_choose(SB_CGROUPS_V1, &w, "cpu memory pids", all, 1, v);
    CU_ASSERT_EQUAL(v[SB_CTL_PIDS], 1);
    sb_cg_choose(SB_CGROUPS_V2, &w, "memory", all, 1, v);
    CU_ASSERT_EQUAL(v[SB_CTL_MEMORY], 2);
    CU_ASSERT_EQUAL(v[SB_CTL_PIDS], 0);
    /* v2 only: CPU accounting from v2's cpu.stat even with v1 cpuacct around */
    CU_ASSERT_EQUAL(v[SB_CTL_CPUACCT], 2);
    sb_cg_choose(SB_CGROUPS_NONE, &w, "cpu memory pids", all, 1, v);
    for (int k = 0; k < SB_CTL_N; k++)
        CU_ASSERT_EQUAL(v[k], 0);
    /* v1 mounted but not writable, no v2 -> nothing */
    sb_cg_choose(SB_CGROUPS_AUTO, &w, NULL, none, 0, v);
    for (int k = 0; k < SB_CTL_N; k++)
        CU_ASSERT_EQUAL(v[k], 0);
    /* pure v2 without the cpu controller still accounts CPU (cpu.stat) */
    sb_cg_locate("0::/x\n", "1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", &w);
    sb_cg_choose(SB_CGROUPS_AUTO, &w, "memory pids", none, 1, v);
    CU_ASSERT_EQUAL(v[SB_CTL_MEMORY], 2);
    CU_ASSERT_EQUAL(v[SB_CTL_CPU], 0);
    CU_ASSERT_EQUAL(v[SB_CTL_CPUACCT], 2);
    /* a controller name that is a prefix of another does not count */
    sb_cg_choose(SB_CGROUPS_AUTO, &w, "memoryx pidsy", none, 1, v);
    CU_ASSERT_EQUAL(v[SB_CTL_MEMORY], 0);
    CU_ASSERT_EQUAL(v[SB_CTL_PIDS], 0);
}

static void test_keyed(void)
{
    const char *events = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n";
    CU_ASSERT_EQUAL(sb_cg_keyed(events, "max"), 17);
    CU_ASSERT_EQUAL(sb_cg_keyed(events, "oom"), 2);
    CU_ASSERT_EQUAL(sb_cg_keyed(events, "oom_kill"), 1);
    CU_ASSERT_EQUAL(sb_cg_keyed(events, "oom_group"), -1);
    CU_ASSERT_EQUAL(sb_cg_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 4", "oom_kill"), 4);
    CU_ASSERT_EQUAL(sb_cg_keyed("usage_usec 123456\nuser_usec 1\n", "usage_usec"), 123456);
    CU_ASSERT_EQUAL(sb_cg_keyed("max x\n", "max"), -1);
    CU_ASSERT_EQUAL(sb_cg_keyed("", "max"), -1);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox cgroup", NULL, NULL);
    CU_add_test(s, "hybrid v1 + v2 host (this machine)", test_hybrid);
    CU_add_test(s, "pure v2, delegated service cgroup", test_pure_v2);
    CU_add_test(s, "mount of a subtree, co-mounted controllers", test_mount_root_subtree);
    CU_add_test(s, "escaped mount points, garbage lines", test_escapes_and_garbage);
    CU_add_test(s, "version per controller", test_choose);
    CU_add_test(s, "keyed cgroup files", test_keyed);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
