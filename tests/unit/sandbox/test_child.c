/* Unit tests for sandbox/spawn.c + child.c through the public API on a
 * (non-default) libev loop: real sandboxes (needs root; skipped loudly
 * otherwise): output chunks and offsets, stdin larger than a pipe, kill,
 * pause/resume, file operations, on_exit exactly once, sb_start from
 * on_exit, synchronous refusals, private workspaces, pooled cgroups. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <ev.h>

#include "al_err.h"
#include "sandbox.h"

static struct sb_host *host;
static struct sb_workspace *ws;
static struct ev_loop *loop;
static struct sb_config cfg;

struct run {
    uint8_t out[1 << 21];
    size_t out_len, err_len;
    int64_t next_off[4];
    int bad_offset;
    int exits;
    struct sb_result res;
    char names[16][64];
    int types[16];
    size_t n_names;
    int chain;      /* runs still to start from on_exit */
    int private_ws; /* run without a host workspace (sb_request.workspace NULL) */
    struct sb_request *req;
};

static void on_output(struct sb_child *c, enum sb_stream s, const uint8_t *data, size_t len,
                      int64_t offset, void *user)
{
    struct run *r = user;
    (void)c;
    if (offset != r->next_off[s] || len == 0 || len > 65536)
        r->bad_offset = 1;
    r->next_off[s] = offset + (int64_t)len;
    if (s == SB_STDERR) {
        r->err_len += len;
        return;
    }
    if (r->out_len + len <= sizeof(r->out))
        memcpy(r->out + r->out_len, data, len);
    r->out_len += len;
}

static void on_dir(struct sb_child *c, const struct sb_dirent *e, size_t n, void *user)
{
    struct run *r = user;
    (void)c;
    for (size_t i = 0; i < n && r->n_names < 16; i++) {
        snprintf(r->names[r->n_names], sizeof(r->names[0]), "%s", e[i].name);
        r->types[r->n_names++] = e[i].type;
    }
}

static int pending; /* concurrent runs still going (0 = a single run) */

static void on_exit_cb(struct sb_child *c, const struct sb_result *res, void *user)
{
    struct run *r = user;
    (void)c;
    r->exits++;
    r->res = *res;
    if (pending > 0 && --pending > 0)
        return;
    if (r->chain > 0) {
        struct sb_callbacks cb = {
            .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = r};
        struct sb_child *next;
        r->chain--;
        if (sb_start(loop, host, &cfg, r->req, &cb, &next) == 0)
            return;
    }
    ev_break(loop, EVBREAK_ONE);
}

static void on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    CU_FAIL("sandbox did not finish in 60 s");
    ev_break(l, EVBREAK_ONE);
}

/* Starts req and runs the loop until on_exit. */
static int run(struct sb_request *req, struct run *r, struct sb_child **out)
{
    struct sb_callbacks cb = {
        .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = r};
    struct sb_child *c;
    ev_timer guard;
    r->req = req;
    req->workspace = r->private_ws ? NULL : sb_workspace_path(ws);
    int rc = sb_start(loop, host, &cfg, req, &cb, &c);
    if (rc < 0)
        return rc;
    if (out)
        *out = c;
    ev_timer_init(&guard, on_guard, 60., 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    return 0;
}

static void test_echo(void)
{
    static struct run r;
    const char *argv[] = {"echo", "hello", "sandbox"};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3};
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.exits, 1);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_TRUE(r.res.started);
    CU_ASSERT_EQUAL(r.res.exit_code, 0);
    CU_ASSERT_EQUAL(r.out_len, 14);
    CU_ASSERT_EQUAL(memcmp(r.out, "hello sandbox\n", 14), 0);
    CU_ASSERT_EQUAL(r.res.stdout_bytes, 14);
    CU_ASSERT_FALSE(r.bad_offset);
}

