/* Unit tests for sandbox/spawner.c's plan flattening (pure): every string,
 * array and mount entry of a plan is copied into one block whose pointers
 * assume the block's final address; the host's pointers (seccomp filter,
 * clone stack) are kept; a block too small is refused. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "sb_int.h"

static char *argv_[] = {"/bin/echo", "hello", "", NULL};
static char *envp_[] = {"PATH=/usr/bin:/bin", "HOME=/workspace", NULL};
static char *paths_[] = {"/usr/bin/echo", "/bin/echo"};
static const char content_[] = "root:x:0:0\n\0binary\xff"; /* CONTENT may hold NUL bytes */
static struct sb_mnt mnt_[] = {
    {SB_MNT_DIR, NULL, "etc", 0},
    {SB_MNT_BIND_RO, "/usr", "usr", 0},
    {SB_MNT_CONTENT, content_, "etc/passwd", sizeof(content_) - 1},
    {SB_MNT_TMPFS, "size=65536,mode=1777", "tmp", 0},
};
static struct sock_filter filter_[1];
static struct sock_fprog prog_ = {1, filter_};
static char stack_[64];

static void sample(struct sb_plan *p)
{
    memset(p, 0, sizeof(*p));
    p->kind = SB_EXEC;
    p->fd_in = 11;
    p->uid = 1000;
    p->gid = 1001;
    p->cap_last = 40;
    p->hostname = "sandbox";
    p->stage = "/run/airlock-sandbox/x/root";
    p->mnt = mnt_;
    p->n_mnt = sizeof(mnt_) / sizeof(mnt_[0]);
    p->rl[0] = (struct sb_rl){7, 256};
    p->n_rl = 1;
    p->seccomp = &prog_;
    p->exec_paths = paths_;
    p->n_exec_paths = 2;
    p->argv = argv_;
    p->envp = envp_;
    p->cwd = "/workspace";
    p->stack = stack_;
    p->stack_size = sizeof(stack_);
    p->file.path = "request memory";
}

static int inside(const void *ptr, const void *base, size_t len)
{
    return (uintptr_t)ptr >= (uintptr_t)base && (uintptr_t)ptr < (uintptr_t)base + len;
}

static void check_copy(const struct sb_plan *q, const void *block, size_t len)
{
    struct sb_plan p;
    sample(&p);
    CU_ASSERT_EQUAL(q->kind, p.kind);
    CU_ASSERT_EQUAL(q->fd_in, 11);
    CU_ASSERT_EQUAL(q->uid, 1000);
    CU_ASSERT_EQUAL(q->gid, 1001);
    CU_ASSERT_EQUAL(q->n_rl, 1);
    CU_ASSERT_EQUAL(q->rl[0].value, 256);
    CU_ASSERT_PTR_EQUAL(q->seccomp, &prog_); /* the host's, kept */
    CU_ASSERT_PTR_EQUAL(q->stack, stack_);
    CU_ASSERT_PTR_NULL(q->file.path);
    CU_ASSERT_PTR_NULL(q->path);
    CU_ASSERT_PTR_NULL(q->ws_path);
    const char *strs[] = {q->hostname, q->stage, q->cwd};
    const char *want[] = {p.hostname, p.stage, p.cwd};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_TRUE(inside(strs[i], block, len));
        CU_ASSERT_STRING_EQUAL(strs[i], want[i]);
    }
    CU_ASSERT_TRUE(inside(q->argv, block, len));
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_TRUE(inside(q->argv[i], block, len));
        CU_ASSERT_STRING_EQUAL(q->argv[i], argv_[i]);
    }
    CU_ASSERT_PTR_NULL(q->argv[3]);
    CU_ASSERT_STRING_EQUAL(q->envp[0], envp_[0]);
    CU_ASSERT_STRING_EQUAL(q->envp[1], envp_[1]);
    CU_ASSERT_PTR_NULL(q->envp[2]);
    CU_ASSERT_EQUAL(q->n_exec_paths, 2);
    CU_ASSERT_STRING_EQUAL(q->exec_paths[1], "/bin/echo");
    CU_ASSERT_PTR_NULL(q->exec_paths[2]);
    CU_ASSERT_EQUAL_FATAL(q->n_mnt, 4);
    CU_ASSERT_TRUE(inside(q->mnt, block, len));
    CU_ASSERT_PTR_NULL(q->mnt[0].src);
    CU_ASSERT_STRING_EQUAL(q->mnt[1].src, "/usr");
    CU_ASSERT_STRING_EQUAL(q->mnt[1].dst, "usr");
    CU_ASSERT_EQUAL(q->mnt[2].len, sizeof(content_) - 1);
    CU_ASSERT_TRUE(inside(q->mnt[2].src, block, len));
    CU_ASSERT_EQUAL(memcmp(q->mnt[2].src, content_, sizeof(content_) - 1), 0);
    CU_ASSERT_STRING_EQUAL(q->mnt[3].src, "size=65536,mode=1777");
    CU_ASSERT_EQUAL(q->mnt[3].kind, SB_MNT_TMPFS);
}

static void test_in_place(void)
{
    struct sb_plan p;
    static _Alignas(16) uint8_t block[8192];
    size_t len = 0;
    sample(&p);
    CU_ASSERT_EQUAL_FATAL(sb_plan_flatten(&p, block, sizeof(block), (uintptr_t)block, &len), 0);
    CU_ASSERT_TRUE(len > sizeof(p) && len <= sizeof(block));
    check_copy((const struct sb_plan *)block, block, len);
}

/* Flattened for another address, then copied there (as the spawner does):
 * the copy is usable, the block at the first address is not referenced. */
static void test_relocated(void)
{
    struct sb_plan p;
    static _Alignas(16) uint8_t first[8192], final[8192];
    size_t len = 0;
    sample(&p);
    memset(first, 0, sizeof(first));
    CU_ASSERT_EQUAL_FATAL(sb_plan_flatten(&p, first, sizeof(first), (uintptr_t) final, &len), 0);
    const struct sb_plan *q = (const struct sb_plan *)first;
    CU_ASSERT_TRUE(inside(q->argv, final, len));
    CU_ASSERT_FALSE(inside(q->argv, first, sizeof(first)));
    memcpy(final, first, len);
    memset(first, 0xa5, sizeof(first)); /* the caller may reuse its area at once */
    check_copy((const struct sb_plan *) final, final, len);
}

static void test_too_small(void)
{
    struct sb_plan p;
    static _Alignas(16) uint8_t block[8192];
    size_t len = 0, need = 0;
    sample(&p);
    CU_ASSERT_EQUAL_FATAL(sb_plan_flatten(&p, block, sizeof(block), (uintptr_t)block, &need), 0);
    CU_ASSERT_EQUAL(sb_plan_flatten(&p, block, need - 1, (uintptr_t)block, &len), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(sb_plan_flatten(&p, block, sizeof(struct sb_plan) - 1, (uintptr_t)block, &len),
                    AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(sb_plan_flatten(&p, block, need, (uintptr_t)block, &len), 0);
    CU_ASSERT_EQUAL(len, need);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox spawner plan flattening", NULL, NULL);
    CU_add_test(s, "flattened in place", test_in_place);
    CU_add_test(s, "flattened for another address", test_relocated);
    CU_add_test(s, "block too small: refused", test_too_small);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
