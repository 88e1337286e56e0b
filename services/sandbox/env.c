/*
 * env: the environment and argv of a sandboxed command, built in the parent.
 *
 * The sandbox's environment holds only what the job gave (its variables and
 * the caller's internal ones, e.g. credential placeholders), plus PATH and
 * HOME=/workspace when the job did not set them. Nothing of the caller's own
 * environment leaks in. Names follow [A-Za-z_][A-Za-z0-9_]*; "AIRLOCK_" is
 * reserved for the caller. argv[0] is resolved against the job's PATH by the
 * child (execvpe would use the caller's PATH), so the candidates are listed
 * here.
 */
#include <stdio.h>
#include <string.h>

#include "al_err.h"
#include "sb_int.h"

#define RESERVED_PREFIX "AIRLOCK_"

int sb_env_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 255)
        return 0;
    if (!((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') ||
          name[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

void sb_printable(char *dst, size_t n, const char *s)
{
    size_t len = s ? strlen(s) : 0, o = 0;
    if (n == 0)
        return;
    for (size_t i = 0; i < len && o + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[o] = '\0';
    if (o < len && n > 4)
        memcpy(dst + n - 4, "...", 4);
}

static int find_var(const struct sb_env *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Checks one list: syntax, reserved prefix (job list only), duplicates
 * within the list and against `other`. */
static int check_vars(const struct sb_env *v, size_t n, int job, const struct sb_env *other,
                      size_t n_other, size_t *bytes, char *msg, size_t msglen)
{
    char name[64];
    for (size_t i = 0; i < n; i++) {
        if (!v[i].name || !v[i].value || !sb_env_name_ok(v[i].name)) {
            sb_printable(name, sizeof(name), v[i].name);
            snprintf(msg, msglen, "environment variable name \"%s\" is not valid", name);
            return AL_ERR_INVAL;
        }
        sb_printable(name, sizeof(name), v[i].name);
        if (job && strncmp(v[i].name, RESERVED_PREFIX, strlen(RESERVED_PREFIX)) == 0) {
            snprintf(msg, msglen, "environment variable %s: names starting with %s are reserved",
                     name, RESERVED_PREFIX);
            return AL_ERR_INVAL;
        }
        if (find_var(v, i, v[i].name) >= 0 || find_var(other, n_other, v[i].name) >= 0) {
            snprintf(msg, msglen, "environment variable %s is set twice", name);
            return AL_ERR_INVAL;
        }
        *bytes += strlen(v[i].name) + strlen(v[i].value) + 2;
    }
    return 0;
}

static char *join_var(struct al_arena *a, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    char *s = al_arena_alloc(a, nl + vl + 2);
    if (!s)
        return NULL;
    memcpy(s, name, nl);
    s[nl] = '=';
    memcpy(s + nl + 1, value, vl + 1);
    return s;
}

static const char *lookup(const struct sb_env *v, size_t n, const char *name)
{
    int i = find_var(v, n, name);
    return i >= 0 ? v[i].value : NULL;
}

int sb_env_build(struct al_arena *a, const struct sb_request *req, char ***envp, const char **path,
                 char *msg, size_t msglen)
{
    size_t bytes = 0, n_job = req->env ? req->n_env : 0;
    size_t n_int = req->env_internal ? req->n_env_internal : 0;
    int rc = check_vars(req->env, n_job, 1, NULL, 0, &bytes, msg, msglen);
    if (rc == 0)
        rc = check_vars(req->env_internal, n_int, 0, req->env, n_job, &bytes, msg, msglen);
    if (rc < 0)
        return rc;
    if (n_job + n_int > SB_ENV_MAX_VARS || bytes > SB_ARGS_MAX_BYTES / 2) {
        snprintf(msg, msglen, "environment too large (at most %d variables, %d bytes)",
                 SB_ENV_MAX_VARS, SB_ARGS_MAX_BYTES / 2);
        return AL_ERR_INVAL;
    }
    char **e = al_arena_alloc(a, (n_job + n_int + 3) * sizeof(*e));
    if (!e)
        return AL_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n_job; i++)
        if (!(e[k++] = join_var(a, req->env[i].name, req->env[i].value)))
            return AL_ERR_NOMEM;
    for (size_t i = 0; i < n_int; i++)
        if (!(e[k++] = join_var(a, req->env_internal[i].name, req->env_internal[i].value)))
            return AL_ERR_NOMEM;
    const char *p = lookup(req->env, n_job, "PATH");
    if (!p)
        p = lookup(req->env_internal, n_int, "PATH");
    if (!p && !(e[k++] = join_var(a, "PATH", p = SB_DEFAULT_PATH)))
        return AL_ERR_NOMEM;
    if (!lookup(req->env, n_job, "HOME") && !lookup(req->env_internal, n_int, "HOME") &&
        !(e[k++] = join_var(a, "HOME", SB_WORKSPACE)))
        return AL_ERR_NOMEM;
    e[k] = NULL;
    *envp = e;
    *path = p;
    return 0;
}

/* Appends dir + "/" + file to the candidate list (dir "" = the cwd, as in
 * execvp). */
static int add_candidate(struct al_arena *a, char **list, size_t *n, const char *dir, size_t dl,
                         const char *file)
{
    size_t fl = strlen(file);
    if (dl == 0) {
        dir = ".";
        dl = 1;
    }
    if (dl + fl + 2 > PATH_MAX)
        return 0; /* cannot name a file: skipped, as execvp does */
    char *s = al_arena_alloc(a, dl + fl + 2);
    if (!s)
        return AL_ERR_NOMEM;
    memcpy(s, dir, dl);
    s[dl] = '/';
    memcpy(s + dl + 1, file, fl + 1);
    list[(*n)++] = s;
    return 0;
}

static int exec_candidates(struct al_arena *a, const char *arg0, const char *path, char ***out,
                           size_t *n)
{
    size_t entries = 1;
    for (const char *c = path; *c; c++)
        entries += *c == ':';
    char **list = al_arena_alloc(a, (entries + 1) * sizeof(*list));
    if (!list)
        return AL_ERR_NOMEM;
    *n = 0;
    if (strchr(arg0, '/')) {
        list[(*n)++] = (char *)arg0;
    } else {
        const char *s = path;
        for (;;) {
            const char *colon = strchr(s, ':');
            size_t dl = colon ? (size_t)(colon - s) : strlen(s);
            int rc = add_candidate(a, list, n, s, dl, arg0);
            if (rc < 0)
                return rc;
            if (!colon)
                break;
            s = colon + 1;
        }
    }
    list[*n] = NULL;
    *out = list;
    return 0;
}

int sb_argv_build(struct al_arena *a, const struct sb_request *req, const char *path, char ***argv,
                  char ***exec_paths, size_t *n_exec_paths, char *msg, size_t msglen)
{
    if (req->argc == 0 || !req->argv || !req->argv[0] || !req->argv[0][0]) {
        snprintf(msg, msglen, "argv must have at least one non-empty element");
        return AL_ERR_INVAL;
    }
    size_t bytes = 0;
    char **v = al_arena_alloc(a, (req->argc + 1) * sizeof(*v));
    if (!v)
        return AL_ERR_NOMEM;
    for (size_t i = 0; i < req->argc; i++) {
        if (!req->argv[i]) {
            snprintf(msg, msglen, "argv[%zu] is missing", i);
            return AL_ERR_INVAL;
        }
        size_t l = strlen(req->argv[i]);
        bytes += l + 1;
        if (!(v[i] = al_arena_strndup(a, req->argv[i], l)))
            return AL_ERR_NOMEM;
    }
    v[req->argc] = NULL;
    if (bytes > SB_ARGS_MAX_BYTES / 2 || strlen(v[0]) >= PATH_MAX) {
        snprintf(msg, msglen, "argv too large (at most %d bytes)", SB_ARGS_MAX_BYTES / 2);
        return AL_ERR_INVAL;
    }
    *argv = v;
    return exec_candidates(a, v[0], path, exec_paths, n_exec_paths);
}
