//! Shell quoting that knows where it is.
//!
//! A value interpolated into a shell template must reach the program as exactly its own bytes,
//! whatever it holds (`'`, `"`, `$(...)`, backticks, `;|&<>`, newlines). How to write it depends
//! on where the author put the `{{ }}`: bare in the command line, inside `'...'`, or inside
//! `"..."`. [`Scanner`] follows the POSIX shell's quoting state through the literal text of a
//! command line, and [`quote_in`] writes a value for the state it is in:
//!
//! - bare: single-quoted (`'it'\''s'`), or as is when it is a plain word;
//! - inside `'...'`: every `'` becomes `'\''` (close, an escaped quote, reopen);
//! - inside `"..."`: `\`, `"`, `$` and `` ` `` get a backslash, the four characters a double
//!   quote leaves special.
//!
//! Everywhere else a value cannot be made safe, and the scanner refuses it ([`Refusal`]):
//! inside backticks, `${...}`, arithmetic, `[[ ... ]]`, an array subscript or a comment; right
//! after a backslash or a `$`; and anywhere after a here-document, a `$'...'` string or a `case`
//! inside `$(...)`, whose ends the scanner does not follow. [`check_template`] runs the same
//! scanner over a template's source, for `remedy validate`; [`assemble`] runs it over a rendered
//! command whose values are still marked, when the command is built.
//!
//! Not here: rendering (the parent module) and which fields are shell templates (compile).

pub use crate::quote::quote_bare;

/// Where in a command line an interpolated value lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Unquoted (also inside `$(...)`).
    Bare,
    /// Inside `'...'`.
    Single,
    /// Inside `"..."`.
    Double,
}

/// Why no value can be placed at some point of a command line, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where the value would land and why that is unsafe, e.g. "inside backticks, ...".
    pub what: &'static str,
    /// The fix, in words.
    pub fix: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a value cannot be interpolated {}", self.what)
    }
}

const BACKTICK: Refusal = Refusal {
    what: "inside backticks, where the shell reads backslashes and quotes a second time",
    fix: "use $(...) instead of backticks",
};
const PARAM: Refusal = Refusal {
    what: "inside `${...}`, where quotes are read differently by sh and bash",
    fix: "set a shell variable first (`v={{ value }}; ...${x:-$v}`), or interpolate outside the braces",
};
const ARITH: Refusal = Refusal {
    what: "inside arithmetic (`$((...))` or `((...))`), where bash runs `$(...)` found in the text",
    fix:
        "compute the number in the template instead, e.g. `{{ (n | int) + 1 }}` outside `$((...))`",
};
const DBRACKET: Refusal = Refusal {
    what: "inside `[[ ... ]]`, where bash evaluates the operands of -eq, -lt, ... as arithmetic",
    fix: "use the POSIX test `[ ... ]` instead of `[[ ... ]]`",
};
const SUBSCRIPT: Refusal = Refusal {
    what: "inside an array subscript `name[...]`, which bash evaluates as arithmetic",
    fix: "use a plain variable, or check the value is a number (`type: int`) and use it outside the subscript",
};
const COMMENT: Refusal = Refusal {
    what: "inside a `#` comment, where a newline in the value would end the comment",
    fix: "move the value out of the comment",
};
const BACKSLASH: Refusal = Refusal {
    what: "right after a backslash, which would escape the value's first character",
    fix: "remove the backslash: the value is quoted for you",
};
const DOLLAR: Refusal = Refusal {
    what: "right after `$` or `$name`, where the value would become part of a parameter name",
    fix: "write the parameter with braces (`${name}`), or put a space or a quote between",
};
const HEREDOC: Refusal = Refusal {
    what: "after a here-document (`<<`), whose body the quoting cannot follow",
    fix: "pass the value as an argument instead, e.g. `printf '%s\\n' {{ value }} | cmd`",
};
const DOLLAR_SINGLE: Refusal = Refusal {
    what: "after a `$'...'` string, which sh and bash end at different places",
    fix: "use plain '...' or \"...\" quotes",
};
const CASE_IN_SUB: Refusal = Refusal {
    what: "after a `case` inside `$(...)`, whose `)` patterns hide where the substitution ends",
    fix: "move the `case` out of `$(...)`, e.g. into the main command line",
};
const UNBALANCED: Refusal = Refusal {
    what: "after an arithmetic expression whose end the quoting cannot follow",
    fix: "compute the number in the template instead, e.g. `{{ (n | int) + 1 }}`",
};

