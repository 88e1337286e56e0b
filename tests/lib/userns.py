#!/usr/bin/python3
"""Runs a command as root of a new user namespace that maps only COUNT ids
(0..COUNT-1 inside -> BASE..BASE+COUNT-1 outside), the way a Kubernetes pod
with hostUsers: false gets 65536 ids; the maps are written by this (root)
parent, so /etc/subuid plays no part.

    tests/lib/userns.py BASE COUNT CMD [ARG...]

Exit status: the command's (128 + signal if it was killed).
"""
import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    base, count, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.close(r2)
        if libc.unshare(CLONE_NEWUSER) != 0:
            e = ctypes.get_errno()
            print(f"userns.py: unshare(CLONE_NEWUSER): {os.strerror(e)}", file=sys.stderr)
            os._exit(126)
        os.write(w2, b"u")  # the parent may write the maps now
        os.close(w2)
        if os.read(r, 1) != b"m":
            os._exit(126)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            print(f"userns.py: {cmd[0]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    os.close(r)
    os.close(w2)
    if os.read(r2, 1) != b"u":
        os.waitpid(pid, 0)
        sys.exit(126)
    for f in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{f}", "w") as m:
            m.write(f"0 {base} {count}\n")
    os.write(w, b"m")
    os.close(w)
    _, st = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))


if __name__ == "__main__":
    main()
