//! The native spawn: `clone3(CLONE_PIDFD)`, and the child's side up to exec.
//!
//! The parent prepares everything the child needs (C strings, pointer
//! arrays, a stack) in a [`Launch`], blocks every signal, and clones with
//! `CLONE_PIDFD` so that the pidfd comes from the clone itself: there is no
//! moment when the child exists without a handle, whatever `SIGCHLD`'s
//! disposition. The child runs [`child_main`] on its own stack, in the
//! parent's memory (`CLONE_VM`) unless credentials change, and does what
//! CPython's `_posixsubprocess` child does, in the same order, with raw
//! system calls only ([`super::raw`]): nothing that allocates, locks or
//! touches `errno`. A failure before or at exec is written to the error pipe
//! in CPython's own format (`OSError:<hex errno>:` plus `noexec` when exec
//! was never reached), so `subprocess` raises exactly what it would raise.
//!
//! With `CLONE_VFORK` the parent sleeps until the child has exec'd or
//! exited (the `Popen` path); without it the parent returns at once and
//! must keep the [`Launch`] alive until the child's end of the error pipe
//! closes (the event-loop path).

use std::ffi::{CString, c_char, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::raw::{self, syscall4};

const CLONE_VM: u64 = 0x100;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_VFORK: u64 = 0x4000;

/// The child's stack. Its frames are a few hundred bytes; the rest is margin
/// for a kernel or compiler that spills more.
const STACK_SIZE: usize = 64 * 1024;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7);
/// older kernels accept the larger size while the extra fields are zero.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What to run and how: the arguments of CPython's `_posixsubprocess.fork_exec`,
/// converted.
pub struct Plan {
    /// `argv`.
    pub argv: Vec<CString>,
    /// The paths to try in turn (the `PATH` search, done by the caller).
    pub executables: Vec<CString>,
    /// `KEY=value` strings, or `None` for the parent's environment.
    pub env: Option<Vec<CString>>,
    /// Directory to change to.
    pub cwd: Option<CString>,
    /// Fds that stay open (sorted); all others from 3 up are closed when
    /// `close_fds`.
    pub keep: Vec<i32>,
    /// Close every fd from 3 up but `keep`.
    pub close_fds: bool,
    /// The parent's ends of the standard-stream pipes and their child ends,
    /// `-1` where unused, as `fork_exec` takes them.
    pub p2cread: i32,
    /// See `p2cread`.
    pub p2cwrite: i32,
    /// See `p2cread`.
    pub c2pread: i32,
    /// See `p2cread`.
    pub c2pwrite: i32,
    /// See `p2cread`.
    pub errread: i32,
    /// See `p2cread`.
    pub errwrite: i32,
    /// The error pipe's ends: the child closes the read end and reports on
    /// the write end, which closes on exec.
    pub errpipe_read: i32,
    /// See `errpipe_read`.
    pub errpipe_write: i32,
    /// Another fd the child closes first (`-1` for none).
    pub close_first: i32,
    /// Reset `SIGPIPE` and `SIGXFSZ` to their defaults (CPython ignores them).
    pub restore_signals: bool,
    /// `setsid()`.
    pub setsid: bool,
    /// `setpgid(0, pgid)` when `>= 0`.
    pub pgid: i32,
    /// `setregid(gid, gid)`.
    pub gid: Option<u32>,
    /// `setgroups(groups)`.
    pub groups: Option<Vec<u32>>,
    /// `setreuid(uid, uid)`.
    pub uid: Option<u32>,
    /// `umask(mask)` when `>= 0`.
    pub umask: i32,
}

/// What the child reads: raw pointers into a [`Launch`]'s own buffers.
#[repr(C)]
struct ChildArgs {
    argv: *const *const c_char,
    envp: *const *const c_char,
    executables: *const *const c_char,
    cwd: *const c_char,
    keep: *const i32,
    keep_len: usize,
    groups: *const u32,
    groups_len: usize,
    set_groups: bool,
    fds: [i32; 9],
    close_fds: bool,
    restore_signals: bool,
    setsid: bool,
    pgid: i32,
    gid: i64,
    uid: i64,
    umask: i32,
    mask: *const libc::sigset_t,
}

