/* Unit tests for sandbox/mount.c (parent side): bind path rules, image
 * resolution (symlinks replicated or followed, optional entries), and the
 * order and content of a job's filesystem plan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "sb_int.h"

static char tmp[64];

static int setup(void)
{
    snprintf(tmp, sizeof(tmp), "/tmp/sb-mount-XXXXXX");
    if (!mkdtemp(tmp))
        return 1;
    char p[128];
    snprintf(p, sizeof(p), "%s/dir", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/file", tmp);
    FILE *f = fopen(p, "w");
    if (f)
        fclose(f);
    snprintf(p, sizeof(p), "%s/link", tmp);
    return symlink("dir", p) < 0;
}

static int teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : 1;
}

static void test_inside_paths(void)
{
    CU_ASSERT_TRUE(sb_inside_path_ok("/opt/tools"));
    CU_ASSERT_TRUE(sb_inside_path_ok("/etc/ssl"));
    CU_ASSERT_TRUE(sb_inside_path_ok("/procfs")); /* a prefix is not the directory */
    CU_ASSERT_FALSE(sb_inside_path_ok("/"));
    CU_ASSERT_FALSE(sb_inside_path_ok("opt"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/opt/"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/opt//x"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/opt/../etc"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/opt/./x"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/proc"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/proc/sys"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/dev/shm"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/tmp"));
    CU_ASSERT_FALSE(sb_inside_path_ok("/workspace/x"));
    CU_ASSERT_FALSE(sb_inside_path_ok(NULL));
}

