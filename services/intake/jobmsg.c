/*
 * jobmsg: airlock.v1.Job messages from stored rows. Everything the message
 * points to is copied into the given arena, so a reply may be sent after the
 * row (often a stack variable) is gone.
 */
#include <string.h>

#include "insvc.h"

static char *adup(struct al_arena *a, const char *s)
{
    return al_arena_strndup(a, s, strlen(s));
}

/* The spec without exec.stdin and file.data, in a (the large bytes never
 * enter a: the full spec is unpacked on the heap and freed). */
static Airlock__V1__JobSpec *stripped_spec(const struct in_job *j, struct al_arena *a)
{
    Airlock__V1__JobSpec *full = airlock__v1__job_spec__unpack(NULL, j->spec_len, j->spec), *out;
    uint8_t *buf;
    size_t len;

    if (!full)
        return NULL;
    if (full->exec)
        full->exec->stdin.len = 0;
    if (full->file)
        full->file->data.len = 0;
    len = airlock__v1__job_spec__get_packed_size(full);
    buf = al_arena_alloc(a, len ? len : 1);
    if (buf)
        airlock__v1__job_spec__pack(full, buf);
    airlock__v1__job_spec__free_unpacked(full, NULL);
    if (!buf)
        return NULL;
    out = airlock__v1__job_spec__unpack(al_arena_pb(a), len, buf);
    return out;
}

Airlock__V1__Job *in_job_msg(const struct in_job *j, struct al_arena *a, int full)
{
    Airlock__V1__Job *m = al_arena_alloc(a, sizeof(*m));
    Airlock__V1__Principal *p = al_arena_alloc(a, sizeof(*p));

    if (!m || !p || !j->spec)
        return NULL;
    airlock__v1__job__init(m);
    airlock__v1__principal__init(p);
    p->name = adup(a, j->principal);
    p->auth_method = j->auth_method;
    p->key_id = adup(a, j->key_id);
    m->id = adup(a, j->id);
    m->principal = p;
    m->spec = full ? airlock__v1__job_spec__unpack(al_arena_pb(a), j->spec_len, j->spec)
                   : stripped_spec(j, a);
    if (!m->spec || !p->name || !p->key_id || !m->id)
        return NULL;
    m->state = j->state;
    m->attempt = j->attempt;
    m->idempotency_key = adup(a, j->idem_key);
    m->created_ms = j->created_ms;
    m->started_ms = j->started_ms;
    m->finished_ms = j->finished_ms;
    m->updated_ms = j->updated_ms;
    m->last_seq = j->last_seq;
    m->executor_id = adup(a, j->executor_id);
    m->cancel_requested = j->cancel_requested && !in_sm_terminal(j->state);
    if (!m->idempotency_key || !m->executor_id)
        return NULL;
    if (j->result && in_sm_terminal(j->state)) {
        m->result = airlock__v1__job_result__unpack(al_arena_pb(a), j->result_len, j->result);
        if (!m->result)
            return NULL;
    }
    return m;
}