/// A spawn's memory: the plan, the pointer arrays into it, the child's
/// stack and arguments. Must outlive the child's use of it (until exec).
pub struct Launch {
    _plan: Plan,
    _argv: Vec<*const c_char>,
    _envp: Vec<*const c_char>,
    _executables: Vec<*const c_char>,
    _stack: Vec<MaybeUninit<u128>>,
    _mask: Box<libc::sigset_t>,
    _args: Box<ChildArgs>,
}

// SAFETY: the raw pointers all point into the Launch's own heap buffers
// (moving the Launch moves no buffer), and nothing writes through them.
unsafe impl Send for Launch {}

/// Why no child was started.
#[derive(Debug)]
pub enum SpawnError {
    /// `clone3` (or a call the plan needs) is not available here: the caller
    /// should spawn another way. Nothing was started.
    Unsupported(io::Error),
    /// The clone failed (`EAGAIN`, `ENOMEM`): what `fork()` would report.
    Os(io::Error),
}

static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

unsafe extern "C" {
    static environ: *const *const c_char;
}

/// Whether `close_range(2)` (Linux 5.9) works here; the child needs it to
/// close fds without reading `/proc`.
fn close_range_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        // SAFETY: closes the fd u32::MAX, which no process can have open.
        let ret = unsafe {
            syscall4(
                libc::SYS_close_range,
                u32::MAX as usize,
                u32::MAX as usize,
                0,
                0,
            )
        };
        ret.is_ok()
    })
}

/// Start `plan`'s child; returns its pid, its pidfd and the memory it uses.
///
/// With `wait_exec` the call returns once the child has exec'd or exited
/// (`CLONE_VFORK`) and the [`Launch`] may be dropped at once; without it the
/// caller must keep the [`Launch`] until the child's end of the error pipe
/// has closed. Blocks every signal in the calling thread across the clone.
pub fn spawn(plan: Plan, wait_exec: bool) -> Result<(libc::pid_t, OwnedFd, Launch), SpawnError> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(SpawnError::Unsupported(io::Error::from_raw_os_error(
            libc::ENOSYS,
        )));
    }
    if plan.close_fds && !close_range_works() {
        return Err(SpawnError::Unsupported(io::Error::from_raw_os_error(
            libc::ENOSYS,
        )));
    }
    let argv = null_terminated(&plan.argv);
    let executables = null_terminated(&plan.executables);
    let envp = plan.env.as_deref().map(null_terminated).unwrap_or_default();
    let mut stack: Vec<MaybeUninit<u128>> = Vec::with_capacity(STACK_SIZE / 16);
    // SAFETY: MaybeUninit needs no initialisation; capacity is STACK_SIZE/16.
    unsafe { stack.set_len(STACK_SIZE / 16) };
    // SAFETY: an all-zero sigset_t is a valid (empty) set, filled below.
    let mut mask: Box<libc::sigset_t> = Box::new(unsafe { std::mem::zeroed() });
    let groups = plan.groups.as_deref().unwrap_or(&[]);
    let child_args = Box::new(ChildArgs {
        argv: argv.as_ptr(),
        envp: if plan.env.is_some() {
            envp.as_ptr()
        } else {
            // SAFETY: reading libc's `environ` pointer, as execv(3) would;
            // the caller holds the GIL, as os.environ's writers do.
            unsafe { environ }
        },
        executables: executables.as_ptr(),
        cwd: plan.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        keep: plan.keep.as_ptr(),
        keep_len: plan.keep.len(),
        groups: groups.as_ptr(),
        groups_len: groups.len(),
        set_groups: plan.groups.is_some(),
        fds: [
            plan.p2cread,
            plan.p2cwrite,
            plan.c2pread,
            plan.c2pwrite,
            plan.errread,
            plan.errwrite,
            plan.errpipe_read,
            plan.errpipe_write,
            plan.close_first,
        ],
        close_fds: plan.close_fds,
        restore_signals: plan.restore_signals,
        setsid: plan.setsid,
        pgid: plan.pgid,
        gid: plan.gid.map_or(-1, i64::from),
        uid: plan.uid.map_or(-1, i64::from),
        umask: plan.umask,
        mask: &raw const *mask,
    });
    // Credentials change: the child gets its own copy of memory (as CPython
    // forks rather than vforks then), never a shared one.
    let creds = plan.gid.is_some() || plan.uid.is_some() || plan.groups.is_some();
    let mut flags = CLONE_PIDFD;
    if !creds {
        flags |= CLONE_VM;
    }
    if wait_exec {
        flags |= CLONE_VFORK;
    }
    let mut pidfd: libc::c_int = -1;
    let stack_top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
    let mut clone_args = CloneArgs {
        flags,
        pidfd: &raw mut pidfd as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: (stack_top - stack.as_mut_ptr() as usize) as u64,
        ..CloneArgs::default()
    };
    let launch_args: *const ChildArgs = &raw const *child_args;
    // SAFETY: sigfillset/pthread_sigmask on valid sets; the old mask goes
    // into `mask`, which the child restores before exec. clone3: the args
    // and stack are valid and live in `Launch` (returned to the caller, who
    // keeps it while the child may run); child_main only reads ChildArgs
    // and makes raw system calls.
    let ret = unsafe {
        let mut all = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), &raw mut *mask);
        let ret = raw::clone3_call(
            (&raw mut clone_args).cast(),
            std::mem::size_of::<CloneArgs>(),
            child_main,
            launch_args.cast(),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const *mask, std::ptr::null_mut());
        ret
    };
    let launch = Launch {
        _plan: plan,
        _argv: argv,
        _envp: envp,
        _executables: executables,
        _stack: stack,
        _mask: mask,
        _args: child_args,
    };
    match ret {
        Ok(pid) => {
            // SAFETY: CLONE_PIDFD wrote a new close-on-exec fd that we own.
            let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok((pid as libc::pid_t, fd, launch))
        }
        Err(e @ (libc::EAGAIN | libc::ENOMEM)) => {
            Err(SpawnError::Os(io::Error::from_raw_os_error(e)))
        }
        Err(e) => {
            // ENOSYS (before 5.3, or a seccomp filter), EPERM (a filter),
            // E2BIG/EINVAL (a kernel that refuses these arguments): the same
            // answer next time, so stop asking.
            UNSUPPORTED.store(true, Ordering::Relaxed);
            Err(SpawnError::Unsupported(io::Error::from_raw_os_error(e)))
        }
    }
}

