//! Pure decoding of how a process ended: `siginfo_t` → `wait(2)` status word
//! → exit code, signal, core dump. No system calls, no Python.

/// `si_code` values of `SIGCHLD` siginfo, from `<bits/siginfo-consts.h>`.
pub const CLD_EXITED: i32 = 1;
/// Killed by a signal.
pub const CLD_KILLED: i32 = 2;
/// Killed by a signal and dumped core.
pub const CLD_DUMPED: i32 = 3;

/// The core-dump bit of the `wait(2)` status word (`WCOREFLAG`).
pub const CORE_FLAG: i32 = 0x80;

/// Why a `(si_code, si_status)` pair is not the exit of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// `si_code` is not `CLD_EXITED`, `CLD_KILLED` or `CLD_DUMPED`
    /// (a stop or continue notification, or not `SIGCHLD` at all).
    NotAnExit(i32),
    /// An exit code outside 0..=255.
    BadExitCode(i32),
    /// A signal number outside 1..=127, which the status word cannot hold.
    BadSignal(i32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::NotAnExit(code) => write!(
                f,
                "si_code {code} is not an exit (expected CLD_EXITED=1, CLD_KILLED=2 or CLD_DUMPED=3)"
            ),
            Self::BadExitCode(status) => {
                write!(f, "exit code {status} is outside 0..255")
            }
            Self::BadSignal(status) => {
                write!(f, "signal number {status} is outside 1..127")
            }
        }
    }
}

/// The `wait(2)` status word for an exited process's `si_code` and
/// `si_status`, as the kernel itself builds it for `wait4(2)`:
/// `code << 8` for a normal exit, the signal number for a kill, plus
/// [`CORE_FLAG`] when a core was dumped.
pub fn waitstatus_from_siginfo(si_code: i32, si_status: i32) -> Result<i32, DecodeError> {
    match si_code {
        CLD_EXITED if (0..=255).contains(&si_status) => Ok(si_status << 8),
        CLD_EXITED => Err(DecodeError::BadExitCode(si_status)),
        CLD_KILLED | CLD_DUMPED if (1..=127).contains(&si_status) => Ok(if si_code == CLD_DUMPED {
            si_status | CORE_FLAG
        } else {
            si_status
        }),
        CLD_KILLED | CLD_DUMPED => Err(DecodeError::BadSignal(si_status)),
        other => Err(DecodeError::NotAnExit(other)),
    }
}

/// A decoded exit: the status word and the views of it users ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exit(pub i32);

impl Exit {
    /// The raw `wait(2)` status word.
    pub fn waitstatus(self) -> i32 {
        self.0
    }

    /// Exit code if the process called `exit` (`WIFEXITED`).
    pub fn code(self) -> Option<i32> {
        (self.0 & 0x7f == 0).then_some((self.0 >> 8) & 0xff)
    }

    /// The signal that killed it (`WIFSIGNALED`).
    pub fn signal(self) -> Option<i32> {
        let sig = self.0 & 0x7f;
        // 0 is a normal exit and 0x7f marks a stopped process; neither is a kill.
        (sig != 0 && sig != 0x7f).then_some(sig)
    }

    /// Whether a core was dumped (`WCOREDUMP`).
    pub fn core_dumped(self) -> bool {
        self.signal().is_some() && self.0 & CORE_FLAG != 0
    }

    /// `(si_code, si_status)` as `waitid` reports this exit: the inverse of
    /// [`waitstatus_from_siginfo`], for a child no `waitid` reaped
    /// (`CLONE_AUTOREAP`). `None` for a word that is no exit.
    pub fn siginfo(self) -> Option<(i32, i32)> {
        match (self.code(), self.signal()) {
            (Some(code), _) => Some((CLD_EXITED, code)),
            (None, Some(sig)) if self.core_dumped() => Some((CLD_DUMPED, sig)),
            (None, Some(sig)) => Some((CLD_KILLED, sig)),
            (None, None) => None,
        }
    }

