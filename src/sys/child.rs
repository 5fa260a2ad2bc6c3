//! The child's side of a spawn: everything between `clone3` and `execve`.
//!
//! This runs in the child, possibly in the parent's memory while the parent
//! runs on (`CLONE_VM` without `CLONE_VFORK`): raw system calls only
//! ([`super::raw`]), no allocation, no locks, no errno, no panics (no
//! indexing that could fail, no unwrap). It does what CPython's
//! `_posixsubprocess` child does, in the same order, and reports a failure
//! in CPython's format.

use std::ffi::{c_char, c_void};

use super::raw::{self, syscall4, syscall5};

/// What the child reads: raw pointers into a [`Launch`]'s own buffers.
#[repr(C)]
pub(super) struct ChildArgs {
    pub(super) argv: *const *const c_char,
    pub(super) envp: *const *const c_char,
    pub(super) executables: *const *const c_char,
    pub(super) cwd: *const c_char,
    pub(super) keep: *const i32,
    pub(super) keep_len: usize,
    pub(super) groups: *const u32,
    pub(super) groups_len: usize,
    pub(super) set_groups: bool,
    pub(super) fds: [i32; 8],
    pub(super) close_first: [i32; 2],
    pub(super) chdir_marker: bool,
    pub(super) close_fds: bool,
    pub(super) restore_signals: bool,
    pub(super) setsid: bool,
    pub(super) pgid: i32,
    pub(super) gid: i64,
    pub(super) uid: i64,
    pub(super) umask: i32,
    pub(super) mask: *const libc::sigset_t,
    /// The spawning process's pid for `die_with_parent`, 0 for no.
    pub(super) parent: i32,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub(super) no_new_privs: bool,
    /// Where to put the failure report when there is no error pipe
    /// (`fds[7]` is -1): the parent's memory, shared (`CLONE_VM`) and read
    /// once the child has exec'd or exited (`CLONE_VFORK`).
    pub(super) report: *mut Report,
}

/// A failure report in the parent's memory: `len` bytes of `buf`, in the
/// error pipe's format; `len` 0 while nothing failed.
#[repr(C)]
pub(super) struct Report {
    pub(super) len: usize,
    pub(super) buf: [u8; REPORT_SIZE],
}

/// `OSError:` + 8 hex digits + `:noexec:chdir` fits with room to spare.
pub(super) const REPORT_SIZE: usize = 40;

const F_GETFD: usize = libc::F_GETFD as usize;
const F_SETFD: usize = libc::F_SETFD as usize;
const F_DUPFD_CLOEXEC: usize = libc::F_DUPFD_CLOEXEC as usize;

fn close(fd: i32) -> raw::Ret {
    // SAFETY: close(2) takes no pointer.
    unsafe { syscall4(libc::SYS_close, fd as usize, 0, 0, 0) }
}

fn set_inheritable(fd: i32, inheritable: bool) -> raw::Ret {
    // SAFETY: fcntl(2) with integer arguments only.
    let flags = unsafe { syscall4(libc::SYS_fcntl, fd as usize, F_GETFD, 0, 0) }?;
    let cloexec = libc::FD_CLOEXEC as usize;
    let new = if inheritable {
        flags & !cloexec
    } else {
        flags | cloexec
    };
    if new == flags {
        return Ok(0);
    }
    // SAFETY: as above.
    unsafe { syscall4(libc::SYS_fcntl, fd as usize, F_SETFD, new, 0) }
}

fn dup_high(fd: i32) -> Result<i32, i32> {
    // SAFETY: fcntl(2) with integer arguments only; the copy is close-on-exec.
    unsafe { syscall4(libc::SYS_fcntl, fd as usize, F_DUPFD_CLOEXEC, 3, 0) }.map(|v| v as i32)
}

fn dup_onto(fd: i32, target: i32) -> raw::Ret {
    if fd == target {
        // dup3 refuses equal fds; the stream is already there, only make it
        // survive exec (dup3 would have cleared the flag).
        return set_inheritable(fd, true);
    }
    // SAFETY: dup3(2) with integer arguments only.
    unsafe { syscall4(libc::SYS_dup3, fd as usize, target as usize, 0, 0) }
}

