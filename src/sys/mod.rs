//! Raw Linux system calls on process file descriptors.
//!
//! This is the only module with `unsafe` code. Each wrapper takes and returns
//! plain Rust values, turns `-1` into the thread's `errno` as an
//! [`io::Error`], and documents the C signature, the kernel version it needs
//! and the manual page it follows.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

mod child;
pub mod raw;
pub mod spawn;

/// `PIDFD_THREAD` (Linux ≥ 6.9): the pidfd refers to one thread, not its
/// thread group. Same bit as `O_EXCL`, as in `<linux/pidfd.h>`.
pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux ≥ 6.9), a `pidfd_send_signal` flag
/// from `include/uapi/linux/pidfd.h`: signal the process group whose id is
/// the pidfd's pid (the group that process leads), as `kill(-pid, sig)`
/// would, but through the pidfd's own `struct pid`, so never a group that
/// merely reuses the number. Older kernels refuse any flag with `EINVAL`.
pub const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// `SO_PEERPIDFD` (Linux ≥ 6.5), from `<asm-generic/socket.h>`.
pub const SO_PEERPIDFD: libc::c_int = 77;

/// `PIDFD_INFO_*` request and result bits of `struct pidfd_info.mask`.
pub const PIDFD_INFO_PID: u64 = 1 << 0;
/// Real, effective, saved and filesystem uids and gids.
pub const PIDFD_INFO_CREDS: u64 = 1 << 1;
/// The cgroup v2 id.
pub const PIDFD_INFO_CGROUPID: u64 = 1 << 2;
/// The exit status (Linux ≥ 6.15), present once the process has been reaped.
pub const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `coredump_mask` (Linux ≥ 6.16): only returned when requested.
pub const PIDFD_INFO_COREDUMP: u64 = 1 << 4;
/// `supported_mask`: the `PIDFD_INFO_*` bits this kernel knows (after 6.18,
/// which does not know the bit; 7.2 reports it, both measured).
pub const PIDFD_INFO_SUPPORTED_MASK: u64 = 1 << 5;
/// `coredump_signal`, with `PIDFD_INFO_COREDUMP` (after 6.18).
pub const PIDFD_INFO_COREDUMP_SIGNAL: u64 = 1 << 6;
/// `coredump_code` (the `si_code` of the dump's signal), with
/// `PIDFD_INFO_COREDUMP` (after 6.18).
pub const PIDFD_INFO_COREDUMP_CODE: u64 = 1 << 7;

/// `struct pidfd_info` up to `supported_mask` (`PIDFD_INFO_SIZE_VER3`, 88
/// bytes).
///
/// The struct is versioned by size, which the request number encodes: a
/// kernel that knows a shorter struct (6.13–6.15 know the first 64 bytes,
/// `PIDFD_INFO_SIZE_VER0`; 6.16–6.18 the first 72) copies out what it knows
/// and zeroes the rest. `supported_mask` sits at offset 80, after the
/// coredump fields: measured on 7.2, where an 80-byte struct read it as the
/// `coredump_code` at offset 72 (always 0 there). The kernel fills only the fields whose bit it sets in
/// `mask`; 6.13 and 6.14 have `exit_code` reserved.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidfdInfo {
    /// Request bits on input, the bits the kernel filled on output.
    pub mask: u64,
    /// cgroup v2 id (`PIDFD_INFO_CGROUPID`).
    pub cgroupid: u64,
    /// Pid in the caller's pid namespace.
    pub pid: u32,
    /// Thread-group id (the process id of a thread).
    pub tgid: u32,
    /// Parent's pid.
    pub ppid: u32,
    /// Real uid.
    pub ruid: u32,
    /// Real gid.
    pub rgid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Saved set-user-id.
    pub suid: u32,
    /// Saved set-group-id.
    pub sgid: u32,
    /// Filesystem uid.
    pub fsuid: u32,
    /// Filesystem gid.
    pub fsgid: u32,
    /// The `wait(2)` status word (`PIDFD_INFO_EXIT`).
    pub exit_code: i32,
    /// `PIDFD_COREDUMP*` bits (`PIDFD_INFO_COREDUMP`, Linux ≥ 6.16).
    pub coredump_mask: u32,
    /// The signal that made it dump core (`PIDFD_INFO_COREDUMP_SIGNAL`).
    pub coredump_signal: u32,
    /// That signal's `si_code` (`PIDFD_INFO_COREDUMP_CODE`).
    pub coredump_code: u32,
    /// Reserved.
    pub coredump_pad: u32,
    /// The `PIDFD_INFO_*` bits the kernel supports
    /// (`PIDFD_INFO_SUPPORTED_MASK`).
    pub supported_mask: u64,
}

