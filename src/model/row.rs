//! A row of features as a request sends it: one JSON object, parsed straight into
//! the schema's slots. Feature names and string values are borrowed from the text
//! (copied only when they hold escapes), numbers become `f64`, and nested arrays
//! or objects are skipped and named by their kind: nothing is built per key but
//! one slot per schema feature. [`Schema::encode_json`] takes a row already
//! parsed into a `serde_json::Map`; both go through [`Schema::encode_given`], so
//! a row is refused with the same code and message whichever way it came.
//!
//! A name given twice in one row is refused (`duplicate_feature`) rather than
//! letting the last one win: the message begins with [`DUPLICATE_FEATURE`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::schema::{EncodeError, Schema};

/// How the message of a row naming a feature twice begins (the HTTP layer gives
/// it the code `duplicate_feature`).
pub const DUPLICATE_FEATURE: &str = "duplicate feature";

/// One feature's value as the request gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Given<'a> {
    Null,
    Number(f64),
    Text(Cow<'a, str>),
    /// A boolean, array or object, by its kind ("a boolean"): never encodable.
    Other(&'static str),
}

impl<'a> Given<'a> {
    /// The value of a parsed JSON row.
    pub fn from_value(v: &'a Value) -> Given<'a> {
        match v {
            Value::Null => Given::Null,
            // Without serde_json's arbitrary precision every number has an f64.
            Value::Number(n) => n.as_f64().map_or(Given::Other("a number"), Given::Number),
            Value::String(s) => Given::Text(Cow::Borrowed(s)),
            Value::Bool(_) => Given::Other("a boolean"),
            Value::Array(_) => Given::Other("an array"),
            Value::Object(_) => Given::Other("an object"),
        }
    }

    /// What kind of JSON value it is, for messages ("a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Given::Null => "null",
            Given::Number(_) => "a number",
            Given::Text(_) => "a string",
            Given::Other(kind) => kind,
        }
    }
}

/// Why the text of a row was not encoded.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// Not a JSON object, a name given twice, a number beyond `f64`: serde_json's
    /// error, with its line and column in the row's text.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A well-formed row the model cannot take.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Schema {
    /// Parses the JSON object `text` and encodes it into `out`, as
    /// [`Schema::encode_json`] does for a parsed row.
    pub fn encode_text(&self, text: &str, out: &mut [f32]) -> Result<(), RowError> {
        let mut values: Vec<Option<Given>> = vec![None; self.features.len()];
        let mut unknown: Vec<Cow<str>> = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        RowSeed {
            schema: self,
            values: &mut values,
            unknown: &mut unknown,
        }
        .deserialize(&mut de)?;
        de.end()?;
        self.encode_given(
            |i| values[i].clone(),
            || unknown.first().map(|n| n.to_string()),
            out,
        )?;
        Ok(())
    }
}

/// Fills `values` (one slot per schema feature, in schema order) from a JSON
/// object; names the schema lacks go to `unknown`.
struct RowSeed<'s, 'v, 'de> {
    schema: &'s Schema,
    values: &'v mut [Option<Given<'de>>],
    unknown: &'v mut Vec<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of named features")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        let features = &self.schema.features;
        // Clients mostly send the features in schema order: try the one after
        // the last match before searching.
        let mut next = 0;
        while let Some(Key(name)) = a.next_key::<Key<'de>>()? {
            let value = a.next_value::<Given<'de>>()?;
            let index = if features.get(next).is_some_and(|f| f.name == name) {
                Some(next)
            } else {
                features.iter().position(|f| f.name == name)
            };
            let duplicate = match index {
                Some(i) => {
                    next = i + 1;
                    self.values[i].replace(value).is_some()
                }
                None if self.unknown.contains(&name) => true,
                None => {
                    self.unknown.push(name.clone());
                    false
                }
            };
            if duplicate {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE_FEATURE} `{name}` (each feature once per row)"
                )));
            }
        }
        Ok(())
    }
}

