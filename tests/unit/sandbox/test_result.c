/* Unit tests for sandbox/result.c: the verdict (failure reason, message,
 * termination, hit flags) from what the parent observed. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <CUnit/Basic.h>

#include "sb_int.h"

static const struct sb_limits lim = {.wall_time_ms = 1000,
                                     .cpu_time_ms = 500,
                                     .memory_bytes = 1 << 20,
                                     .pids = 8,
                                     .output_bytes = 10,
                                     .file_size_bytes = 100};

static void init(struct sb_result *r, struct sb_outcome *o, enum sb_kind kind)
{
    memset(r, 0, sizeof(*r));
    memset(o, 0, sizeof(*o));
    memset(&o->cg, 0xff, sizeof(o->cg)); /* unknown */
    o->kind = kind;
    o->arg0 = "tool";
    o->where = "/workspace/x";
    o->init_reaped = 1;
    struct sb_caps caps = {SB_MECH_CGROUP_V1, SB_MECH_CGROUP_V1, 0, SB_MECH_CGROUP_V1};
    char msg[128];
    sb_limits_decide(&caps, &lim, 0, r->limits, &r->n_limits, msg, sizeof(msg));
}

static void exited(struct sb_outcome *o, int wstatus)
{
    o->started = 1;
    o->have_msg = 1;
    o->msg.magic = SB_MSG_MAGIC;
    o->msg.type = SB_MSG_EXITED;
    o->msg.wstatus = wstatus;
}

static int hit(const struct sb_result *r, enum sb_limit_kind k)
{
    int any = 0;
    for (size_t i = 0; i < r->n_limits; i++)
        if (r->limits[i].kind == k)
            any |= r->limits[i].hit;
    return any;
}

static void test_success_and_exit_codes(void)
{
    struct sb_result r;
    struct sb_outcome o;
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(0, 0));
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_NONE);
    CU_ASSERT_TRUE(r.started);
    CU_ASSERT_EQUAL(r.exit_code, 0);
    CU_ASSERT_STRING_EQUAL(r.message, "");
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(3, 0));
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_NONZERO_EXIT);
    CU_ASSERT_EQUAL(r.exit_code, 3);
    CU_ASSERT_STRING_EQUAL(r.message, "exited with status 3");
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(0, SIGSEGV));
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_SIGNALED);
    CU_ASSERT_EQUAL(r.term_signal, SIGSEGV);
    CU_ASSERT_STRING_EQUAL(r.message, "killed by signal 11 (SIGSEGV)");
}

static void test_limits_hit(void)
{
    struct sb_result r;
    struct sb_outcome o;
    /* OOM kill */
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(0, SIGKILL));
    o.cg.oom_kills = 1;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_LIMIT_EXCEEDED);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_MEMORY));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.message, "memory limit"));
    /* a plain SIGKILL without an OOM is just a signal */
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(0, SIGKILL));
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_SIGNALED);
    CU_ASSERT_FALSE(hit(&r, SB_LIMIT_MEMORY));
    /* memory reached but the command succeeded: hit, no failure */
    init(&r, &o, SB_EXEC);
    exited(&o, 0);
    o.cg.mem_limit_hits = 4;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_NONE);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_MEMORY));
    /* a refused fork and a failing command */
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(1, 0));
    o.cg.pids_max_events = 12;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_LIMIT_EXCEEDED);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_PIDS));
    /* SIGXCPU from RLIMIT_CPU, SIGXFSZ from RLIMIT_FSIZE */
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(0, SIGXCPU));
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_TIMEOUT);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_CPU_TIME));
    init(&r, &o, SB_EXEC);
    exited(&o, W_EXITCODE(0, SIGXFSZ));
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_LIMIT_EXCEEDED);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_FILE_SIZE));
}

