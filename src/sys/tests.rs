//! The wrappers against real children.

// The children are reaped through their pidfds, which clippy cannot see.
#![allow(clippy::zombie_processes)]

use super::*;
use crate::status::{self, Exit};
use std::os::fd::AsFd;
use std::process::Command;

fn reap(cmd: &mut Command) -> (ChildInfo, libc::rusage) {
    let child = cmd.spawn().expect("spawn");
    let fd = pidfd_open(child.id() as libc::pid_t, 0).expect("pidfd_open");
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    assert_eq!(
        poll(&mut fds, Some(Duration::from_secs(30))).expect("poll"),
        1
    );
    waitid_pidfd(fd.as_fd(), libc::WNOHANG)
        .expect("waitid")
        .expect("exited")
}

fn exit_of(child: ChildInfo) -> Exit {
    Exit(status::waitstatus_from_siginfo(child.code, child.status).expect("an exit"))
}

#[test]
fn true_false_and_kill_dash_nine() {
    let (child, _) = reap(&mut Command::new("/bin/true"));
    assert_eq!(
        (exit_of(child).code(), exit_of(child).signal()),
        (Some(0), None)
    );
    let (child, _) = reap(&mut Command::new("/bin/false"));
    assert_eq!(exit_of(child).code(), Some(1));
    let (child, _) = reap(Command::new("/bin/sh").args(["-c", "kill -9 $$"]));
    assert_eq!(
        (exit_of(child).code(), exit_of(child).signal()),
        (None, Some(9))
    );
    assert_eq!(child.code, status::CLD_KILLED);
    assert_eq!(child.signo, libc::SIGCHLD);
}

#[test]
fn rusage_is_filled() {
    let (_, rusage) = reap(
        Command::new("/bin/sh").args(["-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done"]),
    );
    assert!(rusage.ru_maxrss > 0);
    assert!(rusage.ru_minflt > 0);
}

#[test]
fn second_wait_is_echild_and_poll_reports_exit() {
    let child = Command::new("/bin/true").spawn().expect("spawn");
    let fd = pidfd_open(child.id() as libc::pid_t, 0).expect("pidfd_open");
    while waitid_pidfd(fd.as_fd(), libc::WNOHANG)
        .expect("waitid")
        .is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = waitid_pidfd(fd.as_fd(), libc::WNOHANG).expect_err("already reaped");
    assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    assert_eq!(poll(&mut fds, Some(Duration::ZERO)).expect("poll"), 1);
}

#[test]
fn signal_reaches_only_the_handle_process() {
    let child = Command::new("/bin/sleep").arg("30").spawn().expect("spawn");
    let fd = pidfd_open(child.id() as libc::pid_t, 0).expect("pidfd_open");
    pidfd_send_signal(fd.as_fd(), libc::SIGKILL, 0).expect("signal");
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    poll(&mut fds, Some(Duration::from_secs(30))).expect("poll");
    let (info, _) = waitid_pidfd(fd.as_fd(), libc::WNOHANG)
        .expect("waitid")
        .expect("exited");
    assert_eq!(exit_of(info).signal(), Some(libc::SIGKILL));
    let err = pidfd_send_signal(fd.as_fd(), libc::SIGKILL, 0).expect_err("gone");
    assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
}

#[test]
fn pidfd_open_rejects_missing_pid_and_is_cloexec() {
    let err = pidfd_open(libc::pid_t::MAX, 0).expect_err("no such pid");
    assert!(matches!(
        err.raw_os_error(),
        Some(libc::ESRCH | libc::EINVAL)
    ));
    let fd = pidfd_open(getpid(), 0).expect("self");
    // close-on-exec shows in the fdinfo flags (octal).
    assert_eq!(
        crate::procfs::fdinfo_pid(fd.as_raw_fd()).expect("fdinfo"),
        Some(getpid())
    );
    let flags =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).expect("fdinfo");
    let flags = flags
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("flags line");
    let flags = i64::from_str_radix(flags.trim(), 8).expect("octal");
    assert_ne!(flags & i64::from(libc::O_CLOEXEC), 0);
}

#[test]
fn child_subreaper_round_trip() {
    let before = child_subreaper().expect("get");
    set_child_subreaper(true).expect("set");
    assert!(child_subreaper().expect("get"));
    set_child_subreaper(before).expect("restore");
    assert_eq!(child_subreaper().expect("get"), before);
}

#[test]
fn group_signal_reaches_the_group_a_child_leads() {
    // `sh` leads a new group (setsid) and starts a member, then both wait.
    let mut leader = Command::new("/bin/sh");
    leader.args(["-c", "sleep 30 & wait"]);
    std::os::unix::process::CommandExt::process_group(&mut leader, 0);
    let child = leader.spawn().expect("spawn");
    let fd = pidfd_open(child.id() as libc::pid_t, 0).expect("pidfd_open");
    match pidfd_send_signal(fd.as_fd(), libc::SIGKILL, PIDFD_SIGNAL_PROCESS_GROUP) {
        // A kernel older than 6.9: nothing was sent; clean up alone.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            pidfd_send_signal(fd.as_fd(), libc::SIGKILL, 0).expect("signal");
        }
        other => other.expect("group signal"),
    }
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    poll(&mut fds, Some(Duration::from_secs(30))).expect("poll");
    waitid_pidfd(fd.as_fd(), 0)
        .expect("waitid")
        .expect("exited");
}
