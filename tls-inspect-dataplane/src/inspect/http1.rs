//! The HTTP/1.x follower: cuts one direction's plaintext into message heads and bodies (chunked
//! framing removed), for the IPS's HTTP buffers. It holds at most one head ([`MAX_HEAD`]) and
//! never copies a body; what it cannot follow turns it off (the stream buffer still sees every
//! byte).

use super::{Anomaly, Direction, HttpInfo};

/// The longest head followed; a longer one turns the follower off (an [`Anomaly`]). Above what
/// common servers take (nginx about 32 KiB, Node and IIS 16 KiB); a head that grew the buffer
/// past [`KEEP_HEAD`] gives the memory back once it is complete.
pub const MAX_HEAD: usize = 64 * 1024;

/// The head buffer a connection keeps between messages.
const KEEP_HEAD: usize = 16 * 1024;

/// Header fields of one head parsed (httparse's array): more is an [`Anomaly`].
const MAX_FIELDS: usize = 128;

/// Requests a response direction remembers the kind of while their responses are due; past
/// that, its framing of a response to a `HEAD` is no longer known ([`Http1Dir::body_spans`]
/// then reports nothing).
const MAX_PENDING: usize = 128;

/// What a response's framing depends on in the request it answers (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// A `HEAD`: the response has no body, whatever its headers say.
    Head,
    /// A `CONNECT`: a 2xx response turns the connection into a tunnel.
    Connect,
    /// Any other method.
    Other,
}

impl Answers {
    pub fn of(method: &str) -> Self {
        match method {
            "HEAD" => Self::Head,
            "CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }
}

/// What the follower found in the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Http1Event<'a> {
    /// A complete head; a new message (and its body) starts: the request's fields (for
    /// requests) and the head's bytes, its final CRLF CRLF included.
    Head { info: Option<HttpInfo>, raw: &'a [u8] },
    /// Bytes of the current message's body, in order.
    Body(&'a [u8]),
    /// The current message's body is complete (or cannot be followed further).
    BodyEnd,
}

/// A chunked body being decoded (RFC 9112 section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line (hex digits, then extensions to the CRLF).
    Size { value: usize, digits: u8, in_ext: bool },
    /// Chunk data still to come, then its CRLF.
    Data(usize),
    /// The CRLF after a chunk's data: bytes of it still to skip.
    DataEnd(u8),
    /// Trailer lines after the last chunk; `line` counts the current line's bytes.
    Trailers { line: usize },
}

impl Chunked {
    /// After `n` of the `left` bytes of a chunk's data: the rest, or the CRLF after it.
    fn after_data(left: usize, n: usize) -> Self {
        if n == left {
            Self::DataEnd(2)
        } else {
            Self::Data(left - n)
        }
    }
}

/// The body's framing, from the head (and, for a response, the request it answers).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// An interim (1xx) response: no body, and the final response is still to come.
    Interim,
    /// A 2xx answer to CONNECT, or a 101 to another protocol than h2c (a WebSocket): the bytes
    /// after it, both ways, are no longer HTTP.
    Tunnel,
}

/// One HTTP/1.x direction being followed.
#[derive(Debug, Default)]
pub struct Http1Dir {
    head: Vec<u8>,
    /// Body bytes still to come in the current message.
    body_left: usize,
    /// The current message's body is chunked: where the decoder is.
    chunked: Option<Chunked>,
    /// Not HTTP (or a head too large to follow): stop parsing.
    off: bool,
    /// A head was followed on this direction: it is HTTP.
    followed: bool,
    /// Why it stopped, when it stopped following HTTP (not yet taken by the IPS).
    anomaly: Option<Anomaly>,
    /// In the response direction: the kinds of the requests whose responses are still due,
    /// oldest first ([`Http1Dir::expect`]). `lost`: this direction's framing is no longer sure
    /// to be its peers' (more requests were pending than it holds, a response answered no
    /// request followed, or a head was not sure, see `parse_head`); no more body is reported.
    pending: std::collections::VecDeque<Answers>,
    lost: bool,
    /// A response opened a tunnel or switched protocols: neither direction is HTTP any more.
    tunnel: bool,
}

impl Http1Dir {
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// A response turned the connection into a tunnel or another protocol (a 2xx to CONNECT, a
    /// 101 to a WebSocket): the request direction stops following too, without an anomaly.
    pub fn tunnelled(&self) -> bool {
        self.tunnel
    }

