/*
 * mcp: what the gateway understands of the Model Context Protocol.
 *
 * Requests (agent -> MCP server, POST bodies): rl_mcp_parse() reads one
 * JSON-RPC 2.0 message (jansson, duplicate keys rejected at every depth;
 * batches -- JSON arrays -- rejected, as both MCP revisions forbid them),
 * and names the method and, for the methods that act on one item, the item:
 *   tools/call            params.name  -> RL_MCP_TOOL
 *   prompts/get           params.name  -> RL_MCP_PROMPT
 *   resources/read        params.uri   -> RL_MCP_RESOURCE
 *   resources/subscribe   params.uri   -> RL_MCP_RESOURCE
 *   resources/unsubscribe params.uri   -> RL_MCP_RESOURCE
 *   completion/complete   params.ref.name (ref/prompt)  -> RL_MCP_PROMPT
 *                         params.ref.uri (ref/resource) -> RL_MCP_RESOURCE
 * rl_mcp_check_headers() enforces the 2026-07-28 rule that Mcp-Method and
 * Mcp-Name, when sent, equal the body's method and item name;
 * rl_mcp_authorize() asks the caller's allow-list about the item.
 *
 * Responses (MCP server -> agent): a struct rl_mcp_filter rewrites a
 * response stream, either one JSON body (application/json) or a
 * text/event-stream, removing from every list result
 *   result.tools[]             (by .name)
 *   result.prompts[]           (by .name)
 *   result.resources[]         (by .uri)
 *   result.resourceTemplates[] (by .uriTemplate)
 * the items the allow-list refuses (and items without a usable name), and
 * sets such a result's cacheScope (MCP 2026-07-28) to "private", since the
 * list is now the caller's own. Every other message, event, comment,
 * field and byte passes through unchanged (nothing is re-serialized: the
 * refused items are cut out of the original text). SSE is parsed
 * incrementally per the WHATWG event-stream rules (LF, CR or CRLF line
 * ends, multi-line data, id/event/retry fields, comments), so an event
 * split across any number of chunks is handled; each event (and a JSON
 * body) is held until complete, up to max_msg bytes, beyond which the
 * stream fails (the gateway then ends the response with an error rather
 * than pass an unfiltered list).
 *
 * Texts returned in err are safe to show an agent: they never quote body
 * content.
 *
 * Lifecycle: rl_mcp_filter_new() -> feed... -> finish -> rl_mcp_filter_free().
 */
#ifndef RL_MCP_H
#define RL_MCP_H

#include <stddef.h>
#include <stdint.h>

#include "rlbuf.h"

#define RL_MCP_METHOD_MAX 128  /* longest method name accepted, bytes */
#define RL_MCP_NAME_MAX   1024 /* longest tool/prompt name or resource URI */
#define RL_MCP_ID_MAX     256  /* longest JSON id text kept for error replies */

/* JSON-RPC error codes used in replies made by the gateway. */
#define RL_MCP_ERR_PARSE   (-32700)
#define RL_MCP_ERR_INVALID (-32600)
#define RL_MCP_ERR_DENIED  (-32001) /* airlock: policy refused the call */
#define RL_MCP_ERR_UPSTREAM (-32002) /* airlock: the MCP server failed or timed out */
#define RL_MCP_ERR_UNAVAILABLE (-32003) /* airlock: no gateway, draining */
#define RL_MCP_ERR_NOT_FOUND (-32004) /* airlock: unknown tunnel or server */
#define RL_MCP_ERR_HEADER  (-32020) /* MCP 2026-07-28 HeaderMismatch: reply 400 with it
                                     * when rl_mcp_check_headers() fails */

enum rl_mcp_kind { RL_MCP_NONE = 0, RL_MCP_TOOL, RL_MCP_RESOURCE, RL_MCP_PROMPT };

enum rl_mcp_msgtype { RL_MCP_REQUEST = 1, RL_MCP_NOTIFICATION, RL_MCP_RESPONSE };