static void test_stdin_bigger_than_a_pipe(void)
{
    static struct run r;
    static uint8_t in[1 << 20];
    const char *argv[] = {"cat"};
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(i * 7 + i / 251);
    struct sb_request req = {
        .kind = SB_EXEC, .argv = argv, .argc = 1, .input = in, .input_len = sizeof(in)};
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL_FATAL(r.out_len, sizeof(in));
    CU_ASSERT_EQUAL(memcmp(r.out, in, sizeof(in)), 0);
    CU_ASSERT_FALSE(r.bad_offset);
}

static struct sb_child *to_kill;

static void on_kill_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    sb_kill(to_kill, SB_FAIL_CANCELLED);
    sb_kill(to_kill, SB_FAIL_INTERNAL); /* idempotent; the first reason stays */
}

static void test_kill(void)
{
    static struct run r;
    const char *argv[] = {"sleep", "30"};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 2};
    struct sb_callbacks cb = {
        .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = &r};
    ev_timer t;
    memset(&r, 0, sizeof(r));
    req.workspace = sb_workspace_path(ws);
    CU_ASSERT_EQUAL_FATAL(sb_start(loop, host, &cfg, &req, &cb, &to_kill), 0);
    CU_ASSERT_TRUE(sb_child_pid(to_kill) > 0);
    ev_timer_init(&t, on_kill_timer, 0.2, 0.);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
    CU_ASSERT_EQUAL(r.exits, 1);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_CANCELLED);
    CU_ASSERT_TRUE(r.res.started);
    CU_ASSERT_EQUAL(r.res.term_signal, SIGKILL);
}

static struct sb_child *to_resume;

static void on_resume(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    sb_pause(to_resume, 0);
}

static void test_pause_resume(void)
{
    static struct run r;
    const char *argv[] = {"sh", "-c", "head -c 1000000 /dev/zero"};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 3};
    struct sb_callbacks cb = {
        .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = &r};
    ev_timer t;
    memset(&r, 0, sizeof(r));
    req.workspace = sb_workspace_path(ws);
    CU_ASSERT_EQUAL_FATAL(sb_start(loop, host, &cfg, &req, &cb, &to_resume), 0);
    sb_pause(to_resume, 1);
    ev_timer_init(&t, on_resume, 0.3, 0.);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL(r.out_len, 1000000);
    CU_ASSERT_FALSE(r.bad_offset);
}

