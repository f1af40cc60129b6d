//! The samples for the bundled rules, read from `tests/fixtures/bundled-samples.json`: for each
//! rule a request that must fire it and a near miss (a benign request as close to the exploit as
//! it gets) that must not, plus a corpus of ordinary traffic that no bundled rule may fire on.
//! The namespace test `tests/tests/vpatch.rs` sends the same file through the appliance.
//!
//! Each sample is one exact HTTP/1.1 request. In the file a sample is a JSON string whose
//! characters are its bytes, one each (U+0000-U+00FF, that is Latin-1: `\u00ac` is the byte
//! 0xAC), so that binary bodies and odd encodings survive as they are.

use serde_json::Value;

const SAMPLES: &str = include_str!("../../../../tests/fixtures/bundled-samples.json");

fn file() -> Value {
    serde_json::from_str(SAMPLES).expect("tests/fixtures/bundled-samples.json is JSON")
}

/// A sample's bytes (see the module's documentation).
fn bytes(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("a sample is a string: {v}"));
    s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or_else(|_| panic!("{c:?} is not a byte (U+0000-U+00FF) in {s:?}"))).collect()
}

/// (sid, positive, near miss) for every bundled rule.
pub(super) fn cases() -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let file = file();
    let cases = file["cases"].as_array().expect("\"cases\": an array");
    cases
        .iter()
        .map(|c| {
            let sid = c["sid"].as_u64().and_then(|s| u32::try_from(s).ok()).unwrap_or_else(|| panic!("a case without a sid: {c}"));
            (sid, bytes(&c["positive"]), bytes(&c["near_miss"]))
        })
        .collect()
}

/// Ordinary traffic: searches with SQL words, logins, JSON APIs (with `$` but no `${`),
/// WordPress admin, static assets, OAuth redirects with encoded URLs, uploads, templates.
pub(super) fn benign_corpus() -> Vec<Vec<u8>> {
    file()["benign"].as_array().expect("\"benign\": an array").iter().map(bytes).collect()
}

/// Where `request` ends if it is one complete HTTP/1.1 request framed as a server reads it:
/// its head, then `Content-Length` bytes, or a chunked body up to its last chunk, or nothing.
pub(super) fn request_len(request: &[u8]) -> Result<usize, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(request) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the head does not end".into()),
        Err(e) => return Err(format!("the head does not parse: {e}")),
    };
    let value = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).into_owned());
    if value("transfer-encoding").is_some_and(|te| te.trim().to_ascii_lowercase().ends_with("chunked")) {
        // The samples' chunked bodies: `size\r\ndata\r\n` runs, then `0\r\n\r\n`.
        let mut at = head;
        loop {
            let line_end = request[at..].windows(2).position(|w| w == b"\r\n").ok_or("a chunk size line does not end")? + at;
            let size_text = String::from_utf8_lossy(&request[at..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
            at = line_end + 2 + size + 2;
            if size == 0 {
                return Ok(at);
            }
        }
    }
    match value("content-length") {
        Some(cl) => Ok(head + cl.trim().parse::<usize>().map_err(|e| format!("Content-Length {cl:?}: {e}"))?),
        None => Ok(head),
    }
}