static void test_our_kills(void)
{
    struct sb_result r;
    struct sb_outcome o;
    /* wall time: init killed with the command running */
    init(&r, &o, SB_EXEC);
    o.started = 1;
    o.kill_reason = SB_KILL_WALL;
    o.init_wstatus = W_EXITCODE(0, SIGKILL);
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_TIMEOUT);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_WALL_TIME));
    CU_ASSERT_TRUE(r.started);
    CU_ASSERT_EQUAL(r.term_signal, SIGKILL);
    CU_ASSERT_STRING_EQUAL(r.message, "wall time limit of 1000 ms reached");
    /* killed before the command started: no termination */
    init(&r, &o, SB_EXEC);
    o.kill_reason = SB_KILL_CPU;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_TIMEOUT);
    CU_ASSERT_FALSE(r.started);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_CPU_TIME));
    /* output */
    init(&r, &o, SB_EXEC);
    o.started = 1;
    o.kill_reason = SB_KILL_OUTPUT;
    o.truncated = 1;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_LIMIT_EXCEEDED);
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_OUTPUT));
    /* output dropped after the command had exited by itself */
    init(&r, &o, SB_EXEC);
    exited(&o, 0);
    o.truncated = 1;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_LIMIT_EXCEEDED);
    /* cancelled */
    init(&r, &o, SB_EXEC);
    o.started = 1;
    o.kill_reason = SB_FAIL_CANCELLED;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_CANCELLED);
    CU_ASSERT_STRING_EQUAL(r.message, "cancelled");
    /* the first reason wins: a wall timeout then a cancel is a timeout (the
     * child keeps the first kill_reason) */
}

static void test_setup_and_exec_errors(void)
{
    struct sb_result r;
    struct sb_outcome o;
    init(&r, &o, SB_EXEC);
    o.have_msg = 1;
    o.msg =
        (struct sb_msg){SB_MSG_MAGIC, SB_MSG_SETUP_ERROR, SB_STEP_MOUNT_OP, 3, ENOENT, 0, 0, 0, 0};
    snprintf(o.mount_op, sizeof(o.mount_op), "bind-mounting (read-only) /opt/x");
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_SANDBOX_SETUP);
    CU_ASSERT_STRING_EQUAL(r.message, "sandbox setup failed: bind-mounting (read-only) /opt/x: "
                                      "No such file or directory");
    CU_ASSERT_FALSE(r.started);
    init(&r, &o, SB_EXEC);
    o.have_msg = 1;
    o.msg =
        (struct sb_msg){SB_MSG_MAGIC, SB_MSG_SETUP_ERROR, SB_STEP_SECCOMP, 0, EINVAL, 0, 0, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.message, "loading the seccomp filter"));
    /* the proxy listeners: the address and the errno */
    init(&r, &o, SB_EXEC);
    o.have_msg = 1;
    o.proxy_port = 3128;
    o.msg = (struct sb_msg){
        SB_MSG_MAGIC, SB_MSG_SETUP_ERROR, SB_STEP_PROXY_LISTEN, 6, EADDRINUSE, 0, 0, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_SANDBOX_SETUP);
    CU_ASSERT_STRING_EQUAL(r.message,
                           "sandbox setup failed: proxy listener on [::1]:3128: Address already "
                           "in use");
    o.msg.index = 4;
    o.msg.err = EACCES;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_STRING_EQUAL(r.message,
                           "sandbox setup failed: proxy listener on 127.0.0.1:3128: Permission "
                           "denied");
    CU_ASSERT_STRING_EQUAL(sb_step_name(SB_STEP_PROXY_LISTEN), "proxy listener");
    init(&r, &o, SB_EXEC);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_SETUP_ERROR, SB_STEP_CHDIR, 0, ENOENT, 0, 0, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_EXEC_FAILED);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.message, "working directory \"/workspace/x\""));
    init(&r, &o, SB_EXEC);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_EXEC_ERROR, SB_STEP_EXEC, 0, ENOENT, 0, 0, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_EXEC_FAILED);
    CU_ASSERT_STRING_EQUAL(r.message, "command not found in PATH: \"tool\"");
    /* the parent could not set it up */
    init(&r, &o, SB_EXEC);
    o.setup_failed = 1;
    o.early_failure = SB_FAIL_SANDBOX_SETUP;
    snprintf(o.detail, sizeof(o.detail), "clone: Operation not permitted");
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_SANDBOX_SETUP);
    CU_ASSERT_STRING_EQUAL(r.message, "sandbox setup failed: clone: Operation not permitted");
    /* init vanished with no record: OOM, else internal */
    init(&r, &o, SB_EXEC);
    o.init_wstatus = W_EXITCODE(0, SIGKILL);
    o.cg.oom_kills = 1;
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_LIMIT_EXCEEDED);
    init(&r, &o, SB_EXEC);
    o.init_wstatus = W_EXITCODE(0, SIGSEGV);
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_INTERNAL);
}