static void test_file_operations(void)
{
    static struct run r;
    static const uint8_t data[] = "line one\nline two\n";
    struct sb_request req = {.kind = SB_WRITE_FILE, .input = data, .input_len = sizeof(data) - 1};
    req.file.path = "notes/today.txt";
    req.file.make_parents = 1;
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL(r.res.file_size_bytes, 18);
    CU_ASSERT_FALSE(r.res.started);

    struct sb_request rd = {.kind = SB_READ_FILE};
    rd.file.path = "/workspace/notes/today.txt";
    rd.file.offset_bytes = 5;
    rd.file.max_bytes = 3;
    memset(&r, 0, sizeof(r));
    r.next_off[SB_FILE_DATA] = 5;
    CU_ASSERT_EQUAL_FATAL(run(&rd, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL(r.out_len, 3);
    CU_ASSERT_EQUAL(memcmp(r.out, "one", 3), 0);
    CU_ASSERT_EQUAL(r.res.file_size_bytes, 18);
    CU_ASSERT_TRUE(r.res.data_truncated);
    CU_ASSERT_FALSE(r.bad_offset);

    struct sb_request ls = {.kind = SB_LIST_DIR};
    ls.file.path = "notes";
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(run(&ls, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL_FATAL(r.n_names, 1);
    CU_ASSERT_STRING_EQUAL(r.names[0], "today.txt");
    CU_ASSERT_EQUAL(r.types[0], SB_FT_REGULAR);

    struct sb_request missing = {.kind = SB_READ_FILE};
    missing.file.path = "nope";
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(run(&missing, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_FILE_ERROR);
    CU_ASSERT_STRING_EQUAL(r.res.message,
                           "READ_FILE \"/workspace/nope\": No such file or directory");
}

static void test_chain_from_on_exit(void)
{
    static struct run r;
    const char *argv[] = {"true"};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 1};
    memset(&r, 0, sizeof(r));
    r.chain = 3;
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.exits, 4);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
}

/* Several sandboxes at once on one loop: each gets its own output and its
 * own on_exit. */
static void test_concurrent(void)
{
    enum { N = 5 };
    static struct run r[N];
    static char scripts[N][64];
    const char *argv[N][3];
    struct sb_request req[N];
    struct sb_callbacks cb[N];
    struct sb_child *c;
    ev_timer guard;
    memset(r, 0, sizeof(r));
    pending = N;
    for (int i = 0; i < N; i++) {
        snprintf(scripts[i], sizeof(scripts[i]), "sleep 0.%d; echo job-%d", N - i, i);
        argv[i][0] = "sh", argv[i][1] = "-c", argv[i][2] = scripts[i];
        req[i] = (struct sb_request){.kind = SB_EXEC, .argv = argv[i], .argc = 3};
        req[i].workspace = sb_workspace_path(ws);
        cb[i] = (struct sb_callbacks){
            .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = &r[i]};
        CU_ASSERT_EQUAL_FATAL(sb_start(loop, host, &cfg, &req[i], &cb[i], &c), 0);
    }
    ev_timer_init(&guard, on_guard, 60., 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "job-%d\n", i);
        CU_ASSERT_EQUAL(r[i].exits, 1);
        CU_ASSERT_EQUAL(r[i].res.failure, SB_FAIL_NONE);
        CU_ASSERT_EQUAL(r[i].out_len, strlen(want));
        CU_ASSERT_EQUAL(memcmp(r[i].out, want, strlen(want)), 0);
    }
    pending = 0;
}

/* A job without a host workspace gets a private tmpfs: owned by the job's
 * user, mode 0700, limited to workspace_bytes, fresh for every job, never
 * the host workspace. */
static void test_private_workspace(void)
{
    static struct run r;
    const char *fill[] = {"sh", "-c",
                          "stat -c '%u %a' /workspace; echo kept > /workspace/f; "
                          "head -c 300000 /dev/zero > /workspace/big 2>/dev/null; echo rc=$?"};
    const char *look[] = {"sh", "-c", "ls -A /workspace; echo end"};
    struct sb_request req = {.kind = SB_EXEC, .argv = fill, .argc = 3};
    char host_file[4200];
    struct stat st;
    memset(&r, 0, sizeof(r));
    r.private_ws = 1;
    req.workspace_bytes = 128 << 10;
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    r.out[r.out_len < sizeof(r.out) ? r.out_len : sizeof(r.out) - 1] = 0;
    CU_ASSERT_STRING_EQUAL((char *)r.out, "1000 700\nrc=1\n"); /* full at 128 KiB */
    memset(&r, 0, sizeof(r));
    r.private_ws = 1;
    req.argv = look;
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    r.out[r.out_len < sizeof(r.out) ? r.out_len : sizeof(r.out) - 1] = 0;
    CU_ASSERT_STRING_EQUAL((char *)r.out, "end\n"); /* nothing of the previous job */
    snprintf(host_file, sizeof(host_file), "%s/f", sb_workspace_path(ws));
    CU_ASSERT_EQUAL(stat(host_file, &st), -1);
    req.workspace = NULL;
    req.workspace_bytes = 4096; /* below 64 KiB */
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &req, NULL, 0), AL_ERR_INVAL);
}

/* The highest N of the pooled job cgroups pool-N under parent (they are
 * numbered in creation order), 0 if none, -1 if unreadable. */
static int max_pool_index(const char *parent)
{
    int max = 0;
    DIR *d = opendir(parent);
    if (!d)
        return -1;
    for (struct dirent *e = readdir(d); e; e = readdir(d))
        if (strncmp(e->d_name, "pool-", 5) == 0 && atoi(e->d_name + 5) > max)
            max = atoi(e->d_name + 5);
    closedir(d);
    return max;
}

