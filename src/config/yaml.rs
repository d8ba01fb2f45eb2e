//! A YAML document as a tree of nodes that remember where they stand, and a reading context that
//! turns nodes into typed values while collecting every problem it meets.
//!
//! serde-saphyr parses; we deserialize into our own spanned tree (through `deserialize_any`) rather
//! than straight into the model, because serde stops at the first error and `worker validate`
//! must report all of them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::diag::{Diagnostics, Pos};
use super::interp;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A value with its position and, for scalars, its source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    /// Byte range of the node in the source (used to recover the exact text of a plain scalar
    /// such as `1.10`, which would otherwise come back as the float 1.1).
    span: Option<(usize, usize)>,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

impl Node {
    /// What kind of value this is, for messages ("expected a string, found a list").
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses `src` into a node tree. The error is `(position, message)`.
pub fn parse(src: &str) -> Result<Node, (Pos, String)> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        crop_radius: 0,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(src, options) {
        Ok(doc) => Ok(convert(doc)),
        Err(e) => {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line() as u32,
                    col: l.column() as u32,
                })
                .unwrap_or(Pos::NONE);
            Err((pos, clean_message(&e.without_snippet().to_string())))
        }
    }
}

/// Strips the `error: line N column M: ` prefix serde-saphyr puts in front of its messages; we
/// print the position ourselves.
fn clean_message(msg: &str) -> String {
    let mut m = msg.trim();
    m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some(i) = rest.find(": ")
    {
        let head = &rest[..i];
        if head
            .split(" column ")
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            m = &rest[i + 2..];
        }
    }
    let m = m.lines().next().unwrap_or(m);
    // …and the ` at line N, column M` it may put after them.
    let m = match m.rfind(" at line ") {
        Some(i) if m[i..].contains(", column ") => &m[..i],
        _ => m,
    };
    format!("invalid YAML: {m}")
}

/// The raw tree as serde-saphyr hands it over.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(i64::try_from(v)
                    .map(Raw::Int)
                    .unwrap_or(Raw::Float(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = s.next_element::<Spanned<Raw>>()? {
                    out.push(x);
                }
                Ok(Raw::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    let v = m.next_value::<Spanned<Raw>>()?;
                    out.push((k, v));
                }
                Ok(Raw::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line() as u32,
        col: s.referenced.column() as u32,
    }
}

fn convert(s: Spanned<Raw>) -> Node {
    let pos = pos_of(&s);
    let sp = s.referenced.span();
    let span = match (sp.byte_offset(), sp.byte_len()) {
        (Some(o), Some(l)) => Some((o as usize, l as usize)),
        _ => None,
    };
    let value = match s.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(v) => Value::Str(v),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(convert).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let kpos = pos_of(&k);
                    (
                        Key {
                            name: k.value,
                            pos: kpos,
                        },
                        convert(v),
                    )
                })
                .collect(),
        ),
    };
    Node { value, pos, span }
}

