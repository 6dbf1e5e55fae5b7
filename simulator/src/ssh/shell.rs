//! The command-line language of the simulated hosts: a small subset of `sh`.
//!
//! Owned here: splitting a command line into simple commands joined by `;`, `&&` and `||`,
//! words with `'single'`, `"double"` and `\` quoting, `#` comments, and the redirections
//! `2>&1`, `>&2` (`1>&2`) and `>/dev/null` (`1>`, `2>`, `&>`). Everything else a shell would
//! do (pipes, background jobs, redirections to files, variables, globs, subshells) is
//! refused when parsing, so a command line never half-runs because the simulator misread it.

use std::fmt;

/// How a simple command is joined to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// `;` (or the first command): always runs.
    Always,
    /// `&&`: runs when the previous status is 0.
    And,
    /// `||`: runs when the previous status is not 0.
    Or,
}

/// Where one of a command's output streams goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
    Null,
}

/// One simple command: its words and where its stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simple {
    pub join: Join,
    pub words: Vec<String>,
    pub stdout: Sink,
    pub stderr: Sink,
}

/// Why a command line was refused; the shell's exit status is 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `;`, `&&`, `||`, `|`, `&`
    Op(&'static str),
    /// A redirection operator with its target when it has one (`2>&1` has none).
    Redir(String, Option<String>),
}

fn syntax(token: &str) -> ParseError {
    ParseError(format!(
        "bash: -c: line 1: syntax error near unexpected token `{token}'"
    ))
}

fn unsupported(what: &str) -> ParseError {
    ParseError(format!(
        "sim-ssh: {what} are not supported by the simulated shell"
    ))
}

/// Splits a command line into tokens.
fn lex(line: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ' ' || c == '\t' || c == '\n' {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match two.as_str() {
            "&&" | "||" => {
                tokens.push(Token::Op(if two == "&&" { "&&" } else { "||" }));
                i += 2;
                continue;
            }
            _ => {}
        }
        if c == ';' || c == '|' || (c == '&' && chars.get(i + 1) != Some(&'>')) {
            tokens.push(Token::Op(match c {
                ';' => ";",
                '|' => "|",
                _ => "&",
            }));
            i += 1;
            continue;
        }
        // A redirection: [n]>, [n]>>, [n]>&m, &>, <
        let digit = c.is_ascii_digit() && matches!(chars.get(i + 1), Some('>') | Some('<'));
        if c == '>' || c == '<' || digit || c == '&' {
            let mut op = String::new();
            if digit || c == '&' {
                op.push(c);
                i += 1;
            }
            op.push(chars[i]);
            i += 1;
            if chars.get(i) == Some(&'>') || chars.get(i) == Some(&'&') {
                op.push(chars[i]);
                i += 1;
            }
            if op.ends_with('&') {
                // n>&m: the target is a descriptor number
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                if start == i {
                    return Err(syntax("newline"));
                }
                op.extend(&chars[start..i]);
                tokens.push(Token::Redir(op, None));
                continue;
            }
            while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
                i += 1;
            }
            let (word, next) = lex_word(&chars, i)?;
            if word.is_none() {
                return Err(syntax("newline"));
            }
            i = next;
            tokens.push(Token::Redir(op, word));
            continue;
        }
        let (word, next) = lex_word(&chars, i)?;
        i = next;
        if let Some(w) = word {
            tokens.push(Token::Word(w));
        }
    }
    Ok(tokens)
}

/// Reads one word starting at `i`; `None` when no word starts there.
fn lex_word(chars: &[char], mut i: usize) -> Result<(Option<String>, usize), ParseError> {
    let mut word = String::new();
    let mut any = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' => break,
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .ok_or_else(|| {
                        ParseError(
                            "bash: -c: line 1: unexpected EOF while looking for matching `''"
                                .into(),
                        )
                    })?;
                word.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
                any = true;
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(ParseError(
                                "bash: -c: line 1: unexpected EOF while looking for matching `\"'"
                                    .into(),
                            ))
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`')) => {
                            word.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') | Some('`') => return Err(unsupported("substitutions")),
                        Some(&x) => {
                            word.push(x);
                            i += 1;
                        }
                    }
                }
                any = true;
            }
            '\\' => {
                if let Some(&x) = chars.get(i + 1) {
                    if x != '\n' {
                        word.push(x);
                    }
                }
                i += 2;
                any = true;
            }
            '$' | '`' => return Err(unsupported("variables and substitutions")),
            '(' | ')' => return Err(unsupported("subshells")),
            '*' | '?' => return Err(unsupported("globs")),
            _ => {
                word.push(c);
                i += 1;
                any = true;
            }
        }
    }
    Ok((any.then_some(word), i))
}

