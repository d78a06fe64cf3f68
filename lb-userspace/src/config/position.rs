//! Byte offsets (what toml's spans hold) to the line and column people read.

/// 1-based line and column of byte `offset` in `text`. The column counts
/// characters, not bytes, so it matches what an editor shows after a
/// non-ASCII character. Offsets past the end point just after the last
/// character, where "unexpected end of file" errors belong.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // A span never starts inside a character, but be safe rather than panic
    // while reporting an error.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The 1-based line of byte `offset`, for messages that point back at an
/// earlier definition.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    line_column(text, offset).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_character_is_1_1() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn counts_lines_and_characters() {
        let text = "ab\ncd\n\u{e9}\u{e9}x\n";
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 4), (2, 2));
        // Two two-byte characters before `x`: byte 10, column 3.
        assert_eq!(line_column(text, 10), (3, 3));
    }

    #[test]
    fn end_of_file_is_after_the_last_character() {
        assert_eq!(line_column("ab\ncd", 5), (2, 3));
        assert_eq!(line_column("ab\n", 3), (2, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn offset_inside_a_character_moves_back_to_its_start() {
        assert_eq!(line_column("\u{e9}x", 1), (1, 1));
    }
}
