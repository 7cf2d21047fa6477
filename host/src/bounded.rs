//! Reading input files with a bound on what is read: a plugin path that
//! names `/dev/zero`, a FIFO or a multi-gigabyte file is refused with a
//! clear error instead of being read without end.

use std::io::Read;
use std::path::Path;

/// The largest plugin file the host loads (256 MiB; a release plugin is
/// under 1 MB, a debug one with full debug information tens of MB).
pub const MAX_PLUGIN_BYTES: u64 = 256 << 20;

/// The largest manifest file the host reads (16 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Not a regular file (a directory, a device, a FIFO, a socket).
    NotRegular(&'static str),
    /// Larger than the limit.
    TooLarge {
        /// The file's size, when known before reading.
        size: Option<u64>,
        /// The limit.
        limit: u64,
    },
    /// The operating system's error.
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotRegular(what) => write!(f, "not a regular file ({what})"),
            ReadError::TooLarge { size: Some(size), limit } => {
                write!(f, "the file is {} bytes, over the limit of {} ({limit} bytes)", size, mib(*limit))
            }
            ReadError::TooLarge { size: None, limit } => {
                write!(f, "more than {} ({limit} bytes) could be read from it; that is over the limit", mib(*limit))
            }
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn mib(n: u64) -> String {
    format!("{} MiB", n >> 20)
}

/// What kind of non-regular file `meta` describes.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Read at most `limit` bytes of `path`. With `regular_only`, anything but
/// a regular file is refused before it is opened; a regular file whose
/// size is over the limit is refused before it is read. Either way no more
/// than `limit + 1` bytes are read.
pub fn read(path: &Path, limit: u64, regular_only: bool) -> Result<Vec<u8>, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if meta.is_dir() || (regular_only && !meta.is_file()) {
        return Err(ReadError::NotRegular(kind(&meta)));
    }
    if meta.is_file() && meta.len() > limit {
        return Err(ReadError::TooLarge { size: Some(meta.len()), limit });
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let capacity = if meta.is_file() { meta.len() as usize } else { 0 };
    let mut bytes = Vec::with_capacity(capacity);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { size: None, limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_refused_as_a_plugin_and_bounded_as_a_manifest() {
        let dev = Path::new("/dev/zero");
        if !dev.exists() {
            return;
        }
        assert!(matches!(read(dev, 1024, true), Err(ReadError::NotRegular("a character device"))));
        assert!(matches!(read(dev, 1024, false), Err(ReadError::TooLarge { size: None, limit: 1024 })));
    }

    #[test]
    fn a_sparse_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = std::env::temp_dir().join(format!("vmm-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.so");
        std::fs::File::create(&path).unwrap().set_len(3 << 30).unwrap();
        let started = std::time::Instant::now();
        let r = read(&path, MAX_PLUGIN_BYTES, true);
        assert!(matches!(r, Err(ReadError::TooLarge { size: Some(s), .. }) if s == 3 << 30), "{r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