/// One level of nesting in a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// The command line itself, unquoted.
    Top,
    /// Inside `$(...)`, unquoted; `depth` counts the `(` opened inside it.
    Sub {
        depth: u32,
    },
    Single,
    Double,
    Backtick,
    /// Inside `${...}`; `depth` counts nested `${`.
    Param {
        depth: u32,
    },
    /// Inside `$((...))` or `((...))`; `closing` after the first `)` of the final `))`.
    Arith {
        depth: u32,
        closing: bool,
    },
    Comment,
}

/// What a `$` just seen starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dollar {
    No,
    /// `$` alone so far.
    Bare,
    /// `$name` being read.
    Name,
}

/// The quoting state of a POSIX shell command line, fed its literal text piece by piece.
#[derive(Debug, Clone)]
pub struct Scanner {
    stack: Vec<Frame>,
    /// Set once the scanner meets something whose end it cannot follow; every later value is
    /// refused with it.
    lost: Option<Refusal>,
    /// The previous character was an escaping backslash.
    escaped: bool,
    dollar: Dollar,
    /// The next character starts a word (a `#` there starts a comment).
    word_start: bool,
    /// The unquoted word being read, for keywords (`[[`, `]]`, `case`); `None` once it holds
    /// anything but plain characters.
    word: Option<String>,
    /// The current word so far is `name[`: an array subscript.
    subscript: bool,
    /// Inside `[[ ... ]]`.
    dbracket: bool,
    /// The previous character was an unquoted `<`.
    lt: bool,
    /// The previous character was an unquoted `(` at the start of a word.
    open_paren: bool,
    /// `$(` was just read: a second `(` makes it arithmetic.
    after_dollar_paren: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        Scanner {
            stack: vec![Frame::Top],
            lost: None,
            escaped: false,
            dollar: Dollar::No,
            word_start: true,
            word: Some(String::new()),
            subscript: false,
            dbracket: false,
            lt: false,
            open_paren: false,
            after_dollar_paren: false,
        }
    }

    /// Reads literal command-line text.
    pub fn feed(&mut self, text: &str) {
        for c in text.chars() {
            if self.lost.is_some() {
                return;
            }
            self.step(c);
        }
    }

    /// Where a value placed now would land, or why it cannot be placed here.
    pub fn context(&self) -> Result<Context, Refusal> {
        if let Some(r) = &self.lost {
            return Err(r.clone());
        }
        if self.escaped {
            return Err(BACKSLASH);
        }
        if self.dollar != Dollar::No {
            return Err(DOLLAR);
        }
        match self.top() {
            Frame::Backtick => return Err(BACKTICK),
            Frame::Param { .. } => return Err(PARAM),
            Frame::Arith { .. } => return Err(ARITH),
            Frame::Comment => return Err(COMMENT),
            _ => {}
        }
        if self.subscript {
            return Err(SUBSCRIPT);
        }
        if self.dbracket {
            return Err(DBRACKET);
        }
        Ok(match self.top() {
            Frame::Single => Context::Single,
            Frame::Double => Context::Double,
            _ => Context::Bare,
        })
    }

    /// A value (or an opaque `raw` insertion) was placed: it is part of the current word.
    pub fn value(&mut self) {
        self.escaped = false;
        self.dollar = Dollar::No;
        self.after_dollar_paren = false;
        self.open_paren = false;
        self.lt = false;
        self.word_start = false;
        self.word = None;
    }

    fn top(&self) -> Frame {
        self.stack.last().copied().unwrap_or(Frame::Top)
    }

    fn set_top(&mut self, f: Frame) {
        if let Some(t) = self.stack.last_mut() {
            *t = f;
        }
    }

    fn push(&mut self, f: Frame) {
        self.stack.push(f);
        self.word_start = false;
        if !matches!(f, Frame::Comment) {
            self.word = None;
        }
    }

    /// Leaves a frame; what follows a closed quote or substitution is the same word.
    fn pop(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
        self.word_start = false;
    }

    fn lose(&mut self, why: Refusal) {
        self.lost = Some(why);
    }

    fn step(&mut self, c: char) {
        match self.top() {
            Frame::Top | Frame::Sub { .. } => self.unquoted(c),
            Frame::Single => {
                if c == '\'' {
                    self.pop();
                }
            }
            Frame::Double => self.double(c),
            Frame::Backtick => {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '`' {
                    self.pop();
                }
            }
            Frame::Param { depth } => self.param(c, depth),
            Frame::Arith { depth, closing } => self.arith(c, depth, closing),
            Frame::Comment => {
                if c == '\n' {
                    self.stack.pop();
                    self.word_start = true;
                    self.word = Some(String::new());
                }
            }
        }
    }

    /// `$` handling shared by unquoted text and double quotes; true when `c` was consumed.
    fn dollar(&mut self, c: char, quoted: bool) -> bool {
        match self.dollar {
            Dollar::No => false,
            Dollar::Bare => {
                self.dollar = Dollar::No;
                match c {
                    '{' => {
                        self.push(Frame::Param { depth: 0 });
                        true
                    }
                    '(' => {
                        self.push(Frame::Sub { depth: 0 });
                        self.word_start = true;
                        self.word = Some(String::new());
                        self.after_dollar_paren = true;
                        true
                    }
                    '\'' if !quoted => {
                        self.lose(DOLLAR_SINGLE);
                        true
                    }
                    c if c == '_' || c.is_ascii_alphabetic() => {
                        self.dollar = Dollar::Name;
                        true
                    }
                    c if c.is_ascii_digit() || "@*#?$!-".contains(c) => true,
                    _ => false,
                }
            }
            Dollar::Name => {
                if c == '_' || c.is_ascii_alphanumeric() {
                    true
                } else {
                    self.dollar = Dollar::No;
                    false
                }
            }
        }
    }

    fn unquoted(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            self.word_start = false;
            self.word = None;
            return;
        }
        if std::mem::take(&mut self.after_dollar_paren) && c == '(' {
            self.set_top(Frame::Arith {
                depth: 0,
                closing: false,
            });
            return;
        }
        if self.dollar(c, false) {
            return;
        }
        let lt = std::mem::take(&mut self.lt);
        let open_paren = std::mem::take(&mut self.open_paren);
        match c {
            '\\' => self.escaped = true,
            '\'' => self.push(Frame::Single),
            '"' => self.push(Frame::Double),
            '`' => self.push(Frame::Backtick),
            '$' => {
                self.dollar = Dollar::Bare;
                self.word_start = false;
                self.word = None;
            }
            '#' if self.word_start => self.push(Frame::Comment),
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                self.end_word();
                match c {
                    '<' if lt => self.lose(HEREDOC),
                    '<' => self.lt = true,
                    '(' if open_paren => {
                        // `((`: an arithmetic command (bash).
                        if let Frame::Sub { depth } = self.top() {
                            self.set_top(Frame::Sub {
                                depth: depth.saturating_sub(1),
                            });
                        }
                        self.push(Frame::Arith {
                            depth: 0,
                            closing: false,
                        });
                    }
                    '(' => {
                        self.open_paren = true;
                        if let Frame::Sub { depth } = self.top() {
                            self.set_top(Frame::Sub { depth: depth + 1 });
                        }
                    }
                    ')' => {
                        if let Frame::Sub { depth } = self.top() {
                            if depth == 0 {
                                self.pop();
                                return;
                            }
                            self.set_top(Frame::Sub { depth: depth - 1 });
                        }
                    }
                    _ => {}
                }
            }
            c => {
                if c == '[' {
                    if let Some(w) = &self.word {
                        let name = !w.is_empty()
                            && w.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                            && !w.starts_with(|c: char| c.is_ascii_digit());
                        if name {
                            self.subscript = true;
                        }
                    }
                } else if c == ']' {
                    self.subscript = false;
                }
                self.word_start = false;
                if let Some(w) = &mut self.word {
                    w.push(c);
                }
            }
        }
    }

    /// The current unquoted word ended: keywords change the state.
    fn end_word(&mut self) {
        let in_sub = self.stack.iter().any(|f| matches!(f, Frame::Sub { .. }));
        match self.word.as_deref() {
            Some("[[") => self.dbracket = true,
            Some("]]") => self.dbracket = false,
            Some("case") if in_sub => self.lose(CASE_IN_SUB),
            _ => {}
        }
        self.word = Some(String::new());
        self.word_start = true;
        self.subscript = false;
    }

    fn double(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            return;
        }
        if self.dollar(c, true) {
            return;
        }
        match c {
            '\\' => self.escaped = true,
            '"' => self.pop(),
            '`' => self.push(Frame::Backtick),
            '$' => self.dollar = Dollar::Bare,
            _ => {}
        }
    }

    fn param(&mut self, c: char, depth: u32) {
        if self.dollar == Dollar::Bare {
            self.dollar = Dollar::No;
            match c {
                '{' => {
                    self.set_top(Frame::Param { depth: depth + 1 });
                    return;
                }
                '(' => {
                    self.lose(PARAM);
                    return;
                }
                _ => {}
            }
        }
        match c {
            '$' => self.dollar = Dollar::Bare,
            '\'' | '"' | '`' | '\\' => self.lose(PARAM),
            '}' if depth == 0 => self.pop(),
            '}' => self.set_top(Frame::Param { depth: depth - 1 }),
            _ => {}
        }
    }

    fn arith(&mut self, c: char, depth: u32, closing: bool) {
        if closing {
            if c == ')' {
                self.pop();
            } else {
                self.lose(UNBALANCED);
            }
            return;
        }
        match c {
            '\'' | '"' | '`' | '\\' => self.lose(ARITH),
            '(' => self.set_top(Frame::Arith {
                depth: depth + 1,
                closing: false,
            }),
            ')' if depth == 0 => self.set_top(Frame::Arith {
                depth: 0,
                closing: true,
            }),
            ')' => self.set_top(Frame::Arith {
                depth: depth - 1,
                closing: false,
            }),
            _ => {}
        }
    }
}

