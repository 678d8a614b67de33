"""The local sandbox's launcher: builds the isolation layers, then runs one untrusted program.

It imports nothing from rlvr (only the standard library) and runs in one of two ways:
``python -I -S _launcher.py --serve FD`` is the long-lived "zygote" that forks one launcher per
request (a fork instead of an interpreter start per run); ``python -I -S _launcher.py CONFIG FD``
launches one run (used under bubblewrap). Either way a launcher is in a new session with an empty
environment, and:

1. ``unshare``s new mount / pid / net / ipc / uts namespaces (plus a user namespace when not root).
2. In the new mount namespace, builds a fresh root on a tmpfs: the interpreter's prefix and the
   system directories bind-mounted read-only, a private ``/tmp`` and a writable ``/sandbox`` (small
   tmpfs mounts), device nodes null/zero/urandom; then ``pivot_root`` and detaches the host's tree,
   so the project, home directories and the host's /tmp are simply not there.
3. Forks. The child is pid 1 of the new pid namespace: when it exits the kernel kills everything
   left in the namespace, so a daemon cannot outlive the run. It dies with the launcher
   (``PR_SET_PDEATHSIG``), starts its own session, drops to an unprivileged uid unique to this run
   (so ``RLIMIT_NPROC`` binds and no two runs can signal each other), enters a user namespace of its
   own with every capability cleared and ``no_new_privs`` set, applies the rlimits, then forks the
   program (see :func:`be_init`), which executes in this interpreter (no second interpreter start).
4. Reports the layers it set up, the child's pid and the program's exit status as text lines
   (``key value``) on the status pipe.

The config is a ``marshal``-ed dict and only ``ctypes`` is imported beyond the interpreter's start-up
modules (once, in the zygote): every millisecond here is paid by every run.

A layer the kernel refuses is reported as a warning on the status pipe; the run goes on without it.
"""
import marshal
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}

_libc = None


