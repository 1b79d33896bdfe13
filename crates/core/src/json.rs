//! A borrowed JSON tree for validating webhook bodies.
//!
//! `serde_json::Value` owns every string and keeps objects in B-tree maps: parsing a body into it costs an
//! allocation per key and per string. [`Node`] borrows strings from the body whenever they contain no escape
//! sequence and keeps object members in a small vector, so validation reads the body almost without
//! allocating; only what the validated [`crate::Alert`] keeps is copied out. Parsing is serde_json's own
//! parser, so what is and is not valid JSON (and every syntax error message) is unchanged.
//!
//! Duplicate object keys behave as in `serde_json::Value`: the last occurrence wins.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One JSON value, borrowing its strings from the parsed text where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Object<'a>),
}

/// A JSON object's members in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a> {
    members: Vec<(Cow<'a, str>, Node<'a>)>,
}

impl<'a> Object<'a> {
    /// The value of `key` (the last one when the key is repeated).
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every key in document order (a repeated key appears each time it was written).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_ref())
    }

    /// An owned `serde_json` map with the same content (the last value of a repeated key).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut map = Map::new();
        for (k, v) in &self.members {
            map.insert(k.to_string(), v.to_value());
        }
        map
    }
}

impl<'a> Node<'a> {
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Node::Number(n) => Some(n),
            _ => None,
        }
    }

    /// An owned `serde_json::Value` with the same content.
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(o) => Value::Object(o.to_map()),
        }
    }

    /// A tree borrowing every string from an already-parsed `serde_json::Value`.
    pub fn from_value(v: &'a Value) -> Node<'a> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.clone()),
            Value::String(s) => Node::String(Cow::Borrowed(s)),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_value).collect()),
            Value::Object(m) => Node::Object(Object {
                members: m
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from_value(v)))
                    .collect(),
            }),
        }
    }

    /// What kind of JSON value this is, for error messages ("a string", "an object", …).
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }
}

impl fmt::Display for Node<'_> {
    /// Compact JSON, as `serde_json::Value` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

/// A string that borrows from the input when serde_json hands out a borrowed slice.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        // serde_json's parser never yields a non-finite float; `Null` mirrors `Value`'s own conversion
        Ok(Number::from_f64(f).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).clamp(4, 64));
        while let Some(Text(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Node::Object(Object { members }))
    }
}

/// Parse JSON text into a borrowed tree.
///
/// The body is checked as UTF-8 once, up front, so the parser need not re-check every string; a body that
/// is not UTF-8 is handed to the byte parser for serde_json's own positioned error.
pub fn parse(body: &[u8]) -> Result<Node<'_>, serde_json::Error> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_every_kind_of_value() {
        let text =
            br#"{"a":null,"b":true,"c":-3,"d":18446744073709551615,"e":1.5,"f":"x\"y","g":[1,"z",{}],"h":{"i":[]}}"#;
        let node = parse(text).unwrap();
        let value: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(node.to_value(), value);
        assert_eq!(Node::from_value(&value), node);
        assert_eq!(node.to_string(), value.to_string());
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_escaped_ones_are_decoded() {
        let node = parse(br#"{"plain":"abc","escaped":"a\nb\u00e9"}"#).unwrap();
        let Node::Object(o) = &node else {
            panic!("not an object")
        };
        assert!(matches!(o.get("plain"), Some(Node::String(Cow::Borrowed("abc")))));
        assert_eq!(o.get("escaped").and_then(Node::as_str), Some("a\nbé"));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_like_serde_json() {
        let text = br#"{"k":1,"x":0,"k":2}"#;
        let node = parse(text).unwrap();
        let Node::Object(o) = &node else {
            panic!("not an object")
        };
        assert_eq!(o.get("k").and_then(Node::as_number).and_then(Number::as_u64), Some(2));
        assert_eq!(o.keys().collect::<Vec<_>>(), ["k", "x", "k"]);
        assert_eq!(node.to_value(), serde_json::from_slice::<Value>(text).unwrap());
        assert_eq!(node.to_value(), json!({"k": 2, "x": 0}));
    }

    #[test]
    fn invalid_json_reports_serde_jsons_own_error() {
        let ours = parse(b"{\"a\": }").unwrap_err().to_string();
        let theirs = serde_json::from_slice::<Value>(b"{\"a\": }").unwrap_err().to_string();
        assert_eq!(ours, theirs);
        assert!(parse(b"[1, 2").is_err());
        let not_utf8 = b"{\"a\": \"\xff\"}";
        let ours = parse(not_utf8).unwrap_err().to_string();
        assert_eq!(ours, serde_json::from_slice::<Value>(not_utf8).unwrap_err().to_string());
        assert!(ours.contains("invalid unicode"), "{ours}");
        assert!(parse(b"").is_err());
    }

    #[test]
    fn kinds_are_named_for_messages() {
        let kinds: Vec<_> = [
            Node::Null,
            Node::Bool(true),
            Node::Number(1.into()),
            Node::String("s".into()),
        ]
        .iter()
        .map(Node::kind)
        .collect();
        assert_eq!(kinds, ["null", "a boolean", "a number", "a string"]);
        assert_eq!(Node::Array(vec![]).kind(), "an array");
        assert_eq!(Node::Object(Object::default()).kind(), "an object");
    }
}