/// A value written for `ctx` so that the shell reads it back as exactly its bytes.
pub fn quote_in(ctx: Context, text: &str) -> String {
    match ctx {
        Context::Bare => quote_bare(text),
        Context::Single => text.replace('\'', r"'\''"),
        Context::Double => {
            let mut out = String::with_capacity(text.len() + 8);
            for c in text.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
    }
}

/// Marks a value in a rendered command until [`assemble`] quotes it: values are written between
/// two NUL bytes, which neither a template's text nor a value may contain.
pub const MARK: char = '\0';

/// The final command line from a rendered one whose values are still marked (`\0value\0`):
/// each value quoted for the context the literal text before it leaves it in.
pub fn assemble(marked: &str) -> Result<String, Refusal> {
    let mut out = String::with_capacity(marked.len() + 16);
    let mut scanner = Scanner::new();
    for (i, part) in marked.split(MARK).enumerate() {
        if i % 2 == 0 {
            scanner.feed(part);
            out.push_str(part);
        } else {
            let ctx = scanner.context()?;
            out.push_str(&quote_in(ctx, part));
            scanner.value();
        }
    }
    Ok(out)
}

/// A problem found in a template's source: byte range and the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub offset: usize,
    pub len: usize,
    pub refusal: Refusal,
}

