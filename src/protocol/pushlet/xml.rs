//! The little XML Pushlet needs, both ways: reading one `<event k="v" .../>` element (a POST
//! body) and escaping attribute values for the `xml` and `xml-strict` wire formats.
//!
//! This is not a general XML parser. It accepts exactly what a Pushlet client sends: an optional
//! XML declaration, one `event` element with attributes and no content, and whitespace. Inside
//! that subset it follows XML 1.0 (Fifth Edition): attribute syntax (§3.1), the predefined
//! entities and character references (§4.1, §4.6), end-of-line handling (§2.11) and attribute
//! value normalisation (§3.3.3). It allocates only the names and values it returns.

/// Reads a document made of one `<event .../>` element: an optional byte-order mark, an optional
/// `<?xml ...?>` declaration, whitespace, the element (`/>` or an empty `></event>`),
/// whitespace. Each attribute goes to `attr` in document order (its error stops the parse); a
/// syntax error goes through `malformed` with a one-line reason.
pub(crate) fn parse_event<E>(
    text: &str,
    mut attr: impl FnMut(String, String) -> Result<(), E>,
    malformed: impl Fn(&'static str) -> E,
) -> Result<(), E> {
    let mut p = Parser { text, at: 0 };
    p.prolog().map_err(&malformed)?;
    p.element("event", &mut attr, &malformed)?;
    p.skip_space();
    if p.at != text.len() {
        return Err(malformed("unexpected content after the event element"));
    }
    Ok(())
}

/// Appends `value` escaped for an attribute value in double or single quotes. Besides the five
/// markup characters, tab, newline and carriage return become character references so they
/// survive the reader's normalisation (§3.3.3); other characters XML 1.0 cannot carry at all
/// (most C0 controls, U+FFFE, U+FFFF; §2.2) become U+FFFD.
pub(crate) fn escape_attr(out: &mut Vec<u8>, value: &str) {
    let mut start = 0;
    for (i, c) in value.char_indices() {
        let replacement: &[u8] = match c {
            '&' => b"&amp;",
            '<' => b"&lt;",
            '>' => b"&gt;",
            '"' => b"&quot;",
            '\'' => b"&apos;",
            '\t' => b"&#9;",
            '\n' => b"&#10;",
            '\r' => b"&#13;",
            c if !is_xml_char(c) => "\u{FFFD}".as_bytes(),
            _ => continue,
        };
        out.extend_from_slice(&value.as_bytes()[start..i]);
        out.extend_from_slice(replacement);
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&value.as_bytes()[start..]);
}

/// XML 1.0 `Char` (§2.2).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// A position in the document. Every delimiter it looks for is ASCII, so each index it stops
/// at is a char boundary.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    /// BOM, declaration, whitespace.
    fn prolog(&mut self) -> Result<(), &'static str> {
        if self.rest().starts_with('\u{FEFF}') {
            self.at += '\u{FEFF}'.len_utf8();
        }
        if self.eat("<?xml") {
            let Some(end) = self.rest().find("?>") else {
                return Err("unterminated XML declaration");
            };
            self.at += end + 2;
        }
        self.skip_space();
        Ok(())
    }

    /// `<name attrs />` or `<name attrs ></name>`.
    fn element<E>(
        &mut self,
        name: &str,
        attr: &mut impl FnMut(String, String) -> Result<(), E>,
        malformed: &impl Fn(&'static str) -> E,
    ) -> Result<(), E> {
        if !self.eat("<") || !self.eat(name) {
            return Err(malformed("expected an <event> element"));
        }
        let mut seen: Vec<&'a str> = Vec::new();
        loop {
            let spaced = self.skip_space();
            if self.eat("/>") {
                return Ok(());
            }
            if self.eat(">") {
                self.skip_space();
                if self.eat("</") && self.eat(name) {
                    self.skip_space();
                    if self.eat(">") {
                        return Ok(());
                    }
                }
                return Err(malformed("the event element must be empty"));
            }
            if !spaced {
                return Err(malformed("expected whitespace before an attribute"));
            }
            let key = self.name().map_err(malformed)?;
            // Well-formedness constraint "Unique Att Spec" (§3.1). `seen` is bounded by the
            // caller's field limit: `attr` fails before it grows past it.
            if seen.contains(&key) {
                return Err(malformed("duplicate attribute"));
            }
            seen.push(key);
            self.skip_space();
            if !self.eat("=") {
                return Err(malformed("expected '=' after an attribute name"));
            }
            self.skip_space();
            let value = self.value().map_err(malformed)?;
            attr(key.to_owned(), value)?;
        }
    }

    /// An attribute name: ASCII name characters, or any non-ASCII character (XML allows many;
    /// the caller decides which field names it takes).
    fn name(&mut self) -> Result<&'a str, &'static str> {
        let start = self.at;
        let len = self
            .rest()
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':') || b >= 0x80)
            .count();
        // A run of name bytes stops at an ASCII byte, so it ends on a char boundary.
        self.at += len;
        match self.text.get(start..self.at) {
            Some(name)
                if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') =>
            {
                Ok(name)
            }
            _ => Err("expected an attribute name"),
        }
    }

    /// A quoted value with entities and character references resolved and whitespace
    /// normalised (§2.11, §3.3.3).
    fn value(&mut self) -> Result<String, &'static str> {
        let quote = match self.rest().as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => q as char,
            _ => return Err("attribute value is not quoted"),
        };
        self.at += 1;
        let Some(len) = self.rest().find(quote) else {
            return Err("unterminated attribute value");
        };
        let raw = &self.rest()[..len];
        self.at += len + 1;
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '<' => return Err("'<' in an attribute value"),
                '&' => {
                    let Some(end) = raw[i..].find(';') else {
                        return Err("unterminated entity reference");
                    };
                    out.push(reference(&raw[i + 1..i + end])?);
                    while chars.next_if(|&(j, _)| j <= i + end).is_some() {}
                }
                '\r' => {
                    // "\r\n" and a lone "\r" are one line end (§2.11), one space (§3.3.3).
                    chars.next_if(|&(_, n)| n == '\n');
                    out.push(' ');
                }
                '\n' | '\t' => out.push(' '),
                c if !is_xml_char(c) => return Err("a character XML does not allow"),
                c => out.push(c),
            }
        }
        Ok(out)
    }

    /// Skips XML whitespace (§2.3 `S`); says whether there was any.
    fn skip_space(&mut self) -> bool {
        let len = self.rest().bytes().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
        self.at += len;
        len > 0
    }

    fn eat(&mut self, literal: &str) -> bool {
        let found = self.rest().starts_with(literal);
        if found {
            self.at += literal.len();
        }
        found
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.at..).unwrap_or("")
    }
}