fn set_default(sig: i32) {
    // struct kernel_sigaction: handler, flags, restorer, mask (x86-64 and
    // arm64 both define SA_RESTORER, so both have the restorer field).
    let dfl = [0usize; 4];
    // SAFETY: rt_sigaction with a valid 32-byte struct and an 8-byte mask.
    let _ = unsafe {
        syscall4(
            libc::SYS_rt_sigaction,
            sig as usize,
            dfl.as_ptr() as usize,
            0,
            8,
        )
    };
}

/// Every caught signal back to its default (an inherited handler must not
/// run in the child before exec), as glibc's `posix_spawn` does; ignored
/// ones stay ignored, as exec would keep them.
fn reset_handlers() {
    let mut sig = 1;
    while sig < 65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            let mut old = [0usize; 4];
            // SAFETY: rt_sigaction reading into a valid 32-byte struct.
            let got = unsafe {
                syscall4(
                    libc::SYS_rt_sigaction,
                    sig as usize,
                    0,
                    old.as_mut_ptr() as usize,
                    8,
                )
            };
            let handler = old[0];
            if got.is_ok() && handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                set_default(sig);
            }
        }
        sig += 1;
    }
}

/// Where the child failed, as CPython's error report distinguishes it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before exec (fds, ids, session...): `noexec`.
    Setup,
    /// `chdir(cwd)`: `noexec:chdir` where the CPython version reports it
    /// apart (3.13 and later), `noexec` before.
    Chdir,
    /// `execve` itself: no suffix (the parent names the program).
    Exec,
}

/// A failed step: its errno and stage.
struct Failure {
    errno: i32,
    stage: Stage,
}

impl From<i32> for Failure {
    fn from(errno: i32) -> Self {
        Self {
            errno,
            stage: Stage::Setup,
        }
    }
}

