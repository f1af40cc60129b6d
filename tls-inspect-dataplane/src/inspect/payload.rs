//! Suricata's payload keywords that read the inspected bytes: `isdataat`, `byte_test`,
//! `byte_jump`, `byte_extract` (and its variables), as Suricata's `detect-bytetest.c`,
//! `detect-bytejump.c`, `detect-byte-extract.c` and `detect-isdataat.c` parse and evaluate them.
//!
//! This file is pure: the keyword's parsed form, its parser and its evaluation on a byte slice
//! at a detection pointer. Which bytes a rule sees (a field buffer's value, the stream's current
//! data unit) is the matcher's business (`inspect::ips::matcher`).

/// Byte_extract variables a rule may define, at most.
pub const MAX_VARS: usize = 16;

/// A byte_extract variable, by its index in the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VarId(pub u8);

/// A number a keyword takes: written in the rule, or a byte_extract variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Num {
    Lit(i64),
    Var(VarId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Endian {
    Big,
    Little,
}

/// `string, oct|dec|hex`; `Auto` is `strtoull`'s base 0 (`0x` hex, leading `0` octal), what
/// Suricata's byte_test and byte_jump use for `string` without a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Base {
    Auto,
    Oct,
    Dec,
    Hex,
}

impl Base {
    fn radix(self) -> u32 {
        match self {
            Base::Auto => 0,
            Base::Oct => 8,
            Base::Dec => 10,
            Base::Hex => 16,
        }
    }
}

/// How the bytes of byte_test, byte_jump and byte_extract are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ByteRead {
    pub nbytes: Num,
    pub offset: Num,
    pub relative: bool,
    pub endian: Endian,
    /// `string`: the bytes are digits in this base.
    pub string: Option<Base>,
    /// `bitmask`: ANDed with the value, which is then shifted right by the mask's trailing zeros.
    pub bitmask: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ByteOp {
    Lt,
    Gt,
    Eq,
    Le,
    Ge,
    /// `&`: any bit in common.
    And,
    /// `^`: Suricata's "bitwise OR", which is an exclusive or (`val ^ value != 0`).
    Xor,
}

/// Where byte_jump jumps from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum JumpFrom {
    /// After the bytes read (the default).
    Read,
    /// `from_beginning`: the buffer's start.
    Beginning,
    /// `from_end`: the buffer's end.
    End,
}

/// One payload keyword.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Check {
    IsDataAt { at: Num, relative: bool, negated: bool },
    ByteTest { read: ByteRead, op: ByteOp, negated: bool, value: Num },
    ByteJump { read: ByteRead, multiplier: u16, align: bool, from: JumpFrom, post_offset: i32 },
    ByteExtract { read: ByteRead, multiplier: u16, align: Option<u8>, var: VarId },
}

impl Check {
    /// The keyword, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            Check::IsDataAt { .. } => "isdataat",
            Check::ByteTest { .. } => "byte_test",
            Check::ByteJump { .. } => "byte_jump",
            Check::ByteExtract { .. } => "byte_extract",
        }
    }

    /// The check's position counts from the detection pointer.
    pub fn relative(&self) -> bool {
        match self {
            Check::IsDataAt { relative, .. } => *relative,
            Check::ByteTest { read, .. } | Check::ByteJump { read, .. } | Check::ByteExtract { read, .. } => read.relative,
        }
    }

    /// The variables the check reads.
    pub fn uses(&self) -> Vec<VarId> {
        let var = |n: &Num| match n {
            Num::Var(v) => Some(*v),
            Num::Lit(_) => None,
        };
        match self {
            Check::IsDataAt { at, .. } => var(at).into_iter().collect(),
            Check::ByteTest { read, value, .. } => [var(&read.nbytes), var(&read.offset), var(value)].into_iter().flatten().collect(),
            Check::ByteJump { read, .. } | Check::ByteExtract { read, .. } => [var(&read.nbytes), var(&read.offset)].into_iter().flatten().collect(),
        }
    }
}

/// A number in a rule, as Suricata reads it: decimal, `0x` hex, or (with `octal`) a leading-zero
/// octal; the whole token.
pub fn rule_number(s: &str, octal: bool) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = i64::try_from(rule_unsigned(digits, octal)?).ok()?;
    Some(if neg { -v } else { v })
}