/// What [`check_template`] found in a shell template's source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Interpolations in places no value can be made safe.
    pub refused: Vec<Finding>,
    /// Byte ranges of the tags that use the `raw` filter.
    pub raw: Vec<(usize, usize)>,
}

/// One piece of a template's source.
#[derive(Debug)]
enum Piece<'a> {
    Text(&'a str),
    /// `{{ ... }}`: its range and whether its value ends in `| raw`.
    Expr {
        offset: usize,
        len: usize,
        raw: bool,
    },
}

/// Finds, in a template's source, every `{{ }}` whose place in the command line no value can be
/// made safe in, and every use of `raw`. Control flow (`{% if %}`) is read as if every branch
/// were taken in order; [`assemble`] decides again, on the text actually rendered.
pub fn check_template(src: &str) -> Checked {
    let mut checked = Checked::default();
    let pieces = pieces(src, &mut checked.raw);
    let mut scanner = Scanner::new();
    for p in pieces {
        match p {
            Piece::Text(t) => scanner.feed(t),
            Piece::Expr { raw: true, .. } => scanner.value(),
            Piece::Expr { offset, len, .. } => {
                if let Err(refusal) = scanner.context() {
                    checked.refused.push(Finding {
                        offset,
                        len,
                        refusal,
                    });
                }
                scanner.value();
            }
        }
    }
    checked
}

