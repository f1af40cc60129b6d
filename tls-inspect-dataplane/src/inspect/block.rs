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