/// An unsigned 64-bit number in a rule: decimal, `0x` hex, or (with `octal`) leading-zero octal.
fn rule_unsigned(digits: &str, octal: bool) -> Option<u64> {
    let digits = digits.trim();
    if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if octal && digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()
    } else if digits.starts_with('+') {
        None
    } else {
        digits.parse::<u64>().ok()
    }
}

/// A keyword's names and numbers: a number, or a variable the rule defined before.
fn num(s: &str, vars: &[String], what: &str, min: i64, max: i64, octal: bool) -> Result<Num, String> {
    let s = s.trim();
    if s.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return vars
            .iter()
            .position(|v| v == s)
            .map(|i| Num::Var(VarId(i as u8)))
            .ok_or_else(|| format!("{what} '{s}' is not a byte_extract variable defined before it"));
    }
    match rule_number(s, octal) {
        Some(n) if (min..=max).contains(&n) => Ok(Num::Lit(n)),
        Some(n) => Err(format!("{what} {n} is out of range ({min} to {max})")),
        None => Err(format!("{what} '{s}' is not a valid number")),
    }
}

/// The most bytes a read takes: 8 as an integer, 23 as a string (the longest octal that fits 64
/// bits), as in Suricata.
fn max_bytes(string: bool) -> i64 {
    if string {
        23
    } else {
        8
    }
}

/// The options after the positional ones, shared by byte_test and byte_jump.
struct Flags {
    relative: bool,
    endian: Option<Endian>,
    string: bool,
    base: Option<Base>,
    bitmask: Option<u32>,
}

fn flag_common(f: &str, flags: &mut Flags) -> Result<bool, String> {
    let lower = f.to_ascii_lowercase();
    match lower.as_str() {
        "relative" => flags.relative = true,
        "big" => flags.endian = Some(Endian::Big),
        "little" => flags.endian = Some(Endian::Little),
        "string" => flags.string = true,
        "dec" => flags.base = Some(Base::Dec),
        "hex" => flags.base = Some(Base::Hex),
        "oct" => flags.base = Some(Base::Oct),
        "dce" => return Err("dce: DCE/RPC is not decoded here, so its byte order is unknown".into()),
        _ => {
            if let Some(v) = lower.strip_prefix("bitmask") {
                let m = rule_number(v, true).and_then(|m| u32::try_from(m).ok()).ok_or_else(|| format!("bitmask '{}' is not a 32-bit number", v.trim()))?;
                if m == 0 {
                    return Err("bitmask 0 can never match".into());
                }
                flags.bitmask = Some(m);
            } else {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn read_of(nbytes: Num, offset: Num, flags: &Flags) -> Result<ByteRead, String> {
    if flags.base.is_some() && !flags.string {
        return Err("a base (dec, hex, oct) needs string".into());
    }
    if let Num::Lit(n) = nbytes {
        if n > max_bytes(flags.string) {
            return Err(format!("cannot read more than {} bytes{}", max_bytes(flags.string), if flags.string { " with string" } else { " without string" }));
        }
    }
    Ok(ByteRead {
        nbytes,
        offset,
        relative: flags.relative,
        endian: flags.endian.unwrap_or(Endian::Big),
        string: flags.string.then(|| flags.base.unwrap_or(Base::Auto)),
        bitmask: flags.bitmask,
    })
}

fn split(v: &str) -> Vec<&str> {
    v.split(',').map(str::trim).collect()
}

/// `isdataat:[!]N[,relative][,rawbytes]`.
pub fn parse_isdataat(v: &str, vars: &[String]) -> Result<Check, String> {
    let v = v.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, v),
    };
    let parts = split(v);
    let at = num(parts[0], vars, "position", 0, i64::from(u16::MAX), false)?;
    let mut relative = false;
    for p in &parts[1..] {
        match *p {
            "relative" => relative = true,
            // Raw bytes are all this engine has.
            "rawbytes" => {}
            other => return Err(format!("'{other}' (relative, rawbytes)")),
        }
    }
    Ok(Check::IsDataAt { at, relative, negated })
}

/// `byte_test:nbytes, [!]op, value, offset [, relative][, big|little][, string[, hex|dec|oct]][, bitmask M]`.
pub fn parse_byte_test(v: &str, vars: &[String]) -> Result<Check, String> {
    let parts = split(v);
    if parts.len() < 4 {
        return Err("needs nbytes, operator, value and offset".into());
    }
    let mut flags = Flags { relative: false, endian: None, string: false, base: None, bitmask: None };
    for f in &parts[4..] {
        if !flag_common(f, &mut flags)? {
            return Err(format!("unknown option '{f}'"));
        }
    }
    let nbytes = num(parts[0], vars, "nbytes", 0, 23, false)?;
    if nbytes == Num::Lit(0) && !flags.string {
        return Err("nbytes 0 needs string (it reads the number that starts there)".into());
    }
    let op_text = parts[1];
    let (negated, op_text) = match op_text.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, op_text),
    };
    let op = match op_text {
        "=" => ByteOp::Eq,
        "" if negated => ByteOp::Eq,
        "<" => ByteOp::Lt,
        ">" => ByteOp::Gt,
        "<=" => ByteOp::Le,
        ">=" => ByteOp::Ge,
        "&" => ByteOp::And,
        "^" => ByteOp::Xor,
        other => return Err(format!("operator '{other}' (<, >, =, <=, >=, &, ^, each with an optional !)")),
    };
    // The test value is a u64, kept as its bit pattern.
    let value = match rule_unsigned(parts[2], true) {
        Some(v) => Num::Lit(v as i64),
        None => num(parts[2], vars, "value", 0, i64::MAX, true)?,
    };
    let offset = num(parts[3], vars, "offset", i64::from(i32::MIN), i64::from(i32::MAX), false)?;
    Ok(Check::ByteTest { read: read_of(nbytes, offset, &flags)?, op, negated, value })
}

