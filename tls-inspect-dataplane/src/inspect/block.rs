//! What a client whose request was blocked gets inside its decrypted session: a 403 page, as
//! HTTP/1.1 or as HTTP/2 frames on the request's stream.

/// The HTML of the block page (HTTP/1.1 and HTTP/2).
pub fn page_body(sid: u32, msg: &str) -> String {
    format!(
        "<html><head><title>403 Forbidden</title></head><body><h1>Blocked by tls-inspect</h1>\
         <p>This request matched IPS rule sid {sid}: {}</p></body></html>\n",
        msg.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    )
}

/// The page a blocked HTTP client gets inside the decrypted channel.
pub fn http1_page(sid: u32, msg: &str) -> Vec<u8> {
    let body = page_body(sid, msg);
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\nX-Tls-Inspect-Sid: {sid}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The block page as HTTP/2 frames on `stream`: HEADERS (`:status: 403`, content type and
/// length, the sid; HPACK literals that never touch the client's dynamic table), DATA with
/// END_STREAM, then GOAWAY naming that stream as the last one. An empty SETTINGS frame goes
/// first: the server's preface if the server's own SETTINGS has not reached the client yet
/// (a race this loses otherwise: the client drops a connection whose first frame is not
/// SETTINGS), a no-op if it has.
pub fn h2_response(stream: u32, sid: u32, msg: &str) -> Vec<u8> {
    let body = page_body(sid, msg);
    let mut block = Vec::new();
    let mut literal = |name_index: u8, name: &[u8], value: &[u8]| {
        // Literal Header Field without Indexing (RFC 7541 6.2.2), no Huffman coding.
        if name_index > 0 {
            super::h2::hpack_int(&mut block, 0x00, 4, usize::from(name_index));
        } else {
            block.push(0x00);
            super::h2::hpack_int(&mut block, 0x00, 7, name.len());
            block.extend_from_slice(name);
        }
        super::h2::hpack_int(&mut block, 0x00, 7, value.len());
        block.extend_from_slice(value);
    };
    // Static table: 8 is :status, 31 content-type, 28 content-length.
    literal(8, b"", b"403");
    literal(31, b"", b"text/html");
    literal(28, b"", body.len().to_string().as_bytes());
    literal(0, b"x-tls-inspect-sid", sid.to_string().as_bytes());
    let mut out = Vec::new();
    super::h2::frame(&mut out, 4, 0, 0, &[]);
    super::h2::frame(&mut out, 1, 0x4, stream, &block);
    super::h2::frame(&mut out, 0, 0x1, stream, body.as_bytes());
    let mut goaway = stream.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    super::h2::frame(&mut out, 7, 0, 0, &goaway);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_http1_page_names_the_rule_and_escapes_its_message() {
        let p = String::from_utf8(http1_page(7, "a <b>")).unwrap();
        assert!(p.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(p.contains("sid 7") && p.contains("a &lt;b&gt;"));
        let (head, body) = p.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    }

    #[test]
    fn the_block_response_is_valid_http2_on_the_request_stream() {
        let bytes = h2_response(5, 9000001, "Log4Shell <x> & co");
        // An empty SETTINGS frame first.
        assert_eq!(&bytes[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let mut d = crate::inspect::h2::H2Dir::new(false);
        let events = d.feed(&bytes);
        assert!(d.at_frame_boundary());
        assert_eq!(events.len(), 2, "{events:?}");
        let crate::inspect::h2::H2Event::Headers(5, headers) = &events[0] else { panic!("{events:?}") };
        let get = |k: &str| headers.iter().find(|(n, _)| n == k.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(get(":status").as_deref(), Some("403"));
        assert_eq!(get("content-type").as_deref(), Some("text/html"));
        assert_eq!(get("x-tls-inspect-sid").as_deref(), Some("9000001"));
        let crate::inspect::h2::H2Event::Data(5, body, true) = &events[1] else { panic!("{events:?}") };
        assert_eq!(get("content-length"), Some(body.len().to_string()));
        let body = String::from_utf8_lossy(body);
        assert!(body.contains("sid 9000001") && body.contains("&lt;x&gt; &amp; co"), "{body}");
        // Then a GOAWAY (type 7) on stream 0 naming stream 5 as the last, NO_ERROR.
        assert_eq!(&bytes[bytes.len() - 17..bytes.len() - 8], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[bytes.len() - 8..], &[0, 0, 0, 5, 0, 0, 0, 0]);
        // Large HPACK integers use continuation bytes.
        let mut v = Vec::new();
        crate::inspect::h2::hpack_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10]);
    }
}