// The uapi layout: 64 bytes up to `exit_code`, 72 with coredump mask and
// signal, 80 with the code, 88 with `supported_mask`.
const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 88);
const _: () = assert!(std::mem::offset_of!(PidfdInfo, coredump_mask) == 64);
const _: () = assert!(std::mem::offset_of!(PidfdInfo, coredump_code) == 72);
const _: () = assert!(std::mem::offset_of!(PidfdInfo, supported_mask) == 80);

const PIDFS_IOCTL_MAGIC: libc::c_ulong = 0xFF;

/// `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)`, spelled out as the
/// generic `_IOC` encoding (read|write = 3) used by x86, arm and riscv.
pub const PIDFD_GET_INFO: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16)
    | (PIDFS_IOCTL_MAGIC << 8)
    | 0x0b;

/// The fields of a `siginfo_t` filled by `waitid(2)` for an exited child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildInfo {
    /// `si_pid`.
    pub pid: i32,
    /// `si_uid`.
    pub uid: u32,
    /// `si_signo` (always `SIGCHLD` here).
    pub signo: i32,
    /// `si_status`: exit code or signal number.
    pub status: i32,
    /// `si_code`: `CLD_EXITED`, `CLD_KILLED` or `CLD_DUMPED`.
    pub code: i32,
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `int pidfd_open(pid_t pid, unsigned int flags)` — Linux ≥ 5.3
/// (`PIDFD_THREAD` ≥ 6.9).
///
/// The returned fd is always close-on-exec. See pidfd_open(2).
pub fn pidfd_open(pid: libc::pid_t, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no caller memory.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) })?;
    // SAFETY: on success the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `int waitid(P_PIDFD, pidfd, siginfo_t *info, int options, struct rusage *ru)`
/// — Linux ≥ 5.4.
///
/// The raw system call, not the libc wrapper, because only the system call
/// takes the fifth argument and fills a `struct rusage` for the child. With
/// `WNOHANG`, `Ok(None)` means the child has not exited yet (the kernel
/// leaves `si_pid` zero). `WEXITED` is always added. See waitid(2).
pub fn waitid_pidfd(
    pidfd: BorrowedFd<'_>,
    options: libc::c_int,
) -> io::Result<Option<(ChildInfo, libc::rusage)>> {
    // Zeroed, not uninitialised: under WNOHANG with nothing to report the
    // kernel may write nothing, and we read si_pid to find that out.
    let mut siginfo = MaybeUninit::<libc::siginfo_t>::zeroed();
    let mut rusage = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: both pointers are to live, writable, correctly sized buffers
    // that outlive the call; the kernel writes at most one struct to each.
    check(unsafe {
        libc::syscall(
            libc::SYS_waitid,
            libc::P_PIDFD,
            pidfd.as_raw_fd(),
            siginfo.as_mut_ptr(),
            options | libc::WEXITED,
            rusage.as_mut_ptr(),
        )
    })?;
    // SAFETY: both buffers were zero-initialised, a valid bit pattern for
    // these plain C structs, and the kernel only ever wrote valid values.
    let (siginfo, rusage) = unsafe { (siginfo.assume_init(), rusage.assume_init()) };
    // SAFETY: for SIGCHLD-style siginfo (what waitid reports) the pid, uid
    // and status members of the union are the ones the kernel fills; on the
    // WNOHANG "nothing yet" path they are still zero from our initialisation.
    let (pid, uid, status) = unsafe { (siginfo.si_pid(), siginfo.si_uid(), siginfo.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some((
        ChildInfo {
            pid,
            uid,
            signo: siginfo.si_signo,
            status,
            code: siginfo.si_code,
        },
        rusage,
    )))
}

/// `int pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned int flags)`
/// — Linux ≥ 5.1.
///
/// Sends `sig` as `kill(2)` would, to exactly the process (or, for a
/// `PIDFD_THREAD` handle, the thread) the fd refers to, never a recycled
/// pid. `flags` is 0 or [`PIDFD_SIGNAL_PROCESS_GROUP`] (Linux ≥ 6.9; older
/// kernels fail any non-zero flags with `EINVAL`). See pidfd_send_signal(2).
pub fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    sig: libc::c_int,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: a null info pointer asks the kernel to build the siginfo itself;
    // the other arguments are integers.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    })?;
    Ok(())
}