/// `byte_jump:nbytes, offset [, relative][, multiplier N][, big|little][, string[, base]][, align]
/// [, from_beginning|from_end][, post_offset N][, bitmask M]`.
pub fn parse_byte_jump(v: &str, vars: &[String]) -> Result<Check, String> {
    let parts = split(v);
    if parts.len() < 2 {
        return Err("needs nbytes and offset".into());
    }
    let mut flags = Flags { relative: false, endian: None, string: false, base: None, bitmask: None };
    let (mut multiplier, mut align, mut from, mut post_offset) = (1u16, false, JumpFrom::Read, 0i32);
    for f in &parts[2..] {
        if flag_common(f, &mut flags)? {
            continue;
        }
        let lower = f.to_ascii_lowercase();
        let mut kv = lower.split_whitespace();
        match (kv.next(), kv.next(), kv.next()) {
            (Some("align"), None, _) => align = true,
            (Some("from_beginning"), None, _) => from = if from == JumpFrom::End { return Err("from_beginning and from_end together".into()) } else { JumpFrom::Beginning },
            (Some("from_end"), None, _) => from = if from == JumpFrom::Beginning { return Err("from_beginning and from_end together".into()) } else { JumpFrom::End },
            (Some("multiplier"), Some(n), None) => {
                multiplier = n.parse::<u16>().ok().filter(|m| *m >= 1).ok_or_else(|| format!("multiplier '{n}' (1 to 65535)"))?;
            }
            (Some("post_offset"), Some(n), None) => {
                post_offset = n.parse::<i32>().ok().filter(|p| (-65535..=65535).contains(p)).ok_or_else(|| format!("post_offset '{n}' (-65535 to 65535)"))?;
            }
            _ => return Err(format!("unknown option '{f}'")),
        }
    }
    // 0 bytes is a jump by post_offset alone (with from_end or from_beginning).
    let nbytes = num(parts[0], vars, "nbytes", 0, 23, false)?;
    let offset = num(parts[1], vars, "offset", -65535, 65535, false)?;
    Ok(Check::ByteJump { read: read_of(nbytes, offset, &flags)?, multiplier, align, from, post_offset })
}

