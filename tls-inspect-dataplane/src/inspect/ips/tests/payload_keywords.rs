//! Suricata's payload keywords (`isdataat`, `byte_test`, `byte_jump`, `byte_extract`, `dsize`)
//! on traffic that must and must not fire them: on the stream, each data unit (a read here)
//! is a buffer of its own; on field buffers, the field's value.

use std::sync::Arc;

use super::super::*;
use crate::inspect::rules::parse_rules;

pub(super) fn set(text: &str) -> Arc<Ruleset> {
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Monitor, level: Level::Strict, ..Options::default() }).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    Arc::new(set)
}

/// The sids that fire when each of `reads` goes to the server, in one flow.
fn fired(s: &Arc<Ruleset>, reads: &[&[u8]]) -> Vec<u32> {
    let mut scratch = s.scratch().unwrap();
    let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
    for r in reads {
        f.inspect(Direction::ToServer, r, &mut scratch);
    }
    let mut sids: Vec<u32> = f.hits.iter().map(|h| h.sid).collect();
    sids.sort_unstable();
    sids
}

fn rule(sid: u32, options: &str) -> String {
    format!("alert tcp any any -> any any (msg:\"t\"; {options} sid:{sid};)\n")
}

#[test]
fn byte_test_relative_after_a_content_big_and_little_endian() {
    let s = set(&(rule(1, "content:\"HDR\"; byte_test:2,>,1000,0,relative;") + &rule(2, "content:\"HDR\"; byte_test:2,>,1000,0,relative,little;")));
    assert_eq!(fired(&s, &[b"xxHDR\x04\x00"]), [1], "0x0400 = 1024 big endian; 4 little endian");
    assert_eq!(fired(&s, &[b"HDR\x00\x04"]), [2]);
    assert_eq!(fired(&s, &[b"HDR\x03\x00"]), [] as [u32; 0], "768 big endian, 3 little");
    assert_eq!(fired(&s, &[b"HDR\x04"]), [] as [u32; 0], "one byte short");
}

#[test]
fn byte_test_operators_negation_and_absolute_offsets() {
    let s = set(&[
        rule(1, "content:\"OP\"; byte_test:1,=,5,0,relative;"),
        rule(2, "content:\"OP\"; byte_test:1,!=,5,0,relative;"),
        rule(3, "content:\"OP\"; byte_test:1,<=,5,0,relative;"),
        rule(4, "content:\"OP\"; byte_test:1,>=,6,0,relative;"),
        rule(5, "content:\"OP\"; byte_test:1,&,0x80,0,relative;"),
        rule(6, "content:\"OP\"; byte_test:1,^,5,0,relative;"),
        rule(7, "content:\"OP\"; byte_test:1,!,5,0,relative;"),
        rule(8, "content:\"OP\"; byte_test:1,=,0x4f,0;"),
    ]
    .concat());
    assert_eq!(fired(&s, &[b"OP\x05"]), [1, 3, 8]);
    assert_eq!(fired(&s, &[b"OP\x86"]), [2, 4, 5, 6, 7, 8]);
    // The byte past the end: no value, no match (not even for the negated test).
    assert_eq!(fired(&s, &[b"OP"]), [8]);
}

#[test]
fn byte_test_strings_in_decimal_hex_and_octal() {
    let s = set(&[
        rule(1, "content:\"len=\"; byte_test:4,>=,1337,0,relative,string,dec;"),
        rule(2, "content:\"id=\"; byte_test:2,=,0x1f,0,relative,string,hex;"),
        rule(3, "content:\"mode=\"; byte_test:3,=,493,0,relative,string,oct;"),
    ]
    .concat());
    assert_eq!(fired(&s, &[b"len=2000;"]), [1]);
    assert_eq!(fired(&s, &[b"len=0999;"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"len=abcd;"]), [] as [u32; 0], "no digits, no value");
    assert_eq!(fired(&s, &[b"id=1f"]), [2]);
    assert_eq!(fired(&s, &[b"id=1e"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"mode=755"]), [3]);
    assert_eq!(fired(&s, &[b"mode=999"]), [] as [u32; 0], "9 is not an octal digit");
}

