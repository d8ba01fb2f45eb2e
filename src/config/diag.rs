//! Diagnostics: configuration problems that point at a file, a line and a column.
//!
//! Loading never stops at the first problem: every reader pushes into a [`Diagnostics`] list so
//! that `worker validate` can report all of them in one pass.

use std::fmt;

/// One configuration problem, printed as `FILE:LINE:COL: message` (or `FILE: message` when the
/// problem concerns the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as reached from `--config`, e.g. `conf/jobs/report.yaml`.
    pub file: String,
    /// 1-based line; 0 when the problem has no position inside the file.
    pub line: u32,
    /// 1-based column; 0 when the problem has no position inside the file.
    pub col: u32,
    /// What is wrong and, where we can tell, what to do about it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        }
    }
}

/// A position inside a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// No position: the diagnostic concerns the whole file.
    pub const NONE: Pos = Pos { line: 0, col: 0 };
}

/// Every problem found while loading a configuration directory, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, file: &str, pos: Pos, message: impl Into<String>) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
