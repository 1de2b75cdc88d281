//! Creating the API's Unix socket without following a symlink or touching
//! any other file: bind inside a fresh private directory (mode 0700, ours),
//! set mode and group there by a path no one else can reach, then rename
//! the socket into place. A live gateway's socket and non-socket files are
//! never replaced.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why the socket could not be set up; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket.
    #[error("{0}: another gateway is serving this socket; stop it first or set a different [api] socket")]
    Live(PathBuf),
    /// Something that is not a socket is at the path.
    #[error("{0}: exists and is not a socket; remove it yourself or set a different [api] socket")]
    NotASocket(PathBuf),
    /// The socket's name is unusable.
    #[error("{0}: [api] socket must be a path with a file name")]
    BadPath(PathBuf),
    /// A system call failed.
    #[error("{what} for the API socket {path}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `[api] socket_group` names no group.
    #[error("[api] socket_group: no group named '{0}' (see `getent group`)")]
    NoGroup(String),
}

/// The id of group `name`, from the system's group database.
fn group_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: getgrnam reads a NUL-terminated name; the returned record is
    // read at once, before any other call could reuse its static storage.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null gr points at a valid struct group.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

fn cstr(p: &Path) -> Result<CString, SocketError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SocketError::BadPath(p.to_owned()))
}

/// Log a warning if `dir` lets other users replace what is in it.
fn warn_if_shared(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else { return };
    let mode = meta.mode();
    let sticky = mode & libc::S_ISVTX != 0;
    if mode & 0o002 != 0 && (!sticky || meta.uid() != 0) {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:04o}", mode & 0o7777),
            "the API socket's directory is world-writable{}; other users could replace the socket: use a directory only the gateway can write (e.g. /run/genl-gateway)",
            if sticky { " and not owned by root" } else { " without the sticky bit" }
        );
    }
}

/// Whether the socket at `path` is answered by a running process.
fn is_live(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Check that nothing but a stale socket is at `path`: refuse a socket a
/// process answers on and anything that is not a socket.
pub fn ensure_free(path: &Path) -> Result<(), SocketError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if is_live(path) {
                return Err(SocketError::Live(path.to_owned()));
            }
            // A stale socket of an earlier run: binding replaces it.
            Ok(())
        }
        Ok(_) => Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SocketError::Os {
            what: "looking at the path",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Bind the API socket at `path` with `mode` and, if given, `group`.
pub fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<std::os::unix::net::UnixListener, SocketError> {
    let os = |what| {
        let path = path.to_owned();
        move |source| SocketError::Os { what, path, source }
    };
    let name = path
        .file_name()
        .ok_or_else(|| SocketError::BadPath(path.to_owned()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(os("creating the directory"))?;
    warn_if_shared(&dir);
    let gid = match group {
        Some(g) => Some(group_id(g).ok_or_else(|| SocketError::NoGroup(g.to_owned()))?),
        None => None,
    };

    ensure_free(path)?;

    // A private directory beside the target (the same filesystem, so the
    // rename is atomic), held open so the name cannot be swapped under us.
    let private = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(os("creating a private directory"))?;
    let result = bind_in(&private, path, mode, gid);
    let _ = std::fs::remove_dir_all(&private);
    result
}

use std::os::unix::fs::DirBuilderExt;

fn bind_in(
    private: &Path,
    target: &Path,
    mode: u32,
    gid: Option<u32>,
) -> Result<std::os::unix::net::UnixListener, SocketError> {
    let os = |what| {
        let path = target.to_owned();
        move |source| SocketError::Os { what, path, source }
    };
    let cpriv = cstr(private)?;
    // SAFETY: cpriv is NUL-terminated; the flags open a directory without
    // following a final symlink.
    let fd = unsafe {
        libc::open(
            cpriv.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(os("opening the private directory")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let dirfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", dirfd.as_raw_fd()))
        .map_err(os("checking the private directory"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(os("checking the private directory")(std::io::Error::other(
            "it is not ours alone; is someone racing the gateway in the socket directory?",
        )));
    }
    // Bound through the descriptor: whatever happens to the directory's
    // name, the socket is made in the directory we checked.
    let inside = PathBuf::from(format!("/proc/self/fd/{}/s", dirfd.as_raw_fd()));
    let listener = std::os::unix::net::UnixListener::bind(&inside).map_err(os("binding"))?;
    let s = c"s";
    // SAFETY: dirfd is an open directory and `s` a NUL-terminated name in
    // it; no flag makes fchmodat follow anything but that entry, which only
    // we could have created.
    if unsafe { libc::fchmodat(dirfd.as_raw_fd(), s.as_ptr(), mode, 0) } != 0 {
        return Err(os("setting the mode")(std::io::Error::last_os_error()));
    }
    if let Some(gid) = gid {
        // SAFETY: as above; AT_SYMLINK_NOFOLLOW changes the entry itself.
        let r = unsafe {
            libc::fchownat(
                dirfd.as_raw_fd(),
                s.as_ptr(),
                u32::MAX,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(os(
                "giving it to [api] socket_group (the service user must be a member of that group)",
            )(std::io::Error::last_os_error()));
        }
    }
    let ctarget = cstr(target)?;
    // SAFETY: both names are NUL-terminated; rename never follows a symlink
    // at the target, it replaces the name.
    if unsafe { libc::renameat(dirfd.as_raw_fd(), s.as_ptr(), libc::AT_FDCWD, ctarget.as_ptr()) } != 0 {
        return Err(os("moving it into place")(std::io::Error::last_os_error()));
    }
    Ok(listener)
}
