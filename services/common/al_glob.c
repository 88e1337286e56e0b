/* al_glob: see al_glob.h. */
#include "al_glob.h"

#include <string.h>

int al_glob_match(const char *pat, const char *s, size_t max)
{
    unsigned char a[AL_GLOB_MAX + 1], b[AL_GLOB_MAX + 1], *row = a, *next = b, *t;
    size_t m, n, i = 0;

    if (!pat || !s)
        return 0;
    m = strnlen(pat, AL_GLOB_MAX + 1);
    n = strnlen(s, AL_GLOB_MAX + 1);
    if (max > AL_GLOB_MAX)
        max = AL_GLOB_MAX;
    if (m > max || n > max)
        return 0;
    const char *first = memchr(pat, '*', m);
    if (!first)
        return m == n && memcmp(pat, s, n) == 0;
    /* The literal text before the first star and after the last one must be
     * the string's own start and end: compare them directly and leave only
     * the part between them (starts and ends with a star) to the table. */
    size_t pre = (size_t)(first - pat), post = 0;
    while (pat[m - 1 - post] != '*')
        post++;
    if (n < pre + post || memcmp(pat, s, pre) != 0 || memcmp(pat + m - post, s + n - post, post))
        return 0;
    pat += pre;
    s += pre;
    m -= pre + post;
    n -= pre + post;
    /* row[j]: the pattern consumed so far matches s[0..j) */
    memset(row, 0, n + 1);
    row[0] = 1;
    while (i < m) {
        int live = 0;
        if (pat[i] == '*') {
            size_t k = i;
            while (k < m && pat[k] == '*')
                k++;
            int any = k - i >= 2;
            next[0] = row[0];
            for (size_t j = 1; j <= n; j++)
                next[j] = row[j] || (next[j - 1] && (any || s[j - 1] != '/'));
            i = k;
        } else {
            next[0] = 0;
            for (size_t j = 1; j <= n; j++)
                next[j] = row[j - 1] && s[j - 1] == pat[i];
            i++;
        }
        for (size_t j = 0; j <= n && !live; j++)
            live = next[j];
        if (!live)
            return 0;
        t = row;
        row = next;
        next = t;
    }
    return row[n];
}