/* 1 when the principal may use the item `name` of kind `kind`, else 0. */
typedef int (*rl_mcp_allow_cb)(void *user, enum rl_mcp_kind kind, const char *name);

struct rl_mcp_msg {
    enum rl_mcp_msgtype type;
    char method[RL_MCP_METHOD_MAX + 1]; /* "" for a response */
    enum rl_mcp_kind target;            /* item kind the method acts on, or RL_MCP_NONE */
    char name[RL_MCP_NAME_MAX + 1];     /* the item, when target != RL_MCP_NONE */
    int is_list;                        /* tools/list, prompts/list, resources/list,
                                         * resources/templates/list */
    char id[RL_MCP_ID_MAX + 1];         /* the id as JSON text ("7", "\"a\""), "" if none */
};

/* Parses one complete POST body. Returns 0, or AL_ERR_INVAL (not JSON, a
 * duplicate key, a batch, not a JSON-RPC 2.0 object, method or item name
 * missing, of the wrong type or too long) with a reason in err. When the id
 * could be read before the error, out->id holds it for the error reply. */
int rl_mcp_parse(const uint8_t *body, size_t n, struct rl_mcp_msg *out, char *err, size_t errn);

/* Mcp-Method / Mcp-Name header values (NULL = header absent; lengths given)
 * against the parsed body. Returns 0 or AL_ERR_INVAL with a reason. A
 * header sent with a message whose body has no such value is a mismatch.
 * Per the spec an Mcp-Name of the form =?base64?...?= is decoded before the
 * comparison, and a value with bytes other than VCHAR/SP/HTAB is refused.
 * Whether the headers must be present (MCP-Protocol-Version 2026-07-28 and
 * later) is the caller's decision: absent headers pass here. */
int rl_mcp_check_headers(const struct rl_mcp_msg *m, const char *mcp_method, size_t method_len,
                         const char *mcp_name, size_t name_len, char *err, size_t errn);

/* Asks allow about m's item. Returns 0 (allowed, or the method acts on no
 * item) or AL_ERR_AUTH with a reason ("tool \"x\" is not allowed"; the
 * name is the agent's own input, JSON-safe-quoted and truncated). */
int rl_mcp_authorize(const struct rl_mcp_msg *m, rl_mcp_allow_cb allow, void *user, char *err,
                     size_t errn);

/* Appends a JSON-RPC error response {"jsonrpc":"2.0","id":<m->id or
 * null>,"error":{"code":code,"message":message}} (message JSON-escaped).
 * m may be NULL (id null). Returns 0 or an rl_buf_append() error. */
int rl_mcp_error_body(const struct rl_mcp_msg *m, int code, const char *message,
                      struct rl_buf *out);

struct rl_mcp_filter;

/* A response rewriter: sse = 1 for text/event-stream, 0 for one JSON body.
 * allow/user are borrowed for the filter's lifetime. max_msg caps one
 * event or body (0 = 4 MiB). Returns 0 or AL_ERR_NOMEM. */
int rl_mcp_filter_new(int sse, rl_mcp_allow_cb allow, void *user, size_t max_msg,
                      struct rl_mcp_filter **out);

/* Feeds response bytes; appends what is final to out. Returns 0,
 * AL_ERR_TOOBIG (an event/body over max_msg) or AL_ERR_NOMEM; after an
 * error the filter is unusable. A body that is not valid JSON is passed on
 * unchanged (it is not a list result). */
int rl_mcp_filter_feed(struct rl_mcp_filter *f, const uint8_t *in, size_t n, struct rl_buf *out);

/* End of the response: flushes a held body or an unterminated last event. */
int rl_mcp_filter_finish(struct rl_mcp_filter *f, struct rl_buf *out);

/* Items removed so far. */
unsigned long rl_mcp_filter_removed(const struct rl_mcp_filter *f);

void rl_mcp_filter_free(struct rl_mcp_filter *f);

#endif
