//! A small JSON reader and string writer, enough for Kafka's reassignment files: objects, arrays, strings (with
//! every escape, surrogate pairs included), integers, `true`, `false` and `null`. Fractions and exponents are
//! refused (nothing in these files is one). Nesting is bounded by `DEPTH_MAX`, so a hostile file cannot exhaust the
//! stack; its size is bounded by the caller, who reads it.

use std::fmt;

/// Deepest nesting accepted; a reassignment file nests three deep (object → array → object → array).
pub const DEPTH_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i64),
    String(String),
    Array(Vec<Value>),
    /// Members in file order; a repeated key is refused while parsing.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// What kind of value this is, for messages ("expected an array, found a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) => "an integer",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Where parsing stopped and why: line and column are 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "line {} column {}: {}", self.line, self.column, self.reason)
    }
}

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it).
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let mut parser = Parser { bytes: text.as_bytes(), position: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position != parser.bytes.len() {
        return Err(parser.error("unexpected text after the JSON value"));
    }
    Ok(value)
}

/// `text` as a JSON string literal, quotes included.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(control)))
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

struct Parser<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Parser<'_> {
    fn error(&self, reason: impl Into<String>) -> JsonError {
        let before = &self.bytes[..self.position.min(self.bytes.len())];
        let line = 1 + before.iter().filter(|&&byte| byte == b'\n').count();
        let line_start = before.iter().rposition(|&byte| byte == b'\n').map_or(0, |index| index + 1);
        JsonError { line, column: 1 + self.position - line_start, reason: reason.into() }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.position) {
            self.position += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() != Some(byte) {
            return Err(self.error(format!("expected '{}'", char::from(byte))));
        }
        self.position += 1;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("unexpected end of the file")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(_) => self.literal(),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > DEPTH_MAX {
            return Err(self.error(format!("nested deeper than {DEPTH_MAX}")));
        }
        self.expect(b'{')?;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name in quotes"));
            }
            let key = self.string()?;
            if members.iter().any(|(seen, _)| *seen == key) {
                return Err(self.error(format!("member \"{key}\" appears twice")));
            }
            self.skip_whitespace();
            self.expect(b':')?;
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b'}') => {
                    self.position += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > DEPTH_MAX {
            return Err(self.error(format!("nested deeper than {DEPTH_MAX}")));
        }
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.position += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b']') => {
                    self.position += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn integer(&mut self) -> Result<Value, JsonError> {
        let start = self.position;
        if self.peek() == Some(b'-') {
            self.position += 1;
        }
        let digits_start = self.position;
        while let Some(b'0'..=b'9') = self.peek() {
            self.position += 1;
        }
        let digits = &self.bytes[digits_start..self.position];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return Err(self.error("malformed number"));
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(self.error("only integers are expected here"));
        }
        let text =
            std::str::from_utf8(&self.bytes[start..self.position]).map_err(|_| self.error("bad number"))?;
        text.parse().map(Value::Integer).map_err(|_| self.error(format!("{text} does not fit 64 bits")))
    }

    fn literal(&mut self) -> Result<Value, JsonError> {
        for (word, value) in
            [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)]
        {
            if self.bytes[self.position..].starts_with(word.as_bytes()) {
                self.position += word.len();
                return Ok(value);
            }
        }
        Err(self.error("expected a JSON value"))
    }

    /// A string literal; the text between the quotes is UTF-8 because the whole input is a `&str`.
    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut text: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = self.peek() else { return Err(self.error("unterminated string")) };
            self.position += 1;
            match byte {
                b'"' => break,
                b'\\' => self.string_escape(&mut text)?,
                0x00..=0x1f => return Err(self.error("control character in a string")),
                other => text.push(other),
            }
        }
        String::from_utf8(text).map_err(|_| self.error("string is not UTF-8"))
    }

    fn string_escape(&mut self, text: &mut Vec<u8>) -> Result<(), JsonError> {
        let Some(byte) = self.peek() else { return Err(self.error("unterminated escape")) };
        self.position += 1;
        let simple = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.string_escape_unicode()?,
            _ => return Err(self.error(format!("unknown escape '\\{}'", char::from(byte)))),
        };
        let mut buffer = [0u8; 4];
        text.extend_from_slice(simple.encode_utf8(&mut buffer).as_bytes());
        Ok(())
    }

    /// `\uXXXX`, or a surrogate pair `\uD83D\uDE00`; the leading `\u` is already consumed.
    fn string_escape_unicode(&mut self) -> Result<char, JsonError> {
        let high = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&high) {
            if !self.bytes[self.position..].starts_with(b"\\u") {
                return Err(self.error("lone high surrogate"));
            }
            self.position += 2;
            let low = self.hex4()?;
            if !(0xdc00..0xe000).contains(&low) {
                return Err(self.error("bad low surrogate"));
            }
            0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error("escape is not a Unicode scalar value"))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits =
            self.bytes.get(self.position..self.position + 4).ok_or_else(|| self.error("short \\u"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("bad \\u escape"))?;
        let value = u32::from_str_radix(text, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.position += 4;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Value) {
        assert_eq!(parse(text), Ok(expected), "{text}");
    }

    fn check_error(text: &str, reason_part: &str) {
        let error = parse(text).expect_err(text);
        assert!(error.reason.contains(reason_part), "{text}: {error}");
    }

    #[test]
    fn parses_what_reassignment_files_hold() {
        check(" 7 ", Value::Integer(7));
        check("-12", Value::Integer(-12));
        check("[]", Value::Array(vec![]));
        check("{}", Value::Object(vec![]));
        check("[true, false, null]", Value::Array(vec![Value::Bool(true), Value::Bool(false), Value::Null]));
        check(
            r#"{"a": [1, {"b": "c"}], "d": "e"}"#,
            Value::Object(vec![
                (
                    "a".into(),
                    Value::Array(vec![
                        Value::Integer(1),
                        Value::Object(vec![("b".into(), Value::String("c".into()))]),
                    ]),
                ),
                ("d".into(), Value::String("e".into())),
            ]),
        );
        check(r#""q\"b\\s\/n\nt\tu\u00e9p\ud83d\ude00""#, Value::String("q\"b\\s/n\nt\tuép😀".into()));
        check("\"é\"", Value::String("é".into()));
    }

    #[test]
    fn refuses_malformed_input_with_a_position() {
        check_error("", "end of the file");
        check_error("[1,]", "expected a JSON value");
        check_error("[1 2]", "expected ',' or ']'");
        check_error("{\"a\" 1}", "expected ':'");
        check_error("{\"a\": 1, \"a\": 2}", "appears twice");
        check_error("1.5", "only integers");
        check_error("1e3", "only integers");
        check_error("01", "malformed number");
        check_error("99999999999999999999", "does not fit");
        check_error("\"abc", "unterminated");
        check_error("\"a\nb\"", "control character");
        check_error("\"\\x\"", "unknown escape");
        check_error("\"\\ud800\"", "lone high surrogate");
        check_error("[1] x", "after the JSON value");
        check_error("tru", "expected a JSON value");
        let error = parse("{\n  \"a\": ?\n}").expect_err("bad value");
        assert_eq!((error.line, error.column), (2, 8), "{error}");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(DEPTH_MAX + 1) + &"]".repeat(DEPTH_MAX + 1);
        check_error(&deep, "nested deeper");
        let fits = "[".repeat(DEPTH_MAX) + &"]".repeat(DEPTH_MAX);
        assert!(parse(&fits).is_ok());
    }

    #[test]
    fn quoted_strings_parse_back() {
        for text in ["plain", "with \"quotes\" and \\", "line\nbreak\ttab\u{1}", "é😀", ""] {
            assert_eq!(parse(&quote(text)), Ok(Value::String(text.to_owned())), "{text:?}");
        }
        assert_eq!(quote("a\"b"), r#""a\"b""#);
    }
}
