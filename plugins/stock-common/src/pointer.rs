//! JSON pointers (RFC 6901): `/a/b` is member `b` of member `a`; `~1` in a
//! token is `/`, `~0` is `~`; a token of digits also indexes an array.

/// A parsed JSON pointer, as the text it was written in and its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `text`.
    ///
    /// # Errors
    /// The text does not start with `/` (the empty pointer, the whole record,
    /// is refused: every stock plugin edits members of a record), or has a
    /// `~` not followed by `0` or `1`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON pointer: it must start with `/` (e.g. `/user/name`)"
            ));
        };
        let tokens = rest
            .split('/')
            .map(|t| {
                let mut out = String::with_capacity(t.len());
                let mut chars = t.chars();
                while let Some(c) = chars.next() {
                    if c != '~' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "`{text}` is not a JSON pointer: `~` must be followed by 0 or 1"
                            ));
                        }
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its tokens, unescaped (at least one).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The member name when the pointer names a top-level member.
    pub fn top_level(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The last token: the name a value at this pointer is known by.
    pub fn last(&self) -> &str {
        self.tokens.last().map_or("", String::as_str)
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unescaped() {
        let p = Pointer::parse("/a~1b/c~0d/0").unwrap();
        assert_eq!(p.tokens(), ["a/b", "c~d", "0"]);
        assert_eq!(p.top_level(), None);
        assert_eq!(p.last(), "0");
        assert_eq!(Pointer::parse("/x").unwrap().top_level(), Some("x"));
        assert_eq!(Pointer::parse("/").unwrap().tokens(), [""]);
        assert!(Pointer::parse("x").is_err());
        assert!(Pointer::parse("").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }
}