/// `prctl(PR_GET_CHILD_SUBREAPER, int *)` — Linux ≥ 3.4: whether the calling
/// process is a child subreaper. See PR_SET_CHILD_SUBREAPER in prctl(2).
pub fn child_subreaper() -> io::Result<bool> {
    let mut on: libc::c_int = 0;
    // SAFETY: the kernel writes one int through the pointer, which points to
    // a live local of that type; the unused arguments are zero.
    check_int(unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &raw mut on,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(on != 0)
}

/// The child's lifetime settings, for a child started some other way (the
/// stock spawn's `preexec_fn`): what the native spawn's child does after its
/// id changes. `parent`: the spawning process's pid for `die_with_parent`
/// (`PR_SET_PDEATHSIG(SIGKILL)`, and this process ends at once if `parent`
/// is no longer its parent), 0 for no; `no_new_privs`: `PR_SET_NO_NEW_PRIVS`.
pub fn child_lifetime(parent: i32, no_new_privs: bool) -> io::Result<()> {
    child::lifetime(parent, no_new_privs).map_err(io::Error::from_raw_os_error)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, on)` — Linux ≥ 3.4.
///
/// While set, a descendant orphaned by its parent's death is re-parented to
/// the nearest living subreaper among its ancestors (this process) instead
/// of init, so this process gets its `SIGCHLD` and must reap it. The
/// attribute is per process and is not inherited across `fork`. See
/// prctl(2).
pub fn set_child_subreaper(on: bool) -> io::Result<()> {
    // SAFETY: integer arguments only; no memory is passed.
    check_int(unsafe {
        libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            libc::c_ulong::from(on),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })?;
    Ok(())
}

/// `int pidfd_getfd(int pidfd, int targetfd, unsigned int flags)` — Linux ≥ 5.6.
///
/// Duplicates the target process's fd `targetfd` into this process, with
/// close-on-exec set. Needs `PTRACE_MODE_ATTACH_REALCREDS` over the target.
/// See pidfd_getfd(2).
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, targetfd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), targetfd, 0) })?;
    // SAFETY: on success the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `ioctl(pidfd, PIDFD_GET_INFO, struct pidfd_info *)` — Linux ≥ 6.13
/// (`PIDFD_INFO_EXIT` ≥ 6.15, `PIDFD_INFO_COREDUMP` ≥ 6.16,
/// the coredump signal and code and `PIDFD_INFO_SUPPORTED_MASK` after 6.18).
///
/// `request` is the set of `PIDFD_INFO_*` bits wanted; the result's `mask`
/// says which the kernel filled. On a reaped process only
/// `PIDFD_INFO_EXIT` (and `PIDFD_INFO_CGROUPID`) can still be answered; asked
/// without `PIDFD_INFO_EXIT` the kernel then fails with `ESRCH`. Kernels
/// without the ioctl fail with `ENOTTY` (5.10, 6.1) or `EINVAL` (6.12).
/// See ioctl_pidfd(2).
pub fn pidfd_get_info(pidfd: BorrowedFd<'_>, request: u64) -> io::Result<PidfdInfo> {
    let mut info = PidfdInfo {
        mask: request,
        ..PidfdInfo::default()
    };
    // SAFETY: the request number encodes size_of::<PidfdInfo>(), so the kernel
    // reads and writes at most that many bytes of `info`, which is live and
    // writable for the whole call.
    check_int(unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO as _, &raw mut info) })?;
    // Linux 6.18 sets PIDFD_INFO_COREDUMP even for a struct too short to hold
    // coredump_mask (measured with a 64-byte struct); ours holds every bit we
    // name, so a bit here always has its field behind it.
    Ok(info)
}

/// `getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len)` — Linux ≥ 6.5.
///
/// A pidfd for the process that connected (or created the socket pair) at
/// the other end of the Unix socket `sock`, taken when it connected. See
/// unix(7).
pub fn peer_pidfd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are live locals; `len` holds the size of `fd`, so
    // the kernel writes at most that many bytes. `sock` is only a number to
    // the kernel: a closed or wrong fd fails with EBADF or ENOTSOCK.
    check_int(unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    })?;
    // SAFETY: on success the kernel installed a new fd for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo, NULL)`.