fn raw_filter(tag: &str) -> bool {
    let mut rest = tag;
    while let Some(i) = rest.find('|') {
        rest = &rest[i + 1..];
        let t = rest.trim_start();
        if t.starts_with("raw") && !t[3..].starts_with(|c: char| c == '_' || c.is_alphanumeric()) {
            return true;
        }
    }
    false
}

fn ends_with_raw(expr: &str) -> bool {
    let e = expr.trim().trim_end_matches('-').trim_end();
    match e.strip_suffix("raw") {
        Some(before) => before.trim_end().ends_with('|'),
        None => false,
    }
}

/// Splits a template's source into literal text and `{{ }}` expressions, dropping `{% %}` and
/// `{# #}` tags (whitespace control `-` applied; `{% raw %}` blocks kept as text).
fn pieces<'a>(src: &'a str, raw: &mut Vec<(usize, usize)>) -> Vec<Piece<'a>> {
    let mut out: Vec<Piece<'a>> = Vec::new();
    let mut i = 0;
    let mut trim_next = false;
    while i < src.len() {
        let rest = &src[i..];
        let next = ["{{", "{%", "{#"].iter().filter_map(|m| rest.find(m)).min();
        let Some(at) = next else {
            push_text(&mut out, rest, trim_next);
            break;
        };
        let open = &rest[at..at + 2];
        let close = match open {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let start = i + at;
        let Some(end) = src[start + 2..].find(close).map(|e| start + 2 + e + 2) else {
            push_text(&mut out, rest, trim_next);
            break;
        };
        let inner = &src[start + 2..end - 2];
        let mut text = &rest[..at];
        if trim_next {
            text = text.trim_start();
        }
        if inner.starts_with('-') {
            text = text.trim_end();
        }
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        trim_next = inner.ends_with('-');
        i = end;
        match open {
            "{{" => {
                let is_raw = raw_filter(inner);
                if is_raw {
                    raw.push((start, end - start));
                }
                out.push(Piece::Expr {
                    offset: start,
                    len: end - start,
                    raw: ends_with_raw(inner),
                });
            }
            "{%" => {
                let words: Vec<&str> = inner
                    .trim_matches(|c: char| c == '-' || c.is_whitespace())
                    .split_whitespace()
                    .collect();
                if words.first() == Some(&"raw") {
                    // The block's content is literal up to `{% endraw %}`.
                    let body_end = find_endraw(src, i);
                    let (body, after) = match body_end {
                        Some((b, a)) => (&src[i..b], a),
                        None => (&src[i..], src.len()),
                    };
                    if !body.is_empty() {
                        out.push(Piece::Text(body));
                    }
                    i = after;
                    trim_next = false;
                } else if raw_filter(inner)
                    || (words.first() == Some(&"filter") && words.get(1) == Some(&"raw"))
                {
                    raw.push((start, end - start));
                }
            }
            _ => {}
        }
    }
    out
}

