/*
 * mcp_json: private to mcp.c and mcp_sse.c (not an interface for other
 * modules). The list-result rewriter that both filter modes use.
 */
#ifndef RL_MCP_JSON_H
#define RL_MCP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "mcp.h"
#include "rlbuf.h"

/*
 * Looks at one complete message (a JSON body, or the data of one SSE
 * event). When it is a JSON-RPC response -- or a batch of them -- whose
 * result holds tools[], prompts[], resources[] or resourceTemplates[],
 * removes every item that allow refuses (an item without a usable name is
 * refused too) and sets result.cacheScope, when present, to "private": the
 * list is now specific to the caller's authorization.
 *
 * Kept bytes are copied exactly (no re-serialization). The message is read
 * the way a tolerant client would read it: a leading UTF-8 BOM (when bom is
 * set) is skipped, invalid UTF-8 is read as U+FFFD, duplicate keys are all
 * looked at, NaN/Infinity are numbers.
 *
 * Returns 1 when the message changed (the new text, a BOM kept, appended
 * to out; *removed increased by the items removed), 0 when it is passed on
 * as it is (nothing appended), or AL_ERR_NOMEM / an rl_buf_append() error.
 */
int rl_mcp_rewrite(const uint8_t *msg, size_t n, int bom, rl_mcp_allow_cb allow, void *user,
                   unsigned long *removed, struct rl_buf *out);

/* Wipes the bytes held and empties b, keeping the allocation (cheaper than
 * rl_buf_reset() for a buffer reused per event: only len bytes are wiped;
 * the rest of the allocation is kept wiped by every user of this). */
void rl_mcp_buf_clear(struct rl_buf *b);

#endif
