//! The IPS's HTTP field buffers of one message head, as Suricata fills them: from an HTTP/1.x
//! head (start line and header block) or an HTTP/2 header list. Values are made only for the
//! buffers a rule set has a database for.

use std::borrow::Cow;

use super::rules::Buffer;
use super::Direction;

/// A message head, whatever the HTTP version.
pub struct Head<'h> {
    pub direction: Direction,
    /// The request or status line, without its CRLF (HTTP/1 only).
    pub start_line: Option<&'h [u8]>,
    /// The whole head, the final CRLF CRLF included (HTTP/1 only: `http.start`).
    pub whole: Option<&'h [u8]>,
    /// The header lines as sent (HTTP/1 only: `http.header.raw`).
    pub raw_headers: Option<&'h [u8]>,
    pub method: &'h [u8],
    /// The request-target as sent.
    pub uri: &'h [u8],
    pub protocol: &'h [u8],
    pub status: &'h [u8],
    pub reason: &'h [u8],
    /// HTTP/2's `:authority` (empty for HTTP/1, whose host is a header).
    pub authority: &'h [u8],
    /// Header names and values in order (HTTP/2 pseudo-headers left out).
    pub headers: Vec<(&'h [u8], &'h [u8])>,
}

impl<'h> Head<'h> {
    /// An HTTP/1.x head (up to and including its CRLF CRLF).
    pub fn http1(head: &'h [u8], direction: Direction) -> Option<Self> {
        let line_end = head.windows(2).position(|w| w == b"\r\n")?;
        let start_line = &head[..line_end];
        let end = head.len().saturating_sub(2).max(line_end + 2);
        let raw_headers = &head[(line_end + 2).min(end)..end];
        let mut parts = start_line.splitn(3, |&b| b == b' ');
        let (a, b, c) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
        let (method, uri, protocol, status, reason) = match direction {
            // `GET /a b HTTP/1.1`: the protocol is what follows the target's first space, as
            // Suricata's http.protocol has it.
            Direction::ToServer => (a, b, c, &b""[..], &b""[..]),
            Direction::ToClient => (&b""[..], &b""[..], a, b, c),
        };
        let mut headers = Vec::new();
        for line in raw_headers.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                headers.push((trim(&line[..colon]), trim(&line[colon + 1..])));
            }
        }
        Some(Self {
            direction,
            start_line: Some(start_line),
            whole: Some(head),
            raw_headers: Some(raw_headers),
            method,
            uri,
            protocol,
            status,
            reason,
            authority: b"",
            headers,
        })
    }

    /// An HTTP/2 header list.
    pub fn http2(list: &'h [(Vec<u8>, Vec<u8>)], direction: Direction) -> Self {
        let pseudo = |name: &[u8]| list.iter().find(|(k, _)| k.as_slice() == name).map_or(&b""[..], |(_, v)| v.as_slice());
        Self {
            direction,
            start_line: None,
            whole: None,
            raw_headers: None,
            method: pseudo(b":method"),
            uri: pseudo(b":path"),
            protocol: b"HTTP/2",
            status: pseudo(b":status"),
            reason: b"",
            authority: pseudo(b":authority"),
            headers: list.iter().filter(|(k, _)| !k.starts_with(b":")).map(|(k, v)| (k.as_slice(), v.as_slice())).collect(),
        }
    }

    /// A header's value; repeated headers joined with ", " (as libhtp joins them).
    pub fn header(&self, name: &str) -> Option<Cow<'h, [u8]>> {
        let mut values = self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v);
        let first = values.next()?;
        let rest: Vec<&[u8]> = values.collect();
        if rest.is_empty() {
            return Some(Cow::Borrowed(first));
        }
        let mut joined = first.to_vec();
        for v in rest {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(v);
        }
        Some(Cow::Owned(joined))
    }

    /// The value of `buffer` for this head, if the head has one.
    pub fn buffer(&self, buffer: Buffer) -> Option<Cow<'h, [u8]>> {
        let request = self.direction == Direction::ToServer;
        let borrowed = |b: &'h [u8]| Some(Cow::Borrowed(b)).filter(|v: &Cow<'_, [u8]>| !v.is_empty());
        match buffer {
            Buffer::HttpMethod if request => borrowed(self.method),
            Buffer::HttpUriRaw if request => borrowed(self.uri),
            Buffer::HttpProtocol => borrowed(self.protocol),
            Buffer::HttpRequestLine if request => self.start_line.and_then(borrowed),
            Buffer::HttpResponseLine if !request => self.start_line.and_then(borrowed),
            Buffer::HttpStart => self.whole.and_then(borrowed),
            Buffer::HttpStatCode if !request => borrowed(self.status),
            Buffer::HttpStatMsg if !request => borrowed(self.reason),
            Buffer::HttpHeaderRaw => self.raw_headers.and_then(borrowed),
            Buffer::HttpHeader => {
                // Every header but the cookies, `Name: value\r\n` each.
                let skip: &[u8] = if request { b"cookie" } else { b"set-cookie" };
                let mut out = Vec::new();
                for (k, v) in self.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(skip)) {
                    out.extend_from_slice(k);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
                Some(Cow::<[u8]>::Owned(out)).filter(|v| !v.is_empty())
            }
            Buffer::HttpHeaderNames => {
                // `\r\nName1\r\nName2\r\n\r\n`, as Suricata writes it.
                if self.headers.is_empty() {
                    return None;
                }
                let mut out = b"\r\n".to_vec();
                for (k, _) in &self.headers {
                    out.extend_from_slice(k);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                Some(Cow::Owned(out))
            }
            Buffer::HttpCookie => self.header(if request { "cookie" } else { "set-cookie" }),
            Buffer::HttpUserAgent if request => self.header("user-agent"),
            Buffer::HttpContentType => self.header("content-type"),
            Buffer::HttpContentLen => self.header("content-length"),
            Buffer::HttpReferer if request => self.header("referer"),
            Buffer::HttpAccept if request => self.header("accept"),
            Buffer::HttpAcceptEnc if request => self.header("accept-encoding"),
            Buffer::HttpAcceptLang if request => self.header("accept-language"),
            Buffer::HttpConnection => self.header("connection"),
            Buffer::HttpServer if !request => self.header("server"),
            Buffer::HttpLocation if !request => self.header("location"),
            _ => None,
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn get(head: &Head<'_>, b: Buffer) -> Option<String> {
        head.buffer(b).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn an_http1_request_fills_the_buffers_suricata_fills() {
        let raw = b"POST /a%20b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: curl/8\r\nCookie: s=1\r\nAccept: */*\r\nX-Dup: a\r\nx-dup: b\r\nContent-Type: text/plain\r\n\r\n";
        let h = Head::http1(raw, Direction::ToServer).unwrap();
        assert_eq!(get(&h, Buffer::HttpMethod).as_deref(), Some("POST"));
        assert_eq!(get(&h, Buffer::HttpUriRaw).as_deref(), Some("/a%20b?x=1"));
        assert_eq!(get(&h, Buffer::HttpProtocol).as_deref(), Some("HTTP/1.1"));
        assert_eq!(get(&h, Buffer::HttpRequestLine).as_deref(), Some("POST /a%20b?x=1 HTTP/1.1"));
        assert_eq!(get(&h, Buffer::HttpCookie).as_deref(), Some("s=1"));
        assert_eq!(get(&h, Buffer::HttpAccept).as_deref(), Some("*/*"));
        assert_eq!(get(&h, Buffer::HttpContentType).as_deref(), Some("text/plain"));
        let header = get(&h, Buffer::HttpHeader).unwrap();
        assert!(header.starts_with("Host: Example.COM:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"), "{header:?}");
        assert!(!header.contains("Cookie"), "the cookie has a buffer of its own");
        assert_eq!(h.header("x-dup").as_deref(), Some(&b"a, b"[..]), "repeated headers are joined");
        assert_eq!(get(&h, Buffer::HttpHeaderNames).as_deref(), Some("\r\nHost\r\nUser-Agent\r\nCookie\r\nAccept\r\nX-Dup\r\nx-dup\r\nContent-Type\r\n\r\n"));
        assert!(get(&h, Buffer::HttpStart).unwrap().ends_with("text/plain\r\n\r\n"));
        assert!(get(&h, Buffer::HttpHeaderRaw).unwrap().starts_with("Host: Example.COM:8080\r\n"));
        assert_eq!(get(&h, Buffer::HttpStatCode), None, "a request has no status");
        assert_eq!(get(&h, Buffer::HttpServer), None);
    }

    #[test]
    fn an_http1_response_and_an_http2_header_list() {
        let raw = b"HTTP/1.1 302 Found\r\nServer: nginx\r\nLocation: /login\r\nSet-Cookie: id=9\r\n\r\n";
        let h = Head::http1(raw, Direction::ToClient).unwrap();
        assert_eq!(get(&h, Buffer::HttpStatCode).as_deref(), Some("302"));
        assert_eq!(get(&h, Buffer::HttpStatMsg).as_deref(), Some("Found"));
        assert_eq!(get(&h, Buffer::HttpResponseLine).as_deref(), Some("HTTP/1.1 302 Found"));
        assert_eq!(get(&h, Buffer::HttpServer).as_deref(), Some("nginx"));
        assert_eq!(get(&h, Buffer::HttpLocation).as_deref(), Some("/login"));
        assert_eq!(get(&h, Buffer::HttpCookie).as_deref(), Some("id=9"));
        assert_eq!(get(&h, Buffer::HttpMethod), None);
        let list = vec![(b":status".to_vec(), b"200".to_vec()), (b"server".to_vec(), b"h2o".to_vec()), (b"content-type".to_vec(), b"text/html".to_vec())];
        let h = Head::http2(&list, Direction::ToClient);
        assert_eq!(get(&h, Buffer::HttpStatCode).as_deref(), Some("200"));
        assert_eq!(get(&h, Buffer::HttpProtocol).as_deref(), Some("HTTP/2"));
        assert_eq!(get(&h, Buffer::HttpHeader).as_deref(), Some("server: h2o\r\ncontent-type: text/html\r\n"));
        assert_eq!(get(&h, Buffer::HttpStart), None);
        assert!(Head::http1(b"no line end", Direction::ToServer).is_none());
    }
}
