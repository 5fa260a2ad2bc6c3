//! `ProcessInfo`: what `PIDFD_GET_INFO` reported about a process.

use pyo3::prelude::*;

use crate::results::ExitStatus;
use crate::status::Exit;
use crate::sys::{self, PidfdInfo};

/// What `PIDFD_GET_INFO` reported. Fields the kernel did not report are
/// `None`: once a process has been reaped only `cgroupid` and `exit_status`
/// remain.
#[pyclass(module = "pidfd._native", frozen, get_all)]
pub struct ProcessInfo {
    /// The pid the handle refers to.
    pub(crate) pid: i32,
    /// Thread-group id: the process id (differs from `pid` for a thread).
    pub(crate) tgid: Option<u32>,
    /// The parent's pid.
    pub(crate) ppid: Option<u32>,
    /// Real uid.
    pub(crate) ruid: Option<u32>,
    /// Effective uid.
    pub(crate) euid: Option<u32>,
    /// Saved set-user-id.
    pub(crate) suid: Option<u32>,
    /// Filesystem uid.
    pub(crate) fsuid: Option<u32>,
    /// Real gid.
    pub(crate) rgid: Option<u32>,
    /// Effective gid.
    pub(crate) egid: Option<u32>,
    /// Saved set-group-id.
    pub(crate) sgid: Option<u32>,
    /// Filesystem gid.
    pub(crate) fsgid: Option<u32>,
    /// cgroup v2 id.
    pub(crate) cgroupid: Option<u64>,
    /// How it ended, once it has exited and the kernel can tell.
    pub(crate) exit_status: Option<Py<ExitStatus>>,
    /// `PIDFD_COREDUMP*` bits (Linux ≥ 6.16): for a live process the rights a
    /// dump would be taken with, after a crash what became of the dump.
    pub(crate) coredump_mask: Option<u32>,
    /// The signal that made the process dump core, 0 if it did not (kernels
    /// after 6.18).
    pub(crate) coredump_signal: Option<u32>,
    /// That signal's `si_code` (kernels after 6.18).
    pub(crate) coredump_code: Option<u32>,
    /// The `PIDFD_INFO_*` bits this kernel knows (kernels after 6.18).
    pub(crate) supported_mask: Option<u64>,
}

impl ProcessInfo {
    /// The `PIDFD_INFO_*` bits `PidFd.info()` asks for. A kernel ignores the
    /// bits it does not know: each field is filled only when the kernel sets
    /// its bit in the answer.
    pub(crate) const REQUEST: u64 = sys::PIDFD_INFO_PID
        | sys::PIDFD_INFO_CREDS
        | sys::PIDFD_INFO_CGROUPID
        | sys::PIDFD_INFO_EXIT
        | sys::PIDFD_INFO_COREDUMP
        | sys::PIDFD_INFO_COREDUMP_SIGNAL
        | sys::PIDFD_INFO_COREDUMP_CODE
        | sys::PIDFD_INFO_SUPPORTED_MASK;

    /// The kernel's answer for `pid`, a field wherever its bit is set.
    /// `peeked` is the exit status learned another way (a zombie child's,
    /// with `WNOWAIT`), used where the answer carries none.
    pub(crate) fn new(
        py: Python<'_>,
        pid: i32,
        info: &PidfdInfo,
        peeked: Option<Exit>,
    ) -> PyResult<Self> {
        let has = |bit| info.mask & bit != 0;
        let exit = if has(sys::PIDFD_INFO_EXIT) {
            Some(Exit(info.exit_code))
        } else {
            peeked
        };
        let ids = has(sys::PIDFD_INFO_PID);
        let creds = has(sys::PIDFD_INFO_CREDS);
        let opt = |present: bool, v: u32| present.then_some(v);
        Ok(Self {
            pid,
            tgid: opt(ids, info.tgid),
            ppid: opt(ids, info.ppid),
            ruid: opt(creds, info.ruid),
            euid: opt(creds, info.euid),
            suid: opt(creds, info.suid),
            fsuid: opt(creds, info.fsuid),
            rgid: opt(creds, info.rgid),
            egid: opt(creds, info.egid),
            sgid: opt(creds, info.sgid),
            fsgid: opt(creds, info.fsgid),
            cgroupid: has(sys::PIDFD_INFO_CGROUPID).then_some(info.cgroupid),
            exit_status: exit.map(|e| Py::new(py, ExitStatus(e))).transpose()?,
            coredump_mask: has(sys::PIDFD_INFO_COREDUMP).then_some(info.coredump_mask),
            coredump_signal: has(sys::PIDFD_INFO_COREDUMP_SIGNAL).then_some(info.coredump_signal),
            coredump_code: has(sys::PIDFD_INFO_COREDUMP_CODE).then_some(info.coredump_code),
            supported_mask: has(sys::PIDFD_INFO_SUPPORTED_MASK).then_some(info.supported_mask),
        })
    }
}

#[pymethods]
impl ProcessInfo {
    fn __repr__(&self, py: Python<'_>) -> String {
        let opt = |v: Option<u32>| v.map_or_else(|| "None".to_owned(), |v| v.to_string());
        let hex = |v: Option<u64>| v.map_or_else(|| "None".to_owned(), |v| format!("{v:#x}"));
        let exit = self
            .exit_status
            .as_ref()
            .map_or_else(|| "None".to_owned(), |e| e.get().__repr__());
        let _ = py;
        format!(
            "ProcessInfo(pid={}, tgid={}, ppid={}, ruid={}, euid={}, rgid={}, egid={}, cgroupid={}, exit_status={exit}, \
             coredump_mask={}, coredump_signal={}, coredump_code={}, supported_mask={})",
            self.pid,
            opt(self.tgid),
            opt(self.ppid),
            opt(self.ruid),
            opt(self.euid),
            opt(self.rgid),
            opt(self.egid),
            self.cgroupid
                .map_or_else(|| "None".to_owned(), |v| v.to_string()),
            hex(self.coredump_mask.map(u64::from)),
            opt(self.coredump_signal),
            opt(self.coredump_code),
            hex(self.supported_mask),
        )
    }
}