/// Set up the child as `fork_exec` does, in its order; the errno of the
/// first failure.
///
/// # Safety
/// `a`'s pointers must be valid (they point into the live `Launch`).
unsafe fn prepare(a: &ChildArgs) -> Result<(), Failure> {
    let [
        p2cread,
        p2cwrite,
        c2pread,
        c2pwrite,
        errread,
        errwrite,
        errpipe_read,
        errpipe_write,
    ] = a.fds;
    let [first, second] = a.close_first;
    for fd in [first, second] {
        if fd >= 0 {
            close(fd)?;
        }
    }
    // The fds to pass on lose close-on-exec (the error pipe keeps it).
    let mut i = 0;
    while i < a.keep_len {
        // SAFETY: i < keep_len, the length of the kept-fd buffer.
        let fd = unsafe { *a.keep.add(i) };
        if fd != errpipe_write && fd != first && fd != second {
            set_inheritable(fd, true)?;
        }
        i += 1;
    }
    for fd in [p2cwrite, c2pread, errread, errpipe_read] {
        if fd != -1 {
            close(fd)?;
        }
    }
    // Keep a child end that sits on a lower standard fd from being
    // overwritten by the dups below.
    let mut c2pwrite = c2pwrite;
    if c2pwrite == 0 {
        c2pwrite = dup_high(c2pwrite)?;
    }
    let mut errwrite = errwrite;
    while errwrite == 0 || errwrite == 1 {
        errwrite = dup_high(errwrite)?;
    }
    for (fd, target) in [(p2cread, 0), (c2pwrite, 1), (errwrite, 2)] {
        if fd != -1 {
            dup_onto(fd, target)?;
        }
    }
    if !a.cwd.is_null() {
        // SAFETY: cwd is a NUL-terminated string in the Launch.
        unsafe { syscall4(libc::SYS_chdir, a.cwd as usize, 0, 0, 0) }.map_err(|e| Failure {
            errno: e,
            stage: Stage::Chdir,
        })?;
    }
    if a.umask >= 0 {
        // SAFETY: umask(2) takes an integer and cannot fail.
        let _ = unsafe { syscall4(libc::SYS_umask, a.umask as usize, 0, 0, 0) };
    }
    if a.restore_signals {
        set_default(libc::SIGPIPE);
        set_default(libc::SIGXFSZ);
    }
    reset_handlers();
    if a.setsid {
        // SAFETY: setsid(2) takes nothing.
        unsafe { syscall4(libc::SYS_setsid, 0, 0, 0, 0) }?;
    }
    if a.pgid >= 0 {
        // SAFETY: setpgid(2) with integers.
        unsafe { syscall4(libc::SYS_setpgid, 0, a.pgid as usize, 0, 0) }?;
    }
    if a.set_groups && a.groups_len > 0 {
        // SAFETY: setgroups(2) with the group buffer of the Launch (gid_t is
        // 32 bits on x86-64 and arm64). The raw call changes this process
        // only, which is what we want: we share no thread list with anyone.
        unsafe { syscall4(libc::SYS_setgroups, a.groups_len, a.groups as usize, 0, 0) }?;
    }
    if a.gid >= 0 {
        // SAFETY: setregid(2) with integers.
        unsafe { syscall4(libc::SYS_setregid, a.gid as usize, a.gid as usize, 0, 0) }?;
    }
    if a.uid >= 0 {
        // SAFETY: setreuid(2) with integers.
        unsafe { syscall4(libc::SYS_setreuid, a.uid as usize, a.uid as usize, 0, 0) }?;
    }
    // After the id changes: changing them clears the parent-death signal.
    lifetime(a.parent, a.no_new_privs)?;
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS` if asked (exec then grants no privileges: no
/// set-user-ID, no file capabilities), then [`die_with_parent`].
pub(super) fn lifetime(parent: i32, no_new_privs: bool) -> Result<(), i32> {
    if no_new_privs {
        let nnp = libc::PR_SET_NO_NEW_PRIVS as usize;
        // SAFETY: prctl(2) with integer arguments only (all five read).
        unsafe { syscall5(libc::SYS_prctl, nnp, 1, 0, 0, 0) }?;
    }
    die_with_parent(parent)
}

/// For `die_with_parent`: `PR_SET_PDEATHSIG(SIGKILL)`, then end this process
/// at once if `parent` (the spawning process's pid; 0: do nothing) died
/// before that took effect, when the signal would never come: the child was
/// re-parented, so `getppid()` no longer names it. Raw system calls only, so
/// it may run between clone and exec (and in a `preexec_fn`).
fn die_with_parent(parent: i32) -> Result<(), i32> {
    if parent <= 0 {
        return Ok(());
    }
    let pdeathsig = libc::PR_SET_PDEATHSIG as usize;
    // SAFETY: prctl(2) with integer arguments only.
    unsafe { syscall5(libc::SYS_prctl, pdeathsig, libc::SIGKILL as usize, 0, 0, 0) }?;
    // SAFETY: getppid(2) takes nothing and cannot fail.
    let now = unsafe { syscall4(libc::SYS_getppid, 0, 0, 0, 0) }.unwrap_or(0);
    if now != parent as usize {
        // The owner is gone: die as its death signal would have made us.
        // SAFETY: getpid/kill/exit_group with integers; exit_group does not
        // return.
        unsafe {
            if let Ok(me) = syscall4(libc::SYS_getpid, 0, 0, 0, 0) {
                let _ = syscall4(libc::SYS_kill, me, libc::SIGKILL as usize, 0, 0);
            }
            loop {
                let _ = syscall4(libc::SYS_exit_group, 255, 0, 0, 0);
            }
        }
    }
    Ok(())
}

/// Close every fd from 3 up but the kept ones (`close_range`, checked by the
/// parent to exist). Errors are ignored, as CPython ignores them.
///
/// # Safety
/// `a.keep` must point at `keep_len` sorted fds.
unsafe fn close_others(a: &ChildArgs) {
    let mut from: usize = 3;
    let mut i = 0;
    while i < a.keep_len {
        // SAFETY: i < keep_len.
        let fd = unsafe { *a.keep.add(i) };
        if fd >= 0 && (fd as usize) >= from {
            if fd as usize > from {
                // SAFETY: close_range(2) with integers.
                let _ = unsafe { syscall4(libc::SYS_close_range, from, fd as usize - 1, 0, 0) };
            }
            from = fd as usize + 1;
        }
        i += 1;
    }
    // SAFETY: as above.
    let _ = unsafe { syscall4(libc::SYS_close_range, from, u32::MAX as usize, 0, 0) };
}

/// Try each executable in turn; the errno to report (the first that is not
/// ENOENT/ENOTDIR, as CPython and `os.execvpe` report it).
///
/// # Safety
/// `a`'s arrays must be valid and NUL-terminated.
unsafe fn exec(a: &ChildArgs) -> i32 {
    let mut saved = 0;
    let mut last = libc::ENOENT;
    let mut p = a.executables;
    // SAFETY: the list ends with a null pointer; argv and envp are valid,
    // null-terminated arrays of C strings.
    unsafe {
        while !(*p).is_null() {
            let err = syscall4(
                libc::SYS_execve,
                *p as usize,
                a.argv as usize,
                a.envp as usize,
                0,
            )
            .err()
            .unwrap_or(0);
            if err != libc::ENOENT && err != libc::ENOTDIR && saved == 0 {
                saved = err;
            }
            last = err;
            p = p.add(1);
        }
    }
    if saved != 0 { saved } else { last }
}

/// Write `OSError:<hex errno>:[noexec[:chdir]]` to the error pipe, as
/// CPython's child does, so that `subprocess` raises what it would raise for
/// its own child; without a pipe (`fd` -1), into `shared`.
fn report(fd: i32, shared: *mut Report, failure: &Failure, chdir_marker: bool) {
    let errno = failure.errno;
    let mut buf = [0u8; REPORT_SIZE];
    let mut n = 0;
    let mut put = |b: u8| {
        if let Some(slot) = buf.get_mut(n) {
            *slot = b;
            n += 1;
        }
    };
    for &b in b"OSError:" {
        put(b);
    }
    let mut digits = [0u8; 8];
    let mut count = 0;
    let mut value = errno as u32;
    while value != 0 && count < 8 {
        if let Some(d) = digits.get_mut(count) {
            *d = b"0123456789abcdef"[(value % 16) as usize];
        }
        value /= 16;
        count += 1;
    }
    while count > 0 {
        count -= 1;
        put(digits.get(count).copied().unwrap_or(b'0'));
    }
    put(b':');
    if failure.stage != Stage::Exec {
        for &b in b"noexec" {
            put(b);
        }
    }
    if failure.stage == Stage::Chdir && chdir_marker {
        for &b in b":chdir" {
            put(b);
        }
    }
    if fd < 0 {
        if !shared.is_null() {
            // SAFETY: `shared` points at the live Launch's Report, in memory
            // the parent shares (CLONE_VM) and reads only once we have
            // exited (CLONE_VFORK); volatile, so the stores are not elided.
            unsafe {
                std::ptr::write_volatile(&raw mut (*shared).buf, buf);
                std::ptr::write_volatile(&raw mut (*shared).len, n);
            }
        }
        return;
    }
    let mut off = 0;
    while off < n {
        // SAFETY: write(2) from our own stack buffer, within its length.
        let ret = unsafe {
            syscall4(
                libc::SYS_write,
                fd as usize,
                buf.as_ptr() as usize + off,
                n - off,
                0,
            )
        };
        match ret {
            Ok(w) if w > 0 => off += w,
            Err(libc::EINTR) => {}
            _ => break,
        }
    }
}

/// The child's entry point, on its own stack: set up, exec, or report why
/// not and exit 255.
///
/// # Safety
/// `arg` is the `ChildArgs` of a live `Launch`.
pub(super) unsafe extern "C" fn child_main(arg: *const c_void) -> ! {
    // SAFETY: the parent passed its Launch's ChildArgs, alive until we exec.
    let a = unsafe { &*arg.cast::<ChildArgs>() };
    let errpipe = a.fds[7];
    // SAFETY: a's pointers are valid (the Launch is alive).
    let failure = if let Err(e) = unsafe { prepare(a) } {
        e
    } else {
        if a.close_fds {
            // SAFETY: as above.
            unsafe { close_others(a) };
        }
        // SAFETY: a.mask is the caller's saved mask; 8 bytes is the
        // kernel's sigset size.
        let _ = unsafe {
            syscall4(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK as usize,
                a.mask as usize,
                0,
                8,
            )
        };
        // SAFETY: as above.
        let errno = unsafe { exec(a) };
        Failure {
            errno,
            stage: Stage::Exec,
        }
    };
    report(errpipe, a.report, &failure, a.chdir_marker);
    loop {
        // SAFETY: exit_group(2) ends the process; it does not return.
        let _ = unsafe { syscall4(libc::SYS_exit_group, 255, 0, 0, 0) };
    }
}
