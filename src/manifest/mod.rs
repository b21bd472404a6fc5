//! Manifest files read the way the API server reads them.
//!
//! `kubectl apply` and the API server turn YAML into JSON with sigs.k8s.io/yaml, that
//! is go-yaml v2 in strict mode: YAML 1.1 scalars (`yes`, `on`, `y` are booleans,
//! `0o17` and `017` are octal, `1_000` is a number), duplicate keys refused (also
//! through `<<` merges), mapping keys turned into strings, `.nan`/`.inf` refused
//! (JSON has no such numbers), and a float without a fraction sent as an integer.
//! Reading a manifest any other way would let `verify` judge a different object
//! than the one `kubectl apply` would create. A UTF-8 byte order mark at the start
//! of a file is skipped, as the API server does.

use std::borrow::Cow;
use std::collections::HashMap;

use granit_parser::{Event, Parser};
use serde_json::{Map, Value};

mod scalars;
use scalars::*;

/// Most values one document may expand to (aliases included): far above any real
/// manifest, far below what would exhaust memory.
const MAX_VALUES: usize = 1_000_000;

/// One document of a file, numbered from 1 in the order of the file. Empty
/// documents are kept (as null) so the numbers match what an editor shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub number: usize,
    pub value: Value,
}

/// A file that is not a manifest the API server would read, with the document where
/// reading stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub document: usize,
    pub message: String,
}

/// May this character appear unescaped in a YAML 1.1 stream (libyaml's check)?
fn printable(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}'
        | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
}

/// One document of a file as kubectl's YAML reader cuts them: the lines between
/// two separator lines (`---`, optionally followed by spaces or a comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// 1-based, in file order; empty documents are not counted (kubectl skips them).
    pub number: usize,
    /// Line of the file where the document starts (1-based).
    pub line: usize,
    pub text: &'a str,
}

/// Cut a file into documents as kubectl does (a leading byte order mark skipped).
/// A separator line with anything but a comment after `---` is refused, as kubectl
/// refuses it.
pub fn split(text: &str) -> Result<Vec<Chunk<'_>>, YamlError> {
    fn push<'a>(out: &mut Vec<Chunk<'a>>, body: &'a str, line: usize) {
        if !body.is_empty() {
            out.push(Chunk {
                number: out.len() + 1,
                line,
                text: body,
            });
        }
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    let mut line_no = 0usize;
    for line in text.split_inclusive('\n') {
        line_no += 1;
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(YamlError {
                    document: out.len() + 1,
                    message: format!(
                        "invalid YAML document separator on line {line_no}: {:?} (kubectl only allows a comment after ---)",
                        crate::table::clip(rest, 32)
                    ),
                });
            }
            push(&mut out, &text[start..offset], start_line);
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    push(&mut out, &text[start..], start_line);
    Ok(out)
}

/// Read one document (null when it holds no content).
pub fn parse(chunk: &Chunk<'_>) -> Result<Value, YamlError> {
    let fail = |message: String| YamlError {
        document: chunk.number,
        message,
    };
    let text = chunk.text;
    // go-yaml refuses a stream with a raw control character anywhere (escaped in a
    // double-quoted string, it is content), and reads a raw NEL as a line break.
    if let Some((at, c)) = text.char_indices().find(|(_, c)| !printable(*c)) {
        let line = chunk.line + text[..at].matches('\n').count();
        return Err(fail(format!(
            "not valid YAML: control characters are not allowed (U+{:04X} on line {line}; escape it in a double-quoted string)",
            u32::from(c)
        )));
    }
    let text: Cow<'_, str> = if text.contains('\u{85}') {
        Cow::Owned(text.replace('\u{85}', "\n"))
    } else {
        Cow::Borrowed(text)
    };
    let mut reader = Reader::default();
    for event in Parser::new_from_str(&text) {
        let (event, span) = event.map_err(|e| fail(format!("not valid YAML: {e}")))?;
        reader
            .event(event, chunk.line + span.start.line().saturating_sub(1))
            .map_err(fail)?;
        if !reader.done.is_empty() {
            // kubectl decodes the first document of what it cut.
            break;
        }
    }
    Ok(reader
        .done
        .into_iter()
        .next()
        .map(|d| d.value)
        .unwrap_or(Value::Null))
}

/// Read every document of a YAML (or JSON) text, as kubectl cuts and reads them.
pub fn documents(text: &str) -> Result<Vec<Document>, YamlError> {
    split(text)?
        .iter()
        .map(|c| {
            Ok(Document {
                number: c.number,
                value: parse(c)?,
            })
        })
        .collect()
}

/// A collection being built.
enum Open {
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        key: Option<Key>,
        anchor: usize,
    },
}

enum Key {
    Name(String, usize),
    Merge,
}

#[derive(Default)]
struct Reader {
    number: usize,
    stack: Vec<Open>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    values: usize,
    done: Vec<Document>,
}

