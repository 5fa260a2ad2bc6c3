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

use std::ffi::{CString, c_char};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::child::{ChildArgs, REPORT_SIZE, Report, child_main};
use super::raw::{self, syscall4};

const CLONE_VM: u64 = 0x100;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_INTO_CGROUP: u64 = 1 << 33;
// Linux 7.1: no zombie (the status stays readable through the pidfd), no_new_privs
// set by the clone, and SIGKILL when the clone's pidfd file is released.
const CLONE_AUTOREAP: u64 = 1 << 34;
const CLONE_NNP: u64 = 1 << 35;
const CLONE_PIDFD_AUTOKILL: u64 = 1 << 36;

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
/// converted (its flags stay flags, one for one).
#[allow(clippy::struct_excessive_bools)]
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
    /// Report a failed `chdir` as `noexec:chdir` (CPython 3.13 and later)
    /// rather than `noexec`.
    pub chdir_marker: bool,
    /// The fds `fork_exec` takes, in its order: the parent's and the
    /// child's ends of the three standard-stream pipes (`p2cread`,
    /// `p2cwrite`, `c2pread`, `c2pwrite`, `errread`, `errwrite`; `-1` where
    /// unused), then the error pipe's ends (`errpipe_read`, which the child
    /// closes, and [`ERRPIPE_WRITE`], which it reports on and which closes
    /// on exec; both `-1`: no pipe, the child reports in memory, see
    /// [`Launch::report`]).
    pub fds: [i32; 8],
    /// Fds the child closes first (`-1` for none).
    pub close_first: [i32; 2],
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
    /// Have the child killed (`SIGKILL`) when this process dies:
    /// `CLONE_PIDFD_AUTOKILL` where the kernel has it (see [`spawn`]), else
    /// `PR_SET_PDEATHSIG` in the child (which fires when the spawning thread
    /// exits) and never starting if its parent is already gone.
    pub die_with_parent: bool,
    /// `PR_SET_NO_NEW_PRIVS` in the child.
    pub no_new_privs: bool,
    /// An open directory fd of the cgroup v2 the child starts in
    /// (`CLONE_INTO_CGROUP`, Linux 5.7), `-1` for the parent's.
    pub cgroup: i32,
}

/// Where the error pipe's read end is in [`Plan::fds`].
pub const ERRPIPE_READ: usize = 6;
/// Where its write end is.
pub const ERRPIPE_WRITE: usize = 7;

