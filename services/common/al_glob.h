/*
 * al_glob: the glob matcher of policies and configuration (credstore binding
 * policies and issuer scopes, intake pools and principals), in one place.
 *
 * "*" matches any run (possibly empty) of characters other than '/', "**"
 * (or more stars) any run including '/'; every other byte matches itself,
 * case-sensitively. No escape, no character class. Time is
 * O(strlen(pat) * strlen(s)), never exponential.
 */
#ifndef AL_GLOB_H
#define AL_GLOB_H
#include <stddef.h>

#define AL_GLOB_MAX 1024 /* the largest max al_glob_match() honours */

/* Returns 1 when s matches pat, 0 otherwise (also for NULL, or either string
 * longer than max, which is capped at AL_GLOB_MAX). Both are borrowed. */
int al_glob_match(const char *pat, const char *s, size_t max);

#endif
