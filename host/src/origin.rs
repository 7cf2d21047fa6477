//! Where a manifest value came from (file, line, column): named by the
//! manifest's, the expectations' and the crate's errors alike, so it sits
//! below all three.

use std::fmt;

/// Where a manifest value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file (or `--set #N`) it was written in.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}
