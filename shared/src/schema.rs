//! JSON Schemas of protobuf messages in the proto3 JSON mapping, with the
//! protos' comments as descriptions: what the AsyncAPI document of the
//! events ([`crate::events::asyncapi`]) and the OpenAPI documents of the
//! HTTP surface ([`crate::gateway::openapi`]) are made of. Values are
//! `serde_norway` values (YAML's data model, a superset of JSON's), built in
//! a stable order.
//!
//! The mapping (prost-reflect's serializer, which webhooks and the gateway
//! use): lowerCamelCase property names; 64-bit integers as decimal strings;
//! enums as a string enum of the value names; `Timestamp` as a `date-time`
//! string, `Duration` as `"<seconds>s"`, wrappers as their wrapped value,
//! `Any` as an object with `@type`, `Struct`/`Value`/`ListValue` as free
//! JSON; bytes as base64 strings; repeated fields as arrays, maps as objects
//! with `additionalProperties`. Default values are left out of proto3 JSON,
//! so no property of a message schema is required, and every member of a
//! oneof is an optional property (its description names the oneof).

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use prost_types::FileDescriptorProto;
use serde_norway::{Mapping, Value};

// ---------------------------------------------------------------------------
// The JSON schemas.

/// The schemas of the messages and enums reached so far, by full name.
#[derive(Debug, Default)]
pub(crate) struct Schemas {
    pub(crate) done: BTreeMap<String, Value>,
}

impl Schemas {
    /// A reference to `message`'s schema, made (with everything it
    /// reaches) on first use.
    pub(crate) fn message(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name();
        if !self.done.contains_key(name) {
            // Claimed before the fields are walked: a message that reaches
            // itself ends in a reference, not in a loop.
            self.done.insert(name.to_owned(), Value::Null);
            let mut out = Mapping::new();
            if let Some(text) = message_comment(message) {
                out.insert(s("description"), s(text));
            }
            out.insert(s("type"), s("object"));
            let mut properties = Mapping::new();
            for field in message.fields() {
                let schema = self.field(&field);
                properties.insert(s(field.json_name()), schema);
            }
            if !properties.is_empty() {
                out.insert(s("properties"), Value::Mapping(properties));
            }
            self.done.insert(name.to_owned(), Value::Mapping(out));
        }
        schema_ref(name)
    }

    /// A reference to `enumeration`'s schema, made on first use: a string
    /// enum of the value names, each value's comment in the description.
    pub(crate) fn enumeration(&mut self, enumeration: &EnumDescriptor) -> Value {
        let name = enumeration.full_name();
        if !self.done.contains_key(name) {
            let file = enumeration.parent_file_descriptor_proto();
            let mut description = comment(file, enumeration.path()).unwrap_or_default();
            let values: Vec<String> = enumeration
                .values()
                .map(|value| match comment(file, value.path()) {
                    Some(text) => format!("- `{}`: {}", value.name(), first_paragraph(&text)),
                    None => format!("- `{}`", value.name()),
                })
                .collect();
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str("Values:\n");
            description.push_str(&values.join("\n"));
            let schema = map([
                ("description", s(description)),
                ("type", s("string")),
                (
                    "enum",
                    enumeration.values().map(|value| s(value.name())).collect(),
                ),
            ]);
            self.done.insert(name.to_owned(), schema);
        }
        schema_ref(name)
    }

    /// A field's property: its value's schema (in an array or a map as
    /// the field is), with the field's comment.
    pub(crate) fn field(&mut self, field: &FieldDescriptor) -> Value {
        let schema = match field.kind() {
            Kind::Message(entry) if field.is_map() => {
                let key = entry.map_entry_key_field().kind();
                let value = self.value(&entry.map_entry_value_field().kind());
                let mut out = Mapping::new();
                out.insert(s("type"), s("object"));
                if let Some(names) = map_key_names(&key) {
                    out.insert(s("propertyNames"), names);
                }
                out.insert(s("additionalProperties"), value);
                Value::Mapping(out)
            }
            kind if field.is_list() => map([("type", s("array")), ("items", self.value(&kind))]),
            kind => self.value(&kind),
        };
        let file = field.parent_message().parent_file_descriptor_proto();
        let mut description = comment(file, field.path()).unwrap_or_default();
        if let Some(oneof) = field.containing_oneof()
            && !oneof.is_synthetic()
        {
            let members: Vec<String> = oneof
                .fields()
                .map(|member| format!("`{}`", member.json_name()))
                .collect();
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(&format!(
                "One of `{}`: at most one of {} is set.",
                oneof.name(),
                members.join(", ")
            ));
        }
        described(schema, description)
    }

