//! Helpers shared by the fuzz targets: reading a target's knobs from the front of its input,
//! cutting input into the pieces a socket might deliver, and a strict reader for the JavaScript
//! string literals the Pushlet forever frame writes.
//!
//! Most targets take raw bytes so that a seed file is a real request or frame; the first byte
//! or two are knobs (limits, split pattern) documented at the top of each target, so the
//! fuzzer can steer them too.

/// Splits `data` into its first `N` bytes (the knobs, zero-filled when the input is shorter)
/// and the rest.
pub fn knobs<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut k = [0u8; N];
    let n = data.len().min(N);
    k[..n].copy_from_slice(&data[..n]);
    (k, &data[n..])
}

/// Piece lengths for feeding `len` bytes in arrival-sized pieces, decided by `seed`: 0 gives one
/// piece, other seeds a deterministic mix of 1-byte, small and larger pieces.
pub fn pieces(seed: u8, len: usize) -> Vec<usize> {
    if seed == 0 || len == 0 {
        return vec![len];
    }
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = match state % 4 {
            0 => 1,
            1 => 1 + (state >> 8) as usize % 4,
            2 => 1 + (state >> 8) as usize % 32,
            _ => 1 + (state >> 8) as usize % 512,
        };
        let size = size.min(left);
        out.push(size);
        left -= size;
    }
    out
}

/// Reads one JavaScript string literal (ECMA-262 §12.9.4) at the start of `s`, quoted with `"`
/// or `'`, returning its value and the rest. Strict: a raw line terminator (LF, CR, U+2028,
/// U+2029, which some engines refuse) inside the literal, an unknown escape or an unterminated
/// literal is `None`. Handles the escapes Halley writes (`\\ \" \' \n \r \t \xNN \uNNNN`).
pub fn js_string(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Some((out, &s[i + c.len_utf8()..])),
            '\n' | '\r' | '\u{2028}' | '\u{2029}' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    '\\' | '"' | '\'' => out.push(e),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'x' => out.push(hex_char(&mut chars, 2)?),
                    'u' => out.push(hex_char(&mut chars, 4)?),
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// The character whose code is the next `digits` hex digits.
fn hex_char(chars: &mut std::str::CharIndices<'_>, digits: usize) -> Option<char> {
    let mut code = 0;
    for _ in 0..digits {
        code = code * 16 + chars.next()?.1.to_digit(16)?;
    }
    char::from_u32(code)
}

/// XML 1.0 `Char` (§2.2): what an XML document can carry at all.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}
