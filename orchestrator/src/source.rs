//! Where things are in the files users wrote.
//!
//! serde_yaml turns a playbook into typed structs and reports syntax and type errors with a
//! location, but it forgets positions once parsing succeeds. Checks that run later (unknown
//! `needs` ids, cycles, undefined template variables, unknown groups) still have to point at
//! file:line:column, so each loaded file keeps a [`Source`]: its text plus an index from a
//! path such as `steps.2.needs.0` to the position of that value (and of its key).
//!
//! Owned here: the text, the index and [`Loc`]. Not here: what the keys mean (playbook::load).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser};

/// A position in a source file: 1-based line and column, and the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    pub offset: usize,
}

/// A file and a position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<Path>,
    pub pos: Pos,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.display(),
            self.pos.line,
            self.pos.col
        )
    }
}

/// One YAML file as the user wrote it, with an index of positions by path.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: Arc<Path>,
    pub text: Arc<str>,
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

/// The YAML was not well-formed.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl Source {
    /// Index `text`. A syntax error is returned with its position.
    pub fn parse(path: impl Into<PathBuf>, text: impl Into<String>) -> Result<Self, SyntaxError> {
        let path: PathBuf = path.into();
        let text: String = text.into();
        let mut index = Indexer::default();
        index.run(&text)?;
        Ok(Source {
            path: Arc::from(path.as_path()),
            text: Arc::from(text.as_str()),
            values: index.values,
            keys: index.keys,
        })
    }

    /// Position of the value at `path` (e.g. `steps.2.on`), if the file has it.
    pub fn value_pos(&self, path: &str) -> Option<Pos> {
        self.values.get(path).copied()
    }

    /// Position of the key that introduces `path` (falls back to the value).
    pub fn key_pos(&self, path: &str) -> Option<Pos> {
        self.keys
            .get(path)
            .or_else(|| self.values.get(path))
            .copied()
    }

    /// A location for `path`: the value if known, else the nearest enclosing path, else 1:1.
    pub fn loc(&self, path: &str) -> Loc {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return self.at(*pos);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return self.at(Pos::start()),
            }
        }
    }

    /// A location for the key of `path` (for "unknown key" style messages).
    pub fn key_loc(&self, path: &str) -> Loc {
        match self.keys.get(path) {
            Some(pos) => self.at(*pos),
            None => self.loc(path),
        }
    }

    pub fn at(&self, pos: Pos) -> Loc {
        Loc {
            file: self.path.clone(),
            pos,
        }
    }

    /// Byte offset of a 1-based line/column (as serde_yaml reports them).
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let mut offset = 0;
        for (i, l) in self.text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let col_bytes: usize = l
                    .chars()
                    .take(col.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                return offset + col_bytes;
            }
            offset += l.len();
        }
        self.text.len()
    }
}

impl Pos {
    pub fn start() -> Self {
        Pos {
            line: 1,
            col: 1,
            offset: 0,
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Indexer {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    stack: Vec<Frame>,
    // Anchors and their paths, so aliases are indexed at the anchor's position.
    anchors: HashMap<usize, Pos>,
}

fn join(base: &str, part: &str) -> String {
    if base.is_empty() {
        part.to_string()
    } else {
        format!("{base}.{part}")
    }
}

impl Indexer {
    fn run(&mut self, text: &str) -> Result<(), SyntaxError> {
        let mut parser = Parser::new_from_str(text);
        let mut docs = 0;
        loop {
            let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
                pos: to_pos(
                    text,
                    e.marker().line(),
                    e.marker().col(),
                    e.marker().index(),
                ),
                message: e.info().to_string(),
            })?;
            let pos = to_pos(text, mark.line(), mark.col(), mark.index());
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    docs += 1;
                    if docs > 1 {
                        return Err(SyntaxError {
                            pos,
                            message: "only one YAML document per file is allowed".into(),
                        });
                    }
                }
                Event::Scalar(value, _, anchor, _) => {
                    if anchor > 0 {
                        self.anchors.insert(anchor, pos);
                    }
                    self.scalar(value, pos);
                }
                Event::Alias(id) => {
                    let at = self.anchors.get(&id).copied().unwrap_or(pos);
                    self.scalar(String::new(), at);
                }
                Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    if anchor > 0 {
                        self.anchors.insert(anchor, pos);
                    }
                    let path = self.value_path(pos);
                    self.stack.push(if is_map {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    self.stack.pop();
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Record a value at the current place and return its path; advances the parent.
    fn value_path(&mut self, pos: Pos) -> String {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => join(path, &k),
                // A complex (non-scalar) key: give it a path nobody asks for.
                None => join(path, "?"),
            },
            Some(Frame::Seq { path, next }) => {
                let p = join(path, &next.to_string());
                *next += 1;
                p
            }
        };
        self.values.entry(path.clone()).or_insert(pos);
        path
    }

    fn scalar(&mut self, value: String, pos: Pos) {
        if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
            if key.is_none() {
                let p = join(path, &value);
                self.keys.entry(p).or_insert(pos);
                *key = Some(value);
                return;
            }
        }
        self.value_path(pos);
    }
}

fn to_pos(text: &str, line: usize, col: usize, index: usize) -> Pos {
    // yaml-rust2 counts characters; turn the char index into a byte offset.
    let offset = text
        .char_indices()
        .nth(index)
        .map(|(b, _)| b)
        .unwrap_or(text.len());
    Pos {
        line: line.max(1),
        col: col + 1,
        offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: x\nsteps:\n  - id: a\n    on: web\n    needs: [b, c]\n  - id: b\n    ssh: |\n      echo hi\n";

    #[test]
    fn indexes_values_and_keys() {
        let s = Source::parse("p.yml", DOC).unwrap();
        assert_eq!(s.value_pos("name").unwrap().line, 1);
        let on = s.value_pos("steps.0.on").unwrap();
        assert_eq!((on.line, on.col), (4, 9));
        let k = s.key_pos("steps.0.on").unwrap();
        assert_eq!((k.line, k.col), (4, 5));
        let n1 = s.value_pos("steps.0.needs.1").unwrap();
        assert_eq!((n1.line, n1.col), (5, 16));
        assert_eq!(s.value_pos("steps.1.id").unwrap().line, 6);
        // a block scalar's position is where its content starts
        assert_eq!(s.value_pos("steps.1.ssh").unwrap().line, 8);
        assert_eq!(&s.text[on.offset..on.offset + 3], "web");
    }

    #[test]
    fn loc_falls_back_to_parent() {
        let s = Source::parse("p.yml", DOC).unwrap();
        assert_eq!(s.loc("steps.0.nothing").pos.line, 3);
        assert_eq!(s.loc("steps.0.nothing").to_string(), "p.yml:3:7");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = Source::parse("p.yml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(!e.message.is_empty());
    }

    #[test]
    fn multi_document_refused() {
        let e = Source::parse("p.yml", "a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("one YAML document"));
    }
}