/// Longest character reference body accepted (`#x10FFFF`), in bytes.
const MAX_REFERENCE_LEN: usize = 8;

/// Resolves the text between `&` and `;`: a predefined entity (§4.6) or a character reference
/// (§4.1) to an XML `Char`.
fn reference(body: &str) -> Result<char, &'static str> {
    let code = match body {
        "amp" => return Ok('&'),
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "quot" => return Ok('"'),
        "apos" => return Ok('\''),
        _ if body.len() > MAX_REFERENCE_LEN => return Err("unknown entity"),
        _ => {
            if let Some(hex) = body.strip_prefix("#x") {
                digits(hex, 16)
            } else if let Some(dec) = body.strip_prefix('#') {
                digits(dec, 10)
            } else {
                None
            }
        }
    };
    let Some(code) = code else {
        return Err("unknown entity");
    };
    char::from_u32(code).filter(|&c| is_xml_char(c)).ok_or("character reference to a character XML does not allow")
}

/// `s` as a number in `radix`, only if it is all digits of that radix (no sign).
fn digits(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

/// Test support: reads a sequence of `<event/>` elements, optionally wrapped in one `<pushlet>`
/// element, into their attribute lists (the golden tests compare replies with it).
#[cfg(test)]
pub(crate) fn parse_events(text: &str) -> Result<Vec<Vec<(String, String)>>, &'static str> {
    let mut p = Parser { text, at: 0 };
    let wrapped = p.eat("<pushlet>");
    let mut events = Vec::new();
    loop {
        p.skip_space();
        if p.rest().is_empty() || p.rest().starts_with("</pushlet>") {
            break;
        }
        let mut attrs = Vec::new();
        p.element(
            "event",
            &mut |k, v| {
                attrs.push((k, v));
                Ok(())
            },
            &|why| why,
        )?;
        events.push(attrs);
    }
    if wrapped && !p.eat("</pushlet>") {
        return Err("missing </pushlet>");
    }
    if !p.rest().is_empty() {
        return Err("unexpected content after the events");
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>, &'static str> {
        let mut attrs = Vec::new();
        parse_event(
            text,
            |k, v| {
                attrs.push((k, v));
                Ok(())
            },
            |why| why,
        )?;
        Ok(attrs)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_an_event_element() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (r#"<event p_event="hb" p_id='x1'/>"#, &[("p_event", "hb"), ("p_id", "x1")]),
            ("\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n <event a = \"1\"\n/>\r\n", &[("a", "1")]),
            (r#"<event a="1" ></event >"#, &[("a", "1")]),
            ("<event/>", &[]),
            (
                r#"<event v="&amp;&lt;&gt;&quot;&apos;&#65;&#x42;&#x1F600;" q='"' s="'"/>"#,
                &[("v", "&<>\"'AB\u{1F600}"), ("q", "\""), ("s", "'")],
            ),
            // Literal whitespace is normalised; referenced whitespace is kept (XML 1.0 §3.3.3).
            ("<event v=\"a\r\nb\rc\nd\te\" w=\"&#10;&#13;&#9;\"/>", &[("v", "a b c d e"), ("w", "\n\r\t")]),
            ("<event t=\"caf\u{e9} \u{2028}\"/>", &[("t", "caf\u{e9} \u{2028}")]),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(pairs(want)), "{text:?}");
        }
    }

    #[test]
    fn rejects_malformed_documents() {
        let cases: &[(&str, &str)] = &[
            ("", "expected an <event> element"),
            ("hello", "expected an <event> element"),
            ("<evnt a=\"1\"/>", "expected an <event> element"),
            ("<event a=\"1\">x</event>", "the event element must be empty"),
            ("<event a=\"1\"></other>", "the event element must be empty"),
            ("<event a=\"1\" ", "expected an attribute name"),
            ("<event a=\"1\"b=\"2\"/>", "expected whitespace before an attribute"),
            ("<event a/>", "expected '=' after an attribute name"),
            ("<event a=1/>", "attribute value is not quoted"),
            ("<event a=\"1/>", "unterminated attribute value"),
            ("<event a=\"1\" a=\"2\"/>", "duplicate attribute"),
            ("<event a=\"<\"/>", "'<' in an attribute value"),
            ("<event a=\"&\"/>", "unterminated entity reference"),
            ("<event a=\"&nbsp;\"/>", "unknown entity"),
            ("<event a=\"&#;\"/>", "unknown entity"),
            ("<event a=\"&#x;\"/>", "unknown entity"),
            ("<event a=\"&#12a;\"/>", "unknown entity"),
            ("<event a=\"&#-1;\"/>", "unknown entity"),
            ("<event a=\"&#99999999999;\"/>", "unknown entity"),
            ("<event a=\"&#0;\"/>", "character reference to a character XML does not allow"),
            ("<event a=\"&#xD800;\"/>", "character reference to a character XML does not allow"),
            ("<event a=\"&#x110000;\"/>", "character reference to a character XML does not allow"),
            ("<event a=\"\u{1}\"/>", "a character XML does not allow"),
            ("<event 1a=\"x\"/>", "expected an attribute name"),
            ("<event =\"x\"/>", "expected an attribute name"),
            ("<event/><event/>", "unexpected content after the event element"),
            ("<?xml version=\"1.0\"", "unterminated XML declaration"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Err(*want), "{text:?}");
        }
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let full = r#"<event p_event="publish" v="&amp;&#x41;"/>"#;
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).is_err(), "{:?}", &full[..cut]);
        }
        assert!(parse(full).is_ok());
    }

    #[test]
    fn attribute_errors_stop_the_parse() {
        let mut calls = 0;
        let r = parse_event(
            r#"<event a="1" b="2" c="3"/>"#,
            |_, _| {
                calls += 1;
                if calls == 2 {
                    Err("enough")
                } else {
                    Ok(())
                }
            },
            |why| why,
        );
        assert_eq!(r, Err("enough"));
        assert_eq!(calls, 2);
    }

    #[test]
    fn escaping_round_trips() {
        let hostile = "a&b<c>d\"e'f\tg\nh\r\ni \u{2028} caf\u{e9} \u{1F600}";
        let mut out = b"<event v=\"".to_vec();
        escape_attr(&mut out, hostile);
        out.extend_from_slice(b"\"/>");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text[10..text.len() - 3].contains(['<', '>', '"', '\'', '\n', '\r', '\t']), "{text}");
        assert_eq!(parse(&text), Ok(pairs(&[("v", hostile)])));
    }

    #[test]
    fn escaping_replaces_what_xml_cannot_carry() {
        let mut out = Vec::new();
        escape_attr(&mut out, "a\u{0}b\u{1b}c\u{FFFF}d");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "a\u{FFFD}b\u{FFFD}c\u{FFFD}d");
    }

    #[test]
    fn reads_wrapped_sequences() {
        let text = r#"<pushlet><event a="1" /><event b="&lt;" /></pushlet>"#;
        assert_eq!(parse_events(text), Ok(vec![pairs(&[("a", "1")]), pairs(&[("b", "<")])]));
        assert_eq!(parse_events(r#"<event a="1" /><event a="2" />"#).map(|v| v.len()), Ok(2));
        assert_eq!(parse_events("<pushlet><event/>"), Err("missing </pushlet>"));
    }
}
