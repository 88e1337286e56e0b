/* Unit tests for al_log's batching: lines of the batching thread wait for
 * al_log_flush() and keep their order; a warning writes what is gathered
 * first; another thread's lines and lines after al_log_batch_forget() are
 * written at once; a forked child never writes the parent's gathered lines. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_log.h"

static int saved_err = -1, rd = -1;

/* stderr becomes a pipe whose read end is non-blocking */
static void capture(void)
{
    int p[2];

    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    saved_err = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    rd = p[0];
}

static void release(void)
{
    dup2(saved_err, STDERR_FILENO);
    close(saved_err);
    close(rd);
}

/* What the pipe holds now, as a string. */
static size_t drain(char *buf, size_t n)
{
    size_t o = 0;
    ssize_t r;

    while (o + 1 < n && (r = read(rd, buf + o, n - 1 - o)) > 0)
        o += (size_t)r;
    buf[o] = '\0';
    return o;
}

static int count(const char *hay, const char *needle)
{
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        k++;
    return k;
}

static void test_batched_until_flush(void)
{
    char out[8192];

    capture();
    al_log_batch_start();
    al_log_write(AL_LOG_INFO, "t.one", "n=1");
    al_log_write(AL_LOG_DEBUG, "t.two", "n=2");
    CU_ASSERT_EQUAL(drain(out, sizeof(out)), 0); /* gathered, not written */
    al_log_flush();
    drain(out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "event=t.one n=1\n"));
    CU_ASSERT_TRUE(strstr(out, "t.one") < strstr(out, "t.two"));
    al_log_flush(); /* nothing left: writes nothing */
    CU_ASSERT_EQUAL(drain(out, sizeof(out)), 0);
    al_log_batch_forget();
    release();
}

static void test_warn_writes_gathered_first(void)
{
    char out[8192];

    capture();
    al_log_batch_start();
    al_log_write(AL_LOG_INFO, "t.before", "n=1");
    al_log_write(AL_LOG_WARN, "t.warn", "n=2");
    drain(out, sizeof(out)); /* no flush: the warning wrote both */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "t.before"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "level=warn"));
    CU_ASSERT_TRUE(strstr(out, "t.before") < strstr(out, "t.warn"));
    al_log_batch_forget();
    release();
}

static void *other_thread(void *arg)
{
    (void)arg;
    al_log_write(AL_LOG_INFO, "t.other", "n=1");
    return NULL;
}

static void test_other_thread_and_forget(void)
{
    char out[8192];
    pthread_t t;

    capture();
    al_log_batch_start();
    al_log_write(AL_LOG_INFO, "t.mine", "n=1");
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, NULL);
    drain(out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "t.other")); /* written at once */
    CU_ASSERT_PTR_NULL(strstr(out, "t.mine"));      /* still gathered */
    al_log_batch_forget();                          /* dropped, direct from now on */
    al_log_flush();
    al_log_write(AL_LOG_INFO, "t.after", "n=1");
    drain(out, sizeof(out));
    CU_ASSERT_PTR_NULL(strstr(out, "t.mine"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "t.after"));
    release();
}

static void test_fork_child_drops_parent_lines(void)
{
    char out[8192];
    pid_t pid;
    int st = 0;

    capture();
    al_log_batch_start();
    al_log_write(AL_LOG_INFO, "t.parent", "n=1");
    pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        al_log_write(AL_LOG_INFO, "t.child", "n=1"); /* direct in the child */
        al_log_write(AL_LOG_WARN, "t.childwarn", "n=1");
        al_log_flush();
        _exit(0);
    }
    waitpid(pid, &st, 0);
    al_log_flush();
    drain(out, sizeof(out));
    CU_ASSERT_EQUAL(count(out, "t.parent"), 1); /* the parent's line once, from the parent */
    CU_ASSERT_EQUAL(count(out, "t.child "), 1);
    CU_ASSERT_EQUAL(count(out, "t.childwarn"), 1);
    al_log_batch_forget();
    release();
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("log", NULL, NULL);
    CU_add_test(s, "batched lines wait for the flush, in order", test_batched_until_flush);
    CU_add_test(s, "a warning writes the gathered lines first", test_warn_writes_gathered_first);
    CU_add_test(s, "other threads direct; forget drops", test_other_thread_and_forget);
    CU_add_test(s, "a forked child never writes the parent's lines",
                test_fork_child_drops_parent_lines);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