/// Parses a command line into simple commands.
pub fn parse(line: &str) -> Result<Vec<Simple>, ParseError> {
    let mut out: Vec<Simple> = Vec::new();
    let mut cur: Option<Simple> = None;
    let mut join = Join::Always;
    // After `&&`/`||` a command must follow; after `;` one may.
    let mut need_command = false;
    for token in lex(line)? {
        match token {
            Token::Word(w) => {
                cur.get_or_insert_with(|| Simple {
                    join,
                    words: Vec::new(),
                    stdout: Sink::Stdout,
                    stderr: Sink::Stderr,
                })
                .words
                .push(w);
            }
            Token::Redir(op, target) => {
                let simple = cur.get_or_insert_with(|| Simple {
                    join,
                    words: Vec::new(),
                    stdout: Sink::Stdout,
                    stderr: Sink::Stderr,
                });
                let to_null = target.as_deref() == Some("/dev/null");
                match (op.as_str(), to_null) {
                    ("2>&1", _) => simple.stderr = simple.stdout,
                    (">&2" | "1>&2", _) => simple.stdout = Sink::Stderr,
                    (">" | "1>" | ">>" | "1>>", true) => simple.stdout = Sink::Null,
                    ("2>" | "2>>", true) => simple.stderr = Sink::Null,
                    ("&>" | "&>>", true) => {
                        simple.stdout = Sink::Null;
                        simple.stderr = Sink::Null;
                    }
                    _ => {
                        return Err(unsupported(
                            "redirections other than 2>&1, >&2 and >/dev/null",
                        ))
                    }
                }
            }
            Token::Op(op) => {
                let Some(simple) = cur.take() else {
                    return Err(syntax(op));
                };
                if simple.words.is_empty() {
                    return Err(syntax(op));
                }
                out.push(simple);
                match op {
                    ";" => {
                        join = Join::Always;
                        need_command = false;
                    }
                    "&&" => {
                        join = Join::And;
                        need_command = true;
                    }
                    "||" => {
                        join = Join::Or;
                        need_command = true;
                    }
                    "|" => return Err(unsupported("pipes")),
                    _ => return Err(unsupported("background jobs (&)")),
                }
            }
        }
    }
    match cur {
        Some(simple) if !simple.words.is_empty() => out.push(simple),
        Some(_) => return Err(syntax("newline")),
        None if need_command => return Err(syntax("newline")),
        None => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<String>> {
        parse(line).unwrap().into_iter().map(|s| s.words).collect()
    }

    #[test]
    fn quoting() {
        assert_eq!(
            words(r#"echo 'a b' "c \"d\" \\" e\ f g'h'"i""#),
            [["echo", "a b", "c \"d\" \\", "e f", "ghi"]]
        );
        assert_eq!(
            words("stat -c '%a %U' -- /x"),
            [["stat", "-c", "%a %U", "--", "/x"]]
        );
        assert_eq!(words("echo ''"), [["echo", ""]]);
        assert_eq!(words("echo a # comment"), [["echo", "a"]]);
    }

    #[test]
    fn lists_and_joins() {
        let p = parse("true; false && echo a || echo b;").unwrap();
        let joins: Vec<Join> = p.iter().map(|s| s.join).collect();
        assert_eq!(joins, [Join::Always, Join::Always, Join::And, Join::Or]);
        assert_eq!(words("a;b"), [["a"], ["b"]]);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn redirections() {
        let p = parse("echo x 2>&1 >/dev/null").unwrap();
        assert_eq!((p[0].stdout, p[0].stderr), (Sink::Null, Sink::Stdout));
        let p = parse("echo x >&2").unwrap();
        assert_eq!(p[0].stdout, Sink::Stderr);
        let p = parse("cat /nope 2> /dev/null").unwrap();
        assert_eq!((p[0].stdout, p[0].stderr), (Sink::Stdout, Sink::Null));
        let p = parse("cat /nope &>/dev/null").unwrap();
        assert_eq!((p[0].stdout, p[0].stderr), (Sink::Null, Sink::Null));
    }

    #[test]
    fn refused() {
        for (line, needle) in [
            ("ls | grep x", "pipes"),
            ("sleep 1 &", "background"),
            ("echo x > /tmp/f", "redirections"),
            ("echo $HOME", "variables"),
            ("ls *", "globs"),
            ("&& true", "unexpected token `&&'"),
            ("true &&", "unexpected token `newline'"),
            ("true ;; false", "unexpected token `;'"),
            ("echo 'x", "matching"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.0.contains(needle), "{line}: {e}");
        }
    }
}