static void cgroup_reuse_on(struct sb_host *h)
{
    static struct run r;
    struct sb_host_info info;
    /* 32 MiB of anonymous memory (freed when dd exits, so the cgroup is
     * empty again when the job ends; tmpfs pages would be uncharged only
     * when the kernel gets round to the dead sandbox's mounts) */
    const char *heavy[] = {"sh", "-c",
                           "dd if=/dev/zero of=/dev/null bs=32M count=1 2>/dev/null; "
                           "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done 2>/dev/null; wait"};
    const char *light[] = {"true"};
    struct sb_request req = {.kind = SB_EXEC, .argv = heavy, .argc = 3};
    sb_host_get_info(h, &info);
    req.limits.memory_bytes = 256 << 20;
    req.limits.pids = 4;
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL(max_pool_index(info.memory_dir), 0); /* a new host: none yet */
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_TRUE(r.res.started); /* sh may give up when it cannot fork */
    CU_ASSERT_TRUE(r.res.max_rss_bytes >= 32 << 20);
    int pids_hit = 0, mem_hit = 1;
    for (size_t i = 0; i < r.res.n_limits; i++)
        if (r.res.limits[i].kind == SB_LIMIT_PIDS)
            pids_hit = r.res.limits[i].hit;
    CU_ASSERT_TRUE(pids_hit);
    CU_ASSERT_EQUAL(max_pool_index(info.memory_dir), 1); /* pool-1, back in the pool */
    memset(&r, 0, sizeof(r));
    req.argv = light;
    req.argc = 1;
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_TRUE(r.res.max_rss_bytes > 0 && r.res.max_rss_bytes < 16 << 20);
    pids_hit = 1;
    for (size_t i = 0; i < r.res.n_limits; i++) {
        if (r.res.limits[i].kind == SB_LIMIT_PIDS)
            pids_hit = r.res.limits[i].hit;
        if (r.res.limits[i].kind == SB_LIMIT_MEMORY)
            mem_hit = r.res.limits[i].hit;
    }
    CU_ASSERT_FALSE(pids_hit);
    CU_ASSERT_FALSE(mem_hit);
    CU_ASSERT_EQUAL(max_pool_index(info.memory_dir), 1); /* pool-1 again, none created */
}

/* Where every controller is cgroup v1 the job cgroups are pooled: on a host
 * of its own (an empty pool), a job after another reuses its cgroup and sees
 * only its own peak memory and its own limit hits. */
static void test_cgroup_reuse(void)
{
    struct sb_host *saved = host, *h = NULL;
    struct sb_host_info info;
    char name[48], err[256] = "";
    sb_host_get_info(host, &info);
    if (info.memory_version != 1 || info.pids_version != 1 || info.cpu_version == 2 ||
        info.cpuacct_version == 2) {
        fprintf(stderr, "SKIP cgroup reuse: the host's memory and pids cgroups are not v1\n");
        return;
    }
    snprintf(name, sizeof(name), "unit-pool-%d", (int)getpid());
    struct sb_host_options o = {.name = name};
    CU_ASSERT_EQUAL_FATAL(sb_host_new(&o, &h, err, sizeof(err)), 0);
    host = h; /* run() starts on `host` */
    cgroup_reuse_on(h);
    host = saved;
    sb_host_free(h);
}

/* The pid of our child named sb-spawner (the oldest if several), or 0. */
static pid_t find_spawner(void)
{
    pid_t found = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        char path[300], buf[512];
        int pid = atoi(e->d_name), ppid = 0;
        if (pid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        char *close_paren = strrchr(buf, ')');
        if (!close_paren || sscanf(close_paren + 2, "%*c %d", &ppid) != 1 || ppid != getpid() ||
            !strstr(buf, "(sb-spawner)"))
            continue;
        if (!found || pid < found)
            found = pid;
    }
    closedir(d);
    return found;
}

/* A spawner that died (whether or not the kernel finished killing it before
 * the next request: the request then fails or goes unanswered) is replaced:
 * the next job runs. */