#[test]
fn byte_test_bitmask_masks_and_shifts() {
    let s = set(&(rule(1, "content:\"F\"; byte_test:1,=,3,0,relative,bitmask 0x30;") + &rule(2, "content:\"F\"; byte_test:2,&,1,0,relative,bitmask 0x0100;")));
    // 0x3f & 0x30 = 0x30, shifted right by 4: 3.
    assert_eq!(fired(&s, &[b"F\x3e\x00"]), [1]);
    // 0x31ff & 0x0100, shifted right by 8: 1.
    assert_eq!(fired(&s, &[b"F\x31\xff"]), [1, 2]);
    assert_eq!(fired(&s, &[b"F\x20\x00"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"F\x21\x00"]), [2]);
}

#[test]
fn byte_jump_then_a_content_with_distance() {
    let s = set(&[
        rule(1, "content:\"LEN\"; byte_jump:1,0,relative; content:\"END\"; distance:0; within:3;"),
        rule(2, "content:\"BEG\"; byte_jump:1,0,from_beginning,multiplier 2,post_offset 1; content:\"X\"; distance:0; within:1;"),
        rule(3, "content:\"AL\"; byte_jump:1,0,relative,align; content:\"Y\"; distance:0; within:1;"),
        rule(4, "content:\"TAIL\"; byte_jump:0,0,from_end,post_offset -2; content:\"ZZ\"; distance:0; within:2;"),
    ]
    .concat());
    // After the length byte (at 3) the pointer is 4; it jumps 3 more: END at 7.
    assert_eq!(fired(&s, &[b"LEN\x03abcEND"]), [1]);
    assert_eq!(fired(&s, &[b"LEN\x02abcEND"]), [] as [u32; 0], "END is one byte past within");
    assert_eq!(fired(&s, &[b"LEN\x05abcEND"]), [] as [u32; 0], "END is before the jump");
    assert_eq!(fired(&s, &[b"LEN\xffabcEND"]), [] as [u32; 0], "a jump past the end");
    // From the beginning: 2 * 2 + 1 = 5.
    assert_eq!(fired(&s, &[b"\x02BEGX"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"\x02BEG.X"]), [2]);
    // Aligned up to 4: 1 -> 4, from after the byte at 2: Y at 7.
    assert_eq!(fired(&s, &[b"AL\x01....Y"]), [3]);
    assert_eq!(fired(&s, &[b"AL\x01.Y"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"TAIL..ZZ"]), [4]);
    assert_eq!(fired(&s, &[b"TAIL.ZZ."]), [] as [u32; 0]);
}

#[test]
fn byte_extract_variables_in_distance_within_and_byte_test() {
    let s = set(&[
        rule(1, "content:\"SZ\"; byte_extract:1,0,size,relative; content:\"TAIL\"; distance:size; within:4;"),
        rule(2, "content:\"EQ\"; byte_extract:1,0,v,relative; byte_test:1,=,v,0,relative;"),
        rule(3, "content:\"N\"; byte_extract:1,0,n,relative,multiplier 2; isdataat:n,relative; isdataat:!n,relative;"),
        rule(4, "content:\"S:\"; byte_extract:2,0,count,relative,string,dec; byte_test:1,=,count,0,relative;"),
    ]
    .concat());
    // The size byte is at 2; the pointer after it is 3; TAIL must start at 3 + size.
    assert_eq!(fired(&s, &[b"SZ\x02abTAIL"]), [1]);
    assert_eq!(fired(&s, &[b"SZ\x01abTAIL"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"EQ\x07\x07"]), [2]);
    assert_eq!(fired(&s, &[b"EQ\x07\x08"]), [] as [u32; 0]);
    // n = 2 * 2: data up to 4 past the pointer, and not 1 more... both hold only for exactly 4.
    assert_eq!(fired(&s, &[b"N\x02abcd"]), [] as [u32; 0], "isdataat:n and isdataat:!n cannot both hold");
    // A string read ends where its digits end: "42" then the byte 42 ('*').
    assert_eq!(fired(&s, &[b"S:42*"]), [4]);
    assert_eq!(fired(&s, &[b"S:42+"]), [] as [u32; 0]);
}