impl Reader {
    fn event(&mut self, event: Event<'_>, line: usize) -> Result<(), String> {
        match event {
            Event::DocumentStart(..) => {
                self.number += 1;
                self.stack.clear();
                self.root = None;
                self.anchors.clear();
                self.values = 0;
            }
            Event::DocumentEnd => {
                let value = self.root.take().unwrap_or(Value::Null);
                self.done.push(Document {
                    number: self.number,
                    value,
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(Open::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    let k = map_key(&text, style, tag.as_deref())?;
                    *key = Some(match k {
                        None => Key::Merge,
                        Some(name) => Key::Name(name, line),
                    });
                    return Ok(());
                }
                let value = scalar(&text, style, tag.as_deref())?;
                self.count(1)?;
                self.emit(value, anchor)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.expect_value()?;
                self.stack.push(Open::Seq {
                    items: Vec::new(),
                    anchor,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.expect_value()?;
                self.stack.push(Open::Map {
                    map: Map::new(),
                    key: None,
                    anchor,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let value = match self.stack.pop() {
                    Some(Open::Seq { items, anchor }) => (Value::Array(items), anchor),
                    Some(Open::Map {
                        map,
                        key: None,
                        anchor,
                    }) => (Value::Object(map), anchor),
                    Some(Open::Map { key: Some(_), .. }) | None => {
                        return Err("not valid YAML: unbalanced collection".into());
                    }
                };
                self.count(1)?;
                self.emit(value.0, value.1)?;
            }
            Event::Alias(id) => {
                let value =
                    self.anchors.get(&id).cloned().ok_or(
                        "not valid YAML: an alias refers to an anchor that is not complete",
                    )?;
                if let Some(Open::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    let name = match &value {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err("unsupported map key (a collection or null)".into()),
                    };
                    *key = Some(Key::Name(name, line));
                    return Ok(());
                }
                self.count(size(&value))?;
                self.emit(value, 0)?;
            }
            Event::UnresolvedAlias(name) => {
                return Err(format!(
                    "unknown anchor {:?}",
                    crate::table::clip(&name, 64)
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), String> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(format!(
                "document too large: more than {MAX_VALUES} values (aliases expanded)"
            ));
        }
        Ok(())
    }

    /// A collection may not be a mapping key.
    fn expect_value(&self) -> Result<(), String> {
        match self.stack.last() {
            Some(Open::Map { key: None, .. }) => {
                Err("unsupported map key (a collection): keys must be scalars".into())
            }
            _ => Ok(()),
        }
    }

    /// Place a finished value: as the document, into a sequence, or under its key.
    fn emit(&mut self, value: Value, anchor: usize) -> Result<(), String> {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Open::Map { map, key, .. }) => match key.take() {
                Some(Key::Name(name, line)) => insert(map, name, value, line),
                Some(Key::Merge) => merge(map, value),
                None => Err("unsupported map key (a collection): keys must be scalars".into()),
            },
        }
    }
}

/// Insert, refusing a key set twice (go-yaml's strict mode, as the API server decodes).
fn insert(
    map: &mut Map<String, Value>,
    name: String,
    value: Value,
    line: usize,
) -> Result<(), String> {
    if map.contains_key(&name) {
        return Err(format!(
            "line {line}: key {:?} already set in map",
            crate::table::clip(&name, 64)
        ));
    }
    map.insert(name, value);
    Ok(())
}

/// `<<: *anchor` or `<<: [*a, *b]`: the keys of the merged mappings, each at most once.
fn merge(map: &mut Map<String, Value>, value: Value) -> Result<(), String> {
    let sources = match value {
        Value::Object(m) => vec![m],
        Value::Array(items) => items
            .into_iter()
            .rev()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                _ => Err("map merge requires map or sequence of maps as the value".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("map merge requires map or sequence of maps as the value".into()),
    };
    for source in sources {
        for (k, v) in source {
            if map.contains_key(&k) {
                return Err(format!(
                    "key {:?} already set in map (through a << merge)",
                    crate::table::clip(&k, 64)
                ));
            }
            map.insert(k, v);
        }
    }
    Ok(())
}

fn size(value: &Value) -> usize {
    match value {
        Value::Array(a) => 1 + a.iter().map(size).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(size).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Result<Value, String> {
        documents(text)
            .map(|d| d.into_iter().next().map(|d| d.value).unwrap_or(Value::Null))
            .map_err(|e| e.message)
    }

    #[test]
    fn scalars_resolve_as_go_yaml_v2_does() {
        let v = one(
            "a: yes\nb: on\nc: y\nd: No\ne: '1'\nf: 017\ng: 0x1F\nh: 1_000\ni: 1e3\nj: 2525.0\nk: .5\nl: ~\nm: 1.5\nnn: \"on\"\no: 0o17\np: +1\nq: 08\nr: 1e400\ns: 2001-12-14\nt: -0b101\n",
        )
        .expect("yaml");
        assert_eq!(
            v,
            json!({"a": true, "b": true, "c": true, "d": false, "e": "1", "f": 15, "g": 31,
                   "h": 1000, "i": 1000, "j": 2525, "k": 0.5, "l": null, "m": 1.5, "nn": "on",
                   "o": 15, "p": 1, "q": 8, "r": "1e400", "s": "2001-12-14", "t": -5})
        );
    }

    #[test]
    fn duplicate_keys_are_refused_in_yaml_json_and_merges() {
        let e = one("spec:\n  port: 1\n  port: 2525\n").expect_err("duplicate");
        assert!(e.contains("key \"port\" already set in map"), "{e}");
        let e = one(r#"{"spec": {"port": 1, "port": 2525}}"#).expect_err("duplicate");
        assert!(e.contains("already set"), "{e}");
        let e = one("base: &b {port: 1}\nspec:\n  <<: *b\n  port: 2\n").expect_err("duplicate");
        assert!(e.contains("already set"), "{e}");
        assert_eq!(
            one("base: &b {port: 1}\nspec:\n  <<: *b\n  host: h\n").expect("merge")["spec"],
            json!({"port": 1, "host": "h"})
        );
    }

    #[test]
    fn nan_and_infinity_are_refused() {
        for text in [
            "port: .nan",
            "port: .inf",
            "port: -.Inf",
            "port: !!float .nan",
        ] {
            let e = one(text).expect_err(text);
            assert!(e.contains("unsupported value"), "{text}: {e}");
        }
    }

    /// go-yaml (YAML 1.1) refuses raw control characters and reads a raw NEL as a
    /// line break (folded to a space in a quoted string); escaped, they are content.
    #[test]
    fn raw_control_characters_are_refused_and_nel_is_a_line_break() {
        for raw in ["\u{0}", "\u{1b}", "\u{7f}", "\u{9b}", "\u{fffe}"] {
            let e = one(&format!("title: \"a{raw}b\"\n")).expect_err("refused");
            assert!(e.contains("control characters are not allowed"), "{e}");
        }
        assert_eq!(one("title: \"a\u{85}b\"\n"), Ok(json!({"title": "a b"})));
        assert_eq!(
            one("title: \"a\\x85b\\0c\\u2028d\"\n"),
            Ok(json!({"title": "a\u{85}b\u{0}c\u{2028}d"}))
        );
        let e = documents("a: 1\n---\nb: \"\u{7f}\"\n").expect_err("refused");
        assert_eq!(e.document, 2);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(one("\u{feff}a: 1\n"), Ok(json!({"a": 1})));
        let docs = documents("\u{feff}---\na: 1\n---\nb: 2\n").expect("yaml");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].number, 2);
    }

    /// YAML 1.1: an unquoted `n` or `y` is a boolean, even as a key.
    #[test]
    fn keys_become_strings() {
        assert_eq!(
            one("n: 1\ny: 2\n").expect("yaml"),
            json!({"false": 1, "true": 2})
        );
        assert_eq!(
            one("1: a\ntrue: b\n1.5: c\n").expect("yaml"),
            json!({"1": "a", "true": "b", "1.5": "c"})
        );
        assert!(one("? [a]\n: b\n").is_err());
        assert!(one("~: b\n").is_err());
    }

    #[test]
    fn tags_and_anchors() {
        assert_eq!(
            one("a: !!str 12\nb: !!binary eA==\nc: &x v\nd: *x\ne: !custom z\n").expect("yaml"),
            json!({"a": "12", "b": "x", "c": "v", "d": "v", "e": "z"})
        );
        assert!(one("a: !!int abc\n").is_err());
        assert!(one("a: *nothing\n").is_err());
    }

    #[test]
    fn numbered_documents_and_errors() {
        let e = documents("a: 1\n---\nb: [\n").expect_err("broken");
        assert_eq!(e.document, 2);
        // Cut as kubectl cuts: empty documents are not counted, a comment-only one is
        // (and reads as null), and only a comment may follow a separator.
        let docs = documents("---\n---\na: 1\n--- # two\n# nothing\n---\nb: 2").expect("yaml");
        assert_eq!(
            docs.iter().map(|d| d.number).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(docs[1].value, Value::Null);
        assert_eq!(docs[2].value, json!({"b": 2}));
        let e = documents("a: 1\n--- {b: 2}\n").expect_err("kubectl refuses it");
        assert!(e.message.contains("invalid YAML document separator"), "{e}");
        let e = documents("a: 1\n---\nb: 2\nb: 3\n").expect_err("duplicate");
        assert!(e.message.starts_with("line 4:"), "{e}");
    }

    #[test]
    fn float_keys_print_like_go() {
        assert_eq!(go_float_key(1.5), "1.5");
        assert_eq!(go_float_key(1000.0), "1000");
        assert_eq!(go_float_key(1e6), "1e+06");
        assert_eq!(go_float_key(0.0001), "0.0001");
        assert_eq!(go_float_key(0.00001), "1e-05");
        assert_eq!(go_float_key(-2.5), "-2.5");
    }
}