static void test_spawner_replaced(void)
{
    static struct run r;
    const char *argv[] = {"echo", "again"};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 2};
    pid_t sp = find_spawner();
    CU_ASSERT_TRUE_FATAL(sp > 0);
    CU_ASSERT_EQUAL(kill(sp, SIGKILL), 0);
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(run(&req, &r, NULL), 0);
    CU_ASSERT_EQUAL(r.res.failure, SB_FAIL_NONE);
    CU_ASSERT_EQUAL(r.out_len, 6);
    CU_ASSERT_EQUAL(memcmp(r.out, "again\n", 6), 0);
    pid_t now = find_spawner();
    CU_ASSERT_TRUE(now > 0 && now != sp);
}

static void test_refused_synchronously(void)
{
    static struct run r;
    struct sb_callbacks cb = {
        .on_output = on_output, .on_dir = on_dir, .on_exit = on_exit_cb, .user = &r};
    struct sb_child *c = NULL;
    const char *argv[] = {"true"};
    struct sb_env bad[] = {{"AIRLOCK_SECRET", "x"}};
    struct sb_request req = {.kind = SB_EXEC, .argv = argv, .argc = 1, .env = bad, .n_env = 1};
    char msg[SB_MESSAGE_MAX];
    memset(&r, 0, sizeof(r));
    req.workspace = sb_workspace_path(ws);
    CU_ASSERT_EQUAL(sb_start(loop, host, &cfg, &req, &cb, &c), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &req, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "reserved"));
    req.n_env = 0;
    req.workspace = "/nonexistent-workspace";
    CU_ASSERT_EQUAL(sb_start(loop, host, &cfg, &req, &cb, &c), AL_ERR_INVAL);
    req.workspace = sb_workspace_path(ws);
    req.kind = SB_WRITE_FILE;
    req.file.path = "../escape";
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &req, msg, sizeof(msg)), AL_ERR_INVAL);
    req.file.path = "/etc/passwd";
    CU_ASSERT_EQUAL(sb_request_check(host, &cfg, &req, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NULL(c);
    ev_run(loop, EVRUN_NOWAIT);
    CU_ASSERT_EQUAL(r.exits, 0); /* no callback after a refusal */
}

int main(void)
{
    CU_pSuite s;
    int failed;
    char err[256] = "", name[32];
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox child (real sandboxes)", NULL, NULL);
    CU_add_test(s, "echo: output and exit", test_echo);
    CU_add_test(s, "stdin larger than a pipe", test_stdin_bigger_than_a_pipe);
    CU_add_test(s, "kill: cancelled, on_exit once", test_kill);
    CU_add_test(s, "pause and resume output", test_pause_resume);
    CU_add_test(s, "write, read, list, missing file", test_file_operations);
    CU_add_test(s, "sb_start from on_exit", test_chain_from_on_exit);
    CU_add_test(s, "five sandboxes at once", test_concurrent);
    CU_add_test(s, "refusals: no callback", test_refused_synchronously);
    CU_add_test(s, "private workspace: fresh, owned, size-limited", test_private_workspace);
    CU_add_test(s, "pooled cgroups: reused, counters per job", test_cgroup_reuse);
    CU_add_test(s, "spawner killed: replaced, the next job runs", test_spawner_replaced);
    snprintf(name, sizeof(name), "unit-%d", (int)getpid());
    struct sb_host_options o = {.name = name};
    if (geteuid() != 0 || sb_host_new(&o, &host, err, sizeof(err)) < 0 ||
        sb_workspace_create(host, "unit", 16 << 20, &ws) < 0) {
        fprintf(stderr, "SKIP sandbox child tests: need root and a usable sandbox host (%s)\n",
                err[0]      ? err
                : geteuid() ? "not root"
                            : "workspace");
        CU_set_suite_active(s, CU_FALSE);
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    sb_workspace_destroy(ws);
    sb_host_free(host);
    ev_loop_destroy(loop);
    return failed ? 1 : 0;
}
