/* Unit tests for sandbox/env.c: the sandbox environment holds only the job's
 * and the caller's variables plus PATH and HOME; names, reserved prefix,
 * duplicates, sizes; argv copies and PATH candidates; printable messages. */
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "sb_int.h"

static size_t count(char **v)
{
    size_t n = 0;
    while (v[n])
        n++;
    return n;
}

static int has(char **v, const char *s)
{
    for (; *v; v++)
        if (strcmp(*v, s) == 0)
            return 1;
    return 0;
}

static void test_only_given_plus_defaults(void)
{
    struct al_arena a;
    struct sb_env job[] = {{"FOO", "bar"}, {"EMPTY", ""}};
    struct sb_env internal[] = {{"AIRLOCK_PH_TOKEN", "AIRLOCK_PH_0123"}};
    struct sb_request req = {0};
    char **envp, msg[256];
    const char *path;
    al_arena_init(&a, 0);
    req.env = job;
    req.n_env = 2;
    req.env_internal = internal;
    req.n_env_internal = 1;
    CU_ASSERT_EQUAL_FATAL(sb_env_build(&a, &req, &envp, &path, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(count(envp), 5);
    CU_ASSERT_TRUE(has(envp, "FOO=bar"));
    CU_ASSERT_TRUE(has(envp, "EMPTY="));
    CU_ASSERT_TRUE(has(envp, "AIRLOCK_PH_TOKEN=AIRLOCK_PH_0123"));
    CU_ASSERT_TRUE(has(envp, "PATH=" SB_DEFAULT_PATH));
    CU_ASSERT_TRUE(has(envp, "HOME=/workspace"));
    CU_ASSERT_STRING_EQUAL(path, SB_DEFAULT_PATH);
    /* nothing of our own environment leaks in */
    CU_ASSERT_FALSE(has(envp, "TERM=xterm"));
    for (char **e = envp; *e; e++)
        CU_ASSERT_NOT_EQUAL(strncmp(*e, "LD_", 3), 0);
    al_arena_cleanup(&a);
}

static void test_job_overrides_path_and_home(void)
{
    struct al_arena a;
    struct sb_env job[] = {{"PATH", "/opt/bin"}, {"HOME", "/tmp"}};
    struct sb_request req = {0};
    char **envp, msg[256];
    const char *path;
    al_arena_init(&a, 0);
    req.env = job;
    req.n_env = 2;
    CU_ASSERT_EQUAL_FATAL(sb_env_build(&a, &req, &envp, &path, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(count(envp), 2);
    CU_ASSERT_TRUE(has(envp, "PATH=/opt/bin"));
    CU_ASSERT_TRUE(has(envp, "HOME=/tmp"));
    CU_ASSERT_STRING_EQUAL(path, "/opt/bin");
    al_arena_cleanup(&a);
}

static int build_one(const char *name, const char *value, int internal, char *msg, size_t n)
{
    struct al_arena a;
    struct sb_env v[] = {{name, value}};
    struct sb_request req = {0};
    char **envp;
    const char *path;
    al_arena_init(&a, 0);
    if (internal) {
        req.env_internal = v;
        req.n_env_internal = 1;
    } else {
        req.env = v;
        req.n_env = 1;
    }
    int rc = sb_env_build(&a, &req, &envp, &path, msg, n);
    al_arena_cleanup(&a);
    return rc;
}

static void test_names(void)
{
    char msg[256];
    CU_ASSERT_EQUAL(build_one("_a1", "x", 0, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(build_one("1A", "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not valid"));
    CU_ASSERT_EQUAL(build_one("A=B", "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(build_one("", "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(build_one("A-B", "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(build_one("A\nB", "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NULL(strchr(msg, '\n')); /* messages are printable */
    CU_ASSERT_EQUAL(build_one(NULL, "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(build_one("A", NULL, 0, msg, sizeof(msg)), AL_ERR_INVAL);
    char longname[300];
    memset(longname, 'A', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CU_ASSERT_EQUAL(build_one(longname, "x", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_TRUE(sb_env_name_ok("Abc_09"));
    CU_ASSERT_FALSE(sb_env_name_ok("Ab.c"));
}

static void test_reserved_and_duplicates(void)
{
    char msg[256];
    CU_ASSERT_EQUAL(build_one("AIRLOCK_X", "1", 0, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "reserved"));
    CU_ASSERT_EQUAL(build_one("AIRLOCK_X", "1", 1, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(build_one("AIRLOCKX", "1", 0, msg, sizeof(msg)), 0);

    struct al_arena a;
    struct sb_env dup[] = {{"A", "1"}, {"A", "2"}};
    struct sb_env other[] = {{"A", "3"}};
    struct sb_request req = {0};
    char **envp;
    const char *path;
    al_arena_init(&a, 0);
    req.env = dup;
    req.n_env = 2;
    CU_ASSERT_EQUAL(sb_env_build(&a, &req, &envp, &path, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "twice"));
    req.n_env = 1;
    req.env_internal = other;
    req.n_env_internal = 1;
    CU_ASSERT_EQUAL(sb_env_build(&a, &req, &envp, &path, msg, sizeof(msg)), AL_ERR_INVAL);
    al_arena_cleanup(&a);
}

static void test_too_many(void)
{
    static struct sb_env many[SB_ENV_MAX_VARS + 1];
    static char names[SB_ENV_MAX_VARS + 1][16];
    struct al_arena a;
    struct sb_request req = {0};
    char **envp, msg[256];
    const char *path;
    for (int i = 0; i <= SB_ENV_MAX_VARS; i++) {
        snprintf(names[i], sizeof(names[i]), "V%d", i);
        many[i] = (struct sb_env){names[i], "x"};
    }
    al_arena_init(&a, 0);
    req.env = many;
    req.n_env = SB_ENV_MAX_VARS;
    CU_ASSERT_EQUAL(sb_env_build(&a, &req, &envp, &path, msg, sizeof(msg)), 0);
    req.n_env = SB_ENV_MAX_VARS + 1;
    CU_ASSERT_EQUAL(sb_env_build(&a, &req, &envp, &path, msg, sizeof(msg)), AL_ERR_INVAL);
    al_arena_cleanup(&a);
}

static void test_argv_and_candidates(void)
{
    struct al_arena a;
    const char *argv[] = {"ls", "-l"};
    struct sb_request req = {0};
    char **v, **cands, msg[256];
    size_t n;
    al_arena_init(&a, 0);
    req.argv = argv;
    req.argc = 2;
    CU_ASSERT_EQUAL_FATAL(sb_argv_build(&a, &req, "/a:/b::/c", &v, &cands, &n, msg, sizeof(msg)),
                          0);
    CU_ASSERT_EQUAL(count(v), 2);
    CU_ASSERT_STRING_EQUAL(v[1], "-l");
    CU_ASSERT_PTR_NOT_EQUAL(v[0], argv[0]); /* copied */
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_STRING_EQUAL(cands[0], "/a/ls");
    CU_ASSERT_STRING_EQUAL(cands[1], "/b/ls");
    CU_ASSERT_STRING_EQUAL(cands[2], "./ls"); /* empty entry = cwd, as execvp */
    CU_ASSERT_STRING_EQUAL(cands[3], "/c/ls");
    argv[0] = "./run.sh";
    CU_ASSERT_EQUAL(sb_argv_build(&a, &req, "/a", &v, &cands, &n, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(cands[0], "./run.sh");
    argv[0] = "";
    CU_ASSERT_EQUAL(sb_argv_build(&a, &req, "/a", &v, &cands, &n, msg, sizeof(msg)), AL_ERR_INVAL);
    req.argc = 0;
    CU_ASSERT_EQUAL(sb_argv_build(&a, &req, "/a", &v, &cands, &n, msg, sizeof(msg)), AL_ERR_INVAL);
    al_arena_cleanup(&a);
}

static void test_printable(void)
{
    char out[8];
    sb_printable(out, sizeof(out),
                 "a\x01\xff"
                 "b");
    CU_ASSERT_STRING_EQUAL(out, "a??b");
    sb_printable(out, sizeof(out), "abcdefghij");
    CU_ASSERT_STRING_EQUAL(out, "abcd...");
    sb_printable(out, sizeof(out), NULL);
    CU_ASSERT_STRING_EQUAL(out, "");
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox env", NULL, NULL);
    CU_add_test(s, "only job and caller variables plus PATH and HOME",
                test_only_given_plus_defaults);
    CU_add_test(s, "job PATH and HOME win", test_job_overrides_path_and_home);
    CU_add_test(s, "variable names", test_names);
    CU_add_test(s, "reserved AIRLOCK_ prefix and duplicates", test_reserved_and_duplicates);
    CU_add_test(s, "variable count cap", test_too_many);
    CU_add_test(s, "argv copy and PATH candidates", test_argv_and_candidates);
    CU_add_test(s, "printable messages", test_printable);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