/// The place a file's nodes are read in: its display name, its text, the environment for
/// `${VAR}`, and the diagnostics list every reader reports into.
pub struct Ctx<'a> {
    pub file: String,
    src: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    pub diags: &'a mut Diagnostics,
    /// Values substituted from the environment while reading this file (candidates for masking).
    pub from_env: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        file: String,
        src: &'a str,
        env: &'a dyn Fn(&str) -> Option<String>,
        diags: &'a mut Diagnostics,
    ) -> Self {
        Ctx {
            file,
            src,
            env,
            diags,
            from_env: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(&self.file, pos, message);
    }

    /// The exact source text of a scalar node, when available.
    fn raw_text(&self, node: &Node) -> Option<String> {
        let (o, l) = node.span?;
        let t = self.src.get(o..o + l)?.trim();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// A string, `${VAR}`-expanded. Plain numbers and booleans are taken as their source text
    /// (`version: 1.10` reads as "1.10").
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        let raw = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => self.raw_text(node).unwrap_or_else(|| i.to_string()),
            Value::Float(f) => self.raw_text(node).unwrap_or_else(|| f.to_string()),
            Value::Bool(b) => self.raw_text(node).unwrap_or_else(|| b.to_string()),
            _ => {
                let kind = node.kind();
                self.error(node.pos, format!("{what} must be a string, found {kind}"));
                return None;
            }
        };
        match interp::expand(&raw, self.env) {
            Ok(e) => {
                self.from_env.extend(e.from_env);
                Some(e.value)
            }
            Err(e) => {
                self.error(node.pos, format!("{what}: {e}"));
                None
            }
        }
    }

    /// A non-empty string.
    pub fn nonempty_string(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if s.trim().is_empty() {
            self.error(node.pos, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    /// A duration such as `30s` or `1h30m`.
    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        if let Value::Int(n) = node.value {
            self.error(
                node.pos,
                format!("{what}: `{n}` has no unit (write e.g. `{n}s` or `{n}m`)"),
            );
            return None;
        }
        let s = self.string(node, what)?;
        match crate::units::parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.pos, format!("{what}: {e}"));
                None
            }
        }
    }

    /// A byte size such as `1MiB`.
    pub fn size(&mut self, node: &Node, what: &str) -> Option<u64> {
        let s = self.string(node, what)?;
        match crate::units::parse_size(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.pos, format!("{what}: {e}"));
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn int(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        let n = match &node.value {
            Value::Int(n) => *n,
            Value::Str(_) => {
                let s = self.string(node, what)?;
                match s.trim().parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => {
                        self.error(
                            node.pos,
                            format!("{what} must be a whole number, found `{s}`"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                let kind = node.kind();
                self.error(
                    node.pos,
                    format!("{what} must be a whole number, found {kind}"),
                );
                return None;
            }
        };
        if n < min || n > max {
            self.error(
                node.pos,
                format!("{what} must be between {min} and {max}, found {n}"),
            );
            return None;
        }
        Some(n)
    }

    /// `true` or `false`.
    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(_) => {
                let s = self.string(node, what)?;
                match s.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => {
                        self.error(
                            node.pos,
                            format!("{what} must be true or false, found `{s}`"),
                        );
                        None
                    }
                }
            }
            _ => {
                let kind = node.kind();
                self.error(
                    node.pos,
                    format!("{what} must be true or false, found {kind}"),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, what)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.error(
            node.pos,
            format!("{what} must be one of {}, found `{s}`", names.join(", ")),
        );
        None
    }

    /// A list; a single scalar is accepted as a list of one when `allow_single`.
    pub fn list<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allow_single: bool,
    ) -> Option<Vec<&'n Node>> {
        match &node.value {
            Value::Seq(items) => Some(items.iter().collect()),
            Value::Null => Some(Vec::new()),
            Value::Str(_) | Value::Int(_) if allow_single => Some(vec![node]),
            _ => {
                let kind = node.kind();
                self.error(node.pos, format!("{what} must be a list, found {kind}"));
                None
            }
        }
    }

    /// A list of strings (a single string is a list of one when `allow_single`).
    pub fn string_list(
        &mut self,
        node: &Node,
        what: &str,
        allow_single: bool,
    ) -> Option<Vec<(String, Pos)>> {
        let items = self.list(node, what, allow_single)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.string(item, what) {
                Some(s) => out.push((s, item.pos)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A mapping, read through a [`MapReader`] that notices unknown keys.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<MapReader<'n>> {
        match &node.value {
            Value::Map(entries) => Some(MapReader::new(entries, node.pos)),
            Value::Null => Some(MapReader::new(&[], node.pos)),
            _ => {
                let kind = node.kind();
                self.error(node.pos, format!("{what} must be a mapping, found {kind}"));
                None
            }
        }
    }

    /// A mapping of environment variables to string values.
    pub fn env_map(&mut self, node: &Node, what: &str) -> Option<BTreeMap<String, String>> {
        let Value::Map(entries) = &node.value else {
            if node.value == Value::Null {
                return Some(BTreeMap::new());
            }
            let kind = node.kind();
            self.error(
                node.pos,
                format!("{what} must be a mapping of NAME: value, found {kind}"),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            if !interp::is_var_name(&k.name) {
                self.error(
                    k.pos,
                    format!("{what}: `{}` is not a valid environment variable name (letters, digits, `_`)", k.name),
                );
                ok = false;
                continue;
            }
            if k.name.starts_with("WORKER_") {
                self.error(
                    k.pos,
                    format!(
                        "{what}: `{}` is reserved: WORKER_* variables are set by worker",
                        k.name
                    ),
                );
                ok = false;
                continue;
            }
            let value = match &v.value {
                Value::Null => Some(String::new()),
                _ => self.string(v, &format!("{what}.{}", k.name)),
            };
            match value {
                Some(s) => {
                    out.insert(k.name.clone(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Reads the entries of a mapping by name and reports, at the end, every key nobody asked for.
pub struct MapReader<'n> {
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
    /// Where the mapping itself starts.
    pub pos: Pos,
}

impl<'n> MapReader<'n> {
    fn new(entries: &'n [(Key, Node)], pos: Pos) -> Self {
        MapReader {
            entries,
            used: vec![false; entries.len()],
            pos,
        }
    }

    /// The value under `key`, if present.
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// The value and the key's position (for problems "at its entry").
    pub fn get_entry(&mut self, key: &str) -> Option<(&'n Key, &'n Node)> {
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some((&self.entries[i].0, &self.entries[i].1))
    }

    /// Whether `key` is present (without marking it read).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.name == key)
    }

    /// Reports each key that was not read, suggesting the closest known key.
    pub fn finish(self, ctx: &mut Ctx<'_>, what: &str, known: &[&str]) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let hint = closest(&k.name, known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_else(|| format!(" (known fields: {})", known.join(", ")));
            ctx.error(k.pos, format!("unknown field `{}` in {what}{hint}", k.name));
        }
    }
}

/// The known word closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn positions_point_at_values_and_keys() {
        let n = parse("a: 1\nb:\n  c: [x, y]\n").unwrap();
        let Value::Map(m) = &n.value else { panic!() };
        assert_eq!(m[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(m[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Map(inner) = &m[1].1.value else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let n = parse("- y\n- on\n- no\n- true\n").unwrap();
        let Value::Seq(items) = n.value else { panic!() };
        let values: Vec<_> = items.into_iter().map(|i| i.value).collect();
        assert_eq!(
            values,
            vec![
                Value::Str("y".into()),
                Value::Str("on".into()),
                Value::Str("no".into()),
                Value::Bool(true)
            ]
        );
    }

    #[test]
    fn numbers_read_as_strings_keep_their_text() {
        let src = "v: 1.10\n";
        let n = parse(src).unwrap();
        let Value::Map(m) = &n.value else { panic!() };
        let mut d = Diagnostics::default();
        let mut ctx = Ctx::new("f.yaml".into(), src, &no_env, &mut d);
        assert_eq!(ctx.string(&m[0].1, "v").as_deref(), Some("1.10"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (pos, msg) = parse("a: [1, 2\n").unwrap_err();
        assert_eq!(pos, Pos { line: 1, col: 4 });
        assert!(msg.starts_with("invalid YAML: "), "{msg}");
        assert!(!msg.contains("line 1"), "{msg}");
        let (pos, msg) = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(pos.line, 2);
        assert!(msg.contains("duplicate"), "{msg}");
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let src = "timout: 5s\nbogus: 1\n";
        let n = parse(src).unwrap();
        let mut d = Diagnostics::default();
        let mut ctx = Ctx::new("j.yaml".into(), src, &no_env, &mut d);
        let r = ctx.map(&n, "a job").unwrap();
        r.finish(&mut ctx, "a job", &["timeout", "run"]);
        assert_eq!(d.0.len(), 2);
        assert_eq!(
            d.0[0].to_string(),
            "j.yaml:1:1: unknown field `timout` in a job (did you mean `timeout`?)"
        );
        assert!(d.0[1].message.contains("known fields"));
    }
}