fn push_text<'a>(out: &mut Vec<Piece<'a>>, text: &'a str, trim_start: bool) {
    let t = if trim_start { text.trim_start() } else { text };
    if !t.is_empty() {
        out.push(Piece::Text(t));
    }
}

/// The start of the next `{% endraw %}` at or after `from`, and the end of that tag.
fn find_endraw(src: &str, from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(at) = src[i..].find("{%") {
        let start = i + at;
        let end = src[start..].find("%}").map(|e| start + e + 2)?;
        let inner = src[start + 2..end - 2].trim_matches(|c: char| c == '-' || c.is_whitespace());
        if inner == "endraw" {
            return Some((start, end));
        }
        i = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context at the end of `text`.
    fn ctx(text: &str) -> Result<Context, Refusal> {
        let mut s = Scanner::new();
        s.feed(text);
        s.context()
    }

    #[test]
    fn quoting_state_follows_the_text() {
        use Context::*;
        for (text, want) in [
            ("echo ", Bare),
            ("echo x", Bare),
            ("echo 'hello ", Single),
            ("echo \"hello ", Double),
            ("echo 'a' \"b\" ", Bare),
            ("echo 'it\"s ", Single),
            ("echo \"it's ", Double),
            ("echo \"a\\\"b ", Double),
            ("echo $(cat ", Bare),
            ("echo \"$(cat '", Single),
            ("echo \"$(cat \"", Double),
            ("echo \"$(cat) ", Double),
            ("echo $( (cd /; ls) ) ", Bare),
            ("x=$HOME ", Bare),
            ("echo ${HOME} ", Bare),
            ("echo $((1 + 2)) ", Bare),
            ("echo `id` ", Bare),
            ("echo \"`id`\" ", Bare),
            ("echo \"`id` ", Double),
            ("echo a#b ", Bare),
            ("echo x # note\n", Bare),
            ("[[ -f x ]] && echo ", Bare),
            ("a[1]=2 ", Bare),
            ("echo $'x' \"", Bare),
        ] {
            if text.contains("$'") {
                assert_eq!(ctx(text), Err(DOLLAR_SINGLE), "{text:?}");
            } else {
                assert_eq!(ctx(text), Ok(want), "{text:?}");
            }
        }
    }

    #[test]
    fn unsafe_places_are_refused() {
        for (text, want) in [
            ("echo `", BACKTICK),
            ("echo \"`x ", BACKTICK),
            ("echo ${x:-", PARAM),
            ("echo $((1 + ", ARITH),
            ("(( x == ", ARITH),
            ("[[ $x -eq ", DBRACKET),
            ("a[", SUBSCRIPT),
            ("a[\"", SUBSCRIPT),
            ("echo # ", COMMENT),
            ("echo \\", BACKSLASH),
            ("echo \"\\", BACKSLASH),
            ("echo $", DOLLAR),
            ("echo \"$", DOLLAR),
            ("echo $HOME", DOLLAR),
            ("cat <<EOF\n", HEREDOC),
            ("cat <<'EOF'\nx\nEOF\necho ", HEREDOC),
            ("x=$(case a in a) echo;; esac) ", CASE_IN_SUB),
            ("echo $'a\\'b' ", DOLLAR_SINGLE),
        ] {
            assert_eq!(ctx(text), Err(want.clone()), "{text:?}");
        }
        // inside single quotes nothing is special
        assert_eq!(ctx("echo '\\"), Ok(Context::Single));
        assert_eq!(ctx("echo '$"), Ok(Context::Single));
        assert_eq!(ctx("echo '`"), Ok(Context::Single));
        assert_eq!(ctx("echo '# "), Ok(Context::Single));
        // `$1` is complete: a digit after it is not part of it
        assert_eq!(ctx("echo $1"), Ok(Context::Bare));
    }

    #[test]
    fn values_are_written_for_their_context() {
        assert_eq!(quote_in(Context::Bare, "eth1"), "eth1");
        assert_eq!(quote_in(Context::Bare, ""), "''");
        assert_eq!(quote_in(Context::Bare, "it's"), r"'it'\''s'");
        assert_eq!(quote_in(Context::Bare, "a=b"), "'a=b'");
        assert_eq!(quote_in(Context::Bare, "a,b"), "'a,b'");
        assert_eq!(quote_in(Context::Bare, "if"), "'if'");
        assert_eq!(quote_in(Context::Bare, "-rf"), "-rf");
        assert_eq!(quote_in(Context::Single, "x; y"), "x; y");
        assert_eq!(quote_in(Context::Single, "it's"), r"it'\''s");
        assert_eq!(
            quote_in(Context::Double, r#"$(id) `id` "q" \n"#),
            r#"\$(id) \`id\` \"q\" \\n"#
        );
    }

    #[test]
    fn the_issue_cases_stay_one_argument() {
        let cmd = assemble("echo 'hello \0x; chmod 777 /etc/f\0'").unwrap();
        assert_eq!(cmd, "echo 'hello x; chmod 777 /etc/f'");
        let cmd = assemble("echo 'hello \0it's; id\0'").unwrap();
        assert_eq!(cmd, r"echo 'hello it'\''s; id'");
        let cmd = assemble("echo \"hello \0$(id)\0\"").unwrap();
        assert_eq!(cmd, r#"echo "hello \$(id)""#);
        assert_eq!(assemble("echo `\0x\0`"), Err(BACKTICK));
    }

    #[test]
    fn template_sources_are_checked_at_each_interpolation() {
        let src = "echo 'a {{ v }}' \"{{ w }}\" `{{ x }}` {{ y | raw }} {# c #}{% if z %}${{ z }}{% endif %}";
        let c = check_template(src);
        let at: Vec<(&str, Refusal)> = c
            .refused
            .iter()
            .map(|f| (&src[f.offset..f.offset + f.len], f.refusal.clone()))
            .collect();
        assert_eq!(at, [("{{ x }}", BACKTICK), ("{{ z }}", DOLLAR)]);
        assert_eq!(
            c.raw
                .iter()
                .map(|&(o, l)| &src[o..o + l])
                .collect::<Vec<_>>(),
            ["{{ y | raw }}"]
        );
        // `{% raw %}` blocks are literal text; a `raw` filter block is a use of raw
        let c = check_template(
            "{% raw %}'{{ x }}'{% endraw %} {{ v }}{% filter raw %}x{% endfilter %}",
        );
        assert_eq!(c.refused.len(), 0, "{c:?}");
        assert_eq!(c.raw.len(), 1);
        // whitespace control joins the value to the text before it
        let c = check_template("echo \\ {{- v }}");
        assert_eq!(c.refused[0].refusal, BACKSLASH);
        // `raw` mid-chain is not an opaque insertion, but still a use of raw
        let c = check_template("echo `{{ v | raw | upper }}`");
        assert_eq!(c.refused.len(), 1);
        assert_eq!(c.raw.len(), 1);
        assert!(check_template("{{ rawness }} {{ v | raw_x }}")
            .raw
            .is_empty());
    }
}