#[test]
fn isdataat_not_relative_at_the_end_of_a_uri() {
    let text = "alert http any any -> any any (msg:\"php at the end\"; http.uri; content:\".php\"; isdataat:!1,relative; sid:1;)\n\
alert http any any -> any any (msg:\"long uri\"; http.uri; content:\"/a\"; isdataat:20; sid:2;)\n\
alert http any any -> any any (msg:\"header value\"; http.content_len; byte_test:0,>,4000,0,string,dec; http.method; content:\"POST\"; sid:3;)\n";
    let s = set(text);
    let get = |uri: &str| format!("GET {uri} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    assert_eq!(fired(&s, &[&get("/x.php")]), [1]);
    assert_eq!(fired(&s, &[&get("/x.php?a=1")]), [] as [u32; 0]);
    // A second .php later in the URI ends it: the walk tries every match.
    assert_eq!(fired(&s, &[&get("/a.php/b.php")]), [1]);
    assert_eq!(fired(&s, &[&get("/a/bbbbbbbbbbbbbbbbbbbbb")]), [2]);
    assert_eq!(fired(&s, &[&get("/a/b")]), [] as [u32; 0]);
    let post = |len: usize| format!("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n{}", "a".repeat(len)).into_bytes();
    assert_eq!(fired(&s, &[&post(5000)]), [3]);
    assert_eq!(fired(&s, &[&post(10)]), [] as [u32; 0]);
}

#[test]
fn dsize_is_the_size_of_the_data_unit() {
    let s = set(&[rule(1, "dsize:>100; content:\"X\";"), rule(2, "dsize:10<>20; content:\"Y\";"), rule(3, "dsize:!5; content:\"Z\";"), rule(4, "dsize:<=3; content:\"W\"; depth:1;")].concat());
    let big = [b'X'; 101];
    assert_eq!(fired(&s, &[&big]), [1]);
    assert_eq!(fired(&s, &[&big[..100]]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"Y.............."]), [2], "15 bytes");
    assert_eq!(fired(&s, &[b"Y........."]), [] as [u32; 0], "10: the range is exclusive");
    assert_eq!(fired(&s, &[b"Y..................."]), [] as [u32; 0], "20");
    assert_eq!(fired(&s, &[b"ZZZZZ"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"ZZZZ"]), [3]);
    // Positions count from each unit's start: W starts the second read.
    assert_eq!(fired(&s, &[b"abcdefgh", b"W"]), [4]);
    // A content of an earlier unit is not in this one.
    assert_eq!(fired(&s, &[b"Yyyyyyyyyyyyyyyyyyyyyyyyyyyyy", b"..........."]), [] as [u32; 0]);
}

#[test]
fn negated_contents_hold_within_a_data_unit() {
    let s = set(&rule(1, "dsize:<50; content:\"GO\"; content:!\"STOP\";"));
    assert_eq!(fired(&s, &[b"GO now"]), [1]);
    assert_eq!(fired(&s, &[b"GO STOP"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"STOP", b"GO"]), [1], "STOP was in another unit");
}

#[test]
fn what_cannot_be_evaluated_is_refused_with_the_reason() {
    let (rules, errors) = parse_rules(
        &[
            rule(1, "content:\"a\"; byte_test:4,>,1,0,dce;"),
            rule(2, "content:\"a\"; byte_test:9,>,1,0;"),
            rule(3, "content:\"a\"; byte_test:24,>,1,0,string;"),
            rule(4, "content:\"a\"; byte_test:4,>,nothing,0;"),
            rule(5, "content:\"a\"; distance:nope;"),
            rule(6, "content:\"a\"; isdataat:70000;"),
            rule(7, "content:\"a\"; byte_jump:4,0,from_end,from_beginning;"),
            rule(8, "content:\"a\"; byte_test:4,~,1,0;"),
            rule(9, "content:\"a\"; dsize:70000;"),
            rule(10, "content:\"a\"; byte_extract:1,0,v; byte_extract:1,0,v;"),
            rule(11, "content:\"a\"; byte_test:2,>,1,0,hex;"),
            rule(12, "content:\"a\"; byte_jump:2,0,multiplier 0;"),
        ]
        .concat(),
    );
    assert!(rules.is_empty(), "{:?}", rules.iter().map(|r| r.sid).collect::<Vec<_>>());
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.keyword.as_str())).collect();
    assert_eq!(
        got,
        [(1, "byte_test"), (2, "byte_test"), (3, "byte_test"), (4, "byte_test"), (5, "distance"), (6, "isdataat"), (7, "byte_jump"), (8, "byte_test"), (9, "dsize"), (10, "byte_extract"), (11, "byte_test"), (12, "byte_jump")]
    );
    assert!(errors[0].message.contains("DCE/RPC"), "{}", errors[0]);

    let text = "alert http any any -> any any (msg:\"body\"; http.request_body; content:\"a\"; byte_test:1,>,1,0,relative; sid:1;)\n\
alert http any any -> any any (msg:\"dsize and uri\"; http.uri; content:\"a\"; dsize:>1; sid:2;)\n\
alert http any any -> any any (msg:\"var elsewhere\"; content:\"a\"; byte_extract:1,0,v,relative; http.uri; content:\"b\"; distance:v; sid:3;)\n\
alert http any any -> any any (msg:\"certs\"; tls.certs; content:\"a\"; isdataat:5,relative; sid:4;)\n";
    let (rules, errors) = parse_rules(text);
    assert!(errors.is_empty(), "{errors:?}");
    let (_, refused) = Ruleset::compile(rules, &Options::default()).unwrap();
    let sids: Vec<u32> = refused.iter().map(|r| r.0).collect();
    assert_eq!(sids, [1, 2, 3, 4], "{refused:?}");
    assert!(refused[0].1.contains("bodies"), "{refused:?}");
    assert!(refused[1].1.contains("dsize"), "{refused:?}");
    assert!(refused[2].1.contains("another buffer"), "{refused:?}");
}