static void test_file_operations(void)
{
    struct sb_result r;
    struct sb_outcome o;
    init(&r, &o, SB_READ_FILE);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_FILE_DONE, 0, 0, 0, 0, 0, 1, 5000};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL(r.file_size_bytes, 5000);
    CU_ASSERT_TRUE(r.data_truncated);
    CU_ASSERT_FALSE(r.started);
    init(&r, &o, SB_READ_FILE);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_FILE_ERROR, SB_FSTEP_TYPE, 0, 0, 0, S_IFIFO, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_FILE_ERROR);
    CU_ASSERT_STRING_EQUAL(r.message, "READ_FILE \"/workspace/x\": is a FIFO, not a regular file");
    init(&r, &o, SB_READ_FILE);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_FILE_ERROR, SB_FSTEP_OPEN, 0, ELOOP, 0, 0, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.message, "symbolic link"));
    init(&r, &o, SB_WRITE_FILE);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_FILE_ERROR, SB_FSTEP_WRITE, 0, EFBIG, 0, 0, 0, 0};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_STRING_EQUAL(r.message, "WRITE_FILE \"/workspace/x\": file size limit reached");
    CU_ASSERT_TRUE(hit(&r, SB_LIMIT_FILE_SIZE));
    init(&r, &o, SB_LIST_DIR);
    o.have_msg = 1;
    o.msg = (struct sb_msg){SB_MSG_MAGIC, SB_MSG_FILE_DONE, 0, 0, 0, 0, 0, 1, 1000};
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_TRUE(r.data_truncated);
    CU_ASSERT_EQUAL(r.file_size_bytes, 0); /* entry count is not a size */
    init(&r, &o, SB_LIST_DIR);
    o.protocol_error = 1;
    snprintf(o.detail, sizeof(o.detail), "file operation output: unknown frame type");
    sb_result_verdict(&r, &o, &lim);
    CU_ASSERT_EQUAL(r.failure, SB_FAIL_INTERNAL);
}

static void test_names(void)
{
    CU_ASSERT_STRING_EQUAL(sb_limit_name(SB_LIMIT_CPU_BANDWIDTH), "CPU_BANDWIDTH");
    CU_ASSERT_STRING_EQUAL(sb_mechanism_name(SB_MECH_CGROUP_V1), "CGROUP_V1");
    CU_ASSERT_STRING_EQUAL(sb_failure_name(SB_FAIL_EXEC_FAILED), "EXEC_FAILED");
    CU_ASSERT_STRING_EQUAL(sb_file_type_name(SB_FT_SYMLINK), "SYMLINK");
    CU_ASSERT_STRING_EQUAL(sb_limit_name((enum sb_limit_kind)99), "UNKNOWN");
    CU_ASSERT_STRING_EQUAL(sb_step_name(-1), "unknown step");
    for (int s = 1; s < SB_STEP_COUNT; s++)
        CU_ASSERT_STRING_NOT_EQUAL(sb_step_name(s), "unknown step");
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox result", NULL, NULL);
    CU_add_test(s, "success, exit codes, signals", test_success_and_exit_codes);
    CU_add_test(s, "limits hit by the command", test_limits_hit);
    CU_add_test(s, "stopped by the executor", test_our_kills);
    CU_add_test(s, "setup and exec errors", test_setup_and_exec_errors);
    CU_add_test(s, "file operations", test_file_operations);
    CU_add_test(s, "enum and step names", test_names);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