/// A spawn's memory: the plan, the pointer arrays into it, the child's
/// stack and arguments. Must outlive the child's use of it (until exec).
pub struct Launch {
    plan: Plan,
    _argv: Vec<*const c_char>,
    _envp: Vec<*const c_char>,
    _executables: Vec<*const c_char>,
    stack: Vec<MaybeUninit<u128>>,
    mask: Box<libc::sigset_t>,
    report: Box<Report>,
    args: Box<ChildArgs>,
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
/// `CLONE_PIDFD_AUTOKILL` refused: this kernel lacks it (`EINVAL`, before 7.1).
static NO_AUTOKILL: AtomicBool = AtomicBool::new(false);
/// Refused without `CLONE_NNP` (`EPERM`: no `CAP_SYS_ADMIN`).
static NO_AUTOKILL_WITHOUT_NNP: AtomicBool = AtomicBool::new(false);

/// Whether a refusal has made every later [`spawn`] fail as `Unsupported`.
pub fn refused_for_good() -> bool {
    UNSUPPORTED.load(Ordering::Relaxed)
}

/// Whether a [`spawn`] with these `close_fds` would be tried rather than
/// refused at once (as far as is known before the clone itself).
pub fn ready(close_fds: bool) -> bool {
    !refused_for_good() && (!close_fds || close_range_works())
}

/// Child stacks of finished spawns, kept for the next ones: a fresh 64 KiB
/// allocation per spawn (and its free, which makes glibc consolidate its
/// heap) was a measurable share of a spawn's parent CPU (W5), and a reused
/// stack is already in the page tables and caches.
static SPARE_STACKS: Mutex<Vec<Vec<MaybeUninit<u128>>>> = Mutex::new(Vec::new());
/// How many spare stacks are kept at most (one per thread spawning at once
/// is enough; more are freed).
const SPARE_STACKS_MAX: usize = 8;

fn take_stack() -> Vec<MaybeUninit<u128>> {
    let spare = SPARE_STACKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop();
    spare.unwrap_or_else(|| {
        let mut stack = Vec::with_capacity(STACK_SIZE / 16);
        // SAFETY: MaybeUninit needs no initialisation; capacity is STACK_SIZE/16.
        unsafe { stack.set_len(STACK_SIZE / 16) };
        stack
    })
}

impl Drop for Launch {
    fn drop(&mut self) {
        // The child is done with its stack (a Launch outlives its use: see
        // the type), so the next spawn may have it.
        let stack = std::mem::take(&mut self.stack);
        let mut spare = SPARE_STACKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spare.len() < SPARE_STACKS_MAX {
            spare.push(stack);
        }
    }
}

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

/// A copy of this process's environment (`environ`), for a child that may
/// read it after the parent has moved on (and perhaps changed it).
fn copy_environ() -> Vec<CString> {
    let mut out = Vec::new();
    // SAFETY: `environ` is a null-terminated array of C strings; the caller
    // holds the GIL, which os.environ's writers (putenv) also hold.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            out.push(std::ffi::CStr::from_ptr(*p).to_owned());
            p = p.add(1);
        }
    }
    out
}

impl Launch {
    /// Lay out `plan` for the child. `own_env`: copy the environment rather
    /// than point the child at the parent's live one.
    fn new(mut plan: Plan, own_env: bool) -> Self {
        if plan.env.is_none() && own_env {
            plan.env = Some(copy_environ());
        }
        let argv = null_terminated(&plan.argv);
        let executables = null_terminated(&plan.executables);
        let envp = plan.env.as_deref().map(null_terminated).unwrap_or_default();
        let stack = take_stack();
        // SAFETY: an all-zero sigset_t is a valid (empty) set, filled by the spawn.
        let mask: Box<libc::sigset_t> = Box::new(unsafe { std::mem::zeroed() });
        let groups = plan.groups.as_deref().unwrap_or(&[]);
        let mut report = Box::new(Report {
            len: 0,
            buf: [0; REPORT_SIZE],
        });
        let child = Box::new(ChildArgs {
            argv: argv.as_ptr(),
            envp: if plan.env.is_some() {
                envp.as_ptr()
            } else {
                // SAFETY: reading libc's `environ` pointer, as execv(3)
                // would; the child reads it while the parent waits (vfork).
                unsafe { environ }
            },
            executables: executables.as_ptr(),
            cwd: plan.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            keep: plan.keep.as_ptr(),
            keep_len: plan.keep.len(),
            groups: groups.as_ptr(),
            groups_len: groups.len(),
            set_groups: plan.groups.is_some(),
            fds: plan.fds,
            close_first: plan.close_first,
            close_fds: plan.close_fds,
            chdir_marker: plan.chdir_marker,
            restore_signals: plan.restore_signals,
            setsid: plan.setsid,
            pgid: plan.pgid,
            gid: plan.gid.map_or(-1, i64::from),
            uid: plan.uid.map_or(-1, i64::from),
            umask: plan.umask,
            mask: &raw const *mask,
            // Set for each clone attempt (clone_once).
            parent: 0,
            no_new_privs: plan.no_new_privs,
            report: &raw mut *report,
        });
        Self {
            plan,
            _argv: argv,
            _envp: envp,
            _executables: executables,
            stack,
            mask,
            report,
            args: child,
        }
    }

