//! What the running kernel is and knows, asked once.

use std::sync::OnceLock;

use crate::{procfs, sys};

/// `(major, minor)` of the running kernel, read once.
pub(crate) fn kernel_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let release = procfs::kernel_release();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok());
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    })
}

/// Whether the kernel knows `PIDFD_THREAD` (Linux ≥ 6.9), asked by opening
/// the calling thread with it: a thread that is certainly alive, so `EINVAL`
/// can only mean an unknown flag.
pub(crate) fn kernel_has_pidfd_thread() -> bool {
    !matches!(
        sys::pidfd_open(sys::gettid(), sys::PIDFD_THREAD),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL)
    )
}

/// Whether a pidfd ioctl failed because the kernel does not know it: before
/// 6.11 a pidfd has no ioctls at all (`ENOTTY`, measured on 5.10 and 6.1);
/// 6.12 has some and answers an unknown request with `EINVAL` (measured on
/// Debian's 6.12; 6.11, which added the first ones, presumably too).
pub(crate) fn no_such_ioctl(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL))
}