    /// This direction's framing is still sure to be its peers' (see `lost`).
    pub fn framing_sure(&self) -> bool {
        !self.lost
    }

    /// Stops following (the connection turned out to be HTTP/2).
    pub fn turn_off(&mut self) {
        self.off = true;
    }

    /// Why the follower stopped following HTTP, once.
    pub fn take_anomaly(&mut self) -> Option<Anomaly> {
        self.anomaly.take()
    }

    /// Stops following what is HTTP and cannot be followed further.
    fn fail(&mut self, why: Anomaly) {
        self.off = true;
        self.anomaly = Some(why);
    }

    /// In the response direction: a request of kind `answers` was sent, its response is due
    /// after those of the requests before it.
    pub fn expect(&mut self, answers: Answers) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back(answers);
        } else {
            self.lost = true;
        }
    }

    /// On, and no head under way: where a new protocol (HTTP/2's preface) could start.
    pub fn awaiting_head(&self) -> bool {
        !self.off && self.head.is_empty()
    }

    /// The spans (start, end) of `data`, to be fed next, that are surely body bytes of the
    /// current message as its peer frames them, into `out`: up to its `Content-Length` (or the
    /// connection's end), or each chunk's data up to the last chunk. Chunk-size lines, trailers
    /// and whatever follows the message are not in them. Nothing while a head is being read,
    /// when the follower is off, or once a response direction lost track of the requests it
    /// answers (a response to a `HEAD` could then be taken for one with a body).
    pub fn body_spans(&self, data: &[u8], out: &mut Vec<(usize, usize)>) {
        out.clear();
        if self.off || self.lost || !self.head.is_empty() {
            return;
        }
        let Some(mut state) = self.chunked else {
            if self.body_left > 0 {
                out.push((0, data.len().min(self.body_left)));
            }
            return;
        };
        let mut i = 0;
        while i < data.len() {
            state = match state {
                Chunked::Data(left) => {
                    let n = (data.len() - i).min(left);
                    out.push((i, i + n));
                    i += n;
                    Chunked::after_data(left, n)
                }
                // The last chunk: the message ends in its trailers.
                Chunked::Trailers { .. } => return,
                framing => match framing_byte(framing, data[i]) {
                    Some(next) => {
                        i += 1;
                        next
                    }
                    None => return,
                },
            };
        }
    }


    /// The bytes at the end of what was fed that belong to a head not yet complete, when the
    /// relay should hold them back until the head is whole and judged (0: nothing to hold).
    /// A head is held once its first line is an HTTP/1.x request line (`token SP target SP
    /// HTTP/1.`) or status line (`HTTP/1.x SP`), and while that line is still coming if it
    /// starts as a registered method and a space do (or `HTTP/1.`): real clients and servers
    /// send a whole head without waiting for an answer, so holding it delays nothing, and the
    /// peer never sees part of a head whose rule has not had its chance. Anything else, a line
    /// protocol or a client that sends a word and waits among them, is released at once. At
    /// most [`MAX_HEAD`] bytes.
    pub fn unfinished_head(&self, direction: Direction) -> usize {
        if self.off || self.head.is_empty() || self.chunked.is_some() || self.body_left > 0 {
            return 0;
        }
        let Some(eol) = self.head.iter().position(|&c| c == b'\n') else {
            let h = &self.head[..];
            let begins = |start: &[u8]| start.starts_with(h) || h.starts_with(start);
            let held = match direction {
                Direction::ToServer => METHODS.iter().any(|m| begins(m)),
                Direction::ToClient => begins(b"HTTP/1."),
            };
            return if held { h.len() } else { 0 };
        };
        let line = self.head[..eol].strip_suffix(b"\r").unwrap_or(&self.head[..eol]);
        let is_http = match direction {
            Direction::ToServer => {
                let mut parts = line.split(|&c| c == b' ');
                let (method, target, version) = (parts.next(), parts.next(), parts.next());
                method.is_some_and(|m| !m.is_empty() && m.iter().all(|&c| is_tchar(c)))
                    && target.is_some_and(|t| !t.is_empty())
                    && version.is_some_and(|v| v.starts_with(b"HTTP/1."))
                    && parts.next().is_none()
            }
            Direction::ToClient => line.starts_with(b"HTTP/1.") && line.get(8) == Some(&b' '),
        };
        if is_http {
            self.head.len()
        } else {
            0
        }
    }

    /// Follows the next bytes of this direction, reporting what they hold to `on`.
    pub fn feed(&mut self, direction: Direction, mut data: &[u8], on: &mut impl for<'e> FnMut(Http1Event<'e>)) {
        while !data.is_empty() && !self.off {
            if self.chunked.is_some() {
                let used = self.follow_chunked(data, on);
                data = &data[used..];
                continue;
            }
            if self.body_left > 0 {
                let n = data.len().min(self.body_left);
                on(Http1Event::Body(&data[..n]));
                self.body_left -= n;
                data = &data[n..];
                if self.body_left == 0 {
                    on(Http1Event::BodyEnd);
                }
                continue;
            }
            // Empty lines before a request or status line are skipped, as nginx, libhtp and
            // RFC 9112 2.2 do: a head behind a stray CRLF (after a body, between pipelined
            // requests) is still followed, so it cannot slip past the rules.
            if self.head.is_empty() {
                let blank = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                data = &data[blank..];
                if data.is_empty() {
                    continue;
                }
            }
            // Accumulate a head, up to its end when it ends in this read: the bytes after it
            // (a body, pipelined requests) stay in `data`, copied never and followed in this loop.
            let old = self.head.len();
            let take = data.len().min(MAX_HEAD.saturating_sub(old) + 1);
            self.head.extend_from_slice(&data[..take]);
            let from = old.saturating_sub(3);
            let found = self.head[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| from + p + 4);
            let Some(end) = found else {
                data = &data[take..];
                if !looks_like_http(&self.head, direction) {
                    // Another protocol; after HTTP on the same connection, an anomaly.
                    if self.followed {
                        self.fail(Anomaly::Http1HeaderInvalid);
                    } else {
                        self.off = true;
                    }
                } else if self.head.len() > MAX_HEAD {
                    self.fail(Anomaly::Http1FieldTooLong);
                }
                continue;
            };
            data = &data[end - old..];
            let answers = self.pending.front().copied().unwrap_or(Answers::Other);
            let (framing, info, sure) = parse_head(&self.head[..end], direction, answers);
            self.lost |= !sure;
            let Some(framing) = framing else {
                self.head.clear();
                self.fail(Anomaly::Http1HeaderInvalid);
                continue;
            };
            // A final response answers the oldest request still due (an interim 1xx does not);
            // one that answers no request followed (the request direction stopped following)
            // may be framed wrongly, so no more body is reported ahead.
            if framing != Framing::Interim && direction == Direction::ToClient && self.pending.pop_front().is_none() {
                self.lost = true;
            }
            self.followed = true;
            on(Http1Event::Head { info, raw: &self.head[..end] });
            // The head's buffer stays for the next message (no allocation per request), unless a
            // large head grew it.
            self.head.clear();
            if self.head.capacity() > KEEP_HEAD {
                self.head = Vec::new();
            }
            match framing {
                Framing::Length(0) | Framing::Interim => on(Http1Event::BodyEnd),
                Framing::Length(n) => self.body_left = n,
                Framing::Chunked => self.chunked = Some(Chunked::Size { value: 0, digits: 0, in_ext: false }),
                Framing::Tunnel => {
                    // What follows is no longer HTTP: the stream buffer alone sees it.
                    on(Http1Event::BodyEnd);
                    self.off = true;
                    self.tunnel = true;
                }
            }
        }
    }

    /// Decodes chunked framing from `data`; returns the bytes used. Malformed framing stops
    /// the parsing of this direction.
    fn follow_chunked(&mut self, data: &[u8], on: &mut impl for<'e> FnMut(Http1Event<'e>)) -> usize {
        let mut i = 0;
        while i < data.len() {
            let Some(state) = self.chunked.take() else {
                return i;
            };
            let next = match state {
                Chunked::Size { .. } | Chunked::DataEnd(_) => {
                    let c = data[i];
                    i += 1;
                    framing_byte(state, c)
                }
                Chunked::Data(left) => {
                    let n = (data.len() - i).min(left);
                    on(Http1Event::Body(&data[i..i + n]));
                    i += n;
                    Some(Chunked::after_data(left, n))
                }
                Chunked::Trailers { line } => {
                    let c = data[i];
                    i += 1;
                    match c {
                        b'\n' if line == 0 => {
                            // The message is complete.
                            on(Http1Event::BodyEnd);
                            return i;
                        }
                        b'\n' => Some(Chunked::Trailers { line: 0 }),
                        b'\r' => Some(Chunked::Trailers { line }),
                        _ if line < MAX_HEAD => Some(Chunked::Trailers { line: line + 1 }),
                        _ => None,
                    }
                }
            };
            match next {
                Some(n) => self.chunked = Some(n),
                None => {
                    self.fail(Anomaly::Http1ChunkInvalid);
                    on(Http1Event::BodyEnd);
                    return data.len();
                }
            }
        }
        i
    }
}

