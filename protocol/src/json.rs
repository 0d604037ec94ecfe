//! A small JSON reader for the browser builds (widget and console): text → [`Value`], which [`crate::decode`]
//! reads by hand.
//!
//! Why not `serde_json::Value`: parsing through serde's `Deserializer` links serde's error machinery, and with it
//! a float formatter (for "invalid type: floating point `1.5`" messages) and serde_json's float parser; in the
//! console's Wasm that was over 50 KB before optimisation, for frames that never carry a float. This reader
//! accepts exactly the JSON that `serde_json::from_str::<serde_json::Value>` accepts (the tests compare the two),
//! with one difference: a number too large for an `f64` (`1e400`) is accepted here, where serde_json refuses the
//! whole text; no decoder reads a float, so such a number only ever sits in a field nobody reads. Numbers are read
//! as serde_json reads them (an integer that fits an `u64` or `i64` is one, anything else is a float); the value
//! of a float is not kept. Nesting is limited to 127 levels, as serde_json's, so no input can exhaust the stack.

/// A parsed JSON value (the subset of `serde_json::Value`'s API the decoders use).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Map),
}

/// A JSON number, classified as serde_json classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Number {
    /// A non-negative integer that fits an `u64`.
    PosInt(u64),
    /// A negative integer that fits an `i64`.
    NegInt(i64),
    /// Anything else: a fraction, an exponent, `-0`, or an integer out of range (its value is not kept).
    Float,
}

/// A JSON object; when a key is repeated, the last value wins (as in serde_json).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map(Vec<(String, Value)>);

impl Map {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// How many entries the text had (a repeated key counts each time).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Value {
    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Self::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(Number::PosInt(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(Number::PosInt(n)) => i64::try_from(*n).ok(),
            Self::Number(Number::NegInt(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

/// Parses one JSON text (surrounding whitespace allowed); `None` when it is not valid JSON.
pub fn parse(text: &str) -> Option<Value> {
    let mut p = Parser { text, bytes: text.as_bytes(), pos: 0, depth: 0 };
    let value = p.value()?;
    p.ws();
    (p.pos == p.bytes.len()).then_some(value)
}

/// serde_json's recursion limit: this many nested arrays or objects are refused.
const MAX_DEPTH: u32 = 128;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'n' => self.literal("null", Value::Null),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'"' => self.string().map(Value::String),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            b'[' => self.nested(|p| {
                let mut items = Vec::new();
                p.ws();
                if p.eat(b']') {
                    return Some(Value::Array(items));
                }
                loop {
                    items.push(p.value()?);
                    p.ws();
                    match p.next()? {
                        b',' => {}
                        b']' => return Some(Value::Array(items)),
                        _ => return None,
                    }
                }
            }),
            b'{' => self.nested(|p| {
                let mut entries = Vec::new();
                p.ws();
                if p.eat(b'}') {
                    return Some(Value::Object(Map(entries)));
                }
                loop {
                    p.ws();
                    if p.peek()? != b'"' {
                        return None;
                    }
                    let key = p.string()?;
                    p.ws();
                    if !p.eat(b':') {
                        return None;
                    }
                    entries.push((key, p.value()?));
                    p.ws();
                    match p.next()? {
                        b',' => {}
                        b'}' => return Some(Value::Object(Map(entries))),
                        _ => return None,
                    }
                }
            }),
            _ => None,
        }
    }

    /// Runs `body` after the opening bracket, one level deeper.
    fn nested(&mut self, body: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        let value = body(self);
        self.depth -= 1;
        value
    }

    fn literal(&mut self, word: &str, value: Value) -> Option<Value> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word.as_bytes()).then(|| {
            self.pos = end;
            value
        })
    }

    fn number(&mut self) -> Option<Number> {
        let negative = self.eat(b'-');
        let start = self.pos;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let int_end = self.pos;
        let mut float = false;
        if self.eat(b'.') {
            float = true;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            float = true;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        if float {
            return Some(Number::Float);
        }
        let mut n: u64 = 0;
        for &b in &self.bytes[start..int_end] {
            match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(b - b'0'))) {
                Some(m) => n = m,
                None => return Some(Number::Float),
            }
        }
        Some(match (negative, n) {
            (false, n) => Number::PosInt(n),
            (true, 0) => Number::Float,
            (true, n) => 0i64.checked_sub_unsigned(n).map_or(Number::Float, Number::NegInt),
        })
    }

    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            // Both ends sit next to ASCII bytes, so on char boundaries.
            out.push_str(self.text.get(start..self.pos)?);
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => out.push(match self.next()? {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => self.unicode_escape()?,
                    _ => return None,
                }),
                _ => return None,
            }
        }
    }

    /// The rest of a `\uXXXX` escape; a surrogate must be a leading one followed by a `\u` trailing one.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !(self.eat(b'\\') && self.eat(b'u')) {
                    return None;
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return None,
            _ => first,
        };
        char::from_u32(code)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        digits.iter().try_fold(0, |n, &b| Some(n * 16 + char::from(b).to_digit(16)?))
    }
}

