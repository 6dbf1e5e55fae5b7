//! Fitting text to the terminal: its width, a description's first sentence, and cutting a line
//! at a word boundary with `…` when it does not fit.

/// Width used when neither `COLUMNS` nor a terminal says otherwise (output piped to a file or
/// another program).
pub const DEFAULT_WIDTH: usize = 100;

/// The terminal width: `$COLUMNS` when it is a positive number, else the size of the terminal
/// on stdout, else [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    width_from(
        std::env::var("COLUMNS").ok().as_deref(),
        terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)),
    )
}

fn width_from(columns: Option<&str>, tty: Option<usize>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&w| w > 0)
        .or(tty.filter(|&w| w > 0))
        .unwrap_or(DEFAULT_WIDTH)
}

/// The first sentence of the first paragraph of `text`, on one line.
///
/// A sentence ends at `.`, `!` or `?` followed by the end of the paragraph or by a space and a
/// capital letter, so "e.g. web-vpc" and "catalina.out" do not end one.
pub fn first_sentence(text: &str) -> String {
    let paragraph = text
        .trim()
        .split("\n\n")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let chars: Vec<char> = paragraph.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let ends = match (chars.get(i + 1), chars.get(i + 2)) {
            (None, _) => true,
            (Some(' '), Some(next)) => next.is_uppercase(),
            _ => false,
        };
        if ends {
            return chars[..=i].iter().collect();
        }
    }
    paragraph
}

/// `text` cut to at most `width` characters: whole words followed by `…` when it is too long
/// (a single word longer than the width is cut inside itself).
pub fn ellipsize(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let room = width - 1; // for the `…`
    let mut kept = String::new();
    for word in text.split(' ') {
        let len = kept.chars().count() + usize::from(!kept.is_empty()) + word.chars().count();
        if len > room {
            break;
        }
        if !kept.is_empty() {
            kept.push(' ');
        }
        kept.push_str(word);
    }
    if kept.is_empty() {
        kept = text.chars().take(room).collect();
    }
    // "…" reads better after a word than after its punctuation.
    let kept = kept.trim_end_matches([',', ';', ':', ' ', '(', '-']);
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_prefers_columns_then_the_terminal() {
        assert_eq!(width_from(Some("60"), Some(200)), 60);
        assert_eq!(width_from(Some(" 72 "), None), 72);
        assert_eq!(width_from(Some("wide"), Some(130)), 130);
        assert_eq!(width_from(Some("0"), None), DEFAULT_WIDTH);
        assert_eq!(width_from(None, Some(0)), DEFAULT_WIDTH);
        assert_eq!(width_from(None, None), DEFAULT_WIDTH);
    }

    #[test]
    fn first_sentence_of_the_first_paragraph_on_one_line() {
        assert_eq!(
            first_sentence(
                "cloudstack-management fails to start (or logs \"catalina.out: Permission\n\
                 denied\") after an upgrade. Fixes the mode.\n"
            ),
            "cloudstack-management fails to start (or logs \"catalina.out: Permission denied\") \
             after an upgrade."
        );
        assert_eq!(
            first_sentence("Adds the range, e.g. 1000-1099, to the network. Then waits."),
            "Adds the range, e.g. 1000-1099, to the network."
        );
        assert_eq!(
            first_sentence("no full stop in the\nfirst paragraph\n\nSecond one."),
            "no full stop in the first paragraph"
        );
        assert_eq!(first_sentence("Is it up? Then stop."), "Is it up?");
        assert_eq!(first_sentence(""), "");
    }

    #[test]
    fn ellipsize_cuts_at_a_word_and_marks_the_cut() {
        assert_eq!(ellipsize("fits exactly", 12), "fits exactly");
        assert_eq!(ellipsize("one two three", 10), "one two…");
        assert_eq!(ellipsize("one two, three", 9), "one two…");
        assert_eq!(ellipsize("abcdefghijkl", 5), "abcd…");
        assert_eq!(ellipsize("abc", 0), "");
        for w in 1..30 {
            let s = ellipsize("Guest VMs of a network or VPC get no DHCP lease", w);
            assert!(s.chars().count() <= w, "{w}: {s:?}");
            assert!(s.ends_with('…'), "{w}: {s:?}");
        }
    }
}