/// The next state of chunked framing after byte `c` of a chunk-size line or of the CRLF after a
/// chunk's data (`None`: the framing is invalid).
fn framing_byte(state: Chunked, c: u8) -> Option<Chunked> {
    match state {
        Chunked::Size { value, digits, in_ext } => match c {
            b'\n' if digits > 0 => {
                if value == 0 {
                    Some(Chunked::Trailers { line: 0 })
                } else {
                    Some(Chunked::Data(value))
                }
            }
            b'\r' => Some(Chunked::Size { value, digits, in_ext }),
            // Whitespace after the digits ends the size, as nginx reads it (`0 fff` is a last
            // chunk, not one of 0xfff bytes); before them it is skipped.
            b' ' | b'\t' => Some(Chunked::Size { value, digits, in_ext: in_ext || digits > 0 }),
            _ if in_ext => Some(Chunked::Size { value, digits, in_ext }),
            b';' if digits > 0 => Some(Chunked::Size { value, digits, in_ext: true }),
            _ => match (c as char).to_digit(16) {
                // At most 15 hex digits: no overflow, and anything larger is not a body we follow.
                Some(h) if digits < 15 => Some(Chunked::Size { value: value * 16 + h as usize, digits: digits + 1, in_ext }),
                _ => None,
            },
        },
        Chunked::DataEnd(left) => match (left, c) {
            (2, b'\r') => Some(Chunked::DataEnd(1)),
            (_, b'\n') => Some(Chunked::Size { value: 0, digits: 0, in_ext: false }),
            _ => None,
        },
        Chunked::Data(_) | Chunked::Trailers { .. } => None,
    }
}