def libc():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def check(ret, what):
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    check(libc().mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def machine():
    return os.uname().machine


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def build_root(cfg, program, report):
    """Fresh root on a tmpfs with read-only binds; returns nothing, leaves cwd at the new root."""
    base = cfg["root_dir"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    mount("rlvr-root", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    # the private /tmp and /sandbox first: a bind below /tmp (a virtual environment there) then
    # lands inside the private /tmp instead of being hidden by it
    mb = int(cfg["tmpfs_mb"])
    uid = cfg.get("uid") or 0
    for d in ("/tmp", "/sandbox"):
        os.makedirs(base + d, exist_ok=True)
        mode = "1777" if d == "/tmp" else "0755"
        mount("rlvr-" + d[1:], base + d, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={mb}m,mode={mode},uid={uid},gid={uid}")
    for path, target in cfg.get("links", {}).items():  # e.g. /bin -> usr/bin (merged /usr)
        os.makedirs(os.path.dirname(base + path), exist_ok=True)
        os.symlink(target, base + path)
    for src in cfg["binds"]:
        if not os.path.exists(src):
            continue
        dst = base + src
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "w").close()
        mount(src, dst, None, MS_BIND | MS_REC)
        mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    os.makedirs(base + "/dev", exist_ok=True)
    for dev in ("null", "zero", "urandom", "random"):
        open(base + "/dev/" + dev, "w").close()
        mount("/dev/" + dev, base + "/dev/" + dev, None, MS_BIND)
    with open(base + "/sandbox/main.py", "wb") as f:
        f.write(program)
    os.chown(base + "/sandbox/main.py", uid, uid)
    os.makedirs(base + "/.old", exist_ok=True)
    os.chdir(base)
    check(libc().syscall(SYS_PIVOT_ROOT[machine()], b".", b".old"), "pivot_root")
    os.chdir("/")
    check(libc().umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    report["layers"]["fs_root"] = True


def drop_caps():
    """Clear every capability of this process (it keeps none across the user namespace)."""
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    check(libc().syscall(SYS_CAPSET[machine()], header, data), "capset")


def child(cfg, program, stdin_fd, status_fd, report_warn):
    """Runs in the forked child: privileges, limits, then the program. Never returns."""
    import resource

    lc = libc()
    lc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # dies with the launcher
    os.setsid()  # kill(0, ...) from the program reaches only its own group
    uid = cfg.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # from root: clears every capability
        if cfg["namespaces"]:
            try:
                check(lc.unshare(CLONE_NEWUSER), "unshare user")
                drop_caps()
            except OSError as e:
                report_warn(f"user namespace unavailable ({e}); uid drop alone")
    elif cfg["namespaces"]:
        try:
            drop_caps()
        except OSError as e:
            report_warn(f"could not clear capabilities ({e})")
    lc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    lim = cfg["limits"]
    for name, value in (("RLIMIT_CPU", lim["cpu_s"]), ("RLIMIT_AS", lim["memory_mb"] * 2**20),
                        ("RLIMIT_FSIZE", lim["file_size_mb"] * 2**20),
                        ("RLIMIT_NOFILE", lim["open_files"]), ("RLIMIT_NPROC", lim["processes"]),
                        ("RLIMIT_CORE", 0)):
        if value:
            hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU first, then SIGKILL
            resource.setrlimit(getattr(resource, name), (value, hard))
    workdir = cfg["workdir"]
    os.chdir(workdir)
    os.dup2(stdin_fd, 0)
    if cfg["namespaces"]:
        be_init(status_fd)
    os.closerange(3, 1 << 16)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8",
                       "TMPDIR": "/tmp"})
    run_program(os.path.join(workdir, "main.py"), cfg.get("site_packages", False))


def be_init(status_fd):
    """As pid 1 of the namespace, fork the program and reap until it ends; report its status.

    The program is not pid 1 itself because the kernel drops default-action signals sent to a
    namespace's init: SIGXCPU, a program's own SIGTERM or abort() would do nothing. When this
    process exits, the kernel kills whatever is left in the namespace.
    """
    pid = os.fork()
    if pid == 0:
        return
    while True:
        try:
            p, st = os.wait()
        except ChildProcessError:
            os._exit(0)
        if p == pid:
            break
    line = f"signal {os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit {os.WEXITSTATUS(st)}"
    os.write(status_fd, (line + "\n").encode())
    os._exit(0)


def run_program(path, site_packages):
    """Execute ``path`` as ``__main__`` the way ``python path`` would, tracebacks included."""
    if site_packages:
        import site

        site.main()
    with open(path, "rb") as f:
        src = f.read()
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    main = type(sys)("__main__")
    main.__file__ = path
    sys.modules["__main__"] = main
    try:
        code = compile(src, path, "exec")
        exec(code, main.__dict__)
        status = 0
    except SystemExit as e:
        status = exit_status(e.code)
    except BaseException as e:  # print as the interpreter would, without the launcher's frame
        if isinstance(e, MemoryError):
            main.__dict__.clear()  # release what the program held so the report can be printed
        try:
            import traceback

            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
            if isinstance(e, SyntaxError):
                tb = None
            traceback.print_exception(type(e), e, tb)
        except BaseException:
            os.write(2, f"{type(e).__name__}\n".encode())
        status = 1
    finish(status)


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1


def finish(status):
    """What interpreter shutdown does that a program can notice, then ``_exit`` (this process may be
    a fork of the zygote, whose own shutdown must not run)."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # join non-daemon threads, as at normal exit
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as e:
        status = exit_status(e.code)
    except BaseException:
        pass
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            status = status or 120  # like the interpreter when flushing stdout fails
    os._exit(status)


def launch(cfg_path, status_fd):
    """One run: layers, fork, wait, report. Ends the process."""
    with open(cfg_path, "rb") as f:
        cfg = marshal.load(f)
    status = os.fdopen(status_fd, "w", buffering=1)
    status.write(f"launcher_pid {os.getpid()}\n")
    report = {"layers": {}, "warnings": []}

    def warn(msg):
        report["warnings"].append(msg)

    with open(cfg["program"], "rb") as f:
        program = f.read()
    stdin_fd = os.open(cfg["stdin"], os.O_RDONLY)
    is_root = os.geteuid() == 0
    if cfg.get("uid_base") is not None and is_root:
        # unique among runs alive at the same time
        cfg["uid"] = cfg.get("uid_fixed") or cfg["uid_base"] + os.getpid()
    else:
        cfg["uid"] = None
        warn("not root: the program keeps the caller's uid (no uid drop; RLIMIT_NPROC then counts "
             "all of this user's processes)" if cfg.get("uid_base") is not None else
             "uid drop disabled")
    report["layers"]["uid_drop"] = cfg["uid"] is not None
    report["uid"] = cfg["uid"]
    cfg["workdir"] = cfg["scratch"]
    ns_ok = False
    if cfg["namespaces"]:
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
        try:
            if not is_root:
                uid, gid = os.geteuid(), os.getegid()
                check(libc().unshare(flags | CLONE_NEWUSER), "unshare")
                write_file("/proc/self/setgroups", "deny")
                write_file("/proc/self/uid_map", f"0 {uid} 1")
                write_file("/proc/self/gid_map", f"0 {gid} 1")
                report["layers"]["user_ns"] = True
            else:
                check(libc().unshare(flags), "unshare")
            ns_ok = True
        except OSError as e:
            warn(f"namespaces unavailable ({e}): no network, pid or filesystem isolation")
    cfg["namespaces"] = ns_ok
    for k in ("pid_ns", "net_ns", "mount_ns", "ipc_ns"):
        report["layers"][k] = ns_ok
    report["layers"]["fs_root"] = False
    if ns_ok:
        try:
            build_root(cfg, program, report)
            cfg["workdir"] = "/sandbox"
        except OSError as e:
            warn(f"private root file system failed ({e}): the program sees the host's files")
    if cfg["workdir"] == cfg["scratch"] and cfg["uid"] is not None:
        os.chown(cfg["scratch"], cfg["uid"], cfg["uid"])
    if cfg["uid"] is not None and ns_ok:
        report["layers"]["user_ns"] = True  # entered by the child after the uid drop
    report["layers"]["rlimits"] = True
    for k, v in report["layers"].items():
        status.write(f"layer {k} {int(v)}\n")
    for msg in report["warnings"]:
        status.write("warn " + msg.replace("\n", " ") + "\n")
    status.write(f"uid {-1 if report['uid'] is None else report['uid']}\n")
    pid = os.fork()
    if pid == 0:
        child(cfg, program, stdin_fd, status.fileno(), lambda m: sys.stderr.write(f"[sandbox] {m}\n"))
    os.close(stdin_fd)
    # Let go of the run's stdout/stderr: they reach EOF when the program's side is done, without
    # waiting for this process to tear the namespaces down.
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    status.write(f"child_pid {pid}\n")
    # Backstop for a supervisor that died (a killed scoring worker): the launcher ends itself a
    # little after the wall-clock limit, and its child, the namespace's init, dies with it.
    import signal

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(cfg.get("wall_s", 60)) + 2)
    _, st = os.waitpid(pid, 0)
    if cfg["namespaces"]:  # the namespace's init reported the program's own status
        pass
    elif os.WIFSIGNALED(st):
        status.write(f"signal {os.WTERMSIG(st)}\n")
    else:
        status.write(f"exit {os.WEXITSTATUS(st)}\n")
    status.close()
    os._exit(0)


def serve(sock_fd):
    """Zygote mode: fork one launcher per request, saving an interpreter start per run.

    A request is one SEQPACKET message: the config path, with the run's stdout, stderr and status
    pipe write ends attached (SCM_RIGHTS). The zygote exits when its socket closes (the backend
    closed, or the process holding it died).
    """
    import atexit  # noqa: F401  (imported once here rather than in every run)
    import resource  # noqa: F401
    import signal
    import socket
    import traceback  # noqa: F401

    libc()  # loads ctypes
    import gc

    # The first compile() of a process builds the AST types (about 1.5 ms); running a script never
    # does, so without this every run would pay it.
    compile("pass\n", "<warm-up>", "exec")
    gc.freeze()  # fewer copy-on-write faults in each forked launcher

    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started the zygote exits, and
    # backends are used from pools of threads. The socket's EOF ends the zygote instead.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # launchers are reaped by the kernel
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 4096, 3)
        except (OSError, InterruptedError):
            continue
        if not msg:
            os._exit(0)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                os.setsid()  # the run's own process group, killed as one on timeout
                sock.close()
                devnull = os.open("/dev/null", os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(fds[0], 1)
                os.dup2(fds[1], 2)
                os.dup2(fds[2], 3)
                os.closerange(4, 1 << 16)
                launch(msg.decode(), 3)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        launch(sys.argv[1], int(sys.argv[2]))