static void test_resolve(void)
{
    struct al_arena a;
    struct sb_image img;
    char msg[256], d[96], f[96], l[96], missing[96];
    snprintf(d, sizeof(d), "%s/dir", tmp);
    snprintf(f, sizeof(f), "%s/file", tmp);
    snprintf(l, sizeof(l), "%s/link", tmp);
    snprintf(missing, sizeof(missing), "%s/missing", tmp);
    struct sb_bind b[] = {{d, "/opt/d"}, {f, "/opt/f"}, {l, "/opt/l"}, {missing, "/opt/m"}};
    al_arena_init(&a, 0);
    /* image: symlinks replicated, missing optional entries skipped */
    CU_ASSERT_EQUAL_FATAL(sb_image_resolve(&a, b, 4, 1, 1, &img, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL_FATAL(img.n, 3);
    CU_ASSERT_EQUAL(img.e[0].type, SB_FT_DIRECTORY);
    CU_ASSERT_EQUAL(img.e[1].type, SB_FT_REGULAR);
    CU_ASSERT_EQUAL(img.e[2].type, SB_FT_SYMLINK);
    CU_ASSERT_STRING_EQUAL(img.e[2].target, "dir");
    CU_ASSERT_STRING_EQUAL(img.e[0].inside, "/opt/d");
    /* extra binds: symlinks followed, a missing source is an error */
    CU_ASSERT_EQUAL_FATAL(sb_image_resolve(&a, b, 3, 0, 0, &img, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(img.e[2].type, SB_FT_DIRECTORY);
    CU_ASSERT_EQUAL(sb_image_resolve(&a, b, 4, 0, 0, &img, msg, sizeof(msg)), AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "missing"));
    /* bad paths */
    struct sb_bind rel[] = {{"relative", NULL}};
    CU_ASSERT_EQUAL(sb_image_resolve(&a, rel, 1, 1, 1, &img, msg, sizeof(msg)), AL_ERR_INVAL);
    struct sb_bind res[] = {{d, "/dev/x"}};
    CU_ASSERT_EQUAL(sb_image_resolve(&a, res, 1, 1, 1, &img, msg, sizeof(msg)), AL_ERR_INVAL);
    /* a glob: each match at its own path */
    struct sb_bind g[] = {{"/etc/passw*", NULL}};
    CU_ASSERT_EQUAL(sb_image_resolve(&a, g, 1, 1, 1, &img, msg, sizeof(msg)), 0);
    CU_ASSERT_TRUE(img.n >= 1);
    for (size_t i = 0; i < img.n; i++)
        CU_ASSERT_EQUAL(strncmp(img.e[i].inside, "/etc/passw", 10), 0);
    al_arena_cleanup(&a);
}

static int index_of(const struct sb_plan *p, enum sb_mnt_kind k, const char *dst)
{
    for (size_t i = 0; i < p->n_mnt; i++)
        if (p->mnt[i].kind == k && strcmp(p->mnt[i].dst, dst) == 0)
            return (int)i;
    return -1;
}

static void test_plan(void)
{
    struct al_arena a;
    struct sb_image img;
    struct sb_plan p;
    char msg[256], d[96];
    snprintf(d, sizeof(d), "%s/dir", tmp);
    struct sb_bind image[] = {{"/usr", NULL}, {d, "/etc/ssl"}};
    struct sb_config cfg = {0};
    struct sb_request req = {0};
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL_FATAL(sb_image_resolve(&a, image, 2, 1, 1, &img, msg, sizeof(msg)), 0);
    req.workspace = tmp;
    req.limits.memory_bytes = 32 << 20;
    memset(&p, 0, sizeof(p));
    p.hostname = "box";
    CU_ASSERT_EQUAL_FATAL(
        sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)), 0);
    int usr_dir = index_of(&p, SB_MNT_DIR, "usr"), usr = index_of(&p, SB_MNT_BIND_RO, "usr");
    CU_ASSERT_TRUE(usr_dir >= 0 && usr > usr_dir);
    CU_ASSERT_STRING_EQUAL(p.mnt[usr].src, "/usr");
    int etc = index_of(&p, SB_MNT_DIR, "etc"), ssl = index_of(&p, SB_MNT_BIND_RO, "etc/ssl");
    CU_ASSERT_TRUE(etc >= 0 && ssl > etc);
    int pw = index_of(&p, SB_MNT_CONTENT, "etc/passwd");
    CU_ASSERT_FATAL(pw >= 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.mnt[pw].src, "sandbox:x:1000:1000:"));
    int hosts = index_of(&p, SB_MNT_CONTENT, "etc/hosts");
    CU_ASSERT_FATAL(hosts >= 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.mnt[hosts].src, "127.0.1.1\tbox"));
    int resolv = index_of(&p, SB_MNT_CONTENT, "etc/resolv.conf");
    CU_ASSERT_TRUE(resolv >= 0 && p.mnt[resolv].len == 0);
    int null = index_of(&p, SB_MNT_BIND_DEV, "dev/null");
    CU_ASSERT_TRUE(null >= 0 && strcmp(p.mnt[null].src, "/dev/null") == 0);
    int shm = index_of(&p, SB_MNT_TMPFS, "dev/shm"), tmpfs = index_of(&p, SB_MNT_TMPFS, "tmp");
    CU_ASSERT_FATAL(shm >= 0 && tmpfs >= 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.mnt[shm].src, "size=33554432,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.mnt[tmpfs].src, "mode=1777"));
    int ws = index_of(&p, SB_MNT_BIND_RW, "workspace");
    CU_ASSERT_TRUE(ws >= 0 && strcmp(p.mnt[ws].src, tmp) == 0);
    int proc = index_of(&p, SB_MNT_PROC, "proc"),
        sys = index_of(&p, SB_MNT_RDONLY_SELF, "proc/sys");
    CU_ASSERT_TRUE(proc >= 0 && sys > proc);
    char what[128];
    sb_mount_describe(&p, usr, what, sizeof(what));
    CU_ASSERT_STRING_EQUAL(what, "bind-mounting (read-only) /usr");

    /* no generated /etc; explicit tmpfs sizes */
    cfg.no_generated_etc = 1;
    cfg.tmp_bytes = 1 << 20;
    CU_ASSERT_EQUAL_FATAL(
        sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(index_of(&p, SB_MNT_CONTENT, "etc/passwd"), -1);
    tmpfs = index_of(&p, SB_MNT_TMPFS, "tmp");
    CU_ASSERT_PTR_NOT_NULL(strstr(p.mnt[tmpfs].src, "size=1048576,"));

    /* an extra bind under a read-only image directory is refused */
    struct sb_bind bad[] = {{d, "/usr/local/x"}};
    cfg.binds = bad;
    cfg.n_binds = 1;
    CU_ASSERT_EQUAL(
        sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)),
        AL_ERR_INVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "lies under"));

    /* sources that would expose the host or other sandboxes */
    const char *banned[] = {"/proc", "/sys/fs/cgroup", "/dev", "/run", "/proc/self/root"};
    for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++) {
        struct sb_bind one[] = {{banned[i], "/opt/x"}};
        cfg.binds = one;
        cfg.n_binds = 1;
        CU_ASSERT_EQUAL(
            sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)),
            AL_ERR_INVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not allowed"));
    }
    struct sb_bind root[] = {{"/", "/opt/x"}}; /* refused as not normalized */
    cfg.binds = root;
    CU_ASSERT_EQUAL(
        sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)),
        AL_ERR_INVAL);

    /* the operator's own image replaces the default one */
    struct sb_bind custom[] = {{d, "/opt/tools"}};
    cfg.binds = NULL;
    cfg.n_binds = 0;
    cfg.image = custom;
    cfg.n_image = 1;
    CU_ASSERT_EQUAL_FATAL(
        sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(index_of(&p, SB_MNT_BIND_RO, "usr"), -1);
    CU_ASSERT(index_of(&p, SB_MNT_BIND_RO, "opt/tools") >= 0);
    al_arena_cleanup(&a);
}