/// `byte_extract:nbytes, offset, name [, relative][, multiplier N][, big|little][, string[, base]]
/// [, align 2|4]`; returns the check and the variable's name (the caller numbers it).
pub fn parse_byte_extract(v: &str, vars: &[String]) -> Result<(Check, String), String> {
    let parts = split(v);
    if parts.len() < 3 {
        return Err("needs nbytes, offset and a variable name".into());
    }
    let name = parts[2];
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("'{name}' is not a variable name"));
    }
    if vars.iter().any(|v| v == name) {
        return Err(format!("variable '{name}' is defined twice"));
    }
    if vars.len() >= MAX_VARS {
        return Err(format!("more than {MAX_VARS} variables"));
    }
    let mut flags = Flags { relative: false, endian: None, string: false, base: None, bitmask: None };
    let (mut multiplier, mut align) = (1u16, None);
    for f in &parts[3..] {
        let lower = f.to_ascii_lowercase();
        if lower.starts_with("bitmask") {
            return Err("bitmask is not a byte_extract option".into());
        }
        if flag_common(f, &mut flags)? {
            continue;
        }
        let mut kv = lower.split_whitespace();
        match (kv.next(), kv.next(), kv.next()) {
            (Some("align"), Some(n @ ("2" | "4")), None) => align = n.parse::<u8>().ok(),
            (Some("multiplier"), Some(n), None) => {
                multiplier = n.parse::<u16>().ok().filter(|m| *m >= 1).ok_or_else(|| format!("multiplier '{n}' (1 to 65535)"))?;
            }
            (Some("slice"), None, _) => return Err("slice is not supported (nor by Suricata)".into()),
            _ => return Err(format!("unknown option '{f}'")),
        }
    }
    if flags.string && flags.endian.is_some() {
        return Err("string and an endianness together".into());
    }
    let nbytes = rule_number(parts[0], false).filter(|n| (1..=max_bytes(flags.string)).contains(n)).ok_or_else(|| format!("nbytes '{}' (1 to {})", parts[0], max_bytes(flags.string)))?;
    let offset = rule_number(parts[1], false).filter(|n| i16::try_from(*n).is_ok()).ok_or_else(|| format!("offset '{}' (-32768 to 32767)", parts[1]))?;
    // byte_extract's string default base is decimal.
    if flags.string && flags.base.is_none() {
        flags.base = Some(Base::Dec);
    }
    let read = read_of(Num::Lit(nbytes), Num::Lit(offset), &flags)?;
    Ok((Check::ByteExtract { read, multiplier, align, var: VarId(vars.len() as u8) }, name.to_string()))
}

/// `strtoull(s, base)` on at most the given bytes, as Suricata's `ByteExtractString`: leading
/// white space, a sign (a `-` negates, wrapping), `0x` for base 16 and 0, leading `0` octal for
/// base 0; digits up to the first other byte. The value and the bytes it took; None: no
/// digits, or past 64 bits.
pub fn strtoull(bytes: &[u8], radix: u32) -> Option<(u64, usize)> {
    let mut i = 0;
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        neg = bytes[i] == b'-';
        i += 1;
    }
    let hex_prefix = |i: usize| bytes.get(i) == Some(&b'0') && matches!(bytes.get(i + 1), Some(b'x' | b'X')) && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    let radix = match radix {
        0 if hex_prefix(i) => {
            i += 2;
            16
        }
        0 if bytes.get(i) == Some(&b'0') => 8,
        0 => 10,
        16 if hex_prefix(i) => {
            i += 2;
            16
        }
        r => r,
    };
    let start = i;
    let mut v: u64 = 0;
    while let Some(d) = bytes.get(i).and_then(|b| (*b as char).to_digit(radix)) {
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if neg { v.wrapping_neg() } else { v }, i))
}

/// The outcome of one check: it holds (with the detection pointer after it), or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Holds { ptr: u64 },
    Fails,
}

fn value(n: Num, vars: &[u64; MAX_VARS]) -> i64 {
    match n {
        Num::Lit(v) => v,
        // Suricata casts a variable to the keyword's integer type.
        Num::Var(VarId(i)) => vars.get(usize::from(i)).copied().unwrap_or(0) as i64,
    }
}