    /// What the child reported in memory (no error pipe: see [`spawn`]):
    /// empty when it exec'd. Read once the child has exec'd or exited.
    pub fn report(&self) -> &[u8] {
        let report: *const Report = &raw const *self.report;
        // SAFETY: the Report lives in this Launch; the child that wrote it
        // (CLONE_VM) has exec'd or exited (CLONE_VFORK), so nothing writes
        // it now. Volatile, as the compiler cannot see the child's stores.
        let len = unsafe { std::ptr::read_volatile(&raw const (*report).len) };
        self.report.buf.get(..len).unwrap_or(&[])
    }
}

/// A started child: its pid, its pidfd (from the clone), the memory it
/// reads until exec, and whether the kernel reaps it itself
/// (`CLONE_AUTOREAP`, with `CLONE_PIDFD_AUTOKILL`: its status is then read
/// through the pidfd, and closing the last reference to that pidfd's file
/// kills it).
pub struct Spawned {
    /// The child's pid.
    pub pid: libc::pid_t,
    /// Its pidfd, the one from the clone.
    pub pidfd: OwnedFd,
    /// What it reads until exec.
    pub launch: Launch,
    /// Whether it was cloned with `CLONE_AUTOREAP | CLONE_PIDFD_AUTOKILL`.
    pub autokill: bool,
}

/// Start `plan`'s child; returns its pid, its pidfd and the memory it uses.
///
/// With `die_with_parent`, asks for `CLONE_PIDFD_AUTOKILL` first (Linux 7.1;
/// unprivileged only with `no_new_privs`, which then comes from the clone
/// too), and where that is refused falls back to the child's
/// `PR_SET_PDEATHSIG`, remembering the refusal.
///
/// With `wait_exec` the call returns once the child has exec'd or exited
/// (`CLONE_VFORK`) and the [`Launch`] may be dropped at once; without it the
/// caller must keep the [`Launch`] until the child's end of the error pipe
/// has closed. Blocks every signal in the calling thread across the clone.
pub fn spawn(plan: Plan, wait_exec: bool) -> Result<Spawned, SpawnError> {
    let refused = || SpawnError::Unsupported(io::Error::from_raw_os_error(libc::ENOSYS));
    if UNSUPPORTED.load(Ordering::Relaxed) || (plan.close_fds && !close_range_works()) {
        return Err(refused());
    }
    // Credentials change: the child gets its own copy of memory (as CPython
    // forks rather than vforks then), never a shared one.
    let creds = plan.gid.is_some() || plan.uid.is_some() || plan.groups.is_some();
    if plan.fds[ERRPIPE_WRITE] < 0 && (creds || !wait_exec) {
        // The report in memory needs the child in our memory, and us
        // asleep until it has exec'd: CLONE_VM and CLONE_VFORK.
        return Err(SpawnError::Os(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a spawn without an error pipe must wait for the exec and keep its credentials",
        )));
    }
    let mut flags = CLONE_PIDFD;
    if !creds {
        flags |= CLONE_VM;
    }
    if wait_exec {
        flags |= CLONE_VFORK;
    }
    let into_cgroup = plan.cgroup >= 0;
    if into_cgroup {
        flags |= CLONE_INTO_CGROUP;
    }
    let cgroup = u64::try_from(plan.cgroup).unwrap_or(0);
    let nnp = plan.no_new_privs;
    let mut autokill = plan.die_with_parent
        && !NO_AUTOKILL.load(Ordering::Relaxed)
        && (nnp || !NO_AUTOKILL_WITHOUT_NNP.load(Ordering::Relaxed));
    let mut launch = Launch::new(plan, !wait_exec);
    loop {
        match clone_once(&mut launch, flags, cgroup, autokill, nnp) {
            // Before 7.1 (EINVAL), or unprivileged without NNP (EPERM): the
            // child's PR_SET_PDEATHSIG instead, from the next clone on.
            Err(e @ (libc::EINVAL | libc::EPERM)) if autokill => {
                if e == libc::EINVAL {
                    NO_AUTOKILL.store(true, Ordering::Relaxed);
                } else if !nnp {
                    NO_AUTOKILL_WITHOUT_NNP.store(true, Ordering::Relaxed);
                } else {
                    NO_AUTOKILL.store(true, Ordering::Relaxed);
                }
                autokill = false;
            }
            Ok((pid, fd)) => {
                return Ok(Spawned {
                    pid,
                    pidfd: fd,
                    launch,
                    autokill,
                });
            }
            Err(e) => return Err(refusal(e, into_cgroup)),
        }
    }
}