#[test]
fn hostile_numbers_never_panic_and_never_match_by_accident() {
    let s = set(&[
        rule(1, "content:\"H\"; byte_jump:4,0,relative,multiplier 65535,post_offset 65535; content:\"Q\"; distance:0;"),
        rule(2, "content:\"H\"; byte_test:23,>,1,0,relative,string,dec;"),
        rule(3, "content:\"H\"; byte_extract:4,0,big,relative; isdataat:big,relative;"),
        rule(4, "content:\"H\"; byte_extract:4,0,off,relative; content:\"Q\"; offset:off;"),
        rule(5, "content:\"H\"; byte_test:4,>,0,-2147483648,relative;"),
        rule(6, "content:\"H\"; byte_jump:4,-65535,relative; content:\"Q\"; distance:-5;"),
    ]
    .concat());
    assert_eq!(fired(&s, &[b"H\xff\xff\xff\xffQ"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"H99999999999999999999999"]), [] as [u32; 0], "past 64 bits is no value");
    assert_eq!(fired(&s, &[b"H-1"]), [] as [u32; 0], "fewer bytes than asked for");
    // The test value is 64 bits wide.
    let max = set(&rule(9, "content:\"M\"; byte_test:8,=,0xffffffffffffffff,0,relative;"));
    assert_eq!(fired(&max, &[b"M\xff\xff\xff\xff\xff\xff\xff\xff"]), [9]);
    assert_eq!(fired(&max, &[b"M\xff\xff\xff\xff\xff\xff\xff\xfe"]), [] as [u32; 0]);
    let mut rng = crate::testutil::Prng::new(5);
    for _ in 0..300 {
        let mut data = b"H".to_vec();
        data.extend(rng.bytes(12));
        let _ = fired(&s, &[&data, &data[..6]]);
    }
}

