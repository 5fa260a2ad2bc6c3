//! `_native._spawn_plain`: the argument work of CPython's `_execute_child`
//! (POSIX) for `pidfd._spawn.execute_plain`, then the native spawn without
//! an error pipe.
//!
//! Step for step what the stock method does between its arguments and
//! `_posixsubprocess.fork_exec`, in its order and with its exceptions:
//! the argument forms (str, bytes, path-like, any iterable), the shell
//! prefix, `sys.audit("subprocess.Popen", ...)`, the environment's
//! `name=value` list, the `PATH` search of `os._execvpe` and the sorted
//! `pass_fds`. Written in Rust, not Python, because it runs once per
//! spawn: in Python it was a measurable share of a spawn's parent CPU (W5
//! in `benchmarks/`). Everything a user may replace (`os.get_exec_path`,
//! `os.fsencode` for path-like objects) is looked up at each call.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::spawn::{Started, c_string, fs_bytes, fs_c_string, start};
use crate::sys::spawn::Plan;

/// `module.name`, looked up once: for what nobody replaces (`sys.audit`,
/// `os.PathLike`).
fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

/// The stock method's `args`: a new list, with the shell in front.
fn argv<'py>(
    cmd: &Bound<'py, PyAny>,
    shell: Option<&Bound<'py, PyAny>>,
    executable: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    static PATH_LIKE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = cmd.py();
    let list = if cmd.is_instance_of::<PyString>() || cmd.is_instance_of::<PyBytes>() {
        PyList::new(py, [cmd])?
    } else if cmd.is_instance(cached(py, &PATH_LIKE, "os", "PathLike")?)? {
        if shell.is_some() {
            return Err(PyTypeError::new_err(
                "path-like args is not allowed when shell is true",
            ));
        }
        PyList::new(py, [cmd])?
    } else {
        py.get_type::<PyList>()
            .call1((cmd,))?
            .cast_into::<PyList>()?
    };
    if let Some(shell) = shell {
        list.insert(0, "-c")?;
        list.insert(0, shell)?;
        if executable.is_truthy()? {
            list.set_item(0, executable)?;
        }
    }
    Ok(list)
}

/// The stock method's `env_list`: `name=value` entries, a name with `=`
/// refused.
fn env_list(env: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in env.call_method0(intern!(env.py(), "items"))?.try_iter()? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        let mut entry = fs_bytes(&name)?;
        if entry.contains(&b'=') {
            return Err(PyValueError::new_err("illegal environment variable name"));
        }
        entry.push(b'=');
        entry.extend(fs_bytes(&value)?);
        out.push(entry);
    }
    Ok(out)
}

/// The programs to try, in order: `path` itself if it names a directory
/// (has a `/`), else `path` in each `os.get_exec_path(env)` directory,
/// joined as `os.path.join` joins bytes.
fn executables(path: Vec<u8>, env: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    if path.contains(&b'/') {
        return Ok(vec![path]);
    }
    let py = env.py();
    let dirs = py
        .import(intern!(py, "os"))?
        .call_method1(intern!(py, "get_exec_path"), (env,))?;
    let mut out = Vec::new();
    for dir in dirs.try_iter()? {
        let mut joined = fs_bytes(&dir?)?;
        if !joined.is_empty() && !joined.ends_with(b"/") {
            joined.push(b'/');
        }
        joined.extend_from_slice(&path);
        out.push(joined);
    }
    Ok(out)
}

/// `(pid, handle, report, program)`: see [`_spawn_plain`].
type PlainStarted<'py> = (i32, Bound<'py, PyAny>, Option<Py<PyAny>>, Bound<'py, PyAny>);

/// `_execute_child`'s argument work, then the spawn (CLONE_VM |
/// CLONE_VFORK, the child's failure reported in our memory; see
/// `wait_exec` below). `shell`: the
/// shell's path when `shell=True`, else `None`. `keep_fds`: turns
/// `pass_fds` into the sorted list the spawn keeps (`pidfd._spawn`'s
/// `fds_to_keep`), called only when it is not empty.
///
/// Returns `(pid, handle, report, program)`: `report` is `None` when the
/// child exec'd, else CPython's error-pipe bytes (the child has exited,
/// unreaped); `program` is the executable as given, for the exception.
/// Without `wait_exec`, returns once the child exists (`CLONE_VM` on a
/// stack of its own, no `CLONE_VFORK`), `report` being its
/// [`ExecStatus`](crate::spawn::ExecStatus), as `_spawn` returns it.
/// `None` where `clone3` is refused (nothing started): at once where that
/// is known beforehand (no `clone3`, or no `close_range` for `close_fds`), else after the audit event.
#[pyfunction]
#[pyo3(signature = (cmd, executable, shell, cwd, env, close_fds, pass_fds, keep_fds, std_fds, restore_signals, setsid, pgid, umask, chdir_marker, wait_exec = true))]
// The flat signature mirrors the stock method's own arguments.
#[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
pub fn _spawn_plain<'py>(
    py: Python<'py>,
    cmd: &Bound<'py, PyAny>,
    executable: &Bound<'py, PyAny>,
    shell: Option<&Bound<'py, PyAny>>,
    cwd: &Bound<'py, PyAny>,
    env: &Bound<'py, PyAny>,
    close_fds: bool,
    pass_fds: &Bound<'py, PyAny>,
    keep_fds: &Bound<'py, PyAny>,
    std_fds: [i32; 6],
    restore_signals: bool,
    setsid: bool,
    pgid: i32,
    umask: i32,
    chdir_marker: bool,
    wait_exec: bool,
) -> PyResult<Option<PlainStarted<'py>>> {
    static AUDIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if !crate::sys::spawn::ready(close_fds) {
        return Ok(None); // nothing done yet, not even the audit event
    }
    let args = argv(cmd, shell, executable)?;
    let program = if executable.is_none() {
        args.get_item(0)?
    } else {
        executable.clone()
    };
    cached(py, &AUDIT, "sys", "audit")?.call1(("subprocess.Popen", &program, &args, cwd, env))?;
    let env_entries = if env.is_none() {
        None
    } else {
        Some(env_list(env)?)
    };
    let programs = executables(fs_bytes(&program)?, env)?;
    let keep: Vec<i32> = if pass_fds.is_truthy()? {
        keep_fds.call1((pass_fds,))?.extract()?
    } else {
        Vec::new()
    };
    let [p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite] = std_fds;
    let plan = Plan {
        argv: args
            .iter()
            .map(|a| fs_c_string(&a))
            .collect::<PyResult<_>>()?,
        executables: programs
            .into_iter()
            .map(c_string)
            .collect::<PyResult<_>>()?,
        env: env_entries
            .map(|e| e.into_iter().map(c_string).collect::<PyResult<_>>())
            .transpose()?,
        cwd: if cwd.is_none() {
            None
        } else {
            Some(fs_c_string(cwd)?)
        },
        keep,
        close_fds,
        chdir_marker,
        // No error pipe: the child reports in our memory (with `wait_exec`)
        // or on the exec status's own pipe (without).
        fds: [
            p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, -1, -1,
        ],
        close_first: [-1, -1],
        restore_signals,
        setsid,
        pgid,
        gid: None,
        groups: None,
        uid: None,
        umask,
        die_with_parent: false,
        no_new_privs: false,
        cgroup: -1,
    };
    let started: Option<Started> = start(py, plan, wait_exec)?;
    Ok(match started {
        Some((child, handle, report)) => {
            Some((child, handle.into_pyobject(py)?.into_any(), report, program))
        }
        None => None,
    })
}
