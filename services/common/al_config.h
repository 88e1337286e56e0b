/*
 * al_config: schema-driven service configuration.
 *
 * A service describes its settings once, as an array of struct al_cfg_field
 * that maps dotted keys ("tls.cert_file") onto members of its own config
 * struct. al_config_load() fills that struct from four layers, each one
 * overriding the one before:
 *
 *   1. defaults     the field's .def text
 *   2. file         libconfig syntax; --config FILE, else $AIRLOCK_CONFIG
 *   3. environment  AIRLOCK_<KEY>: the key upper-cased, '.' and '-' -> '_'
 *                   (tls.cert_file -> AIRLOCK_TLS_CERT_FILE)
 *   4. flags        --<key>=VALUE or --<key> VALUE; in the key '_' and '-'
 *                   are interchangeable (--tls.cert-file == --tls.cert_file).
 *                   A BOOL flag given alone means true (--x); to clear it
 *                   write --x=false.
 *
 * Built-in flags: --config FILE, --check-config, --help (-h).
 *
 * Value syntax outside the file (defaults, environment, flags) is text:
 *   STRING       as is
 *   INT          decimal, or 0x hex
 *   BOOL         true/false, yes/no, on/off, 1/0
 *   DOUBLE       strtod syntax, finite values only
 *   DURATION_MS  "250ms", "5s", "2m", "1h" or a plain integer of milliseconds
 *   SIZE         "512B", "64KiB", "4MiB", "1GiB", "1TiB" or a plain integer of bytes
 *   STRLIST      comma-separated, no escaping; "" is the empty list
 *   CUSTOM       a libconfig value, e.g. AIRLOCK_POOLS='({ name = "ci"; })'
 * In the file the same types are native libconfig values: DURATION_MS and
 * SIZE accept either an integer or one of the strings above; STRLIST takes an
 * array or a list of strings. libconfig 1.5 silently truncates integers
 * beyond 32 bits unless they carry an L suffix, so write large sizes as
 * strings ("8GiB"). An @include path is resolved against the working
 * directory, not the including file's.
 *
 * Errors name where the bad value came from and stop the load:
 *   file:   "<file>:<line>: <key>: <reason>"
 *   env:    "env AIRLOCK_X: <reason>"
 *   flag:   "flag --x: <reason>"
 * Unknown keys in the file (at any depth, except below an AL_CFG_CUSTOM key,
 * whose parser owns its subtree), duplicate keys, unknown flags, wrong types
 * and out-of-range values are errors. Unknown AIRLOCK_* environment variables
 * are ignored on purpose: Kubernetes injects <SERVICE>_PORT style variables
 * for every Service in the namespace, and those would otherwise make a pod
 * fail to start. An empty environment variable counts as unset.
 *
 * Secrets are never configuration values: a key that needs one takes the
 * path of a file holding it (tls.key_file, credstore.master_key_file), so no
 * secret ever sits in the environment, on a command line or in --help.
 *
 * Lifecycle: the caller owns the destination struct (zero it first). After a
 * call to al_config_load(), successful or not, al_config_cleanup() frees the
 * strings, lists and custom data it allocated. Not thread-safe; call it from
 * main() before any thread starts.
 */
#ifndef AL_CONFIG_H
#define AL_CONFIG_H

#include <stddef.h>
#include <libconfig.h>

/* The C type of each kind of field, as found at dst + offset. */
enum al_cfg_type {
    AL_CFG_STRING,      /* char *, heap; NULL when unset */
    AL_CFG_INT,         /* int */
    AL_CFG_BOOL,        /* int, 0 or 1 */
    AL_CFG_DOUBLE,      /* double */
    AL_CFG_DURATION_MS, /* long long, milliseconds */
    AL_CFG_SIZE,        /* size_t, bytes */
    AL_CFG_STRLIST,     /* char **, NULL-terminated, heap; NULL when unset */
    AL_CFG_CUSTOM       /* whatever .custom parses into */
};