    /// The schema of one value of type `kind` (proto3 JSON).
    pub(crate) fn value(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => map([(
                "anyOf",
                Value::Sequence(vec![
                    map([("type", s("number"))]),
                    map([
                        ("type", s("string")),
                        (
                            "enum",
                            ["NaN", "Infinity", "-Infinity"]
                                .into_iter()
                                .map(s)
                                .collect(),
                        ),
                    ]),
                ]),
            )]),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                map([("type", s("integer")), ("format", s("int32"))])
            }
            Kind::Uint32 | Kind::Fixed32 => map([
                ("type", s("integer")),
                ("minimum", Value::from(0)),
                ("maximum", Value::from(u32::MAX)),
            ]),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => map([
                ("type", s("string")),
                ("format", s("int64")),
                ("pattern", s("^-?[0-9]+$")),
            ]),
            Kind::Uint64 | Kind::Fixed64 => map([
                ("type", s("string")),
                ("format", s("uint64")),
                ("pattern", s("^[0-9]+$")),
            ]),
            Kind::Bool => map([("type", s("boolean"))]),
            Kind::String => map([("type", s("string"))]),
            Kind::Bytes => map([("type", s("string")), ("contentEncoding", s("base64"))]),
            Kind::Enum(enumeration) if enumeration.full_name() == "google.protobuf.NullValue" => {
                map([("type", s("null"))])
            }
            Kind::Enum(enumeration) => self.enumeration(enumeration),
            Kind::Message(message) => match self.well_known(message) {
                Some(schema) => schema,
                None => self.message(message),
            },
        }
    }

    /// The proto3 JSON form of a well-known type, inline (they have a JSON
    /// form of their own, not their fields'); `None` for other messages.
    fn well_known(&mut self, message: &MessageDescriptor) -> Option<Value> {
        if message.package_name() != "google.protobuf" {
            return None;
        }
        let schema = match message.name() {
            "Timestamp" => map([("type", s("string")), ("format", s("date-time"))]),
            "Duration" => map([
                ("type", s("string")),
                ("pattern", s("^-?[0-9]+(\\.[0-9]{1,9})?s$")),
            ]),
            "FieldMask" => map([("type", s("string"))]),
            "Empty" => map([("type", s("object"))]),
            "Any" => map([
                ("type", s("object")),
                (
                    "properties",
                    map([(
                        "@type",
                        map([
                            (
                                "description",
                                s(
                                    "`type.googleapis.com/` + the full protobuf name of the message whose fields accompany it.",
                                ),
                            ),
                            ("type", s("string")),
                        ]),
                    )]),
                ),
                ("required", Value::Sequence(vec![s("@type")])),
                ("additionalProperties", Value::Bool(true)),
            ]),
            "Struct" => map([
                ("type", s("object")),
                ("additionalProperties", Value::Bool(true)),
            ]),
            "ListValue" => map([("type", s("array"))]),
            // Any JSON value.
            "Value" => Value::Mapping(Mapping::new()),
            // Wrappers: the wrapped value itself.
            "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
            | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => {
                let wrapped = message.get_field(1)?.kind();
                self.value(&wrapped)
            }
            _ => return None,
        };
        Some(schema)
    }
}

/// `propertyNames` of a map whose keys are not strings (JSON object keys
/// always are: numbers and booleans in decimal / `true`, `false`).
pub(crate) fn map_key_names(key: &Kind) -> Option<Value> {
    match key {
        Kind::String => None,
        Kind::Bool => Some(map([(
            "enum",
            ["true", "false"].into_iter().map(s).collect(),
        )])),
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64 => Some(map([("pattern", s("^-?[0-9]+$"))])),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
            Some(map([("pattern", s("^[0-9]+$"))]))
        }
        // Not valid map keys in protobuf.
        Kind::Double | Kind::Float | Kind::Bytes | Kind::Enum(_) | Kind::Message(_) => None,
    }
}

/// `schema` with `description` (none when empty). A reference gets it
/// beside an `allOf`: siblings of `$ref` are ignored by JSON Schema draft 7,
/// which AsyncAPI's schema format builds on.
pub(crate) fn described(schema: Value, description: String) -> Value {
    if description.is_empty() {
        return schema;
    }
    let mut out = Mapping::new();
    out.insert(s("description"), s(description));
    match schema {
        Value::Mapping(fields) if fields.contains_key("$ref") => {
            out.insert(s("allOf"), Value::Sequence(vec![Value::Mapping(fields)]));
        }
        Value::Mapping(fields) => out.extend(fields),
        other => {
            out.insert(s("allOf"), Value::Sequence(vec![other]));
        }
    }
    Value::Mapping(out)
}

// ---------------------------------------------------------------------------
// The comments.

/// The comment above `message`.
pub(crate) fn message_comment(message: &MessageDescriptor) -> Option<String> {
    comment(message.parent_file_descriptor_proto(), message.path())
}

/// The comment above the element at `path` of `file` (source info paths:
/// message `[4, i]`, its field `[4, i, 2, j]`, …), `//` and the space after
/// it taken off each line.
pub(crate) fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let location = file
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|location| location.path == path)?;
    let text = tidy(location.leading_comments.as_deref()?);
    (!text.is_empty()).then_some(text)
}

/// A file's header: the comments after its imports, detached from (above
/// the comment of) its first message.
pub(crate) fn file_comment(file: &FileDescriptorProto) -> Option<String> {
    let location = file
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|location| location.path == [4, 0])?;
    let paragraphs: Vec<String> = location
        .leading_detached_comments
        .iter()
        .map(|raw| tidy(raw))
        .filter(|text| !text.is_empty())
        .collect();
    (!paragraphs.is_empty()).then(|| paragraphs.join("\n\n"))
}

/// A raw comment without the space each line starts with, without blank
/// lines around it.
pub(crate) fn tidy(raw: &str) -> String {
    let lines: Vec<&str> = raw
        .lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect();
    lines.join("\n").trim_matches('\n').to_owned()
}

/// The first paragraph of `text`, on one line.
pub(crate) fn first_paragraph(text: &str) -> String {
    text.split("\n\n")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// YAML helpers.

pub(crate) fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

/// A mapping of `entries`, in their order.
pub(crate) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::Mapping(
        entries
            .into_iter()
            .map(|(key, value)| (s(key), value))
            .collect(),
    )
}

pub(crate) fn reference(pointer: String) -> Value {
    map([("$ref", s(pointer))])
}

pub(crate) fn schema_ref(name: &str) -> Value {
    reference(format!("#/components/schemas/{name}"))
}