#[cfg(test)]
mod tests {
    use super::{Number, Value, parse};

    /// The same text through serde_json, mapped onto this module's types.
    fn serde(text: &str) -> Option<Value> {
        fn map(v: serde_json::Value) -> Value {
            match v {
                serde_json::Value::Null => Value::Null,
                serde_json::Value::Bool(b) => Value::Bool(b),
                serde_json::Value::Number(n) => Value::Number(match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => Number::PosInt(u),
                    (None, Some(i)) => Number::NegInt(i),
                    _ => Number::Float,
                }),
                serde_json::Value::String(s) => Value::String(s),
                serde_json::Value::Array(a) => Value::Array(a.into_iter().map(map).collect()),
                serde_json::Value::Object(o) => {
                    Value::Object(super::Map(o.into_iter().map(|(k, v)| (k, map(v))).collect()))
                }
            }
        }
        serde_json::from_str::<serde_json::Value>(text).ok().map(map)
    }

    /// Objects compared by their keys' final values (serde_json's map is sorted and keeps the last duplicate).
    fn normalized(v: Option<Value>) -> Option<Value> {
        fn norm(v: Value) -> Value {
            match v {
                Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
                Value::Object(super::Map(entries)) => {
                    let mut out: Vec<(String, Value)> = Vec::new();
                    for (k, v) in entries {
                        out.retain(|(key, _)| *key != k);
                        out.push((k, norm(v)));
                    }
                    out.sort_by(|a, b| a.0.cmp(&b.0));
                    Value::Object(super::Map(out))
                }
                v => v,
            }
        }
        v.map(norm)
    }

    fn assert_same(text: &str) {
        assert_eq!(normalized(parse(text)), normalized(serde(text)), "text: {text:?}");
    }

    #[test]
    fn reads_what_serde_json_reads_and_refuses_what_it_refuses() {
        let cases = [
            "null",
            " true ",
            "false",
            "nul",
            "nulll",
            "True",
            "0",
            "-0",
            "01",
            "-",
            "1.",
            ".5",
            "+1",
            "1.5",
            "1e3",
            "1E+3",
            "1e-3",
            "1e",
            "2.5e",
            "-12",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808",
            "\"\"",
            "\"plain\"",
            "\"caf\u{e9} \u{1F600}\"",
            r#""esc \" \\ \/ \b \f \n \r \t""#,
            r#""\u00e9\u20AC\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\ude00""#,
            r#""\u12""#,
            r#""\u+123""#,
            r#""\x""#,
            "\"tab\tinside\"",
            "\"line\nbreak\"",
            "\"unterminated",
            "[]",
            "[ ]",
            "[1,2 , 3]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[",
            "{}",
            r#"{"a":1,"b":[true,null],"c":{"d":"e"}}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a" : 1 , "b":2}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1 "b":2}"#,
            "{\"type\":\"event\",\"event\":{\"seq\":3,\"at\":-5}}",
            "1 2",
            "[] x",
            "",
            "   ",
            "\u{feff}1",
        ];
        for text in cases {
            assert_same(text);
        }
        // Nesting: serde_json's limit, exactly.
        for depth in [1, 126, 127, 128, 129, 5000] {
            assert_same(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            assert_same(&format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)));
            assert_same(&"[".repeat(depth));
        }
    }

    #[test]
    fn reads_integers_as_serde_json_does_and_keeps_no_float() {
        let v = parse(r#"{"u":18446744073709551615,"i":-3,"f":1.5,"big":99999999999999999999}"#).expect("parses");
        let o = v.as_object().expect("object");
        assert_eq!(o.get("u").and_then(Value::as_u64), Some(u64::MAX));
        assert_eq!(o.get("u").and_then(Value::as_i64), None);
        assert_eq!(o.get("i").and_then(Value::as_i64), Some(-3));
        assert_eq!(o.get("i").and_then(Value::as_u64), None);
        assert_eq!(o.get("f"), Some(&Value::Number(Number::Float)));
        assert_eq!(o.get("big"), Some(&Value::Number(Number::Float)));
        assert!(o.get("missing").is_none());
        assert_eq!(
            parse(r#"{"a":1,"a":"last"}"#)
                .and_then(|v| v.as_object()?.get("a")?.as_str().map(str::to_owned))
                .as_deref(),
            Some("last")
        );
    }
}