struct al_cfg_field {
    const char *path; /* dotted key; segments match [a-z][a-z0-9_]* */
    enum al_cfg_type type;
    size_t offset;   /* of the member in the caller's struct; see AL_CFG_OFF */
    const char *def; /* default as text (syntax above); NULL = none */
    const char *help;
    long long min, max; /* inclusive bounds for INT, DOUBLE, DURATION_MS, SIZE when min < max */
    int required;       /* must be given by file, env or flag; needs def == NULL */
    /*
     * AL_CFG_CUSTOM only: parses the setting s (a whole subtree, e.g. a list
     * of groups) into field = dst + offset, which is zero on entry. Returns 0
     * or a negative AL_ERR_*; on failure err holds either a bare reason (the
     * loader prefixes the key's file:line) or a full message from
     * al_config_errf() naming any setting inside the subtree. Unknown keys
     * inside the subtree are this parser's to reject. s is borrowed for the
     * call only: copy what you keep.
     */
    int (*custom)(const config_setting_t *s, void *field, char *err, size_t errlen);
    /* AL_CFG_CUSTOM only: frees what custom stored (also after it failed
     * halfway) and resets field to zero. */
    void (*custom_free)(void *field);
};

/*
 * offsetof() that refuses to compile unless the member has the C type
 * expected for the field kind:
 *   { "ops.listen", AL_CFG_STRING, AL_CFG_OFF(struct svc_cfg, ops_listen, char *), ... }
 */
#define AL_CFG_OFF(st, member, ctype)                                                              \
    (offsetof(st, member) + 0 * sizeof(_Generic(((st *)0)->member, ctype : 1)))

struct al_config_opts {
    /* In: all optional (zero the struct). */
    const char *prog;      /* name in --help; NULL = argv[0] */
    const char *summary;   /* one line printed under the usage line by --help */
    char *const *envp;     /* "K=V" array searched instead of environ (tests) */
    const char *text;      /* config file contents used instead of reading a file */
    const char *text_name; /* name of .text in messages; NULL = "<config>" */
    FILE *help_out;        /* where --help goes; NULL = stdout */
    int allow_args;        /* stop at the first non-flag or after "--" instead of failing */
    /* Out: set by al_config_load(). */
    int check_only;          /* --check-config given: validate, print "config ok", exit 0 */
    int help_shown;          /* --help printed; nothing was loaded; exit 0 */
    const char *config_file; /* file loaded (borrowed from argv/env), or NULL */
    int argi;                /* with allow_args: index of the first unparsed argument */
};

/*
 * Loads the n fields into dst from defaults, file, environment and argv.
 * argv is borrowed; argv[0] is the program name. On --help prints the help
 * text, sets opts->help_shown and returns 0 without loading anything.
 * Returns 0, AL_ERR_CONFIG (bad value, unknown key or flag, missing required
 * key, unreadable or unparsable file; err holds one line saying which),
 * AL_ERR_INVAL (the schema itself is wrong: bad path, duplicate key, bad
 * default), or AL_ERR_NOMEM. err (errlen bytes, may be 0) is always
 * NUL-terminated when errlen > 0. opts may be NULL. On failure dst may be
 * partly filled: call al_config_cleanup() in every case.
 */
int al_config_load(const struct al_cfg_field *fields, size_t n, void *dst, int argc, char **argv,
                   struct al_config_opts *opts, char *err, size_t errlen);

/* Frees every STRING, STRLIST and CUSTOM member of dst and NULLs it. Idempotent. */
void al_config_cleanup(const struct al_cfg_field *fields, size_t n, void *dst);

/*
 * Writes "<where>: <key>: <reason>" for setting s into err, where <where> is
 * "file:line" for a file and "env AIRLOCK_X" or "flag --x" when the subtree
 * came from text, and <key> is the dotted path of s ("pools[1].name").
 * For AL_CFG_CUSTOM parsers. Returns AL_ERR_CONFIG.
 */
int al_config_errf(char *err, size_t errlen, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes the environment name of a key ("AIRLOCK_TLS_CERT_FILE") into buf. Returns 0 or
 * AL_ERR_TOOBIG. */
int al_config_env_name(const char *path, char *buf, size_t n);

/* Parses a duration ("250ms", "5s", "2m", "1h", plain integer = ms) into *ms.
 * Returns 0 or AL_ERR_INVAL (syntax, unknown unit, negative, overflow). */
int al_config_parse_duration(const char *s, long long *ms);

/* Parses a size ("4096", "512B", "64KiB", "4MiB", "1GiB", "1TiB") into *bytes.
 * Returns 0 or AL_ERR_INVAL (syntax, unknown unit, negative, overflow). */
int al_config_parse_size(const char *s, size_t *bytes);

#endif
