//! Secrets: values that must never appear in a log line, a listing, an error or an alert.
//!
//! Collected while the configuration loads: alert channel URLs and passwords (always), and values
//! substituted from the environment by `${VAR}` (those of at least [`MIN_ENV_SECRET`] characters
//! in job and scheduler files — shorter ones such as `1` or `prod` are too common to mask without
//! garbling output; every one in `alerts.yaml`).

/// Environment-substituted values shorter than this (outside alerts.yaml) are not masked.
pub const MIN_ENV_SECRET: usize = 6;

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// A set of secret strings, longest first (so a secret containing another is masked whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The empty set (usable in statics).
    pub const fn new() -> Secrets {
        Secrets(Vec::new())
    }
}

impl Secrets {
    pub fn add(&mut self, s: impl Into<String>) {
        let s = s.into();
        if s.is_empty() || self.0.contains(&s) {
            return;
        }
        self.0.push(s);
        self.0.sort_by_key(|b| std::cmp::Reverse(b.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every secret any configuration loaded in this process has named: log output is masked with
/// it (see [`MaskedStderr`]). Secrets are only ever added, so one named by a configuration that
/// was later replaced stays masked.
static GLOBAL: std::sync::RwLock<Secrets> = std::sync::RwLock::new(Secrets::new());

/// Adds `s` to the process-wide set used to mask log output.
pub fn publish(s: &Secrets) {
    let mut g = GLOBAL.write().unwrap_or_else(|p| p.into_inner());
    for v in &s.0 {
        g.add(v.clone());
    }
}

/// Masks `text` with every published secret.
pub fn mask_published(text: &str) -> String {
    GLOBAL.read().unwrap_or_else(|p| p.into_inner()).mask(text)
}

/// A `tracing` writer to stderr that masks published secrets in every line: whatever a library
/// puts in a log message, a known secret does not reach the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskedStderr;

/// One log record, masked and written to stderr when dropped.
pub struct MaskedLine(Vec<u8>);

impl std::io::Write for MaskedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let masked = mask_published(&text);
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), masked.as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedLine;
    fn make_writer(&'a self) -> MaskedLine {
        MaskedLine(Vec::with_capacity(256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_longest_first() {
        let mut s = Secrets::default();
        s.add("abc");
        s.add("https://hooks.example/T1/abc");
        s.add("");
        assert_eq!(
            s.mask("posting to https://hooks.example/T1/abc failed; abc"),
            "posting to *** failed; ***"
        );
        assert_eq!(s.mask("nothing here"), "nothing here");
    }
}