    /// `subprocess` convention: the exit code, or minus the signal number.
    pub fn returncode(self) -> i32 {
        match (self.code(), self.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => -sig,
            (None, None) => self.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_view(ws: i32) -> (bool, i32, bool, i32, bool) {
        (
            libc::WIFEXITED(ws),
            libc::WEXITSTATUS(ws),
            libc::WIFSIGNALED(ws),
            libc::WTERMSIG(ws),
            libc::WCOREDUMP(ws),
        )
    }

    #[test]
    fn every_exit_code_agrees_with_libc() {
        for code in 0..=255 {
            let ws = waitstatus_from_siginfo(CLD_EXITED, code).unwrap();
            let exit = Exit(ws);
            assert_eq!(
                libc_view(ws),
                (true, code, false, libc::WTERMSIG(ws), false)
            );
            assert_eq!(exit.code(), Some(code));
            assert_eq!(exit.signal(), None);
            assert!(!exit.core_dumped());
            assert_eq!(exit.returncode(), code);
        }
    }

    #[test]
    fn every_signal_agrees_with_libc() {
        for sig in 1..=libc::SIGRTMAX() {
            for (si_code, dumped) in [(CLD_KILLED, false), (CLD_DUMPED, true)] {
                let ws = waitstatus_from_siginfo(si_code, sig).unwrap();
                let exit = Exit(ws);
                let (exited, _, signaled, termsig, core) = libc_view(ws);
                assert!(!exited && signaled, "sig {sig}");
                assert_eq!(termsig, sig);
                assert_eq!(core, dumped);
                assert_eq!(exit.code(), None);
                assert_eq!(exit.signal(), Some(sig));
                assert_eq!(exit.core_dumped(), dumped);
                assert_eq!(exit.returncode(), -sig);
            }
        }
    }

    #[test]
    fn rejects_what_is_not_an_exit() {
        // CLD_TRAPPED, CLD_STOPPED, CLD_CONTINUED and nonsense.
        for code in [0, 4, 5, 6, -1, i32::MAX] {
            assert_eq!(
                waitstatus_from_siginfo(code, 0),
                Err(DecodeError::NotAnExit(code))
            );
        }
        assert_eq!(
            waitstatus_from_siginfo(CLD_EXITED, 256),
            Err(DecodeError::BadExitCode(256))
        );
        assert_eq!(
            waitstatus_from_siginfo(CLD_EXITED, -1),
            Err(DecodeError::BadExitCode(-1))
        );
        for sig in [0, 128, -9] {
            assert_eq!(
                waitstatus_from_siginfo(CLD_KILLED, sig),
                Err(DecodeError::BadSignal(sig))
            );
        }
    }

    /// Every word the kernel's exit path can produce: exit codes shifted,
    /// signals with and without the core bit.
    fn kernel_words() -> impl Iterator<Item = i32> {
        (0..=255)
            .map(|c| c << 8)
            .chain(1..=0x7e)
            .chain((1..=0x7e).map(|s| s | 0x80))
    }

    #[test]
    fn siginfo_is_the_inverse_of_waitstatus_from_siginfo() {
        for ws in kernel_words() {
            let (si_code, si_status) = Exit(ws).siginfo().unwrap();
            assert_eq!(
                waitstatus_from_siginfo(si_code, si_status),
                Ok(ws),
                "{ws:#x}"
            );
        }
        // A stopped process's word is no exit.
        assert_eq!(Exit(0x137f).siginfo(), None);
    }

    #[test]
    fn status_words_from_the_kernel_decode_like_libc() {
        for ws in kernel_words() {
            let exit = Exit(ws);
            let (exited, status, signaled, termsig, core) = libc_view(ws);
            assert_eq!(exit.code(), exited.then_some(status));
            assert_eq!(exit.signal(), signaled.then_some(termsig));
            assert_eq!(exit.core_dumped(), core);
        }
    }
}