/// A feature's name, borrowed unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a feature name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Given<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Given<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a feature value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Given<'de>, E> {
                Ok(Given::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Given<'de>, E> {
                Ok(Given::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Given<'de>, E> {
                Ok(Given::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Given<'de>, E> {
                Ok(Given::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Given<'de>, E> {
                Ok(Given::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Given<'de>, E> {
                Ok(Given::Number(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Given<'de>, E> {
                Ok(Given::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Given<'de>, E> {
                Ok(Given::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Given<'de>, E> {
                Ok(Given::Text(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<Given<'de>, A::Error> {
                Skip.visit_seq(s)?;
                Ok(Given::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Given<'de>, A::Error> {
                Skip.visit_map(m)?;
                Ok(Given::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value, read and dropped through `deserialize_any`, so that
/// serde_json's nesting limit applies (its `IgnoredAny` skips without one): a
/// value nested too deeply is refused as it is in any other part of a body.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Skip, A::Error> {
        while s.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Skip, A::Error> {
        while m.next_entry::<IgnoredAny, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Table;

    fn schema() -> Schema {
        let t = Table::parse("t.csv", b"x,colour,label\n1,red,a\n3,blue,b\n,red,a\n").unwrap();
        Schema::fit(&t, 2).unwrap()
    }

    /// Both ways in give the same slots, or the same code and message.
    fn both(s: &Schema, text: &str) -> Result<Vec<f32>, (String, String)> {
        let mut from_text = vec![f32::NAN; s.width()];
        let by_text = s.encode_text(text, &mut from_text);
        let parsed: Value = serde_json::from_str(text).unwrap();
        let mut from_map = vec![f32::NAN; s.width()];
        let by_map = s.encode_json(parsed.as_object().unwrap(), &mut from_map);
        match (by_text, by_map) {
            (Ok(()), Ok(())) => {
                assert_eq!(from_text, from_map, "{text}");
                Ok(from_text)
            }
            (Err(RowError::Encode(a)), Err(b)) => {
                assert_eq!(a, b, "{text}");
                Err((a.code.to_string(), a.message))
            }
            (a, b) => panic!("{text}: from text {a:?}, from a map {b:?}"),
        }
    }

    #[test]
    fn the_text_and_the_parsed_row_encode_alike() {
        let s = schema();
        assert_eq!(
            both(&s, r#"{"x": 3, "colour": "blue"}"#).unwrap(),
            vec![1.0, 1.0, 0.0, 0.0]
        );
        // Out of schema order, escaped names and values, nulls, every number form.
        assert_eq!(
            both(&s, r#"{"colour": "gr\u0065en", "\u0078": 0.0}"#).unwrap(),
            vec![-2.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            both(&s, r#" {"x": null, "colour": null} "#).unwrap(),
            vec![0.0, 0.0, 1.0, 0.0]
        );
        for x in ["-1", "18446744073709551615", "2.5e-3", "3.0e38"] {
            both(&s, &format!(r#"{{"x": {x}, "colour": "red"}}"#)).unwrap();
        }
        let refused = [
            (r#"{"x": 1}"#, "missing_feature"),
            (r#"{"x": 1, "colour": "red", "y": 2}"#, "unknown_feature"),
            (r#"{"y": 2, "x": 1}"#, "missing_feature"),
            (r#"{"x": 1e40, "colour": "red"}"#, "non_finite_feature"),
            (r#"{"x": "1", "colour": "red"}"#, "invalid_feature_type"),
            (r#"{"x": true, "colour": "red"}"#, "invalid_feature_type"),
            (
                r#"{"x": [1, [2]], "colour": "red"}"#,
                "invalid_feature_type",
            ),
            (r#"{"x": 1, "colour": {"a": {}}}"#, "invalid_feature_type"),
            (r#"{"x": 1, "colour": 4}"#, "invalid_feature_type"),
        ];
        for (text, code) in refused {
            assert_eq!(both(&s, text).unwrap_err().0, code, "{text}");
        }
        let long = format!(r#"{{"x": 1, "colour": "{}"}}"#, "r".repeat(2000));
        assert_eq!(both(&s, &long).unwrap_err().0, "value_too_long");
        let (_, message) = both(&s, r#"{"x": [1], "colour": "red"}"#).unwrap_err();
        assert_eq!(
            message,
            "feature `x` must be a number or null, got an array"
        );
    }

    #[test]
    fn rows_that_are_not_one_object_of_distinct_names_are_json_errors() {
        let s = schema();
        let mut out = vec![0.0; s.width()];
        let json_error = |text: &str| {
            let mut out = vec![0.0; s.width()];
            match s.encode_text(text, &mut out) {
                Err(RowError::Json(e)) => e.to_string(),
                other => panic!("{text}: {other:?}"),
            }
        };
        let dup = json_error(r#"{"x": 1, "colour": "red", "x": 2}"#);
        assert!(
            dup.starts_with("duplicate feature `x` (each feature once per row)"),
            "{dup}"
        );
        let dup = json_error(r#"{"x": 1, "zz": 1, "colour": "red", "zz": 2}"#);
        assert!(dup.starts_with("duplicate feature `zz`"), "{dup}");
        assert!(json_error("[1, 2]").contains("expected an object of named features"));
        let deep = format!(
            r#"{{"x": {}{}, "colour": "red"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(json_error(&deep).starts_with("recursion limit exceeded"));
        assert!(json_error(r#"{"x": 1e400, "colour": "red"}"#).starts_with("number out of range"));
        assert!(json_error(r#"{"x": 1, "colour": "red"} {}"#).starts_with("trailing characters"));
        assert!(s
            .encode_text(r#"{"x": 1, "colour": "red"}"#, &mut out)
            .is_ok());
    }
}
