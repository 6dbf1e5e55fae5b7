//! POSIX shell quoting of one word for a bare place in a command line: single quotes, or the
//! word as it is when it is plain. Used by templates (the `quote` filter, and bare values in
//! shell templates through `template::shell`) and by the SSH transport (the `ssh` command a jump
//! host runs for a nested connection).
//!
//! Not here: quoting that follows where a value lands inside a template's command line (inside
//! `'...'` or `"..."`, or refused): `template::shell`.

/// Why a value with a NUL byte is refused.
pub(crate) const NUL_VALUE: &str =
    "a value contains a NUL byte, which no program argument can carry";

/// Shell reserved words: a plain value equal to one of them is quoted, so it can never be read
/// as syntax.
const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for",
    "in", "function", "select", "time", "coproc",
];

/// A value unquoted: POSIX single quotes, or the value itself when it is a plain word (letters,
/// digits and `@%+:./_-`, not a reserved word). `=` and `,` are quoted: they could make an
/// assignment or a brace expansion together with the text around the value.
pub fn quote_bare(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+:./-_".contains(&b))
        && !RESERVED.contains(&text);
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// POSIX single-quoting for a bare place in a command line; plain words stay as they are.
pub fn shell_quote(text: &str) -> Result<String, String> {
    if text.contains('\0') {
        return Err(NUL_VALUE.into());
    }
    Ok(quote_bare(text))
}
