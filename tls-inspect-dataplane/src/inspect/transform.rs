//! Suricata's transforms: a sticky buffer's value changed before its contents are matched
//! (`http.uri; url_decode; content:"/admin";`). Each does what Suricata's own does
//! (rust/src/detect/transforms/), byte for byte; a content a transform could never produce (an
//! uppercase letter after `to_lowercase`, a space after `strip_whitespace`) is refused, as
//! Suricata refuses it.

use std::borrow::Cow;

use sha2::Digest;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    ToLowercase,
    ToUppercase,
    UrlDecode,
    StripWhitespace,
    CompressWhitespace,
    HeaderLowercase,
    ToMd5,
    ToSha1,
    ToSha256,
}

/// At most this many transforms on one buffer.
pub const MAX_TRANSFORMS: usize = 4;

/// A buffer's transforms, in the order written (none: the value as it is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Transforms([Option<Transform>; MAX_TRANSFORMS]);

fn is_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' ')
}

impl Transform {
    /// The transform a rule keyword names.
    pub fn keyword(k: &str) -> Option<Self> {
        Some(match k {
            "to_lowercase" => Self::ToLowercase,
            "to_uppercase" => Self::ToUppercase,
            "url_decode" => Self::UrlDecode,
            "strip_whitespace" => Self::StripWhitespace,
            "compress_whitespace" => Self::CompressWhitespace,
            "header_lowercase" => Self::HeaderLowercase,
            "to_md5" => Self::ToMd5,
            "to_sha1" => Self::ToSha1,
            "to_sha256" => Self::ToSha256,
            _ => return None,
        })
    }

    fn apply(self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::ToLowercase => input.to_ascii_lowercase(),
            Self::ToUppercase => input.to_ascii_uppercase(),
            Self::UrlDecode => url_decode(input),
            Self::StripWhitespace => input.iter().copied().filter(|c| !is_space(*c)).collect(),
            Self::CompressWhitespace => {
                let mut out = Vec::with_capacity(input.len());
                let mut space = false;
                for &c in input {
                    if !is_space(c) {
                        out.push(c);
                        space = false;
                    } else if !space {
                        out.push(c);
                        space = true;
                    }
                }
                out
            }
            Self::HeaderLowercase => {
                let mut in_value = false;
                input
                    .iter()
                    .map(|&c| {
                        if !in_value {
                            in_value = c == b':';
                            c.to_ascii_lowercase()
                        } else {
                            in_value = c != b'\n';
                            c
                        }
                    })
                    .collect()
            }
            Self::ToMd5 => md5::Md5::digest(input).to_vec(),
            Self::ToSha1 => sha1::Sha1::digest(input).to_vec(),
            Self::ToSha256 => sha2::Sha256::digest(input).to_vec(),
        }
    }

    /// A content this transform's output can hold (Suricata's validation).
    fn can_produce(self, content: &[u8], nocase: bool) -> Result<(), String> {
        let bad = match self {
            Self::ToLowercase => !nocase && content.iter().any(u8::is_ascii_uppercase),
            Self::ToUppercase => !nocase && content.iter().any(u8::is_ascii_lowercase),
            Self::StripWhitespace => content.iter().any(|c| is_space(*c)),
            Self::CompressWhitespace => content.windows(2).any(|w| is_space(w[0]) && is_space(w[1])),
            _ => false,
        };
        if bad {
            return Err(format!("a content after {self:?} can never match its output (Suricata refuses it too)"));
        }
        Ok(())
    }
}

/// Suricata's url_decode: `%XX` decoded (an invalid escape kept as it is) and `+` a space.
fn url_decode(input: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b'%' {
            match (input.get(i + 1).copied().and_then(hex), input.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                // `%` then a byte that is no hex digit: both kept, the scan goes on after them.
                (None, _) => {
                    out.push(b'%');
                    if let Some(&n) = input.get(i + 1) {
                        out.push(n);
                    }
                    i += 2;
                    continue;
                }
                (Some(_), None) => {
                    out.extend_from_slice(&input[i..(i + 3).min(input.len())]);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(if c == b'+' { b' ' } else { c });
        i += 1;
    }
    out
}

impl Transforms {
    pub fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }

    /// Adds one (in order); an error past [`MAX_TRANSFORMS`].
    pub fn push(&mut self, t: Transform) -> Result<(), String> {
        let free = self.0.iter_mut().find(|s| s.is_none()).ok_or_else(|| format!("at most {MAX_TRANSFORMS} transforms on a buffer"))?;
        *free = Some(t);
        Ok(())
    }

    /// The value after every transform (borrowed when there is none).
    pub fn apply<'a>(&self, value: &'a [u8]) -> Cow<'a, [u8]> {
        let mut v: Cow<'a, [u8]> = Cow::Borrowed(value);
        for t in self.0.iter().flatten() {
            v = Cow::Owned(t.apply(&v));
        }
        v
    }

    /// Whether a content can match the transformed value (the last transform that shapes
    /// the bytes decides; a hash output is raw bytes and holds anything).
    pub fn check_content(&self, content: &[u8], nocase: bool) -> Result<(), String> {
        match self.0.iter().flatten().last() {
            Some(t) => t.can_produce(content, nocase),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn with(ts: &[Transform]) -> Transforms {
        let mut x = Transforms::default();
        for t in ts {
            x.push(*t).unwrap();
        }
        x
    }

    #[test]
    fn each_transform_does_what_suricatas_does() {
        use Transform::*;
        let ap = |ts: &[Transform], v: &[u8]| with(ts).apply(v).into_owned();
        assert_eq!(ap(&[UrlDecode], b"/a%2Fb+c%zz%4"), b"/a/b c%zz%4");
        assert_eq!(ap(&[UrlDecode], b"%%41"), b"%%41", "Suricata keeps `%` and the byte after an invalid escape");
        assert_eq!(ap(&[UrlDecode], b"%2"), b"%2");
        assert_eq!(ap(&[ToLowercase], b"AbC"), b"abc");
        assert_eq!(ap(&[ToUppercase], b"AbC"), b"ABC");
        assert_eq!(ap(&[StripWhitespace], b" a\tb\r\nc "), b"abc");
        assert_eq!(ap(&[CompressWhitespace], b"a \t b\r\n\r\nc"), b"a b\rc", "the first whitespace byte of a run stays");
        assert_eq!(ap(&[HeaderLowercase], b"Host: A.Example\r\nX-Y: Z\r\n"), b"host: A.Example\r\nx-y: Z\r\n");
        assert_eq!(hex(&ap(&[ToSha256], b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&ap(&[ToMd5], b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(hex(&ap(&[ToSha1], b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(ap(&[UrlDecode, ToLowercase], b"%41B"), b"ab", "in the order written");
        assert!(matches!(with(&[]).apply(b"x"), Cow::Borrowed(_)));
        let mut full = with(&[UrlDecode, UrlDecode, UrlDecode, UrlDecode]);
        assert!(full.push(UrlDecode).is_err());
    }

    #[test]
    fn contents_a_transform_cannot_produce_are_refused() {
        use Transform::*;
        assert!(with(&[ToLowercase]).check_content(b"Admin", false).is_err());
        assert!(with(&[ToLowercase]).check_content(b"Admin", true).is_ok());
        assert!(with(&[StripWhitespace]).check_content(b"a b", false).is_err());
        assert!(with(&[CompressWhitespace]).check_content(b"a  b", false).is_err());
        assert!(with(&[CompressWhitespace]).check_content(b"a b", false).is_ok());
        assert!(with(&[ToLowercase, ToSha256]).check_content(b"ABC", false).is_ok());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
