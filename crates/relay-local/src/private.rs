//! File modes of the database: created private (0600 files in a 0700 directory), refused when an existing
//! file is open to other users. SQLite creates `-wal` and `-shm` with the mode of the database file, so
//! creating the database file first with 0600 makes all three private.

use std::path::{Path, PathBuf};

use crate::LocalError;

/// The permission bits that let other users (not the owner or the owner's group) at the file.
#[cfg(unix)]
const OTHERS: u32 = 0o007;

/// Create `dir` (and its missing parents) with mode 0700. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Before SQLite opens `path`: create it empty with mode 0600 when missing; refuse it, or its WAL/SHM
/// files, when other users can read or write them.
pub(crate) fn prepare(path: &Path) -> Result<(), LocalError> {
    let open_err = |e: std::io::Error| LocalError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(open_err(e)),
    }
    for file in [path.to_path_buf(), sibling(path, "-wal"), sibling(path, "-shm")] {
        check_private(&file)?;
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
fn check_private(file: &Path) -> Result<(), LocalError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(()); // a WAL or SHM file that does not exist yet
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OTHERS != 0 {
        return Err(LocalError::NotPrivate {
            path: file.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_file: &Path) -> Result<(), LocalError> {
    Ok(())
}
