//! Following HTTP/2 (ALPN h2) well enough to fill the IPS's HTTP buffers: frames are reassembled
//! per direction, header blocks (HEADERS + CONTINUATION) decoded with HPACK (loona-hpack), and
//! DATA frames handed out per stream.

use std::collections::HashMap;

use super::Anomaly;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frames other than DATA larger than this stop the follower, and so do header blocks (HEADERS
/// and its CONTINUATIONs) larger than this: what a direction holds is bounded by two of these,
/// whatever the peer sends. DATA frames are never held: their payload is handed out as it comes.
pub const MAX_HELD: usize = 64 * 1024;

/// What one direction's frames said.
#[derive(Debug, PartialEq, Eq)]
pub enum H2Event {
    /// A decoded header block: (stream, headers).
    Headers(u32, Vec<(Vec<u8>, Vec<u8>)>),
    /// Body bytes of a stream, as they arrive; `end` with the last of its last DATA frame.
    Data(u32, Vec<u8>, bool),
}

/// The DATA frame being received.
#[derive(Debug, Clone, Copy)]
struct InData {
    stream: u32,
    /// The frame is padded and its pad length byte has not come yet (then `body_left` is the
    /// whole payload).
    pad_length_due: bool,
    /// Body bytes still to come.
    body_left: usize,
    /// Padding bytes still to come, after the body.
    pad_left: usize,
    end_stream: bool,
}

pub struct H2Dir {
    /// A frame header, or a whole frame other than DATA, as far as it has come.
    buf: Vec<u8>,
    /// The client preface is still expected (client side only).
    preface_left: usize,
    decoder: loona_hpack::Decoder<'static>,
    block: Vec<u8>,
    block_stream: u32,
    data: Option<InData>,
    pub off: bool,
    /// Why it stopped (not yet taken by the IPS): every stop after the preface is one.
    anomaly: Option<Anomaly>,
}

impl H2Dir {
    pub fn new(client_side: bool) -> Self {
        Self {
            buf: Vec::new(),
            preface_left: if client_side { PREFACE.len() } else { 0 },
            decoder: loona_hpack::Decoder::new(),
            block: Vec::new(),
            block_stream: 0,
            data: None,
            off: false,
            anomaly: None,
        }
    }

    /// Why the follower stopped, once.
    pub fn take_anomaly(&mut self) -> Option<Anomaly> {
        self.anomaly.take()
    }

    fn fail(&mut self, why: Anomaly) {
        self.off = true;
        self.anomaly = Some(why);
    }

    /// Feeds bytes; returns what they said. Malformed input turns the follower off.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<H2Event> {
        let mut out = Vec::new();
        if self.off {
            return out;
        }
        if self.preface_left > 0 {
            let n = data.len().min(self.preface_left);
            let start = PREFACE.len() - self.preface_left;
            if data[..n] != PREFACE[start..start + n] {
                self.fail(Anomaly::H2InvalidClientMagic);
                return out;
            }
            self.preface_left -= n;
            data = &data[n..];
        }
        while !data.is_empty() && !self.off {
            if let Some(d) = self.data.as_mut() {
                // Inside a DATA frame: the pad length, then the body, then the padding.
                if d.pad_length_due {
                    let pad = usize::from(data[0]);
                    data = &data[1..];
                    d.pad_length_due = false;
                    d.body_left -= 1;
                    if pad > d.body_left {
                        self.fail(Anomaly::H2InvalidFrame);
                        break;
                    }
                    d.body_left -= pad;
                    d.pad_left = pad;
                } else if d.body_left > 0 {
                    let n = data.len().min(d.body_left);
                    d.body_left -= n;
                    out.push(H2Event::Data(d.stream, data[..n].to_vec(), d.body_left == 0 && d.pad_left == 0 && d.end_stream));
                    data = &data[n..];
                } else {
                    let n = data.len().min(d.pad_left);
                    d.pad_left -= n;
                    data = &data[n..];
                    if d.pad_left == 0 && d.end_stream {
                        out.push(H2Event::Data(d.stream, Vec::new(), true));
                    }
                }
                if !d.pad_length_due && d.body_left == 0 && d.pad_left == 0 {
                    // A frame whose body was empty and had no padding ends here too.
                    if d.end_stream && !matches!(out.last(), Some(H2Event::Data(s, _, true)) if *s == d.stream) {
                        out.push(H2Event::Data(d.stream, Vec::new(), true));
                    }
                    self.data = None;
                }
                continue;
            }
            // A frame header, then (but for DATA) the whole frame.
            let want = if self.buf.len() < 9 { 9 } else { 9 + frame_len(&self.buf) };
            let n = data.len().min(want - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() < 9 {
                continue;
            }
            let (len, kind, flags) = (frame_len(&self.buf), self.buf[3], self.buf[4]);
            let stream = u32::from_be_bytes([self.buf[5] & 0x7f, self.buf[6], self.buf[7], self.buf[8]]);
            if kind == 0 {
                self.buf.clear();
                let padded = flags & 0x8 != 0;
                if padded && len == 0 {
                    self.fail(Anomaly::H2InvalidFrame);
                    break;
                }
                let d = InData { stream, pad_length_due: padded, body_left: len, pad_left: 0, end_stream: flags & 0x1 != 0 };
                if len == 0 {
                    if d.end_stream {
                        out.push(H2Event::Data(stream, Vec::new(), true));
                    }
                } else {
                    self.data = Some(d);
                }
                continue;
            }
            if len > MAX_HELD {
                self.fail(Anomaly::H2ReassemblyLimit);
                break;
            }
            if self.buf.len() < 9 + len {
                continue;
            }
            let frame = std::mem::take(&mut self.buf);
            self.control_frame(kind, flags, stream, &frame[9..], &mut out);
        }
        out
    }

    /// A complete frame other than DATA.
    fn control_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<H2Event>) {
        match kind {
            1 => {
                // HEADERS
                let Some(mut frag) = strip_padding(payload, flags) else {
                    self.fail(Anomaly::H2InvalidFrame);
                    return;
                };
                if flags & 0x20 != 0 {
                    if frag.len() < 5 {
                        self.fail(Anomaly::H2InvalidFrame);
                        return;
                    }
                    frag = &frag[5..];
                }
                self.block.clear();
                self.block.extend_from_slice(frag);
                self.block_stream = stream;
                if flags & 0x4 != 0 {
                    self.decode(out);
                }
            }
            9 => {
                // CONTINUATION
                self.block.extend_from_slice(payload);
                if self.block.len() > MAX_HELD {
                    self.fail(Anomaly::H2ReassemblyLimit);
                    return;
                }
                if flags & 0x4 != 0 {
                    self.decode(out);
                }
            }
            _ => {}
        }
    }

    /// The spans (start, end) of `data`, to be fed next, that are payloads of DATA frames of the
    /// streams `past` takes (their bodies are past the IPS's depth), into `out`: each such
    /// frame's whole payload (pad length, body, padding). Frame headers and every other frame
    /// are not in them. Nothing while the client preface is due or once the follower is off.
    pub fn data_spans(&self, data: &[u8], past: impl Fn(u32) -> bool, out: &mut Vec<(usize, usize)>) {
        out.clear();
        if self.off || self.preface_left > 0 {
            return;
        }
        // Where the frame under way ends, and a frame header as far as it has come.
        let (mut at, mut header, mut have) = (0, [0u8; 9], 0);
        match self.data {
            Some(d) => {
                let end = d.body_left.saturating_add(d.pad_left).min(data.len());
                if past(d.stream) && end > 0 {
                    out.push((0, end));
                }
                at = end;
            }
            None if self.buf.len() >= 9 => at = (9 + frame_len(&self.buf)).saturating_sub(self.buf.len()).min(data.len()),
            None => {
                header[..self.buf.len()].copy_from_slice(&self.buf);
                have = self.buf.len();
            }
        }
        while at < data.len() {
            let n = (9 - have).min(data.len() - at);
            header[have..have + n].copy_from_slice(&data[at..at + n]);
            (have, at) = (have + n, at + n);
            if have < 9 {
                return;
            }
            have = 0;
            let end = at.saturating_add(frame_len(&header)).min(data.len());
            let stream = u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
            if header[3] == 0 && past(stream) && end > at {
                out.push((at, end));
            }
            at = end;
        }
    }

    /// Every byte fed so far belonged to complete frames (and the follower is still on).
    pub fn at_frame_boundary(&self) -> bool {
        !self.off && self.preface_left == 0 && self.buf.is_empty() && self.block.is_empty() && self.data.is_none()
    }

    fn decode(&mut self, out: &mut Vec<H2Event>) {
        let block = std::mem::take(&mut self.block);
        let decoder = &mut self.decoder;
        // A decoder bug must not take the worker down: contain it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode(&block)));
        match result {
            Ok(Ok(headers)) => out.push(H2Event::Headers(self.block_stream, headers)),
            _ => self.fail(Anomaly::H2FailedDecompression),
        }
    }
}