///
/// Waits until an fd reports one of its requested `events` (or `POLLHUP`,
/// `POLLERR`, `POLLNVAL`, which poll always reports) or `timeout` passes;
/// `None` waits without limit. Returns how many entries have a non-zero
/// `revents`. `EINTR` is returned to the caller, which decides whether a
/// signal handler must run. See poll(2).
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        // Saturate rather than wrap: a timeout beyond time_t is "forever".
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `fds` is a live, writable slice of `fds.len()` pollfd entries;
    // `ts_ptr` is null or points to a timespec that outlives the call; a null
    // signal mask leaves the mask unchanged.
    let n = check_int(unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    })?;
    Ok(n as usize)
}

/// Whether `SIGCHLD` is set to be ignored (`SIG_IGN` or `SA_NOCLDWAIT`), in
/// which case the kernel reaps children itself and `waitid` can only fail
/// with `ECHILD`. See sigaction(2), "POSIX.1-2001 specifies …".
pub fn sigchld_ignored() -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`, a live
    // buffer of the right type.
    let ret = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), old.as_mut_ptr()) };
    if ret != 0 {
        return false;
    }
    // SAFETY: sigaction succeeded and filled `old`; zeroed was already valid.
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0
}

/// `pid_t gettid(void)`: the calling thread's id. See gettid(2).
pub fn gettid() -> libc::pid_t {
    // The raw system call: glibc gained a gettid() wrapper only in 2.30,
    // newer than the manylinux baseline.
    // SAFETY: gettid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// `pid_t getpid(void)`. See getpid(2).
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { libc::getpid() }
}

/// Whether the calling thread is the process's initial thread (its thread
/// id is the process id), where CPython runs signal handlers. See gettid(2).
pub fn is_initial_thread() -> bool {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    tid == libc::c_long::from(getpid())
}

/// Whether the kernel discards this process's children's exit statuses
/// (`SIGCHLD` ignored, or `SA_NOCLDWAIT`): they are reaped as they exit,
/// and a blocking `waitid` for one may then never return (Linux 5.10 was
/// seen to block). See sigaction(2).
pub fn children_autoreaped() -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`,
    // a live, correctly sized buffer.
    let ret = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled by the kernel on success.
    let old = unsafe { old.assume_init() };
    ret != 0 || old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0
}

/// `fcntl(fd, F_GETFL)`: the file status flags (`O_EXCL` marks a
/// `PIDFD_THREAD` pidfd). See fcntl(2).
pub fn fd_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL reads flags only; an invalid fd fails with EBADF.
    check_int(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Take ownership of `fd`, an open pidfd handed to us by Python code that
/// gives up its own claim to the number (`PidFd.from_fd`'s documented
/// contract). The caller has checked that `fd` is open and a pidfd.
pub fn adopt_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` is open (checked through /proc by the caller) and its
    // owner transferred it to us; from here on only the OwnedFd closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `pipe2(O_CLOEXEC)` with the write end moved to fd 3 or above (a child
/// dups its streams onto 0..2 and must not lose its error pipe to that).
/// Returns (read end, write end).
pub fn pipe_high() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are new and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if w.as_raw_fd() >= 3 {
        return Ok((r, w));
    }
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new one we own.
    let high = check_int(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: as above.
    Ok((r, unsafe { OwnedFd::from_raw_fd(high) }))
}

/// `dup3(src, target, O_CLOEXEC)`: make the number `target` (someone else's
/// fd) a close-on-exec copy of `src`, closing what it was, atomically.
pub fn replace_fd(src: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup3 with integer arguments; the caller owns `target`'s number
    // (it hands the old file's last reference over to be closed).
    check_int(unsafe { libc::dup3(src.as_raw_fd(), target, libc::O_CLOEXEC) }).map(drop)
}

/// Give up ownership of `fd` and return its number, now the caller's to close.
pub fn release_fd(fd: OwnedFd) -> RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}

#[cfg(test)]
mod tests;