/// Reads the bytes of byte_test, byte_jump and byte_extract: the value and where the read
/// starts and ends in the buffer. None: out of the buffer, no digits, or an overflow.
fn read(r: &ByteRead, data: &[u8], ptr: u64, vars: &[u64; MAX_VARS], zero_ok: bool) -> Option<(u64, usize, usize)> {
    if data.is_empty() {
        return None;
    }
    let nbytes = match r.nbytes {
        Num::Lit(n) => n,
        // A variable's value is cast to int32, as in Suricata.
        Num::Var(_) => i64::from(value(r.nbytes, vars) as i32),
    };
    // 0 bytes: byte_jump jumps by its post_offset alone; a string reads the number that starts
    // there (Suricata's strtoull on the rest of the buffer).
    if nbytes < 0 || (nbytes == 0 && !zero_ok && r.string.is_none()) || nbytes > max_bytes(r.string.is_some()) {
        return None;
    }
    let offset = match r.offset {
        Num::Lit(o) => o,
        Num::Var(_) => i64::from(value(r.offset, vars) as i32),
    };
    let len = data.len() as i128;
    let start = if r.relative { i128::from(ptr) + i128::from(offset) } else { i128::from(offset) };
    if r.relative && len - start <= 0 && !(zero_ok && nbytes == 0) {
        return None;
    }
    if start < 0 || i128::from(nbytes) > len - start {
        return None;
    }
    let start = usize::try_from(start).ok()?;
    let end = match (nbytes, r.string) {
        (0, Some(_)) => data.len(),
        _ => start.checked_add(usize::try_from(nbytes).ok()?)?,
    };
    let bytes = data.get(start..end)?;
    // A string's read ends where its digits end (Suricata's extbytes).
    let (mut v, end) = match r.string {
        Some(base) => {
            let (v, took) = strtoull(bytes, base.radix())?;
            (v, start + took)
        }
        None => {
            let mut v: u64 = 0;
            match r.endian {
                Endian::Big => bytes.iter().for_each(|b| v = (v << 8) | u64::from(*b)),
                Endian::Little => bytes.iter().rev().for_each(|b| v = (v << 8) | u64::from(*b)),
            }
            (v, end)
        }
    };
    if let Some(m) = r.bitmask {
        v &= u64::from(m);
        if v != 0 {
            v >>= m.trailing_zeros();
        }
    }
    Some((v, start, end))
}