/* A bind inside a read-only directory bind (a CA bundle over the image's
 * /etc/ssl/certs/ca-certificates.crt) covers what that directory holds: a
 * regular file with a file, a directory with a directory, never through a
 * symlink, never something that is not there. */
static void test_covering_binds(void)
{
    struct al_arena a;
    struct sb_image img;
    struct sb_plan p;
    char msg[256], ssl[96], other[96], path[128], what[128];
    snprintf(ssl, sizeof(ssl), "%s/ssl", tmp);
    snprintf(other, sizeof(other), "%s/other", tmp);
    mkdir(ssl, 0755);
    mkdir(other, 0755);
    snprintf(path, sizeof(path), "%s/certs", ssl);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/certs/bundle.crt", ssl);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/certs/alias.crt", ssl);
    CU_ASSERT_EQUAL_FATAL(symlink("bundle.crt", path), 0);
    snprintf(path, sizeof(path), "%s/x", other);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f = fopen(path, "w"));
    fclose(f);
    char file[96], link[96];
    snprintf(file, sizeof(file), "%s/file", tmp);
    snprintf(link, sizeof(link), "%s/link", tmp);
    struct sb_bind image[] = {{ssl, "/etc/ssl"}, {link, "/opt/l"}};
    struct sb_config cfg = {0};
    struct sb_request req = {0};
    al_arena_init(&a, 0);
    CU_ASSERT_EQUAL_FATAL(sb_image_resolve(&a, image, 2, 0, 1, &img, msg, sizeof(msg)), 0);
    req.workspace = tmp;
    memset(&p, 0, sizeof(p));
    p.hostname = "box";
    struct sb_bind good[] = {
        {file, "/etc/ssl/certs/bundle.crt"}, {other, "/etc/ssl/certs"}, {file, "/etc/ssl/certs/x"}};
    cfg.binds = good;
    cfg.n_binds = 3;
    CU_ASSERT_EQUAL_FATAL(
        sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)), 0);
    int ssl_op = index_of(&p, SB_MNT_BIND_RO, "etc/ssl");
    int bundle = index_of(&p, SB_MNT_BIND_OVER, "etc/ssl/certs/bundle.crt");
    int certs = index_of(&p, SB_MNT_BIND_OVER, "etc/ssl/certs");
    int x = index_of(&p, SB_MNT_BIND_OVER, "etc/ssl/certs/x"); /* inside the certs bind */
    CU_ASSERT_TRUE(ssl_op >= 0 && bundle > ssl_op && certs > bundle && x > certs);
    CU_ASSERT_STRING_EQUAL(p.mnt[bundle].src, file);
    CU_ASSERT_EQUAL(index_of(&p, SB_MNT_FILE, "etc/ssl/certs/bundle.crt"), -1); /* no new node */
    sb_mount_describe(&p, bundle, what, sizeof(what));
    CU_ASSERT_STRING_EQUAL(what, "bind-mounting (read-only) over /etc/ssl/certs/bundle.crt");

    struct {
        const char *host, *inside, *want;
    } bad[] = {
        {file, "/etc/ssl/certs/alias.crt", "no regular file there"}, /* a symlink there */
        {file, "/etc/ssl/missing.crt", "no regular file there"},
        {tmp, "/etc/ssl/certs/bundle.crt", "no directory there"}, /* a directory on a file */
        {file, "/etc/ssl/certs", "no regular file there"},        /* a file on a directory */
        {file, "/opt/l/y", "a symlink"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sb_bind one[] = {{bad[i].host, bad[i].inside}};
        cfg.binds = one;
        cfg.n_binds = 1;
        msg[0] = '\0';
        CU_ASSERT_EQUAL(
            sb_mount_plan(&a, &img, &cfg, &req, 1000, 1000, "/run/sb", &p, msg, sizeof(msg)),
            AL_ERR_INVAL);
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, bad[i].want));
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, bad[i].inside));
    }
    al_arena_cleanup(&a);
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox mount plan", setup, teardown);
    CU_add_test(s, "inside paths of binds", test_inside_paths);
    CU_add_test(s, "image resolution", test_resolve);
    CU_add_test(s, "filesystem plan of a job", test_plan);
    CU_add_test(s, "binds covering what a read-only bind holds", test_covering_binds);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