// ---- the child, between clone and exec ------------------------------------
//
// Everything below runs in the child, possibly in the parent's memory while
// the parent runs on: raw system calls only, no allocation, no locks, no
// errno, no panics (no indexing that could fail, no unwrap).

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

/// Set up the child as `fork_exec` does, in its order; the errno of the
/// first failure.
///
/// # Safety
/// `a`'s pointers must be valid (they point into the live `Launch`).
unsafe fn prepare(a: &ChildArgs) -> Result<(), i32> {
    let [
        p2cread,
        p2cwrite,
        c2pread,
        c2pwrite,
        errread,
        errwrite,
        errpipe_read,
        errpipe_write,
        first,
    ] = a.fds;
    if first >= 0 {
        close(first)?;
    }
    // The fds to pass on lose close-on-exec (the error pipe keeps it).
    let mut i = 0;
    while i < a.keep_len {
        // SAFETY: i < keep_len, the length of the kept-fd buffer.
        let fd = unsafe { *a.keep.add(i) };
        if fd != errpipe_write && fd != first {
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
        unsafe { syscall4(libc::SYS_chdir, a.cwd as usize, 0, 0, 0) }?;
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

/// Write `OSError:<hex errno>:[noexec]` to the error pipe, as CPython's child
/// does, so that `subprocess` raises what it would raise for its own child.
fn report(fd: i32, errno: i32, noexec: bool) {
    let mut buf = [0u8; 40];
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
    if noexec {
        for &b in b"noexec" {
            put(b);
        }
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
unsafe extern "C" fn child_main(arg: *const c_void) -> ! {
    // SAFETY: the parent passed its Launch's ChildArgs, alive until we exec.
    let a = unsafe { &*arg.cast::<ChildArgs>() };
    let errpipe = a.fds[7];
    // SAFETY: a's pointers are valid (the Launch is alive).
    let (errno, noexec) = if let Err(e) = unsafe { prepare(a) } {
        (e, true)
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
        (unsafe { exec(a) }, false)
    };
    report(errpipe, errno, noexec);
    loop {
        // SAFETY: exit_group(2) ends the process; it does not return.
        let _ = unsafe { syscall4(libc::SYS_exit_group, 255, 0, 0, 0) };
    }
}