/// Evaluates one check on `data` with the detection pointer at `ptr`; byte_extract stores its
/// value in `vars`.
pub fn eval(check: &Check, data: &[u8], ptr: u64, vars: &mut [u64; MAX_VARS]) -> Outcome {
    let len = data.len() as u64;
    match check {
        Check::IsDataAt { at, relative, negated } => {
            let at = match at {
                Num::Lit(a) => *a as u64,
                Num::Var(_) => {
                    let v = value(*at, vars) as u64;
                    if v >= 100_000_000 {
                        return if *negated { Outcome::Holds { ptr } } else { Outcome::Fails };
                    }
                    v
                }
            };
            // Relative: data up to ptr + at (inclusive of the end); absolute: a byte at `at`.
            let there = if *relative { ptr.checked_add(at).is_some_and(|e| e <= len) } else { at < len };
            if there != *negated {
                Outcome::Holds { ptr }
            } else {
                Outcome::Fails
            }
        }
        Check::ByteTest { read: r, op, negated, value: want } => {
            let Some((v, _, _)) = read(r, data, ptr, vars, false) else {
                return Outcome::Fails;
            };
            let want = match want {
                Num::Lit(w) => *w as u64,
                Num::Var(VarId(i)) => vars.get(usize::from(*i)).copied().unwrap_or(0),
            };
            let m = match op {
                ByteOp::Eq => v == want,
                ByteOp::Lt => v < want,
                ByteOp::Gt => v > want,
                ByteOp::Le => v <= want,
                ByteOp::Ge => v >= want,
                ByteOp::And => v & want != 0,
                ByteOp::Xor => v ^ want != 0,
            };
            if m != *negated {
                Outcome::Holds { ptr }
            } else {
                Outcome::Fails
            }
        }
        Check::ByteJump { read: r, multiplier, align, from, post_offset } => {
            let Some((v, _, end)) = read(r, data, ptr, vars, true) else {
                return Outcome::Fails;
            };
            // Suricata's u64 arithmetic, then the jump as a signed offset.
            let mut v = v.wrapping_mul(u64::from(*multiplier));
            if *align && v % 4 != 0 {
                v = v.wrapping_add(4 - v % 4);
            }
            let v = i128::from(v.wrapping_add(*post_offset as i64 as u64) as i64);
            let target = match from {
                JumpFrom::Beginning => v,
                JumpFrom::End => i128::from(len) + v,
                JumpFrom::Read => end as i128 + v,
            };
            if target > i128::from(len) {
                Outcome::Fails
            } else {
                Outcome::Holds { ptr: u64::try_from(target.max(0)).unwrap_or(0) }
            }
        }
        Check::ByteExtract { read: r, multiplier, align, var } => {
            let Some((v, _, end)) = read(r, data, ptr, vars, false) else {
                return Outcome::Fails;
            };
            let mut v = v.wrapping_mul(u64::from(*multiplier));
            if let Some(a) = align.map(u64::from).filter(|a| *a > 0) {
                if v % a != 0 {
                    v = v.wrapping_add(a - v % a);
                }
            }
            if let Some(slot) = vars.get_mut(usize::from(var.0)) {
                *slot = v;
            }
            Outcome::Holds { ptr: end as u64 }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn run(check: &str, kw: &str, data: &[u8], ptr: u64) -> Outcome {
        let c = match kw {
            "isdataat" => parse_isdataat(check, &[]).unwrap(),
            "byte_test" => parse_byte_test(check, &[]).unwrap(),
            "byte_jump" => parse_byte_jump(check, &[]).unwrap(),
            _ => parse_byte_extract(check, &[]).unwrap().0,
        };
        eval(&c, data, ptr, &mut [0; MAX_VARS])
    }

    #[test]
    fn isdataat_as_suricatas_table_says() {
        let d = b"abcdefgh";
        let holds = |s: &str, ptr| matches!(run(s, "isdataat", d, ptr), Outcome::Holds { .. });
        assert!(holds("7", 0));
        assert!(!holds("8", 0));
        assert!(holds("7,relative", 0));
        assert!(holds("8,relative", 0));
        assert!(!holds("9,relative", 0));
        // After "c" (pointer 3).
        assert!(holds("4,relative", 3) && holds("5,relative", 3) && !holds("6,relative", 3));
        assert!(holds("!1,relative", 8) && !holds("!1,relative", 7));
        assert!(holds("!8", 0) && !holds("!7", 0));
        assert!(holds("1, relative, rawbytes", 0));
    }

    #[test]
    fn strtoull_reads_as_c_does() {
        assert_eq!(strtoull(b" 42x", 10), Some((42, 3)));
        assert_eq!(strtoull(b"0x1f", 16), Some((31, 4)));
        assert_eq!(strtoull(b"1f", 16), Some((31, 2)));
        assert_eq!(strtoull(b"0x1f", 0), Some((31, 4)));
        assert_eq!(strtoull(b"017", 0), Some((15, 3)));
        assert_eq!(strtoull(b"-1", 10), Some((u64::MAX, 2)));
        assert_eq!(strtoull(b"abc", 10), None);
        assert_eq!(strtoull(b"", 10), None);
        assert_eq!(strtoull(b"99999999999999999999999", 10), None, "past 64 bits");
        assert_eq!(strtoull(b"0x", 16), Some((0, 1)), "a lone 0x is the 0 before it");
    }

    #[test]
    fn byte_reads_never_panic_on_any_input() {
        let mut rng = crate::testutil::Prng::new(11);
        let checks = [
            ("byte_test", "4,>,1,-3,relative"),
            ("byte_test", "8,=,0,2147483647"),
            ("byte_test", "23,<,5,0,string,oct"),
            ("byte_jump", "4,0,relative,multiplier 65535,align,post_offset -65535"),
            ("byte_jump", "8,-65535,from_end,post_offset 65535"),
            ("byte_jump", "0,0,from_beginning,post_offset 3"),
            ("byte_extract", "8,0,v,relative,multiplier 65535,align 4"),
            ("isdataat", "!65535,relative"),
        ];
        for _ in 0..500 {
            let n = usize::from(rng.bytes(1)[0] % 24);
            let data = rng.bytes(n);
            for (kw, c) in checks {
                for ptr in [0, 1, 7, u64::MAX, u64::from(u32::MAX)] {
                    let _ = run(c, kw, &data, ptr);
                }
            }
        }
    }
}
