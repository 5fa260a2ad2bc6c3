//! System calls made directly, for the child side of a spawn.
//!
//! Between `clone3` and `execve` the child shares the parent's memory
//! (`CLONE_VM`), including the parent thread's `errno`: libc's `syscall()`
//! would write the child's failures into it, and while the parent runs on
//! (a spawn without `CLONE_VFORK`) that is a data race on the parent's own
//! errno. These wrappers trap into the kernel with no libc in between and
//! hand back the kernel's `-errno` as a value, touching no memory but their
//! arguments. `rustix` has such calls too, but not a `clone3` that starts the
//! child on a stack of its own, which is the one call that cannot be written
//! without assembly; the rest are a dozen lines here, with nothing to audit
//! for allocation or locks.

use std::arch::asm;
use std::ffi::c_void;

/// A raw syscall's result: the value, or the positive errno.
pub type Ret = Result<usize, i32>;

#[inline]
fn decode(ret: isize) -> Ret {
    // The kernel returns -4095..-1 for an error, anything else is a value.
    if (-4095..0).contains(&ret) {
        Err(-ret as i32)
    } else {
        Ok(ret as usize)
    }
}

/// `syscall(nr, a, b, c, d)` with no errno: [`syscall5`] with a zero fifth
/// argument, which a four-argument system call never reads.
///
/// # Safety
/// As the system call itself: pointer arguments must be valid for it.
#[inline]
pub unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> Ret {
    // SAFETY: the caller's promise for the system call, passed on.
    unsafe { syscall5(nr, a, b, c, d, 0) }
}

/// `syscall(nr, a, b, c, d, e)` with no errno (`prctl` reads all five).
///
/// # Safety
/// As the system call itself: pointer arguments must be valid for it.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(clippy::many_single_char_names)]
pub unsafe fn syscall5(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize, e: usize) -> Ret {
    let ret: isize;
    // SAFETY: the Linux x86-64 syscall convention: number and result in
    // rax, arguments in rdi, rsi, rdx, r10, r8; the kernel clobbers rcx
    // and r11. The caller vouches for the arguments.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            in("r8") e,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags),
        );
    }
    decode(ret)
}

/// `syscall(nr, a, b, c, d, e)` with no errno (`prctl` reads all five).
///
/// # Safety
/// As the system call itself: pointer arguments must be valid for it.
#[cfg(target_arch = "aarch64")]
#[inline]
#[allow(clippy::many_single_char_names)]
pub unsafe fn syscall5(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize, e: usize) -> Ret {
    let ret: isize;
    // SAFETY: the Linux arm64 syscall convention: number in x8, arguments
    // and result in x0..x4. The caller vouches for the arguments.
    unsafe {
        asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a as isize => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            in("x4") e,
            options(nostack, preserves_flags),
        );
    }
    decode(ret)
}

/// `clone3(args, size)`, running `child(arg)` in the child on the stack that
/// `args` names; returns the child's pid (or the errno) in the parent only.
///
/// The child cannot return from the system call as the parent does: it
/// starts on a fresh stack with no frame to return into, so it calls `child`
/// from here, which must never return.
///
/// # Safety
/// `args` must be a valid `struct clone_args` of `size` bytes whose stack
/// (required, 16-byte aligned) stays allocated until the child has exec'd or
/// exited; `child` must be async-signal-safe and use nothing of the parent's
/// but what `arg` points to, which must also outlive the child's use.
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone3_call(
    args: *mut u8,
    size: usize,
    child: unsafe extern "C" fn(*const c_void) -> !,
    arg: *const c_void,
) -> Ret {
    let ret: isize;
    // SAFETY: in the parent only rax, rcx and r11 change (declared). The
    // child resumes after `syscall` with rsp at the top of its own stack
    // (aligned, so the call gives `child` the ABI's alignment) and the same
    // registers, and calls `child` from r12 with `arg` from r13; `child`
    // never returns (ud2 traps if it did).
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args,
            in("rsi") size,
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    decode(ret)
}

/// `clone3(args, size)`, running `child(arg)` in the child; see the x86-64
/// version.
///
/// # Safety
/// As the x86-64 version.
#[cfg(target_arch = "aarch64")]
pub unsafe fn clone3_call(
    args: *mut u8,
    size: usize,
    child: unsafe extern "C" fn(*const c_void) -> !,
    arg: *const c_void,
) -> Ret {
    let ret: isize;
    // SAFETY: in the parent only x0 changes (declared). The child resumes
    // after `svc` with sp at the top of its own (aligned) stack and the same
    // registers, and branches to `child` from x20 with `arg` from x21;
    // `child` never returns (brk traps if it did).
    unsafe {
        asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x21",
            "blr x20",
            "brk #1",
            "2:",
            in("x8") libc::SYS_clone3,
            inlateout("x0") args as isize => ret,
            in("x1") size,
            in("x20") child,
            in("x21") arg,
            lateout("x30") _,
        );
    }
    decode(ret)
}