pub(super) fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1).
pub(super) fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// The payload length in a frame header (at least 9 bytes).
fn frame_len(header: &[u8]) -> usize {
    (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2])
}

fn strip_padding(payload: &[u8], flags: u8) -> Option<&[u8]> {
    if flags & 0x8 == 0 {
        return Some(payload);
    }
    let pad = usize::from(*payload.first()?);
    payload.get(1..payload.len().checked_sub(pad)?)
}

/// The request fields of a header list.
pub fn fields(headers: &[(Vec<u8>, Vec<u8>)]) -> HashMap<&'static str, String> {
    let mut m = HashMap::new();
    for (k, v) in headers {
        let key = match k.as_slice() {
            b":method" => "method",
            b":path" => "uri",
            b":authority" | b"host" => "host",
            b"user-agent" => "user_agent",
            _ => continue,
        };
        m.insert(key, String::from_utf8_lossy(v).into_owned());
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        super::frame(&mut f, kind, flags, stream, payload);
        f
    }

    #[test]
    fn data_spans_are_the_payloads_of_the_streams_past_their_depth() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(4, 0, 0, &[])); // SETTINGS
        let mut d = H2Dir::new(true);
        assert!(d.feed(&wire).is_empty());
        let mut next = frame(0, 0, 1, b"aaaa"); // stream 1: 9..13
        next.extend(frame(0, 0x8, 3, &[1, b'b', b'b', 0])); // stream 3, padded: 22..26
        next.extend(frame(8, 0, 1, &[0, 0, 0, 1])); // WINDOW_UPDATE
        next.extend(frame(0, 0x1, 1, b"cc")); // stream 1: 48..50
        let spans = |d: &H2Dir, data: &[u8], past: &[u32]| {
            let mut out = vec![(7, 7)];
            d.data_spans(data, |s| past.contains(&s), &mut out);
            out
        };
        assert_eq!(spans(&d, &next, &[1]), [(9, 13), (48, 50)]);
        assert_eq!(spans(&d, &next, &[3]), [(22, 26)]);
        assert_eq!(spans(&d, &next, &[]), []);
        assert_eq!(spans(&d, &next[..11], &[1]), [(9, 11)], "a frame cut by the read");
        // Fed in pieces: the DATA frame under way, then a header under way.
        d.feed(&next[..11]);
        assert_eq!(spans(&d, &next[11..], &[1]), [(0, 2), (37, 39)]);
        d.feed(&next[11..16]);
        assert_eq!(spans(&d, &next[16..], &[3]), [(6, 10)]);
        d.feed(&next[16..30]);
        // Inside the WINDOW_UPDATE frame's header, then inside its payload: not a span, and the
        // DATA frame after it is found.
        assert_eq!(spans(&d, &next[30..], &[1]), [(18, 20)]);
        d.feed(&next[30..37]);
        assert_eq!(spans(&d, &next[37..], &[1]), [(11, 13)]);
        // A client still owing its preface, or a follower that is off, reports nothing.
        assert_eq!(spans(&H2Dir::new(true), &next, &[1]), []);
    }

    #[test]
    fn headers_and_data_across_feeds() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":path"[..], &b"/?q=${jndi:x}"[..]),
            (&b":authority"[..], &b"app.example"[..]),
            (&b"user-agent"[..], &b"curl/8"[..]),
        ]);
        let (a, b) = block.split_at(3);
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(4, 0, 0, &[])); // SETTINGS
        wire.extend(frame(1, 0x0, 1, a)); // HEADERS without END_HEADERS
        wire.extend(frame(9, 0x4, 1, b)); // CONTINUATION
        wire.extend(frame(0, 0x8, 1, &[2, b'h', b'i', 0, 0])); // padded DATA
        wire.extend(frame(0, 0x1, 1, b"!"));
        let mut d = H2Dir::new(true);
        let mut events = Vec::new();
        for chunk in wire.chunks(7) {
            events.extend(d.feed(chunk));
        }
        assert!(!d.off);
        assert!(d.at_frame_boundary());
        match &events[0] {
            H2Event::Headers(1, h) => {
                let f = fields(h);
                assert_eq!(f["method"], "POST");
                assert_eq!(f["uri"], "/?q=${jndi:x}");
                assert_eq!(f["host"], "app.example");
            }
            other => panic!("{other:?}"),
        }
        // Body bytes come as they arrive (split wherever the feeds split them), padding removed;
        // the last carries the end of the stream.
        let mut body = Vec::new();
        for e in &events[1..] {
            let H2Event::Data(1, bytes, _) = e else { panic!("{e:?}") };
            body.extend_from_slice(bytes);
        }
        assert_eq!(body, b"hi!");
        assert!(matches!(events.last(), Some(H2Event::Data(1, _, true))));
        assert_eq!(events.iter().filter(|e| matches!(e, H2Event::Data(_, _, true))).count(), 1);
    }

    #[test]
    fn a_large_data_frame_is_never_held_and_large_control_frames_stop_it() {
        let mut d = H2Dir::new(false);
        // A 10 MiB DATA frame (a peer that raised SETTINGS_MAX_FRAME_SIZE): handed out as fed.
        let len = 10 << 20;
        let mut header = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, 0, 0x1, 0, 0, 0, 3];
        let mut seen = 0;
        let chunk = vec![b'z'; 64 * 1024];
        let mut events = d.feed(&std::mem::take(&mut header));
        for _ in 0..(len / chunk.len()) {
            events.extend(d.feed(&chunk));
            assert!(d.buf.capacity() <= 16, "nothing of a DATA frame is buffered");
        }
        for e in &events {
            let H2Event::Data(3, bytes, _) = e else { panic!() };
            seen += bytes.len();
        }
        assert_eq!(seen, len);
        assert!(matches!(events.last(), Some(H2Event::Data(3, _, true))));
        assert!(d.at_frame_boundary());
        // A header block over the limit stops the follower (bounded, not buffered).
        let mut d = H2Dir::new(false);
        let big = vec![0u8; MAX_HELD + 1];
        let mut f = Vec::new();
        super::frame(&mut f, 1, 0x4, 1, &big);
        let _ = d.feed(&f[..1024]);
        assert!(d.off);
        let mut d = H2Dir::new(false);
        let mut f = Vec::new();
        super::frame(&mut f, 1, 0, 1, &vec![0u8; 40 * 1024]);
        super::frame(&mut f, 9, 0, 1, &vec![0u8; 40 * 1024]);
        let _ = d.feed(&f);
        assert!(d.off, "HEADERS + CONTINUATION over the limit");
    }

    #[test]
    fn garbage_turns_it_off_without_panicking() {
        let mut d = H2Dir::new(true);
        assert!(d.feed(b"GET / HTTP/1.1\r\n").is_empty());
        assert!(d.off);
        let mut d = H2Dir::new(false);
        let mut rng = crate::testutil::Prng::new(99);
        for _ in 0..500 {
            let chunk = rng.bytes(64);
            let events = d.feed(&chunk);
            // Nothing a peer sends grows what a feed hands back past what it sent.
            let held: usize = events.iter().map(|e| match e { H2Event::Data(_, b, _) => b.len(), H2Event::Headers(_, h) => h.iter().map(|(k, v)| k.len() + v.len()).sum() }).sum();
            assert!(held <= 64 * 500, "{held}");
        }
    }
}