#[test]
fn a_negated_content_counts_only_where_its_modifiers_put_it() {
    // suricata-verify detect-content-ends-with-negated-01.
    let s = set("alert http any any -> any any (msg:\"exe not from google\"; http.uri; content:\".exe\"; endswith; http.host; content:!\".google.com\"; endswith; sid:1;)\n\
alert http any any -> any any (msg:\"no admin at the start\"; http.uri; content:\"/x\"; content:!\"/admin\"; depth:6; sid:2;)\n");
    let get = |host: &str, uri: &str| format!("GET {uri} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    assert_eq!(fired(&s, &[&get("dl.google.com.evil.example", "/a.exe")]), [1]);
    assert_eq!(fired(&s, &[&get("dl.google.com", "/a.exe")]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[&get("h", "/x/admin")]), [2], "/admin past the depth");
    assert_eq!(fired(&s, &[&get("h", "/admin/x")]), [] as [u32; 0]);
}

#[test]
fn endswith_and_negated_contents_on_the_stream_hold_per_data_unit() {
    // suricata-verify bug-docs-5030-01's rule.
    let s = set(&(rule(1, "content:\"yYYY\"; distance:9; within:29; endswith;") + &rule(2, "content:\"HELLO\"; content:!\"BYE\";")));
    // distance with nothing before it counts from the unit's start: at 9 or later.
    assert_eq!(fired(&s, &[b"..........yYYY"]), [1]);
    assert_eq!(fired(&s, &[b"..yYYY"]), [] as [u32; 0], "before 9");
    assert_eq!(fired(&s, &[b"..........yYYY.", b"x"]), [] as [u32; 0], "not at the end of its unit");
    assert_eq!(fired(&s, &[b"HELLO BYE"]), [] as [u32; 0]);
    assert_eq!(fired(&s, &[b"BYE", b"HELLO"]), [2]);
    // Per unit, a content split across two reads does not count.
    assert_eq!(fired(&s, &[b"HEL", b"LO"]), [] as [u32; 0]);
}

#[test]
fn random_payload_rules_and_traffic_never_panic() {
    let mut rng = crate::testutil::Prng::new(23);
    let nums = ["0", "1", "2", "4", "8", "9", "23", "-1", "-65535", "65535", "2147483647", "-2147483648", "99999999999999999999", "0x10", "0xffffffffffffffff", "v", "w", "x1", ""];
    let ops = ["<", ">", "=", "!=", "<=", ">=", "&", "^", "!", "~", ""];
    let flags = ["relative", "big", "little", "string", "hex", "dec", "oct", "bitmask 0x0f", "bitmask 0", "align", "align 4", "from_end", "from_beginning", "multiplier 3", "post_offset -7", "dce", "rawbytes", "bogus"];
    let pick = |rng: &mut crate::testutil::Prng, from: &[&'static str]| from[(rng.next_u64() % from.len() as u64) as usize];
    let mut text = String::new();
    for sid in 1..=400u32 {
        let mut opts = String::from("content:\"A\"; ");
        for _ in 0..(rng.next_u64() % 4) {
            let mut kw = match rng.next_u64() % 6 {
                0 => format!("byte_test:{},{},{},{}", pick(&mut rng, &nums), pick(&mut rng, &ops), pick(&mut rng, &nums), pick(&mut rng, &nums)),
                1 => format!("byte_jump:{},{}", pick(&mut rng, &nums), pick(&mut rng, &nums)),
                2 => format!("byte_extract:{},{},{}", pick(&mut rng, &nums), pick(&mut rng, &nums), pick(&mut rng, &["v", "w", "1x"])),
                3 => format!("isdataat:{}{}", pick(&mut rng, &["", "!"]), pick(&mut rng, &nums)),
                4 => format!("content:\"B\"; distance:{}; within:{}", pick(&mut rng, &nums), pick(&mut rng, &nums)),
                _ => format!("dsize:{}{}", pick(&mut rng, &["", "<", ">", "!", "<=", "5<>"]), pick(&mut rng, &nums)),
            };
            for _ in 0..(rng.next_u64() % 3) {
                kw.push(',');
                kw.push_str(pick(&mut rng, &flags));
            }
            opts.push_str(&kw);
            opts.push_str("; ");
        }
        text.push_str(&rule(sid, &opts));
    }
    let (rules, errors) = parse_rules(&text);
    assert_eq!(rules.len() + errors.len(), 400);
    assert!(rules.iter().any(|r| !r.checks.is_empty()), "some load");
    let (s, _) = Ruleset::compile(rules, &Options::default()).unwrap();
    let s = Arc::new(s);
    let mut scratch = s.scratch().unwrap();
    for _ in 0..200 {
        let mut f = FlowIps::new(s.clone(), FlowTuple::to_port(443));
        for _ in 0..3 {
            let n = (rng.next_u64() % 40) as usize;
            let mut data = rng.bytes(n);
            for b in data.iter_mut() {
                // Mostly the rules' own bytes, digits and small numbers.
                const ALPHABET: &[u8] = b"AB0123456789 x\x00\x01\x02\x04\xff";
                *b = ALPHABET[usize::from(*b) % ALPHABET.len()];
            }
            let _ = f.inspect(Direction::ToServer, &data, &mut scratch);
        }
    }
}