fn looks_like_http(head: &[u8], direction: Direction) -> bool {
    match direction {
        // A method is any token, as httparse (and Suricata's libhtp) take it, so that WebDAV's
        // PROPFIND or MKCOL are followed whether their head comes in one read or in pieces.
        Direction::ToServer => {
            let method = head.iter().position(|&c| c == b' ').unwrap_or(head.len());
            method > 0 && method <= MAX_METHOD && head[..method].iter().all(|&c| is_tchar(c))
        }
        Direction::ToClient => head.starts_with(b"HTTP/") || b"HTTP/".starts_with(head),
    }
}

/// The methods (and the space after them) that a request line still coming is held for: RFC
/// 9110's, PATCH and WebDAV's. A complete request line with any other method is held too.
const METHODS: [&[u8]; 19] = [
    b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH ", b"PROPFIND ", b"PROPPATCH ",
    b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ", b"UNLOCK ", b"REPORT ", b"SEARCH ", b"MKCALENDAR ",
];

/// The longest request method an unfinished head may start with (the registered ones are at
/// most 17 bytes: UPDATEREDIRECTREF).
const MAX_METHOD: usize = 32;

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parses a complete head: (body framing, request fields, whether the peers surely frame the
/// body as the follower does). `None` framing: not HTTP we follow. The framing is not sure when
/// httparse ends the head before its CRLF CRLF (a bare LF ends it for servers too), when the
/// head has several `Content-Length` or `Transfer-Encoding` fields, both, a length that is not
/// digits, or a `Transfer-Encoding` in HTTP/1.0, for a `CONNECT`, an `Upgrade` request or a
/// `101` (a tunnel follows), and for a `205` (no content, whatever its length says).
fn parse_head(head: &[u8], direction: Direction, answers: Answers) -> (Option<Framing>, Option<HttpInfo>, bool) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let header_value = |headers: &[httparse::Header<'_>], name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    // Transfer-Encoding wins over Content-Length (RFC 9112 6.3); only a final `chunked` is a
    // framing we follow.
    // Without either, a request has no body and a response runs to the end of the connection.
    let framing = |hs: &[httparse::Header<'_>]| match header_value(hs, "transfer-encoding") {
        Some(te) => te.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")).then_some(Framing::Chunked),
        None => match header_value(hs, "content-length") {
            Some(v) => v.trim().parse().ok().map(Framing::Length),
            None if direction == Direction::ToServer => Some(Framing::Length(0)),
            None => Some(Framing::Length(usize::MAX)),
        },
    };
    // HTTP/1.0 has no Transfer-Encoding: some servers (Go's) ignore it there.
    let unambiguous = |hs: &[httparse::Header<'_>], version: Option<u8>| {
        let named = |name: &str| hs.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
        let length_digits = hs.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).all(|h| {
            let v = h.value.trim_ascii();
            !v.is_empty() && v.iter().all(u8::is_ascii_digit)
        });
        let encoded = named("transfer-encoding");
        named("content-length") + encoded <= 1 && length_digits && (encoded == 0 || version == Some(1))
    };
    match direction {
        Direction::ToServer => {
            let mut req = httparse::Request::new(&mut headers);
            let exact = match req.parse(head) {
                Ok(httparse::Status::Complete(n)) => n == head.len(),
                _ => return (None, None, false),
            };
            let hs = &*req.headers;
            let tunnel = req.method == Some("CONNECT") || header_value(hs, "upgrade").is_some();
            let sure = exact && unambiguous(hs, req.version) && !tunnel;
            let info = HttpInfo {
                method: req.method.unwrap_or("").to_string(),
                uri: req.path.unwrap_or("").to_string(),
                host: header_value(hs, "host").unwrap_or_default(),
                user_agent: header_value(hs, "user-agent").unwrap_or_default(),
                h2_stream: None,
            };
            (framing(hs), Some(info), sure)
        }
        Direction::ToClient => {
            let mut resp = httparse::Response::new(&mut headers);
            let exact = match resp.parse(head) {
                Ok(httparse::Status::Complete(n)) => n == head.len(),
                _ => return (None, None, false),
            };
            let hs = &*resp.headers;
            // A 205 must have no content, and browsers read none, whatever its length says.
            let sure = exact && unambiguous(hs, resp.version) && !matches!(resp.code, Some(101 | 205));
            // 1xx, 204, 304 and a response to HEAD have no body whatever the headers say
            // (RFC 9112 6.3); a 2xx to CONNECT starts a tunnel, and a 101 another protocol.
            // A 101 to h2c is followed by the client's HTTP/2 preface, which the IPS follows.
            let h2c = header_value(hs, "upgrade").is_some_and(|u| u.trim().eq_ignore_ascii_case("h2c"));
            let framing = match (resp.code, answers) {
                (Some(101), _) if !h2c => Some(Framing::Tunnel),
                (Some(100..=199), _) => Some(Framing::Interim),
                (Some(200..=299), Answers::Connect) => Some(Framing::Tunnel),
                (Some(204 | 304), _) | (_, Answers::Head) => Some(Framing::Length(0)),
                _ => framing(hs),
            };
            (framing, None, sure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(dir: &mut Http1Dir, direction: Direction, data: &[u8]) -> Vec<String> {
        let mut seen = Vec::new();
        dir.feed(direction, data, &mut |e| {
            seen.push(match e {
                Http1Event::Head { info: Some(info), .. } => format!("head {} {}", info.method, info.uri),
                Http1Event::Head { info: None, .. } => "head".to_string(),
                Http1Event::Body(b) => format!("body {}", String::from_utf8_lossy(b)),
                Http1Event::BodyEnd => "end".to_string(),
            })
        });
        seen
    }

    /// `data` to the server one byte per read.
    fn follow_bytewise(dir: &mut Http1Dir, data: &[u8]) -> Vec<String> {
        data.chunks(1).flat_map(|b| follow(dir, Direction::ToServer, b)).collect()
    }

    fn spans(dir: &Http1Dir, data: &[u8]) -> Vec<(usize, usize)> {
        let mut out = vec![(9, 9)];
        dir.body_spans(data, &mut out);
        out
    }

    #[test]
    fn body_spans_are_what_the_framing_says_and_a_response_knows_its_request() {
        let mut req = Http1Dir::default();
        follow(&mut req, Direction::ToServer, b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        assert_eq!(spans(&req, b"defghijGET / HTTP/1.1\r\n\r\n"), [(0, 7)]);
        follow(&mut req, Direction::ToServer, b"defghij");
        assert_eq!(spans(&req, b"GET"), [], "the body is over");
        follow(&mut req, Direction::ToServer, b"PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nab");
        // The rest of the chunk, the next chunk's data; not the sizes, CRLFs or what follows the
        // last chunk.
        let rest = b"cdefghijklmnop\r\n3;x=y\r\nxyz\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        assert_eq!(spans(&req, rest), [(0, 14), (23, 26)]);
        assert_eq!(spans(&req, &rest[..20]), [(0, 14)]);
        assert_eq!(spans(&req, b"cdefghijklmnop\r\nzz\r\n"), [(0, 14)], "invalid framing ends the spans");
        follow(&mut req, Direction::ToServer, &rest[..rest.len() - 4]);
        assert_eq!(spans(&req, b"\r\n\r\n"), [], "a head under way");

        // Responses, in the order of their requests: HEAD, GET.
        let mut resp = Http1Dir::default();
        for m in ["HEAD", "GET"] {
            resp.expect(Answers::of(m));
        }
        let seen = follow(&mut resp, Direction::ToClient, b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n");
        assert_eq!(seen, ["head", "end", "head", "end"], "a response to HEAD has no body");
        assert_eq!(spans(&resp, b"HTTP/1.1 200 OK\r\n"), []);
        follow(&mut resp, Direction::ToClient, b"HTTP/1.1 200 OK\r\n\r\nx");
        assert_eq!(spans(&resp, b"abc"), [(0, 3)], "a response without a length runs to the end");
        let mut resp = Http1Dir::default();
        resp.expect(Answers::of("CONNECT"));
        let seen = follow(&mut resp, Direction::ToClient, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01");
        assert_eq!(seen, ["head", "end"]);
        assert!(resp.is_off() && resp.take_anomaly().is_none(), "a tunnel is not HTTP, and no anomaly");
        assert_eq!(spans(&resp, b"abc"), []);

        // A response to a request that was not followed (the request direction is off, or the
        // server speaks first) may be framed wrongly: no body is reported ahead from then on.
        let mut resp = Http1Dir::default();
        follow(&mut resp, Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(spans(&resp, b"abc"), []);

        // Past what it remembers, a direction reports no body at all.
        let mut resp = Http1Dir::default();
        for _ in 0..=MAX_PENDING {
            resp.expect(Answers::Other);
        }
        follow(&mut resp, Direction::ToClient, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(spans(&resp, b"abc"), []);
    }

    #[test]
    fn empty_lines_before_a_head_are_skipped_as_servers_skip_them() {
        // A stray CRLF after a body, and several before a pipelined request: nginx reads the
        // requests behind them, so must the follower.
        let wire = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n\r\n\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n";
        let whole = follow(&mut Http1Dir::default(), Direction::ToServer, wire);
        assert_eq!(whole, ["head POST /a", "body x", "end", "head GET /evil", "end"]);
        let events = follow_bytewise(&mut Http1Dir::default(), wire);
        assert!(events.contains(&"head GET /evil".to_string()), "{events:?}");
        let resp = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na\nHTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb";
        let events = follow(&mut Http1Dir::default(), Direction::ToClient, resp);
        assert_eq!(events.iter().filter(|e| e.starts_with("head")).count(), 2, "{events:?}");
    }

    #[test]
    fn pipelined_requests_with_length_and_chunked_bodies_split_anywhere() {
        let wire = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\nPUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let whole = follow(&mut Http1Dir::default(), Direction::ToServer, wire);
        assert_eq!(whole, ["head POST /a", "body abc", "end", "head GET /b", "end", "head PUT /c", "body hi", "end"]);
        // Byte by byte: the same messages, bodies in pieces.
        let mut dir = Http1Dir::default();
        let events = follow_bytewise(&mut dir, wire);
        let joined: Vec<String> = events.into_iter().filter(|e| e != "body ").collect();
        assert!(joined.iter().filter(|e| e.starts_with("head")).count() == 3, "{joined:?}");
        assert_eq!(joined.iter().filter(|e| *e == "end").count(), 3, "{joined:?}");
        assert!(!dir.is_off());
    }

    #[test]
    fn any_method_is_followed_whole_or_in_pieces() {
        let wire = b"PROPFIND /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabMKCOL /e HTTP/1.1\r\nHost: x\r\n\r\n";
        let whole = follow(&mut Http1Dir::default(), Direction::ToServer, wire);
        assert_eq!(whole, ["head PROPFIND /d", "body ab", "end", "head MKCOL /e", "end"]);
        // Byte by byte: the heads start as "P", "PR", ... (the old follower took only nine
        // methods and turned off at "PROPFI" unless the whole head came in one read).
        let heads: Vec<String> = follow_bytewise(&mut Http1Dir::default(), wire).into_iter().filter(|e| e.starts_with("head")).collect();
        assert_eq!(heads, ["head PROPFIND /d", "head MKCOL /e"]);
    }

    #[test]
    fn empty_lines_before_a_message_are_skipped_whole_or_in_pieces() {
        // A CRLF before a request, and one after a body (which some clients send): in one read,
        // in reads of 3 bytes, and in a read of its own (an evasion once: the follower turned
        // off at a read of "\r\n" and followed nothing more on the connection).
        let wire = b"\r\nPOST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\na\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let heads = |reads: &[&[u8]]| {
            let mut dir = Http1Dir::default();
            let seen: Vec<String> = reads.iter().flat_map(|r| follow(&mut dir, Direction::ToServer, r)).filter(|e| e.starts_with("head")).collect();
            (seen, dir.is_off())
        };
        let expected = (vec!["head POST /a".to_string(), "head GET /b".to_string()], false);
        assert_eq!(heads(&[wire]), expected);
        assert_eq!(heads(&wire.chunks(3).collect::<Vec<_>>()), expected);
        let (first, rest) = wire.split_at(42);
        assert_eq!(&rest[..2], b"\r\n");
        assert_eq!(heads(&[&wire[..2], &first[2..], &rest[..2], &rest[2..]]), expected);
    }

    #[test]
    fn an_unfinished_http_head_is_held_and_a_line_protocol_is_not() {
        // Byte by byte, a request with a body, then a pipelined request: what is held is the
        // head so far, until it is complete; never a body.
        let wire = b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET /b HTTP/1.1\r\n\r\n";
        let mut dir = Http1Dir::default();
        let mut held = Vec::new();
        for b in wire.chunks(1) {
            follow(&mut dir, Direction::ToServer, b);
            held.push(dir.unfinished_head(Direction::ToServer));
        }
        let first_head = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(held[..first_head - 1], (1..first_head).collect::<Vec<_>>()[..]);
        assert_eq!(held[first_head - 1..first_head + 2], [0, 0, 0], "the head is released, the body not held");
        assert_eq!(held[first_head + 2], 1, "the next head is held from its first byte");
        assert_eq!(*held.last().unwrap(), 0);
        // Responses the same; a line that is not an HTTP/1 request or status line is not held.
        let mut dir = Http1Dir::default();
        let partial = b"HTTP/1.1 200 OK\r\nServer: x\r\n";
        follow(&mut dir, Direction::ToClient, partial);
        assert_eq!(dir.unfinished_head(Direction::ToClient), partial.len());
        // A word a client sends and then waits for an answer to (tests/tests/evasion.rs sends
        // "ping"), a line protocol, HTTP/0.9 and what is not HTTP/1.
        for line in [&b"ping"[..], b"HELLO world", b"EHLO example.test\r\n", b"GET /\r\n", b"GET / SPDY/3\r\n", b"A B HTTP/1.1 C\r\n"] {
            let mut dir = Http1Dir::default();
            follow(&mut dir, Direction::ToServer, line);
            assert_eq!(dir.unfinished_head(Direction::ToServer), 0, "{:?}", String::from_utf8_lossy(line));
        }
        // Any method once its request line is complete.
        let mut dir = Http1Dir::default();
        follow(&mut dir, Direction::ToServer, b"BREW /pot HTTP/1.1\r\n");
        assert_eq!(dir.unfinished_head(Direction::ToServer), 20);
        let mut dir = Http1Dir::default();
        follow(&mut dir, Direction::ToServer, b"\x16\x03\x01");
        assert_eq!(dir.unfinished_head(Direction::ToServer), 0, "not HTTP");
    }

    #[test]
    fn what_is_not_http_or_too_large_turns_the_follower_off() {
        let mut dir = Http1Dir::default();
        assert!(follow(&mut dir, Direction::ToServer, b"\x16\x03\x01binary").is_empty());
        assert!(dir.is_off());
        // Not a method: no token before the first space, or a token longer than any method.
        for start in [&b" GET / HTTP/1.1"[..], b"GE(T / HTTP/1.1", b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ"] {
            let mut dir = Http1Dir::default();
            assert!(follow(&mut dir, Direction::ToServer, start).is_empty());
            assert!(dir.is_off(), "{:?}", String::from_utf8_lossy(start));
        }
        let mut dir = Http1Dir::default();
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD + 10, b'a');
        follow(&mut dir, Direction::ToServer, &head);
        assert!(dir.is_off(), "a head over MAX_HEAD is not held");
        // Bad chunked framing ends the body and stops following.
        let mut dir = Http1Dir::default();
        let seen = follow(&mut dir, Direction::ToClient, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert_eq!(seen, ["head", "end"]);
        assert!(dir.is_off());
    }

    #[test]
    fn what_http_cannot_follow_is_an_anomaly_and_another_protocol_is_not() {
        // Another protocol from the start: off, nothing to say.
        let mut dir = Http1Dir::default();
        follow(&mut dir, Direction::ToServer, b"SSH-2.0-OpenSSH_9.2\r\n");
        assert!(dir.is_off());
        assert_eq!(dir.take_anomaly(), None);
        // A head over MAX_HEAD (one long field, as a padded cookie would be).
        let mut dir = Http1Dir::default();
        follow(&mut dir, Direction::ToServer, b"GET / HTTP/1.1\r\nCookie: ");
        follow(&mut dir, Direction::ToServer, &vec![b'a'; MAX_HEAD]);
        assert_eq!((dir.is_off(), dir.take_anomaly()), (true, Some(Anomaly::Http1FieldTooLong)));
        assert_eq!(dir.take_anomaly(), None, "said once");
        // A 40 KiB head is followed (nginx takes up to about 32 KiB), and its buffer given back.
        let mut dir = Http1Dir::default();
        let mut big = b"GET /big HTTP/1.1\r\nCookie: ".to_vec();
        big.extend(vec![b'c'; 40 * 1024]);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(follow(&mut dir, Direction::ToServer, &big), ["head GET /big", "end"]);
        assert!(!dir.is_off() && dir.head.capacity() <= KEEP_HEAD);
        // More fields than a head may have.
        let mut dir = Http1Dir::default();
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        follow(&mut dir, Direction::ToServer, &many);
        assert_eq!(dir.take_anomaly(), Some(Anomaly::Http1HeaderInvalid));
        // Not HTTP after HTTP on the same connection.
        let mut dir = Http1Dir::default();
        follow(&mut dir, Direction::ToServer, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        follow(&mut dir, Direction::ToServer, b"\x16\x03\x01\x00\x05hello");
        assert_eq!(dir.take_anomaly(), Some(Anomaly::Http1HeaderInvalid));
        // Chunked framing that does not parse.
        let mut dir = Http1Dir::default();
        follow(&mut dir, Direction::ToServer, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert_eq!(dir.take_anomaly(), Some(Anomaly::Http1ChunkInvalid));
        // HTTP/2 taking over is not one.
        let mut dir = Http1Dir::default();
        dir.turn_off();
        assert_eq!(dir.take_anomaly(), None);
    }
}