/// One `clone3` of `launch`: the child's pid and pidfd, or the errno.
fn clone_once(
    launch: &mut Launch,
    mut flags: u64,
    cgroup: u64,
    autokill: bool,
    nnp: bool,
) -> Result<(libc::pid_t, OwnedFd), i32> {
    let mut exit_signal = libc::SIGCHLD as u64;
    if autokill {
        // AUTOREAP: no exit signal, no zombie. The kernel kills the child;
        // it sets no parent-death signal of its own.
        flags |= CLONE_AUTOREAP | CLONE_PIDFD_AUTOKILL;
        if nnp {
            flags |= CLONE_NNP;
        }
        exit_signal = 0;
    }
    // The child's PR_SET_PDEATHSIG and getppid() check, where the kernel
    // does not kill it: they need the spawning process's pid.
    launch.args.parent = if launch.plan.die_with_parent && !autokill {
        // SAFETY: getpid(2) cannot fail.
        unsafe { libc::getpid() }
    } else {
        0
    };
    let mut pidfd: libc::c_int = -1;
    let base = launch.stack.as_mut_ptr() as usize;
    let top = (base + STACK_SIZE) & !15;
    let mut clone_args = CloneArgs {
        flags,
        pidfd: &raw mut pidfd as u64,
        exit_signal,
        stack: base as u64,
        stack_size: (top - base) as u64,
        cgroup,
        ..CloneArgs::default()
    };
    let child_args: *const ChildArgs = &raw const *launch.args;
    let mask: *mut libc::sigset_t = &raw mut *launch.mask;
    // SAFETY: sigfillset/pthread_sigmask on valid sets; the old mask goes
    // into the launch, which the child restores before exec. clone3: the
    // args and stack are valid and live in the launch (returned to the
    // caller, who keeps it while the child may run); child_main only reads
    // ChildArgs and makes raw system calls.
    let ret = unsafe {
        let mut all = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), mask);
        let ret = raw::clone3_call(
            (&raw mut clone_args).cast(),
            std::mem::size_of::<CloneArgs>(),
            child_main,
            child_args.cast(),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        ret
    };
    // SAFETY: on success CLONE_PIDFD wrote a new close-on-exec fd we own.
    ret.map(|pid| (pid as libc::pid_t, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// What a failed clone means for this spawn and the next ones.
fn refusal(e: i32, into_cgroup: bool) -> SpawnError {
    match e {
        libc::EAGAIN | libc::ENOMEM => SpawnError::Os(io::Error::from_raw_os_error(e)),
        // A kernel before 5.7 does not know CLONE_INTO_CGROUP: only spawns
        // into a cgroup go the other way.
        libc::EINVAL | libc::E2BIG if into_cgroup => {
            SpawnError::Unsupported(io::Error::from_raw_os_error(e))
        }
        // The cgroup itself refused (EBUSY: not a leaf, ENODEV: removed,
        // EACCES, EBADF: not cgroup v2, EOPNOTSUPP: threaded): this spawn
        // fails, others do not.
        _ if into_cgroup && e != libc::ENOSYS && e != libc::EPERM => {
            SpawnError::Os(io::Error::from_raw_os_error(e))
        }
        _ => {
            // ENOSYS (before 5.3, or a seccomp filter), EPERM (a filter),
            // E2BIG/EINVAL (a kernel that refuses these arguments): the same
            // answer next time, so stop asking.
            UNSUPPORTED.store(true, Ordering::Relaxed);
            SpawnError::Unsupported(io::Error::from_raw_os_error(e))
        }
    }
}
